"""Quantizing an exported float32 graph with onnxruntime's own quantizers.

- ``int8``: ``quantize_dynamic`` — int8 weights (symmetric, per output channel), activations
  quantized on the fly (``DynamicQuantizeLinear`` + ``MatMulInteger``). A CPU path.
- ``int4``: ``MatMulNBitsQuantizer`` — weight-only 4-bit blocks along K (``com.microsoft.MatMulNBits``);
  activations stay float. K is padded up to the block size, so pruned widths need not divide it.

Both quantize only MatMuls whose B is a constant initializer; attention's Q·K and P·V (B computed
at run time) stay float. The token embedding (a ``Gather``) stays float32 in both: quantizing it
saves file size but not per-token bandwidth (one row is read per token).
"""

from __future__ import annotations

import numpy as np

from edgeprune.export.onnx import sparsity


def untie_transposed_initializers(model) -> int:
    """Replace ``Transpose(initializer)`` nodes by a transposed initializer; return how many.

    The dynamo exporter writes a tied lm_head as ``MatMul(x, Transpose(embed_tokens))``: one copy
    of the weights, which is what float32 wants. The quantizers only touch MatMuls whose B is an
    initializer, so before quantizing, the transpose is materialised and the lm_head (the largest
    matrix of a small model) gets quantized like every other projection.
    """
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    folded = 0
    for node in list(model.graph.node):
        if node.op_type != "Transpose" or len(node.input) != 1 or node.input[0] not in inits:
            continue
        data = numpy_helper.to_array(inits[node.input[0]])
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        new = numpy_helper.from_array(np.ascontiguousarray(np.transpose(data, perm)), name=node.output[0])
        model.graph.initializer.append(new)
        model.graph.node.remove(node)
        folded += 1
    if folded:
        used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
        keep = [t for t in model.graph.initializer if t.name in used]
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
    return folded


def quantize_int8(src: str, dst: str, *, external_data: bool) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        src,
        dst,
        op_types_to_quantize=["MatMul"],
        # per-channel: one scale per output column; per-tensor scales lose ~1 ppl point on 135M
        per_channel=True,
        weight_type=QuantType.QInt8,
        use_external_data_format=external_data,
        extra_options={"MatMulConstBOnly": True},
    )


def quantize_int4(model, dst: str, *, block_size: int, external_data: bool) -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(
        model,
        bits=4,
        block_size=block_size,
        # asymmetric (a zero point per block) fits skewed weight blocks better than symmetric
        is_symmetric=False,
        # 4: int8 activations inside MatMulNBits on CPU (faster); accuracy cost is below int4's own
        accuracy_level=4,
        op_types_to_quantize=("MatMul",),
    )
    quantizer.process()
    quantizer.model.save_model_to_file(dst, use_external_data_format=external_data)


# -- 2:4 sparsity --------------------------------------------------------------------------------


def matmul_weights(model) -> dict[str, np.ndarray]:
    """Float MatMul B initializers by name, as ``[K, N]`` arrays."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in inits:
            arr = numpy_helper.to_array(inits[node.input[1]])
            if arr.ndim == 2 and arr.dtype.kind == "f":
                out[node.input[1]] = arr
    return out


def two_four_weights(model) -> list[str]:
    """Names of the float MatMul weights that are 2:4 sparse along K."""
    return [name for name, w in matmul_weights(model).items() if sparsity.is_2_4(w, axis=0)]


def quantized_zero_masks(model) -> dict[str, np.ndarray]:
    """For each quantized MatMul of ``model``: its original weight name -> ``[K, N]`` "dequantizes to 0" mask.

    The quantizers name their new initializers after the float ones (``<name>_quantized``,
    ``<name>_Q4``), which is how the masks are matched back to the float weights.
    """
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    masks = {}
    for node in model.graph.node:
        if node.op_type == "MatMulInteger" and node.input[1] in inits:
            q = numpy_helper.to_array(inits[node.input[1]]).astype(np.int32)  # (K, N)
            zp_name = node.input[3] if len(node.input) > 3 else ""
            zp = numpy_helper.to_array(inits[zp_name]).astype(np.int32) if zp_name in inits else 0
            masks[_base_name(node.input[1], "_quantized")] = q == zp
        elif node.op_type == "MatMulNBits" and node.input[1] in inits:
            attrs = {a.name: a.i for a in node.attribute}
            zp_name = node.input[3] if len(node.input) > 3 else ""
            zp = numpy_helper.to_array(inits[zp_name]) if zp_name in inits else None
            b = numpy_helper.to_array(inits[node.input[1]])
            masks[_base_name(node.input[1], "_Q4")] = sparsity.matmul_nbits_zero_mask(
                b, zp, attrs["K"], attrs["N"], attrs["block_size"]
            )
    return masks


def _base_name(name: str, suffix: str) -> str:
    return name[: -len(suffix)] if name.endswith(suffix) else name


def sparsity_summary(fp32_model, quantized_model=None) -> dict | None:
    """``{"weights": n 2:4 weights, "kept": n still 2:4 after quantization}``; None if no 2:4 weight.

    ``quantized_model`` None: no quantization (float32 keeps every zero), so all are kept.
    """
    names = two_four_weights(fp32_model)
    if not names:
        return None
    if quantized_model is None:
        return {"weights": len(names), "kept": len(names)}
    masks = quantized_zero_masks(quantized_model)
    kept = sum(1 for n in names if n in masks and sparsity.is_2_4_mask(masks[n], axis=0))
    return {"weights": len(names), "kept": kept}

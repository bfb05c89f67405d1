"""Quantizing an exported float32 graph with onnxruntime's own quantizers.

- ``int8``: ``MatMulNBitsQuantizer(bits=8)`` — weight-only int8 in blocks of ``block_size`` along
  K (``com.microsoft.MatMulNBits``), symmetric; ``accuracy_level=4`` lets the CPU kernel quantize
  activations to int8 per block, which keeps outliers local to their block.
- ``int8-dynamic``: ``quantize_dynamic`` — int8 weights (per output channel) and activations
  quantized per tensor on the fly (``DynamicQuantizeLinear`` + ``MatMulInteger``): standard ONNX
  ops only, so other runtimes run it too, but one scale for a whole activation row is ruined by
  the massive activations of small Llamas (SmolLM2-135M: +80% perplexity; see the bench).
- ``int4``: ``MatMulNBitsQuantizer(bits=4)`` — weight-only 4-bit blocks, mixed with 8 bits where
  4 costs the most (as llama.cpp's Q4_K_M keeps ``output``, ``ffn_down`` and the outer layers
  wider): ``int4_lm_head="int8"`` (the largest, most sensitive matrix), ``int4_mix="edges+down"``
  (every projection of the first and last ceil(layers / 6) layers, and every ``down_proj``, whose
  input carries the model's massive activations, at 8 bits) and ``int4_embedding="int8"`` (the
  embedding table, a ``Gather``, as int8 with a scale per row: -75% of its bytes, ~0.1%
  perplexity; float32 it would be half of an int4 file). ``int4_algo`` chooses the 4-bit codes,
  all data-free (INT4_METHODS): ``hqq`` (the default) optimises a float zero point per block
  against an L0.7 error, which lets a block's outliers keep their error and fits the bulk;
  ``rtn`` maps the block's largest magnitude to -8 (``int4_symmetric``; False adds a whole-code
  zero point); ``k_quant`` searches scale and minimum (whole-code zero point). Measured on
  SmolLM2-135M (bench/results/onnx_roundtrip.md, WikiText-2, 8 windows of 512), ppl vs fp32 with
  the default mix: hqq +0.1% dense / +0.1% pruned stand-in (161 / 133 MB), rtn sym +7.5% / +10.5%
  (154 / 129 MB), rtn asym and k_quant +24% pruned, rtn block 16 +27% pruned. The price of hqq is
  speed: onnxruntime's CPU kernel apparently takes no int8 path with float zero points (its
  logits barely move with accuracy_level), and decode runs ~4x slower than rtn's (14 vs 56 t/s
  dense, 1 thread, measured in different runs on a shared host); ``int4_algo="rtn"`` is the
  fast choice. ``int4_accuracy_level`` 4 (int8 activations per block) is no worse than 0 (float,
  and much slower) for rtn here: +10.0% vs +10.5% pruned. A model with 2:4-sparse weights gets rtn
  by default: hqq's float zero points do not keep its zeros.

Symmetric block quantization maps 0 to 0, so 2:4-sparse weights keep their pattern. K is padded
up to the block size, so pruned widths need not divide it. Only MatMuls whose B is a constant
initializer are quantized; attention's Q·K and P·V stay float. The token embedding (a ``Gather``)
stays float32 in int8 graphs: quantizing it saves file size but not per-token bandwidth (one row
is read); int4 graphs store it as int8 rows (see above) because there it is the largest part of the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import warnings
from collections.abc import Sequence

import numpy as np

from edgeprune.export.onnx import sparsity
from edgeprune.export.onnx.passes import lm_head_nodes

# MatMulNBits' accuracy_level 4: the CPU kernel quantizes activations to int8 per block of K, so
# an outlier only coarsens its own block (int8 weight-only at level 4: +0.7% ppl on SmolLM2-135M)
ACCURACY_LEVEL = 4


INT4_LM_HEAD = ("int8", "int4", "fp32")  # what the lm_head of an int4 export stores
# which decoder projections of an int4 export stay at 8 bits: "edges" = every projection of the
# first and last ceil(layers / 6) layers, "down" = every layer's down_proj (its input carries the
# massive activations of small Llamas); "none" = all at 4 bits
INT4_MIXES = ("edges+down", "edges", "down", "none")
INT4_EMBEDDINGS = ("int8", "fp32")  # the token embedding table of an int4 export
# how the 4-bit codes of a block are chosen (all onnxruntime's, no calibration data):
INT4_METHODS = {
    "rtn": "round to nearest (onnxruntime MatMulNBitsQuantizer)",
    "k_quant": "k-quant scale and minimum search, weighted squared error (onnxruntime quant_tensor_k_quant_cpu)",
    "hqq": "half-quadratic quantization, float zero points (onnxruntime HQQWeightOnlyQuantConfig)",
}
INT4_ALGOS = tuple(INT4_METHODS)
INT4_NOTE = (
    "int4 trade-off: 4-bit blocks cost the most where errors compound or activations are large, so by default "
    "the lm_head, every projection of the outer layers and every down_proj keep 8 bits (int4_lm_head, int4_mix) "
    "and the embedding table is int8 per row (int4_embedding); the default hqq codes are the most accurate but "
    "decode ~4x slower than rtn's on CPU (float zero points; int4_algo='rtn' is the fast choice): see bench/results/onnx_roundtrip.md "
    "for the perplexity, bytes and speed of each setting"
)


def quantize_int8(src: str, dst: str, *, block_size: int, external_data: bool) -> dict:
    _nbits(src, dst, bits=8, block_size=block_size, symmetric=True, external_data=external_data)
    return {"bits": 8, "block_size": block_size, "symmetric": True, "lm_head": "int8", "accuracy_level": ACCURACY_LEVEL,
            "method": "round to nearest (onnxruntime MatMulNBitsQuantizer)"}  # fmt: skip


def quantize_int4(src: str, dst: str, *, block_size: int, external_data: bool, lm_head: str = "int8",
                  symmetric: bool = True, eight_bit: Sequence[str] = (), algo: str = "rtn",
                  accuracy_level: int = ACCURACY_LEVEL) -> dict:  # fmt: skip
    """4-bit blocks for the decoder's MatMuls except the nodes named in ``eight_bit`` (8-bit
    blocks); the lm_head at ``lm_head`` ("int8": in the 8-bit pass; "fp32": left float; "int4":
    like the rest). ``algo`` (INT4_ALGOS) picks how the 4-bit codes are chosen. Returns the settings used."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    graph = onnx.load(src)  # weights in memory: k_quant would keep external references relative to the cwd
    head = lm_head_nodes(graph)
    exclude = list(eight_bit) + ([] if lm_head == "int4" else head)
    if algo == "k_quant":
        model = _k_quant(graph, set(exclude), block_size)
    else:
        with _quiet_quantizer():
            body = MatMulNBitsQuantizer(graph, bits=4, block_size=block_size, is_symmetric=symmetric and algo == "rtn",
                                        accuracy_level=accuracy_level or None, op_types_to_quantize=("MatMul",),
                                        nodes_to_exclude=exclude, algo_config=_algo_config(algo, block_size))  # fmt: skip
            body.process()
        model = body.model.model
    _set_accuracy_level(model, accuracy_level)  # HQQ and k_quant leave it unset
    # second pass: the float MatMuls with a constant B left are the 8-bit ones (and a "fp32" lm_head)
    _nbits(model, dst, bits=8, block_size=block_size, symmetric=True, external_data=external_data,
           exclude=head if lm_head == "fp32" else (), accuracy_level=accuracy_level)  # fmt: skip
    return {"bits": 4, "block_size": block_size, "symmetric": symmetric and algo == "rtn", "lm_head": lm_head,
            "algo": algo, "accuracy_level": accuracy_level, "method": INT4_METHODS[algo]}  # fmt: skip


def _algo_config(algo: str, block_size: int):
    """onnxruntime's config object for ``algo``; None: its default (round to nearest, DEFAULT)."""
    from onnxruntime.quantization import matmul_nbits_quantizer as mnq

    if algo == "rtn":
        return None
    if algo == "hqq":
        return mnq.HQQWeightOnlyQuantConfig(block_size=block_size, bits=4, op_types_to_quantize=("MatMul",))
    raise ValueError(f"unknown int4 algorithm {algo!r}")


def _k_quant(model, exclude: set[str], block_size: int):
    """Every MatMul with a constant 2-D float B not in ``exclude`` -> a 4-bit MatMulNBits whose codes,
    scales and zero points come from onnxruntime's k-quant search (``quant_tensor_k_quant_cpu``).
    Packed here rather than by onnxruntime's ``rtn_quantize``, which packs the zero points across
    rows and fails on a weight with an odd number of blocks (K = 608 at block 32, say)."""
    from onnx import helper, numpy_helper
    from onnxruntime.quantization.neural_compressor.weight_only import quant_tensor_k_quant_cpu

    inits = {t.name: t for t in model.graph.initializer}
    new_nodes, used = [], set()
    for node in model.graph.node:
        b = inits.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        w = numpy_helper.to_array(b) if b is not None and node.name not in exclude else None
        if w is None or w.ndim != 2 or w.dtype != np.float32:
            new_nodes.append(node)
            used.update(node.input)
            continue
        k, n = w.shape
        blocks = -(-k // block_size)
        padded = np.zeros((blocks * block_size, n), np.float32)
        padded[:k] = w
        with _quiet_quantizer():
            q, scale, zp = quant_tensor_k_quant_cpu(padded.T, 4, block_size)  # (N * blocks, block), (N * blocks, 1) x2
        codes = q.astype(np.uint8).reshape(n, blocks, block_size)
        packed = codes[..., 0::2] | (codes[..., 1::2] << 4)  # (N, blocks, block / 2): low nibble first
        zp = np.pad(zp.astype(np.uint8).reshape(n, blocks), ((0, 0), (0, blocks % 2)), constant_values=8)
        zp_packed = zp[:, 0::2] | (zp[:, 1::2] << 4)  # (N, ceil(blocks / 2)): each row padded on its own
        base = node.input[1]
        model.graph.initializer.extend([numpy_helper.from_array(packed, base + "_Q4"),
                                        numpy_helper.from_array(scale.astype(np.float32).reshape(-1), base + "_scales"),
                                        numpy_helper.from_array(zp_packed, base + "_zero_points")])  # fmt: skip
        new_nodes.append(helper.make_node("MatMulNBits", [node.input[0], base + "_Q4", base + "_scales", base + "_zero_points"],
                                          list(node.output), name=node.name + "_Q4", domain="com.microsoft",
                                          K=k, N=n, bits=4, block_size=block_size))  # fmt: skip
        used.update([node.input[0], base + "_Q4", base + "_scales", base + "_zero_points"])
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    for t in [t for t in model.graph.initializer if t.name in inits and t.name not in used]:
        model.graph.initializer.remove(t)  # the float weights now quantized (a weight shared with a float node stays)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model


def _set_accuracy_level(model, level: int) -> None:
    from onnx import helper

    for node in model.graph.node:
        if node.op_type == "MatMulNBits" and level and not any(a.name == "accuracy_level" for a in node.attribute):
            node.attribute.append(helper.make_attribute("accuracy_level", level))


def eight_bit_nodes(owners: dict[str, str], n_layers: int, mix: str, *, edge: int | None = None) -> list[str]:
    """The MatMul nodes that ``mix`` (see INT4_MIXES) keeps at 8 bits; ``owners``: node -> torch parameter
    name; ``edge``: the layers on each side that "edges" covers (default ceil(n_layers / 6))."""
    edge = math.ceil(n_layers / 6) if edge is None else edge
    keep = []
    for node, param in owners.items():
        m = re.search(r"layers\.(\d+)\.", param)
        if m is None:
            continue
        i = int(m.group(1))
        if ("edges" in mix and (i < edge or i >= n_layers - edge)) or ("down" in mix and "down_proj" in param):
            keep.append(node)
    return sorted(keep)


def matmul_owners(model, named_weights: dict[str, np.ndarray]) -> dict[str, str]:
    """MatMul node name -> the name of the torch ``(out, in)`` weight whose transpose is its constant
    B, matched by content (the exporters name initializers differently; the values are the same)."""
    from onnx import numpy_helper

    by_digest = {hashlib.sha1(np.ascontiguousarray(w.T).tobytes()).hexdigest(): n for n, w in named_weights.items()}
    inits = {t.name: t for t in model.graph.initializer}
    owners = {}
    for node in model.graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in inits:
            digest = hashlib.sha1(np.ascontiguousarray(numpy_helper.to_array(inits[node.input[1]])).tobytes()).hexdigest()
            if digest in by_digest:
                owners[node.name] = by_digest[digest]
    return owners


def embedding_int8(model) -> bool:
    """Store the token embedding table as int8 with one scale per row (symmetric): ``Gather(table)``
    becomes ``Cast(Gather(table_int8)) * Gather(scales)`` — standard ops, one row read per token as
    before, a quarter of the bytes. Returns whether a float embedding ``Gather`` was found."""
    from onnx import TensorProto, helper, numpy_helper

    from edgeprune.export.onnx import names

    inits = {t.name: t for t in model.graph.initializer}
    gather = next((n for n in model.graph.node if n.op_type == "Gather" and names.INPUT_IDS in n.input
                   and n.input[0] in inits), None)  # fmt: skip
    if gather is None:
        return False
    table = numpy_helper.to_array(inits[gather.input[0]])
    if table.ndim != 2 or table.dtype != np.float32:
        return False
    scale = np.abs(table).max(axis=1, keepdims=True) / 127.0  # (vocab, 1)
    scale[scale == 0] = 1.0
    q = np.clip(np.round(table / scale), -127, 127).astype(np.int8)
    base, out = gather.input[0], gather.output[0]
    model.graph.initializer.remove(inits[base])
    model.graph.initializer.extend([numpy_helper.from_array(q, base + "_int8"),
                                    numpy_helper.from_array(scale.astype(np.float32), base + "_scale")])  # fmt: skip
    at = list(model.graph.node).index(gather)
    model.graph.node.remove(gather)
    new = [
        helper.make_node("Gather", [base + "_int8", gather.input[1]], [out + "_int8"], name="embed/gather_int8"),
        helper.make_node("Cast", [out + "_int8"], [out + "_float"], name="embed/cast", to=TensorProto.FLOAT),
        helper.make_node("Gather", [base + "_scale", gather.input[1]], [out + "_scale"], name="embed/gather_scale"),
        helper.make_node("Mul", [out + "_float", out + "_scale"], [out], name="embed/dequantize"),
    ]  # (batch, seq, hidden) * (batch, seq, 1)
    for i, node in enumerate(new):
        model.graph.node.insert(at + i, node)
    return True


def _nbits(model, dst: str, *, bits: int, block_size: int, symmetric: bool, external_data: bool, exclude=(),
           accuracy_level: int = ACCURACY_LEVEL) -> None:  # fmt: skip
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    with _quiet_quantizer():
        quantizer = MatMulNBitsQuantizer(model, bits=bits, block_size=block_size, is_symmetric=symmetric,
                                         accuracy_level=accuracy_level or None, op_types_to_quantize=("MatMul",),
                                         nodes_to_exclude=list(exclude))  # fmt: skip
        quantizer.process()
        quantizer.model.save_model_to_file(dst, use_external_data_format=external_data)


def matmul_precisions(model) -> dict[str, int]:
    """How many MatMuls with a constant weight store it at each precision: ``{"int4": n, "int8": n, "fp32": n}``."""
    inits = {t.name for t in model.graph.initializer}
    out = {"int4": 0, "int8": 0, "fp32": 0}
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            bits = next(a.i for a in node.attribute if a.name == "bits")
            out[f"int{bits}"] = out.get(f"int{bits}", 0) + 1
        elif node.op_type == "MatMulInteger":
            out["int8"] += 1
        elif node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in inits:
            out["fp32"] += 1
    return out


def weights_label(q: dict | None) -> str:
    """A short name for what a quantized graph stores, e.g. ``int4 sym b32, lm_head int8, 8-bit edges+down, embedding int8``."""
    if not q:
        return "fp32"
    if q.get("activations"):
        return f"int8 per channel, activations {q['activations']}"
    sym = q.get("algo") if q.get("algo") not in (None, "rtn") else "sym" if q["symmetric"] else "asym"
    label = f"int{q['bits']} {sym} b{q['block_size']}" + (f", lm_head {q['lm_head']}" if q["lm_head"] != f"int{q['bits']}" else "")
    if q.get("mix") not in (None, "none"):
        label += f", 8-bit {q['mix']}"
    if q.get("embedding") not in (None, "fp32"):
        label += f", embedding {q['embedding']}"
    if q.get("accuracy_level", ACCURACY_LEVEL) != ACCURACY_LEVEL:
        label += f", accuracy_level {q['accuracy_level']}"
    return label


def quantize_int8_dynamic(src: str, dst: str, *, external_data: bool) -> dict:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_quantizer():
        quantize_dynamic(
            src,
            dst,
            op_types_to_quantize=["MatMul"],
            per_channel=True,  # one scale per output column: per-tensor weight scales lose more
            weight_type=QuantType.QInt8,
            use_external_data_format=external_data,
            extra_options={"MatMulConstBOnly": True},
        )
    return {"bits": 8, "block_size": None, "symmetric": True, "lm_head": "int8", "activations": "int8 per tensor",
            "method": "onnxruntime quantize_dynamic (MatMulInteger)"}  # fmt: skip


@contextlib.contextmanager
def _quiet_quantizer():
    """onnxruntime's quantizers log every node at INFO on the root logger (and raise its level), and
    k_quant prints a progress bar; mute logging below ERROR and stdout for the call and put the root
    logger back as it was."""
    root = logging.getLogger()
    level, handlers, disabled = root.level, list(root.handlers), logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # HQQ: torch.from_numpy on read-only arrays
            yield
    finally:
        logging.disable(disabled)
        root.setLevel(level)
        root.handlers[:] = handlers


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
    ``<name>_Q4``, ``<name>_Q8``), which is how the masks are matched back to the float weights.
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
            name = re.sub(r"_Q\d+(G\d+)?$", "", node.input[1])  # <name>_Q4 (rtn, hqq), <name>_Q4G32 (k_quant)
            if zp is not None and zp.dtype.kind == "f":  # hqq: float zero points, 0 only where code == zp exactly
                masks[name] = _float_zp_zero_mask(b, zp, attrs["K"], attrs["N"], attrs["block_size"], attrs["bits"])
            else:
                masks[name] = sparsity.matmul_nbits_zero_mask(b, zp, attrs["K"], attrs["N"], attrs["block_size"],
                                                              bits=attrs["bits"])  # fmt: skip
    return masks


def _float_zp_zero_mask(b_packed: np.ndarray, zp: np.ndarray, k: int, n: int, block: int, bits: int) -> np.ndarray:
    """``[K, N]`` "dequantizes to 0" of a MatMulNBits weight whose zero points are floats ``[N * blocks]``."""
    codes = sparsity.unpack_uint4(b_packed) if bits == 4 else np.asarray(b_packed, np.uint8)
    codes = codes.reshape(n, -1)[:, :k].astype(np.float32)  # (N, K): drop K padding
    zp_per_elem = np.repeat(zp.reshape(n, -1), block, axis=1)[:, :k]  # (N, K)
    return (codes == zp_per_elem).T


def _base_name(name: str, suffix: str) -> str:
    return name[: -len(suffix)] if name.endswith(suffix) else name


def sparsity_summary(sparse_names: list[str], quantized_model=None) -> dict | None:
    """``{"weights": n 2:4 weights, "kept": n still 2:4 after quantization}``; None if no 2:4 weight.

    ``sparse_names``: :func:`two_four_weights` of the float graph. ``quantized_model`` None: no
    quantization (float32 keeps every zero), so all are kept.
    """
    if not sparse_names:
        return None
    if quantized_model is None:
        return {"weights": len(sparse_names), "kept": len(sparse_names)}
    masks = quantized_zero_masks(quantized_model)
    kept = sum(1 for n in sparse_names if n in masks and sparsity.is_2_4_mask(masks[n], axis=0))
    return {"weights": len(sparse_names), "kept": kept}

"""2:4 checks (pure numpy) and the MatMulNBits layout they read, against onnxruntime's quantizer."""

from __future__ import annotations

import numpy as np
import pytest

from edgeprune.export.onnx import sparsity


def _two_four(k: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(k, n)).astype(np.float32)
    # zero the 2 smallest of every 4 consecutive rows (K is the reduction axis of ONNX MatMul's B)
    groups = w.reshape(k // 4, 4, n)
    order = np.argsort(np.abs(groups), axis=1)
    np.put_along_axis(groups, order[:, :2], 0.0, axis=1)
    return groups.reshape(k, n)


def test_is_2_4():
    w = _two_four(8, 3)
    assert sparsity.is_2_4(w, axis=0)
    assert not sparsity.is_2_4(w, axis=1)  # 3 columns: not a multiple of 4
    w[0, 0] = w[1, 0] = w[2, 0] = 1.0  # a group with one zero left
    assert not sparsity.is_2_4(w, axis=0)
    assert not sparsity.is_2_4(np.zeros((0, 4)))


def test_unpack_uint4_low_nibble_first():
    np.testing.assert_array_equal(sparsity.unpack_uint4(np.array([[0x21, 0xF0]], np.uint8)), [[1, 2, 0, 15]])


@pytest.mark.parametrize("bits, block", [(4, 32), (4, 16), (8, 32)])
def test_zero_mask_reads_onnxruntime_matmul_nbits(bits, block):
    """Quantize a 2:4 weight with onnxruntime's quantizer; the mask must find exactly its zeros."""
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    k, n = 48, 8  # K not a multiple of 32: exercises the padding of the last block
    w = _two_four(k, n)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
        initializer=[numpy_helper.from_array(w, "w")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    q = MatMulNBitsQuantizer(model, bits=bits, block_size=block, is_symmetric=True, op_types_to_quantize=("MatMul",))
    q.process()
    qm = q.model.model
    node = next(nd for nd in qm.graph.node if nd.op_type == "MatMulNBits")
    inits = {t.name: numpy_helper.to_array(t) for t in qm.graph.initializer}
    mask = sparsity.matmul_nbits_zero_mask(inits[node.input[1]], None, k, n, block, bits=bits)
    np.testing.assert_array_equal(mask, w == 0)
    assert sparsity.is_2_4_mask(mask)
    # the layout is right beyond zeros too: dequantize and compare
    codes = (sparsity.unpack_uint4(inits[node.input[1]]) if bits == 4 else inits[node.input[1]]).reshape(n, -1)[:, :k]
    scales = np.repeat(inits[node.input[2]].reshape(n, -1), block, axis=1)[:, :k]
    deq = ((codes.astype(np.float32) - (1 << (bits - 1))) * scales).T  # (K, N)
    assert np.abs(deq - w).max() <= np.abs(w).max() / (2 ** (bits - 1) - 1)

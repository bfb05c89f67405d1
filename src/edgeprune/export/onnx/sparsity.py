"""2:4 sparsity checks on ONNX weights (pure numpy).

A 2:4-sparse weight has at least two zeros in every group of four consecutive elements along its
reduction (input) dimension. ONNX ``MatMul`` stores ``B`` as ``[K, N]`` (the transpose of torch's
``[out, in]``), so groups run along axis 0. Exporting and quantizing must keep those zeros
exactly zero: float32 does trivially; symmetric int8 maps 0 to 0; ``MatMulNBits`` maps 0 to its
block's zero point. The check reads the quantized codes back rather than trusting that.

Only NVIDIA Ampere-class and newer GPUs turn the pattern into speed (sparse tensor cores, through
TensorRT: ORT's TensorRT EP option ``trt_sparsity_enable``); on CPUs it only changes accuracy and,
once compressed, storage.
"""

from __future__ import annotations

import numpy as np


def is_2_4(weight: np.ndarray, axis: int = 0) -> bool:
    """True if every group of 4 along ``axis`` has at least 2 zeros (``axis`` length a multiple of 4)."""
    zeros = np.asarray(weight) == 0
    return is_2_4_mask(zeros, axis)


def is_2_4_mask(zeros: np.ndarray, axis: int = 0) -> bool:
    """Same as :func:`is_2_4`, on a boolean "is zero" array."""
    zeros = np.moveaxis(np.asarray(zeros, dtype=bool), axis, 0)
    k = zeros.shape[0]
    if k == 0 or k % 4:
        return False
    # (K, ...) -> (K/4, 4, ...): count zeros per group of four
    groups = zeros.reshape(k // 4, 4, *zeros.shape[1:])
    return bool((groups.sum(axis=1) >= 2).all())


def unpack_uint4(packed: np.ndarray) -> np.ndarray:
    """Split each byte into two 4-bit codes, low nibble first: (..., n) uint8 -> (..., 2n) uint8."""
    packed = np.asarray(packed, dtype=np.uint8)
    out = np.empty(packed.shape[:-1] + (packed.shape[-1] * 2,), dtype=np.uint8)
    out[..., 0::2] = packed & 0x0F
    out[..., 1::2] = packed >> 4
    return out


def matmul_nbits_zero_mask(
    b_packed: np.ndarray, zero_points: np.ndarray | None, k: int, n: int, block_size: int, *, bits: int = 4
) -> np.ndarray:
    """Which elements of a ``MatMulNBits`` weight dequantize to exactly 0, as ``[K, N]``.

    ``b_packed`` is ``[N, n_blocks, block_size*bits/8]`` uint8 (4-bit: two codes a byte, low
    nibble first; 8-bit: one code a byte); ``zero_points`` is None (symmetric: 2**(bits-1)) or
    uint8 ``[N, n_blocks]`` packed the same way. An element is zero iff its code equals its block's
    zero point (an all-zero block quantizes to codes == zero point whatever its scale).
    """
    if bits not in (4, 8):
        raise ValueError(f"only 4- and 8-bit MatMulNBits weights are read, got {bits}")
    unpack = unpack_uint4 if bits == 4 else (lambda a: np.asarray(a, dtype=np.uint8))
    n_blocks = b_packed.shape[1]
    codes = unpack(b_packed).reshape(n, n_blocks * block_size)[:, :k]  # (N, K): drop K padding
    if zero_points is None:
        zp = np.full((n, n_blocks), 1 << (bits - 1), dtype=np.uint8)
    else:
        zp = unpack(np.asarray(zero_points, dtype=np.uint8).reshape(n, -1))[:, :n_blocks]
    zp_per_elem = np.repeat(zp, block_size, axis=1)[:, :k]  # (N, K)
    return (codes == zp_per_elem).T  # (K, N)

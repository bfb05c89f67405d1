"""Pure functions of the GGUF layout: Q/K permutation, llama.cpp's width limits, tensor types.

No file I/O and no torch here: numpy arrays and ints in, numpy arrays and decisions out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from edgeprune.errors import EdgepruneError
from edgeprune.export.gguf import tables


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder Q or K projection rows from HF's rotate-half RoPE to llama.cpp's pairwise RoPE.

    Within each head HF rotates dimension i together with i + d/2; llama.cpp rotates 2i with 2i+1.
    Row ``h*d + i`` (i < d/2) moves to ``h*d + 2i`` and row ``h*d + d/2 + i`` to ``h*d + 2i + 1``.
    Works for weights ``(n_head*d, in)`` and biases ``(n_head*d,)``.
    """
    if n_head == 0:
        return w
    rows = w.shape[0]
    if rows % (2 * n_head):
        raise ValueError(f"{rows} rows do not split into {n_head} heads of even size")
    # (n_head*d, ...) -> (n_head, 2, d/2, ...): axis 1 picks the half, axis 2 the pair
    halves = w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:])
    # swap so that the pair index varies fastest within a head, then flatten back to (n_head*d, ...)
    return halves.swapaxes(1, 2).reshape(w.shape)


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of :func:`permute_qk` (used to read GGUF weights back into HF layout)."""
    if n_head == 0:
        return w
    rows = w.shape[0]
    # (n_head*d, ...) -> (n_head, d/2, 2, ...) -> swap back -> (n_head*d, ...)
    pairs = w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:])
    return pairs.swapaxes(1, 2).reshape(w.shape)


def llama3_rope_factors(theta: float, head_dim: int, scaling: dict) -> np.ndarray:
    """Per-frequency divisors of Llama-3 RoPE scaling, as llama.cpp's ``rope_freqs.weight``.

    Same formula as transformers' ``_compute_llama3_parameters``: high frequencies are kept, low
    ones divided by ``factor``, and the band between is interpolated smoothly.
    """
    factor = float(scaling.get("factor", 8.0))
    low = float(scaling.get("low_freq_factor", 1.0))
    high = float(scaling.get("high_freq_factor", 4.0))
    old_ctx = float(scaling.get("original_max_position_embeddings", 8192))
    freqs = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    out = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < old_ctx / high:
            out.append(1.0)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


# -- per-layer widths -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerPlan:
    """Widths as written to the GGUF, and what had to change to satisfy llama.cpp."""

    arch: str
    heads: tuple[int, ...]
    kv_heads: tuple[int, ...]
    ff: tuple[int, ...]  # as written (a zero-MLP layer with attention gets ZERO_MLP_CHANNELS)
    zero_mlp_layers: tuple[int, ...]  # layers given a zero MLP

    @property
    def per_layer(self) -> bool:
        return self.arch == tables.PER_LAYER_ARCH


def plan_layers(heads, kv_heads, ff, uniform_arch: str) -> LayerPlan:
    """Choose the architecture for these widths and check them against llama.cpp's limits.

    Uniform widths (every layer has attention and an MLP of the same size) keep the family's own
    architecture; anything else becomes ``deci``, whose limits are raised as one-line errors.
    """
    heads, kv_heads, ff = tuple(heads), tuple(kv_heads), tuple(ff)
    n = len(heads)
    if not (n == len(kv_heads) == len(ff)) or n == 0:
        raise EdgepruneError(f"per-layer widths disagree: {len(heads)} heads, {len(kv_heads)} KV heads, {len(ff)} MLP widths")
    for i, (h, k) in enumerate(zip(heads, kv_heads)):
        if (h == 0) != (k == 0):
            raise EdgepruneError(f"layer {i} has {h} heads and {k} KV heads: both must be 0 or both positive")
        if k and h % k:
            raise EdgepruneError(f"layer {i} has {h} heads, not a multiple of its {k} KV heads: llama.cpp needs whole GQA groups")
    if len(set(heads)) == 1 and len(set(kv_heads)) == 1 and len(set(ff)) == 1 and heads[0] and ff[0]:
        return LayerPlan(uniform_arch, heads, kv_heads, ff, ())
    if heads[0] == 0:
        raise EdgepruneError(
            "layer 0 has no attention heads: llama.cpp's deci architecture derives the head size from "
            "layer 0, so keep at least one KV group there"
        )
    zero = tuple(i for i, (h, f) in enumerate(zip(heads, ff)) if h and not f)
    written = tuple(tables.ZERO_MLP_CHANNELS if i in zero else f for i, f in enumerate(ff))
    return LayerPlan(tables.PER_LAYER_ARCH, heads, kv_heads, written, zero)


# -- tensor types -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TypeChoice:
    ggml: GGMLQuantizationType
    wanted: GGMLQuantizationType
    reason: str = ""  # why `ggml` differs from `wanted` when it is a fallback; "" otherwise

    @property
    def is_fallback(self) -> bool:
        return bool(self.reason)


def block_size(t: GGMLQuantizationType) -> int:
    return GGML_QUANT_SIZES[t][0]


def tensor_type(name: str, shape: tuple[int, ...], qtype: tables.QType, *, tied: bool) -> TypeChoice:
    """The GGML type of one tensor in a file of ``qtype``, following llama.cpp's converter.

    1-D tensors (norms, biases, rope factors) stay F32. For legacy quantized types the output
    matrix gets ``OUTPUT_TYPE_FOR_QUANTIZED``. A row length (``shape[-1]``, ne0) that the block size
    does not divide falls back to F16, and the choice says so.
    """
    f32 = GGMLQuantizationType.F32
    if len(shape) < 2:
        return TypeChoice(f32, f32)
    base = qtype.ggml if qtype.ggml is not None else GGMLQuantizationType.F32
    is_output = name == tables.OUTPUT_TENSOR or (tied and name == tables.TIED_OUTPUT_TENSOR)
    wanted = base
    if is_output and block_size(base) > 1 and base != GGMLQuantizationType.Q8_0:
        wanted = tables.OUTPUT_TYPE_FOR_QUANTIZED
    row = shape[-1]
    if row % block_size(wanted):
        fb = tables.ROW_FALLBACK_TYPE
        return TypeChoice(fb, wanted, f"row length {row} is not a multiple of {wanted.name}'s block of {block_size(wanted)}")
    return TypeChoice(wanted, wanted)

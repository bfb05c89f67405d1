"""Group-wise integer weight quantization as pure tensor functions (round-to-nearest), and the bit
packing the compressed artifact uses. The error-compensating GPTQ variant lives beside SparseGPT
in ``sparsegpt.py``: it is the same OBS loop with a fixed mask.

Grid (``QuantSpec``): ``bits`` 4 or 8, one scale per ``group_size`` consecutive *input* columns
of the dense ``(out, in)`` layout (so ``group_size`` must divide ``in_features``), symmetric or
asymmetric:

- symmetric: ``code = clamp(round(w / s), -2^(b-1), 2^(b-1) - 1)``, ``s = max|w| / (2^(b-1) - 1)``;
- asymmetric: ``code = clamp(round(w / s) + z, 0, 2^b - 1)``, ``s = (max(w, 0) - min(w, 0)) / (2^b - 1)``,
  ``z = round(-min(w, 0) / s)`` an integer, so 0.0 is exactly representable;
- dequantized ``w = (code - z) * s`` in float32 (``z = 0`` when symmetric).

Scales are rounded to float16 *before* the codes are chosen, so the float16 scales stored in the
artifact reproduce the in-memory weights bit for bit. Pruned weights (``keep == False``) get the
code of 0.0 and dequantize to exactly 0; scales are computed from the kept weights only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgeprune.errors import EdgepruneError

BITS = (4, 8)
GROUP_SIZES = (32, 64, 128)
_FP16_TINY = float(torch.finfo(torch.float16).tiny)  # smallest normal float16: floor for scales


@dataclass(frozen=True)
class QuantSpec:
    bits: int = 4
    group_size: int = 64
    symmetric: bool = True

    def __post_init__(self):
        if self.bits not in BITS:
            raise EdgepruneError(f"quantization to {self.bits} bits is not supported: use int4 or int8")
        if not isinstance(self.group_size, int) or self.group_size < 1:
            raise EdgepruneError(f"quantization group size must be a positive integer, got {self.group_size!r}")

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1)) if self.symmetric else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.symmetric else 2**self.bits - 1

    @property
    def name(self) -> str:
        return f"int{self.bits}-g{self.group_size}-{'sym' if self.symmetric else 'asym'}"


def check_group(in_features: int, group_size: int, where: str = "a layer") -> None:
    if in_features % group_size:
        divisors = [g for g in GROUP_SIZES if in_features % g == 0]
        fix = f"use --group {' or '.join(map(str, divisors))}" if divisors else "pick a group size dividing it"
        raise EdgepruneError(
            f"quantization group size {group_size} does not divide the input width {in_features} of {where}: {fix}"
        )


def round_scale(scale: torch.Tensor) -> torch.Tensor:
    """Scales as stored: float16 values (floored at the smallest normal float16), held in float32."""
    return scale.clamp_min(_FP16_TINY).to(torch.float16).float()


def group_params(weight: torch.Tensor, spec: QuantSpec, keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, zero)`` for every group of ``spec.group_size`` columns: both ``(out, in / group)``.

    ``scale`` is float32 holding float16 values; ``zero`` is int32 (all 0 when symmetric).
    Only kept weights (``keep``) set the range; an all-zero group gets scale 1.
    """
    out_f, in_f = weight.shape
    check_group(in_f, spec.group_size)
    w = weight.detach().float()
    if keep is not None:
        w = torch.where(keep, w, torch.zeros((), dtype=w.dtype))
    g = w.reshape(out_f, in_f // spec.group_size, spec.group_size)  # (out, in) -> (out, in/g, g)
    if spec.symmetric:
        amax = g.abs().amax(-1)
        scale = round_scale(torch.where(amax > 0, amax / spec.qmax, torch.ones_like(amax)))
        zero = torch.zeros_like(scale, dtype=torch.int32)
    else:
        lo, hi = g.amin(-1).clamp_max(0), g.amax(-1).clamp_min(0)
        span = hi - lo
        scale = round_scale(torch.where(span > 0, span / spec.qmax, torch.ones_like(span)))
        zero = torch.round(-lo / scale).clamp(0, spec.qmax).to(torch.int32)
    return scale, zero


def quantize_codes(weight: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Integer codes ``(out, in)`` (int32) of ``weight`` on the grid ``(scale, zero)``."""
    out_f, in_f = weight.shape
    g = weight.detach().float().reshape(out_f, -1, spec.group_size)  # (out, in) -> (out, in/g, g)
    q = torch.round(g / scale[..., None]) + zero[..., None]
    return q.clamp(spec.qmin, spec.qmax).to(torch.int32).reshape(out_f, in_f)


def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int) -> torch.Tensor:
    """``(code - zero) * scale`` as float32 ``(out, in)``: the one formula writer and loader share."""
    out_f, in_f = codes.shape
    q = codes.to(torch.int32).reshape(out_f, in_f // group_size, group_size)  # (out, in) -> (out, in/g, g)
    return ((q - zero.to(torch.int32)[..., None]).float() * scale.float()[..., None]).reshape(out_f, in_f)


@dataclass
class QuantizedWeight:
    """Codes, float16-valued scales and integer zero points of one ``(out, in)`` weight."""

    codes: torch.Tensor  # (out, in) int32; pruned positions hold the code of 0.0
    scale: torch.Tensor  # (out, in / group) float32 holding float16 values
    zero: torch.Tensor  # (out, in / group) int32
    spec: QuantSpec

    def dequantize(self) -> torch.Tensor:
        return dequantize(self.codes, self.scale, self.zero, self.spec.group_size)


def zero_code(zero: torch.Tensor, group_size: int) -> torch.Tensor:
    """``(out, in)`` codes of 0.0: each group's zero point repeated over its columns."""
    return zero.repeat_interleave(group_size, dim=1)


def rtn_quantize(weight: torch.Tensor, spec: QuantSpec, keep: torch.Tensor | None = None) -> QuantizedWeight:
    """Round-to-nearest group-wise quantization; pruned weights (``keep == False``) stay exactly 0."""
    scale, zero = group_params(weight, spec, keep)
    codes = quantize_codes(weight, scale, zero, spec)
    if keep is not None:
        codes = torch.where(keep, codes, zero_code(zero, spec.group_size))
    return QuantizedWeight(codes, scale, zero, spec)


def hessian_error(weight: torch.Tensor, approx: torch.Tensor, hessian: torch.Tensor) -> float:
    """``tr((W - Q) H (W - Q)^T)``: the summed squared output error ``||(W - Q) X||^2`` when ``H = X X^T``."""
    d = (weight.double() - approx.double())
    return float(((d @ hessian.double()) * d).sum())


# -- bit packing (storage) ---------------------------------------------------------------------------


def pack_int4(values: torch.Tensor) -> torch.Tensor:
    """uint8 values in [0, 16) ``(..., k)`` -> ``(..., ceil(k / 2))`` bytes, even element in the low nibble."""
    v = values.to(torch.uint8)
    if v.shape[-1] % 2:
        v = torch.nn.functional.pad(v, (0, 1))
    pairs = v.reshape(*v.shape[:-1], -1, 2)  # (..., k) -> (..., k/2, 2)
    return pairs[..., 0] | (pairs[..., 1] << 4)


def unpack_int4(packed: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of :func:`pack_int4`: ``(..., ceil(k / 2))`` bytes -> ``(..., k)`` uint8 values."""
    lo, hi = packed & 0x0F, packed >> 4
    both = torch.stack([lo, hi], dim=-1).reshape(*packed.shape[:-1], -1)  # (..., k/2, 2) -> (..., k)
    return both[..., :k]

"""SparseGPT pruning and GPTQ quantization: one Optimal-Brain-Surgeon loop, as pure tensor functions.

Both methods minimise the layer's output error ``||W X - W' X||^2`` one input column at a time.
With ``H = X X^T`` (``(in, in)``, summed over calibration tokens) and ``U`` the upper Cholesky
factor of the damped inverse ``(H + lambda I)^-1``, column ``i`` is replaced by ``q`` (its pruned
and/or quantized value) and the error ``(w - q) / U[i, i]`` is spread over the columns not yet
visited: ``W[:, i:] -= err * U[i, i:]`` (Frantar & Alistarh, arXiv 2301.00774 and 2210.17323).
Columns are processed in blocks of ``blocksize`` with lazy batched updates of the rest, as the
official code does.

- :func:`sparsegpt_prune` chooses the mask inside the loop. **N:M**: at the first column of each
  group of ``M``, the ``M - N`` weights with the smallest ``w^2 / U[j, j]^2`` (the OBS saliency,
  computed from the weights as updated so far) are pruned. **Unstructured**: per column block, the
  ``sparsity`` fraction with the smallest saliency over the whole block.
- :func:`gptq_quantize` keeps a given mask fixed: pruned weights are set to exactly 0 (and their
  error is compensated like any other), kept weights are rounded to the group-wise grid of
  ``quantize.py``. A group's scale is computed when the loop reaches the group's first column,
  from the weights as updated so far (GPTQ without act-order); ``blocksize`` is rounded up to a
  multiple of ``group_size`` so a group never straddles two blocks.

Pruning and quantization are two passes (prune, then GPTQ on the fixed mask) rather than one
fused loop: a quantization group's scale would otherwise be computed before all of its mask is
chosen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgeprune.compress.sparse.masks import check_divides
from edgeprune.compress.quant.quantize import QuantizedWeight, QuantSpec, check_group, group_params
from edgeprune.threads import torch_threads
from edgeprune.errors import EdgepruneError

DEFAULT_BLOCKSIZE = 128
DEFAULT_DAMP = 0.01  # lambda = damp * mean(diag(H)), the official default


def inverse_hessian_factor(hessian: torch.Tensor, damp: float = DEFAULT_DAMP) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U, dead)``: upper Cholesky factor of ``(H + lambda I)^-1`` (float32) and the dead inputs.

    Dead inputs (``H[j, j] == 0``: the feature was always 0) get ``H[j, j] = 1``; their weights do
    not matter and are zeroed by the callers. If ``H + lambda I`` is not positive definite the
    damping is raised tenfold, up to three times.
    """
    h = hessian.detach().double().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    mean_diag = float(torch.diag(h).mean())
    eye = torch.eye(h.shape[0], dtype=h.dtype)
    for attempt in range(4):
        chol, info = torch.linalg.cholesky_ex(h + damp * 10**attempt * mean_diag * eye)
        if int(info) == 0:
            break
    else:
        raise EdgepruneError(
            "the calibration Hessian is not positive definite even with 1000x damping: "
            "use more calibration windows or the wanda/magnitude method"
        )
    hinv = torch.cholesky_inverse(chol)
    upper = torch.linalg.cholesky(hinv, upper=True)
    return upper.float(), dead


@dataclass
class OBSResult:
    weight: torch.Tensor  # (out, in) float32: pruned entries exactly 0, kept ones updated (and quantized)
    keep: torch.Tensor  # (out, in) bool
    quantized: QuantizedWeight | None  # codes / scales when a QuantSpec was given
    loss: float  # sum over columns of (w - q)^2 / U[i, i]^2: the OBS estimate of the added output error


def sparsegpt_prune(weight: torch.Tensor, hessian: torch.Tensor, *, nm: tuple[int, int] | None = (2, 4),
                    sparsity: float = 0.5, blocksize: int = DEFAULT_BLOCKSIZE, damp: float = DEFAULT_DAMP) -> OBSResult:  # fmt: skip
    """SparseGPT: N:M (``nm``) or unstructured (``nm=None``, at ``sparsity``) mask plus OBS update."""
    if nm is not None:
        check_divides(weight.shape[1], nm[1])
        blocksize = _round_up(blocksize, nm[1])
    elif not 0.0 <= sparsity < 1.0:
        raise EdgepruneError(f"sparsity must be in [0, 1), got {sparsity!r}")
    return _obs(weight, hessian, nm=nm, sparsity=sparsity if nm is None else None, keep=None, spec=None,
                blocksize=blocksize, damp=damp)  # fmt: skip


def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor, spec: QuantSpec, *, keep: torch.Tensor | None = None,
                  blocksize: int = DEFAULT_BLOCKSIZE, damp: float = DEFAULT_DAMP, act_order: bool = False) -> OBSResult:  # fmt: skip
    """GPTQ: error-compensating group-wise quantization that keeps ``keep == False`` weights at 0.

    ``act_order``: visit the columns by decreasing ``H[j, j]`` (the inputs with the most energy
    first, while the most later columns are left to absorb their error). The group grids are then
    fixed up front from the weights as given ("static groups"), so groups stay consecutive input
    columns in the stored layout.
    """
    check_group(weight.shape[1], spec.group_size)
    if keep is None:
        keep = torch.ones_like(weight, dtype=torch.bool)
    return _obs(weight, hessian, nm=None, sparsity=None, keep=keep, spec=spec,
                blocksize=_round_up(max(blocksize, spec.group_size), spec.group_size), damp=damp, act_order=act_order)  # fmt: skip


def _round_up(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple


def _obs(weight, hessian, **kw) -> OBSResult:
    # The column loop is thousands of tiny ops: thread hand-offs cost more than they save (10x on a
    # busy 2-core machine), so it runs on one intra-op thread (the caller's count is restored).
    with torch.no_grad(), torch_threads(1):
        return _obs_loop(weight, hessian, **kw)


def _obs_loop(weight, hessian, *, nm, sparsity, keep, spec: QuantSpec | None, blocksize: int, damp: float,
              act_order: bool = False) -> OBSResult:  # fmt: skip
    out_f, in_f = weight.shape
    if hessian.shape != (in_f, in_f):
        raise ValueError(f"hessian must be ({in_f}, {in_f}), got {tuple(hessian.shape)}")
    if act_order and (spec is None or nm is not None or sparsity is not None):
        raise ValueError("act_order is for GPTQ with a fixed mask")
    w = weight.detach().float().clone()
    keep = torch.ones_like(w, dtype=torch.bool) if keep is None else keep.clone()
    perm = None
    if act_order:
        dead0 = torch.diag(hessian) == 0
        w[:, dead0] = 0.0
        scales_static, zeros_static = group_params(w, spec, keep)  # (out, in/g): the grids, fixed up front
        perm = torch.argsort(torch.diag(hessian), descending=True, stable=True)
        hessian, w, keep = hessian[perm][:, perm], w[:, perm], keep[:, perm]
        group_of = perm // spec.group_size  # (in,): the stored group of each visited column
    u, dead = inverse_hessian_factor(hessian, damp)
    w[:, dead] = 0.0
    out = torch.zeros_like(w)
    if spec is not None:
        g = spec.group_size
        codes = torch.zeros(out_f, in_f, dtype=torch.int32)
        scales = torch.zeros(out_f, in_f // g)
        zeros = torch.zeros(out_f, in_f // g, dtype=torch.int32)
        scale = zero = None
        if act_order:
            scales, zeros = scales_static, zeros_static
    loss = 0.0
    for i1 in range(0, in_f, blocksize):
        i2 = min(i1 + blocksize, in_f)
        w1 = w[:, i1:i2].clone()  # (out, cnt): this block, updated column by column
        q1 = torch.zeros_like(w1)
        err1 = torch.zeros_like(w1)
        u1 = u[i1:i2, i1:i2]
        d1 = torch.diag(u1)  # (cnt,)
        if sparsity is not None:  # unstructured: one threshold over the block's saliencies
            sal = (w1**2 / d1[None, :] ** 2).reshape(-1)
            n_prune = int(sal.numel() * sparsity)
            block_keep = torch.ones_like(sal, dtype=torch.bool)
            block_keep[torch.sort(sal, stable=True).indices[:n_prune]] = False
            keep[:, i1:i2] = block_keep.reshape(w1.shape)  # (out*cnt,) -> (out, cnt)
        for i in range(i2 - i1):
            col = i1 + i
            if nm is not None and i % nm[1] == 0:  # choose this group's mask from the updated weights
                n, m = nm
                sal = w1[:, i : i + m] ** 2 / d1[i : i + m][None, :] ** 2  # (out, m)
                pruned = torch.sort(sal, dim=1, stable=True).indices[:, : m - n]
                group_keep = torch.ones_like(sal, dtype=torch.bool).scatter_(1, pruned, False)
                keep[:, col : col + m] = group_keep
            if act_order:  # the static grid of the group this column belongs to
                scale, zero = scales[:, group_of[col], None], zeros[:, group_of[col], None]
            elif spec is not None and col % g == 0:  # this group's grid, from the updated weights
                scale, zero = group_params(w1[:, i : i + g], spec, keep[:, col : col + g])  # (out, 1) each
                scales[:, col // g], zeros[:, col // g] = scale[:, 0], zero[:, 0]
            col_w = w1[:, i]
            k = keep[:, col]
            if spec is not None:
                c = (torch.round(col_w / scale[:, 0]) + zero[:, 0]).clamp(spec.qmin, spec.qmax).to(torch.int32)
                c = torch.where(k, c, zero[:, 0])
                codes[:, col] = c
                q = (c - zero[:, 0]).float() * scale[:, 0]  # the formula of quantize.dequantize, bit for bit
            else:
                q = torch.where(k, col_w, torch.zeros((), dtype=col_w.dtype))
            q1[:, i] = q
            diff = col_w - q
            loss += float((diff**2).sum()) / float(u1[i, i]) ** 2
            e = diff / u1[i, i]
            w1[:, i:] -= e[:, None] * u1[i, i:][None, :]  # rank-1 update of the block's later columns
            err1[:, i] = e
        out[:, i1:i2] = q1
        w[:, i2:] -= err1 @ u[i1:i2, i2:]  # lazy batched update of the later blocks
    if perm is not None:  # back to the stored column order
        inv = torch.argsort(perm)
        out, keep, codes = out[:, inv], keep[:, inv], codes[:, inv]
    quantized = QuantizedWeight(codes, scales, zeros, spec) if spec is not None else None
    return OBSResult(out, keep, quantized, loss)

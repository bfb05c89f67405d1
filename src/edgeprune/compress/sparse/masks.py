"""Sparsity masks as pure tensor functions: N:M (default 2:4) and unstructured, scored by magnitude
or Wanda. No model, no hooks: ``(out_features, in_features)`` weights and scores in, boolean masks
out (``True`` = the weight is kept).

Conventions (NVIDIA's, which Wanda and SparseGPT follow for 2:4 and 4:8):

- **N:M** keeps at most ``N`` weights in every group of ``M`` consecutive *input* weights of one
  output row: 2:4 keeps 2 of every 4 (50 %), 4:8 keeps 4 of every 8. ``N`` must be in ``[1, M)``
  and ``M`` must divide ``in_features``.
- **Unstructured** keeps the ``1 - sparsity`` highest scores, compared within each output row
  (Wanda's choice, ``per_row=True``) or across the whole matrix (``per_row=False``).
- Scores: **magnitude** ``|W|``; **Wanda** ``|W_ij| * ||X_j||_2``, where ``||X_j||_2`` is the L2
  norm of input feature ``j`` over all calibration tokens (arXiv 2306.11695). Within one output
  row Wanda only rescales columns, so it differs from magnitude only through the activations.
- Ties are broken towards the lower input index (``torch.topk`` on a stable sort), so masks are
  deterministic.
"""

from __future__ import annotations

import re

import torch

from edgeprune.errors import EdgepruneError

_PATTERN = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def parse_pattern(pattern: str) -> tuple[int, int] | None:
    """``"2:4"`` -> ``(2, 4)``; ``"unstructured"`` -> ``None``. Bad input -> EdgepruneError."""
    if str(pattern).strip().lower() == "unstructured":
        return None
    match = _PATTERN.match(str(pattern))
    if not match:
        raise EdgepruneError(f"sparsity pattern {pattern!r} is not N:M or 'unstructured': pass e.g. 2:4, 4:8 or unstructured")
    n, m = int(match.group(1)), int(match.group(2))
    if m < 2 or not 1 <= n < m:
        raise EdgepruneError(
            f"sparsity pattern {n}:{m} keeps {n} of every {m} weights: N must be at least 1 and less than M "
            "(e.g. 2:4 keeps half)"
        )
    return n, m


def check_divides(in_features: int, m: int, where: str = "a layer") -> None:
    """EdgepruneError if groups of ``m`` input weights do not tile ``in_features``."""
    if in_features % m:
        raise EdgepruneError(
            f"the N:M group size {m} does not divide the input width {in_features} of {where}: "
            f"pick M dividing {in_features} (e.g. 2:4 or 4:8) or skip that layer"
        )


# -- scores -----------------------------------------------------------------------------------------


def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    return weight.detach().abs().float()


def wanda_scores(weight: torch.Tensor, input_norm: torch.Tensor) -> torch.Tensor:
    """``|W_ij| * ||X_j||_2``; ``input_norm``: ``(in_features,)`` L2 norms of the inputs' features."""
    if input_norm.shape != (weight.shape[1],):
        raise ValueError(f"input_norm must have shape ({weight.shape[1]},), got {tuple(input_norm.shape)}")
    return weight.detach().abs().float() * input_norm.float()[None, :]


# -- masks ------------------------------------------------------------------------------------------


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` highest scores in every group of ``m`` consecutive columns of each row."""
    out_f, in_f = scores.shape
    check_divides(in_f, m)
    if not 1 <= n < m:
        raise EdgepruneError(f"N:M needs 1 <= N < M, got {n}:{m}")
    groups = scores.reshape(out_f, in_f // m, m)  # (out, in) -> (out, in/m, m)
    # a stable descending sort: equal scores keep the lower column (deterministic masks)
    order = torch.sort(groups, dim=-1, descending=True, stable=True).indices[..., :n]  # (out, in/m, n)
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, order, True)
    return keep.reshape(out_f, in_f)  # (out, in/m, m) -> (out, in)


def unstructured_mask(scores: torch.Tensor, sparsity: float, *, per_row: bool = True) -> torch.Tensor:
    """Keep the ``1 - sparsity`` highest scores per output row (or over the whole matrix)."""
    if not 0.0 <= sparsity < 1.0:
        raise EdgepruneError(f"sparsity must be in [0, 1), got {sparsity!r}")
    flat = scores if per_row else scores.reshape(1, -1)  # (out, in) or (1, out*in)
    n_prune = int(flat.shape[1] * sparsity)
    keep = torch.ones_like(flat, dtype=torch.bool)
    if n_prune:
        # ascending stable sort: the lowest scores (lower column first on ties) are pruned
        low = torch.sort(flat, dim=1, stable=True).indices[:, :n_prune]
        keep.scatter_(1, low, False)
    return keep.reshape(scores.shape)


def make_mask(scores: torch.Tensor, nm: tuple[int, int] | None, sparsity: float = 0.5, *, per_row: bool = True) -> torch.Tensor:
    """N:M mask when ``nm`` is given, else unstructured at ``sparsity``."""
    return nm_mask(scores, *nm) if nm is not None else unstructured_mask(scores, sparsity, per_row=per_row)


# -- checks and recovery ----------------------------------------------------------------------------


def satisfies_nm(mask_or_weight: torch.Tensor, n: int, m: int) -> bool:
    """True when every group of ``m`` consecutive inputs has at most ``n`` kept (nonzero) entries."""
    out_f, in_f = mask_or_weight.shape
    if in_f % m:
        return False
    kept = (mask_or_weight != 0).reshape(out_f, in_f // m, m).sum(-1)  # (out, in/m)
    return bool((kept <= n).all())


def nm_mask_from_weight(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Exactly ``n`` kept positions per group of ``m``: the nonzeros, padded with the first zeros.

    A kept weight can be exactly zero (quantisation rounds small values to 0), so nonzeros alone can
    count fewer than ``n`` per group; the packed format stores exactly ``n`` values per group, so the
    missing ones are taken from the group's zeros (lowest column first) and stored as explicit zeros.
    Raises EdgepruneError if a group has more than ``n`` nonzeros (the weight is not N:M sparse).
    """
    if not satisfies_nm(weight, n, m):
        raise EdgepruneError(
            f"a weight of shape {tuple(weight.shape)} is not {n}:{m} sparse: prune it with the {n}:{m} pattern first"
        )
    out_f, in_f = weight.shape
    nz = (weight != 0).reshape(out_f, in_f // m, m)  # (out, in) -> (out, in/m, m)
    # rank inside the group: nonzeros first, then zeros, each by column -> keep the first n
    key = (~nz).to(torch.int16) * m + torch.arange(m, dtype=torch.int16)  # (out, in/m, m)
    first = torch.argsort(key, dim=-1)[..., :n]
    keep = torch.zeros_like(nz).scatter_(-1, first, True)
    return keep.reshape(out_f, in_f)

"""Pure maths of depth pruning: how much a layer (or a run of layers) changes the residual stream,
and which layers go. Tensors in, numbers out; the walk over the model is in ``prune.py``.

- ShortGPT (arXiv 2403.03853) block influence: ``BI_l = 1 - mean_t cos(x_l,t, x_l+1,t)``, the mean over
  calibration tokens of one minus the cosine between layer l's input and output hidden states.
- Adapt-Pruner (arXiv 2502.03460) layer importance: ``-mean_t cos(x_l,t, x_l+1,t)``
  (:func:`edgeprune.compress.structured.importance.cosine_similarity_sum`), the same order as BI; what
  differs is that Adapt-Pruner re-measures it after every cut (``prune.py``).
- Gromov et al. (arXiv 2403.17887) angular distance over n layers:
  ``d(l, l+n) = mean_t arccos(cos(x_l,t, x_l+n,t)) / pi`` in [0, 1]; the n consecutive layers
  starting at ``argmin_l d`` go together.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from edgeprune.errors import EdgepruneError


def cosines(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``cos(x_t, y_t)`` along the hidden dim: ``(batch, seq, hidden)`` twice -> ``(batch, seq)`` float64."""
    if x.shape != y.shape:
        raise ValueError(f"hidden states {tuple(x.shape)} and {tuple(y.shape)} differ")
    return torch.nn.functional.cosine_similarity(x.double(), y.double(), dim=-1, eps=1e-12)


def angular_sum(x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
    """Sum over tokens of ``arccos(cos(x_t, y_t)) / pi`` (clamped: rounding can push |cos| past 1), and the token count."""
    angle = torch.arccos(cosines(x, y).clamp(-1.0, 1.0)) / math.pi
    return float(angle.sum()), angle.numel()


def block_influence(cos_sum: float, n: int) -> float:
    """ShortGPT's ``1 - mean cos`` from a sum of cosines over ``n`` tokens (0: the layer changes nothing)."""
    return 1.0 - cos_sum / n if n else 0.0


def removable(n_layers: int, *, protect_first: bool = True, protect_last: bool = True) -> list[int]:
    """The layer indices that may be removed."""
    return list(range(int(protect_first), n_layers - int(protect_last)))


def lowest(scores: Sequence[float], k: int, candidates: Sequence[int]) -> list[int]:
    """The ``k`` candidates with the smallest scores, sorted by index (ties: the earlier layer goes)."""
    if k > len(candidates):
        raise EdgepruneError(f"cannot remove {k} layers: only {len(candidates)} may be removed; remove fewer layers")
    ranked = sorted(candidates, key=lambda i: (scores[i], i))
    return sorted(ranked[:k])


def best_window(distances: Sequence[float], k: int, n_layers: int, *, protect_first: bool = True,
                protect_last: bool = True) -> list[int]:  # fmt: skip
    """Gromov et al.: the ``k`` consecutive layers ``[l, l + k)`` with the smallest ``distances[l]``
    (``d(x_l, x_l+k)``, one per start ``l = 0 .. n_layers - k``), protected layers excluded."""
    ok = [l for l in range(n_layers - k + 1) if l >= int(protect_first) and l + k <= n_layers - int(protect_last)]
    if not ok:
        raise EdgepruneError(f"no {k} consecutive layers of {n_layers} may be removed with the first/last protected: remove fewer")
    if len(distances) != n_layers - k + 1:
        raise ValueError(f"expected {n_layers - k + 1} distances for windows of {k} in {n_layers} layers, got {len(distances)}")
    start = min(ok, key=lambda l: (distances[l], l))
    return list(range(start, start + k))

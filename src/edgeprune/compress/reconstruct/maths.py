"""Pure tensor maths of local reconstruction (``reconstruct.py`` walks the models): the losses, the
masked-LoRA update and its merge, mask enforcement, and how the decoder is cut into submodels.

No model, no hooks: tensors in, tensors out, each function tested alone on small tensors.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.errors import EdgepruneError

LOSSES = ("mse", "cosine", "nmse")
SCHEDULES = ("linear", "cosine")


def recon_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """``mse``: mean squared error over every element (the paper's mean-reduced MSE);
    ``cosine``: ``1 - cos(pred_t, target_t)`` along the last (hidden) dim, averaged over tokens
    (the negative cosine shifted to be >= 0; same gradient);
    ``nmse``: per-token relative MSE ``||pred_t - target_t||^2 / ||target_t||^2`` averaged over tokens,
    so the few tokens carrying massive activations (attention sinks, norms in the thousands) do not
    outweigh all the others as they do in the plain MSE."""
    pred, target = pred.float(), target.float()
    if kind == "mse":
        return F.mse_loss(pred, target)
    if kind == "cosine":
        return 1.0 - F.cosine_similarity(pred, target, dim=-1, eps=1e-8).mean()
    if kind == "nmse":
        return ((pred - target).pow(2).sum(-1) / target.pow(2).sum(-1).clamp_min(1e-12)).mean()
    raise ValueError(f"loss {kind!r} is not one of {', '.join(LOSSES)}")


def relative_mse(pred: torch.Tensor, target: torch.Tensor) -> float:
    """``||pred - target||^2 / ||target||^2``: the reconstruction error as a fraction of the target's energy."""
    pred, target = pred.double(), target.double()
    return float((pred - target).pow(2).sum() / target.pow(2).sum().clamp_min(1e-30))


# -- masks -------------------------------------------------------------------------------------------


def weight_mask(weight: torch.Tensor) -> torch.Tensor:
    """The kept positions of a pruned weight: ``weight != 0`` (``True`` = trainable)."""
    return weight.detach() != 0


@torch.no_grad()
def enforce_masks(masks: dict[nn.Parameter, torch.Tensor]) -> None:
    """Set every pruned entry back to exactly 0 (after an optimizer step)."""
    for p, m in masks.items():
        p.mul_(m.to(p.dtype))


@torch.no_grad()
def mask_grads(masks: dict[nn.Parameter, torch.Tensor]) -> None:
    """Zero the gradient of pruned entries (so the optimizer state of a pruned weight stays 0)."""
    for p, m in masks.items():
        if p.grad is not None:
            p.grad.mul_(m.to(p.grad.dtype))


# -- masked LoRA (PERP's MaskLoRA: W + M ⊙ (B A) keeps the sparsity when merged) ----------------------


def masked_lora_delta(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale * M ⊙ (B A)``: ``b`` ``(out, r)``, ``a`` ``(r, in)``, ``mask`` ``(out, in)`` -> ``(out, in)``."""
    return (b @ a) * mask.to(a.dtype) * scale


class MaskedLoRALinear(nn.Module):
    """``y = (W + s M ⊙ (B A)) x + b`` with ``W``, ``b`` frozen; ``A`` ``(r, in)`` Kaiming-uniform,
    ``B`` ``(out, r)`` zero (so the wrapped layer starts equal to the Linear), ``s = alpha / r``."""

    def __init__(self, linear: nn.Linear, rank: int, alpha: float, *, generator: torch.Generator | None = None):
        super().__init__()
        self.linear = linear
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.scale = alpha / rank
        self.register_buffer("mask", weight_mask(linear.weight).clone())
        a = torch.empty(rank, linear.in_features)
        bound = 1.0 / math.sqrt(linear.in_features)  # nn.Linear's default init bound (kaiming_uniform, a=sqrt(5))
        a.uniform_(-bound, bound, generator=generator)
        self.lora_A = nn.Parameter(a.to(linear.weight.dtype))
        self.lora_B = nn.Parameter(torch.zeros(linear.out_features, rank, dtype=linear.weight.dtype))

    def forward(self, x):
        w = self.linear.weight + masked_lora_delta(self.lora_A, self.lora_B, self.mask, self.scale)
        return F.linear(x, w, self.linear.bias)

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """The wrapped Linear with the masked update folded in (pruned entries stay exactly 0)."""
        delta = masked_lora_delta(self.lora_A.float(), self.lora_B.float(), self.mask, self.scale)
        self.linear.weight.add_(delta.to(self.linear.weight.dtype))
        self.linear.weight.mul_(self.mask.to(self.linear.weight.dtype))  # exact zeros, whatever the rounding
        return self.linear


# -- cutting the decoder into submodels ---------------------------------------------------------------


def block_windows(n_layers: int, k: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]``: consecutive windows of ``k`` layers. ``k`` must divide ``n_layers``."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise EdgepruneError(f"blocks must be a positive integer, got {k!r}")
    if k > n_layers or n_layers % k:
        divisors = [d for d in range(1, n_layers + 1) if n_layers % d == 0]
        raise EdgepruneError(
            f"blocks {k} does not divide the {n_layers} decoder layers into equal windows: "
            f"pick one of {', '.join(map(str, divisors))}"
        )
    return [(s, s + k) for s in range(0, n_layers, k)]


def linear_lr(step: int, total: int, *, peak: float, warmup: float, min_ratio: float = 0.0) -> float:
    """Linear warmup over ``warmup * total`` steps, then linear decay to ``min_ratio * peak`` (the
    paper's linear schedule with warmup). ``step`` counts from 0."""
    from edgeprune.compress.structured.recovery import wsd_lr

    return wsd_lr(step, total, peak=peak, warmup=warmup, decay=1.0 - warmup, min_ratio=min_ratio)


def schedule_lr(step: int, total: int, *, peak: float, warmup: float, min_ratio: float = 0.0, kind: str = "linear") -> float:
    """The LR at ``step`` of ``total``: linear warmup over ``warmup * total`` steps, then ``linear``
    decay (:func:`linear_lr`) or ``cosine`` decay to ``min_ratio * peak``."""
    if kind == "linear":
        return linear_lr(step, total, peak=peak, warmup=warmup, min_ratio=min_ratio)
    if kind == "cosine":
        from edgeprune.compress.sparse.ast import cosine_lr

        return cosine_lr(step, total, peak=peak, warmup=warmup, min_ratio=min_ratio)
    raise ValueError(f"schedule {kind!r} is not one of {', '.join(SCHEDULES)}")


# -- depth-pruned models: which dense layers each kept block stands for --------------------------------


def dense_spans(kept, n_dense: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]``: the dense layers ``[start, stop)`` student block i replaces, for kept
    original layers ``kept`` (ascending) of ``n_dense``: ``[k_i, k_(i+1))``, the first span from 0
    (layers before ``k_0`` are gone too) and the last to ``n_dense``. The spans tile ``0 .. n_dense``."""
    kept = [int(k) for k in kept]
    if not kept or kept != sorted(set(kept)) or kept[0] < 0 or kept[-1] >= n_dense:
        raise EdgepruneError(f"kept layers {kept} are not ascending indices of a {n_dense}-layer model: pass its dense original")
    bounds = [0, *kept[1:], n_dense]
    return list(zip(bounds[:-1], bounds[1:]))


def gap_neighbours(spans: list[tuple[int, int]]) -> list[bool]:
    """Which blocks sit next to a removed gap: the block whose span covers more than one dense layer
    (it absorbs the gap) and the block right after it (its input has drifted)."""
    wide = [e - s > 1 for s, e in spans]
    return [w or (i > 0 and wide[i - 1]) for i, w in enumerate(wide)]

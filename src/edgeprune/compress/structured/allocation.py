"""How many groups each layer keeps: pure functions of widths, importances and a parameter budget.

Three allocations:
- **adaptive** (Adapt-Pruner): per-layer sparsity ``s_l`` moves each mini-step by
  ``s_l <- clip(s_l + delta - A * I_hat_l, 0, max)`` where ``I_hat`` is the layer importance
  normalised to zero mean and range [-1, 1]; widths follow from ``s_l`` (``widths_at_sparsity``);
- **uniform** (LLM-Pruner): one ratio for every layer except the first/last ones, solved so the
  parameter budget is met (``solve_uniform``);
- **global** (FLAP): one threshold on standardised group scores across all layers and modules
  (``global_threshold_widths``).

Hardware-aware rounding everywhere: attention keeps whole KV groups, MLP widths are multiples of
``align`` (when the initial width is), and no layer loses its attention or its MLP entirely (at
least one KV group and ``align`` channels stay): llama.cpp's per-layer ``deci`` architecture takes
the head size from layer 0 and cannot run a layer with attention but no MLP.

Parameters counted here are those of the decoder blocks (q/k/v/o, gate/up/down, their biases and
the two RMSNorms per layer); embeddings, the final norm and the LM head are not counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BlockShape:
    """What the parameter count of a decoder block depends on, besides its widths."""

    hidden: int
    head_dim: int
    n_rep: tuple[int, ...]  # query heads per KV head, per layer (pruning keeps it)
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False

    @classmethod
    def from_config(cls, config) -> BlockShape:
        heads, kv = config.heads_per_layer(), config.kv_heads_per_layer()
        return cls(
            hidden=config.hidden_size,
            head_dim=config.head_dim,
            n_rep=tuple(h // k if k else 0 for h, k in zip(heads, kv)),
            qkv_bias=bool(config.attention_bias),
            o_bias=bool(config.o_proj_bias),
            mlp_bias=bool(config.mlp_bias),
        )

    def attn_params(self, layer: int, kv: int) -> int:
        if kv == 0:
            return 0
        h, d, q_rows = self.hidden, self.head_dim, kv * self.n_rep[layer] * self.head_dim
        n = 2 * q_rows * h + 2 * kv * d * h + h  # q, o, k, v, input_layernorm
        n += (q_rows + 2 * kv * d) if self.qkv_bias else 0
        n += h if self.o_bias else 0
        return n

    def mlp_params(self, ff: int) -> int:
        if ff == 0:
            return 0
        return 3 * ff * self.hidden + self.hidden + ((2 * ff + self.hidden) if self.mlp_bias else 0)

    def block_params(self, kv: Sequence[int], ff: Sequence[int]) -> int:
        return sum(self.attn_params(i, k) + self.mlp_params(f) for i, (k, f) in enumerate(zip(kv, ff)))

    def kv_group_params(self, layer: int) -> int:
        """Parameters one KV group of ``layer`` owns (weights and biases, not the norm)."""
        return self.attn_params(layer, 2) - self.attn_params(layer, 1)


# -- layer importance -----------------------------------------------------------------------------------


def normalize_importance(values: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """``(I - mean) / max |I - mean|``: zero mean, range [-1, 1] (all zeros if every layer is equal)."""
    x = torch.as_tensor(values, dtype=torch.float64)
    centred = x - x.mean()
    peak = centred.abs().max()
    return centred / peak if peak > 0 else torch.zeros_like(centred)


def update_sparsity(sparsity, importance, *, delta: float = 0.02, amplitude: float = 0.02, max_sparsity: float = 0.99):
    """One Adapt-Pruner mini-step: ``clip(s + delta - amplitude * importance, 0, max_sparsity)``.

    ``importance`` is normalised (``normalize_importance``): an important layer (+1) gains
    ``delta - amplitude`` sparsity, an unimportant one (-1) ``delta + amplitude``.
    """
    s = torch.as_tensor(sparsity, dtype=torch.float64)
    imp = torch.as_tensor(importance, dtype=torch.float64)
    return (s + delta - amplitude * imp).clamp(0.0, max_sparsity)


# -- widths from sparsity -------------------------------------------------------------------------------


def keep_after_sparsity(initial: int, current: int, sparsity: float, *, unit: int = 1, minimum: int = 0) -> int:
    """Channels kept at ``sparsity``: ``floor(initial * (1 - s))`` rounded *up* to whole ``unit``s.

    Adapt-Pruner removes ``n = current - floor(initial * (1 - s))`` channels, in whole units
    (Torch-Pruning's consecutive groups: a KV head of ``head_dim`` channels). Rounding the kept
    count up means a unit goes only once the target has passed it, so a layer with 3 KV heads does
    not lose one at 2% sparsity. Never more than ``current`` (pruning does not regrow), never less
    than ``minimum``.
    """
    target = math.floor(initial * (1.0 - sparsity) + 1e-9)
    kept = math.ceil(target / unit) * unit if unit > 1 else target
    return int(min(current, max(minimum, kept)))


def widths_at_sparsity(init_kv, init_ff, cur_kv, cur_ff, sparsity, *, head_dim: int, align: int) -> tuple[list[int], list[int]]:
    """Per-layer (KV groups, MLP channels) kept at per-layer ``sparsity`` (same ratio for both).

    Attention is counted in channels of k_proj (``kv * head_dim``) with ``unit = head_dim``, as the
    official code does; MLP widths in units of ``align``. Each layer keeps >= 1 KV group and
    >= ``min(align, current)`` MLP channels (see the module docstring).
    """
    kv, ff = [], []
    for i, s in enumerate(torch.as_tensor(sparsity, dtype=torch.float64).tolist()):
        if cur_kv[i]:
            ch = keep_after_sparsity(init_kv[i] * head_dim, cur_kv[i] * head_dim, s, unit=head_dim, minimum=head_dim)
            kv.append(ch // head_dim)
        else:
            kv.append(0)
        if cur_ff[i]:
            ff.append(keep_after_sparsity(init_ff[i], cur_ff[i], s, unit=align, minimum=min(align, cur_ff[i])))
        else:
            ff.append(0)
    return kv, ff


def min_widths(cur_kv, cur_ff, *, align: int, frozen: Sequence[int] = ()) -> tuple[list[int], list[int]]:
    """The smallest widths any allocation may reach (``frozen`` layers keep their current widths)."""
    kv = [k if (i in frozen or k == 0) else 1 for i, k in enumerate(cur_kv)]
    ff = [f if i in frozen else min(align, f) for i, f in enumerate(cur_ff)]
    return kv, ff


def smallest_fraction(params_at: Callable[[float], int], target: int, *, iters: int = 40) -> float:
    """Smallest ``f`` in (0, 1] with ``params_at(f) <= target``, for ``params_at`` non-increasing in f.

    Used to shorten Adapt-Pruner's last mini-step so the parameter count lands on the target
    instead of overshooting it by up to a whole mini-step (the official code overshoots).
    """
    if params_at(1.0) > target:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(iters):
        mid = (lo + hi) / 2
        if params_at(mid) <= target:
            hi = mid
        else:
            lo = mid
    return hi


# -- uniform (LLM-Pruner) ---------------------------------------------------------------------------------


def uniform_widths(cur_kv, cur_ff, ratio: float, *, head_dim: int, align: int, frozen: Sequence[int] = ()):
    """Every non-frozen layer pruned at the same ``ratio`` (relative to its current widths)."""
    s = [0.0 if i in frozen else ratio for i in range(len(cur_kv))]
    return widths_at_sparsity(cur_kv, cur_ff, cur_kv, cur_ff, s, head_dim=head_dim, align=align)


def solve_uniform(shape: BlockShape, cur_kv, cur_ff, target_params: int, *, align: int, frozen: Sequence[int] = (),
                  max_ratio: float = 0.99, iters: int = 50) -> tuple[float, list[int], list[int]]:  # fmt: skip
    """Smallest uniform ratio whose widths have at most ``target_params`` block parameters.

    Raises ValueError if even ``max_ratio`` does not get there.
    """

    def params(r):
        kv, ff = uniform_widths(cur_kv, cur_ff, r, head_dim=shape.head_dim, align=align, frozen=frozen)
        return shape.block_params(kv, ff)

    if params(max_ratio) > target_params:
        raise ValueError(f"a uniform ratio of {max_ratio} leaves {params(max_ratio)} > {target_params} parameters")
    lo, hi = 0.0, max_ratio
    for _ in range(iters):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if params(mid) <= target_params else (mid, hi)
    kv, ff = uniform_widths(cur_kv, cur_ff, hi, head_dim=shape.head_dim, align=align, frozen=frozen)
    return hi, kv, ff


# -- global threshold (FLAP) -----------------------------------------------------------------------------


def global_threshold_widths(shape: BlockShape, attn_scores, mlp_scores, cur_kv, cur_ff, target_params: int, *, align: int):
    """FLAP-style global allocation: keep every group scoring above one threshold ``t``.

    ``attn_scores[l]``: ``(cur_kv[l],)`` and ``mlp_scores[l]``: ``(cur_ff[l],)`` scores already on
    a common scale (FLAP standardises each module type across all layers). For a threshold ``t``
    layer l keeps ``#(scores > t)`` groups, MLP rounded up to ``align``, floors as in
    ``min_widths``. Returns the widths at the smallest ``t`` meeting ``target_params``.
    """
    attn = [torch.as_tensor(a, dtype=torch.float64) for a in attn_scores]
    mlp = [torch.as_tensor(m, dtype=torch.float64) for m in mlp_scores]
    lo_kv, lo_ff = min_widths(cur_kv, cur_ff, align=align)

    def widths(t: float):
        kv = [max(lo_kv[i], int((a > t).sum())) if cur_kv[i] else 0 for i, a in enumerate(attn)]
        ff = []
        for i, m in enumerate(mlp):
            n = int((m > t).sum())
            n = math.ceil(n / align) * align if align > 1 else n
            ff.append(min(cur_ff[i], max(lo_ff[i], n)) if cur_ff[i] else 0)
        return kv, ff

    candidates = torch.cat([torch.tensor([-math.inf])] + attn + mlp).unique().sort().values
    if shape.block_params(*widths(math.inf)) > target_params:
        raise ValueError("even the minimum widths exceed the parameter target")
    lo, hi = 0, len(candidates) - 1  # params(candidates[hi]) <= target is not known yet: search
    if shape.block_params(*widths(float(candidates[hi]))) > target_params:
        return widths(math.inf)
    while lo < hi:
        mid = (lo + hi) // 2
        if shape.block_params(*widths(float(candidates[mid]))) <= target_params:
            hi = mid
        else:
            lo = mid + 1
    return widths(float(candidates[hi]))


# -- which groups -----------------------------------------------------------------------------------------


def keep_top(scores: torch.Tensor, n_keep: int) -> tuple[int, ...]:
    """Indices (sorted) of the ``n_keep`` highest scores; ties keep the lower index."""
    scores = torch.as_tensor(scores)
    if not 0 <= n_keep <= scores.numel():
        raise ValueError(f"cannot keep {n_keep} of {scores.numel()} groups")
    order = torch.sort(-scores.double(), stable=True).indices
    return tuple(sorted(order[:n_keep].tolist()))

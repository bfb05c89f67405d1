"""Importance of pruning groups: pure functions over weights, gradients and activation statistics.

A pruning group (see ``cut.py`` for the coupling) is
- attention: one KV head with the ``n_rep`` query heads that share it (GQA): ``n_rep*head_dim``
  rows of q_proj, ``head_dim`` rows of k_proj and v_proj, ``n_rep*head_dim`` columns of o_proj;
- MLP: one intermediate channel: a row of gate_proj and up_proj, a column of down_proj.

Criteria are written in two halves: an *element-wise* score with the weight's shape (Taylor
``|W * dL/dW|``, or ``W**2`` for magnitude), then a *group reduction* that sums it over each
group's rows/columns in every coupled tensor (Torch-Pruning's "group reduction = sum"). FLAP's
fluctuation metric scores the input channels of o_proj / down_proj from activation statistics.
Nothing here touches a model.
"""

from __future__ import annotations

import torch

# -- element-wise scores ------------------------------------------------------------------------------


def taylor_elementwise(weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """First-order Taylor ``|W * dL/dW|``: the loss change from zeroing each weight (to first order)."""
    if weight.shape != grad.shape:
        raise ValueError(f"weight {tuple(weight.shape)} and grad {tuple(grad.shape)} differ")
    return (weight.float() * grad.float()).abs()


def squared_elementwise(weight: torch.Tensor) -> torch.Tensor:
    """``W**2``; summed over a group and square-rooted it is the group's L2 norm."""
    return weight.float().pow(2)


# -- group reductions -----------------------------------------------------------------------------------


def attention_group_sums(q, k, v, o, *, n_kv: int, q_bias=None, k_bias=None, v_bias=None) -> torch.Tensor:
    """Sum element-wise scores over each KV group's weights -> shape ``(n_kv,)``.

    ``q``: ``(n_kv*n_rep*head_dim, hidden)``, ``k``/``v``: ``(n_kv*head_dim, hidden)``,
    ``o``: ``(hidden, n_kv*n_rep*head_dim)``; optional q/k/v bias scores ``(rows,)``. KV group g
    owns consecutive q rows / o columns (transformers' ``repeat_kv`` order) and k/v rows.
    """
    # (n_kv*rows_per_group, hidden) -> (n_kv, rows_per_group*hidden) -> (n_kv,)
    total = q.reshape(n_kv, -1).sum(1) + k.reshape(n_kv, -1).sum(1) + v.reshape(n_kv, -1).sum(1)
    # (hidden, n_kv*cols_per_group) -> (hidden, n_kv, cols_per_group) -> (n_kv,)
    total = total + o.reshape(o.shape[0], n_kv, -1).sum((0, 2))
    for b in (q_bias, k_bias, v_bias):
        if b is not None:
            total = total + b.reshape(n_kv, -1).sum(1)
    return total


def mlp_channel_sums(gate, up, down, *, gate_bias=None, up_bias=None) -> torch.Tensor:
    """Sum element-wise scores over each intermediate channel -> shape ``(intermediate,)``.

    ``gate``/``up``: ``(intermediate, hidden)`` (a row per channel), ``down``: ``(hidden, intermediate)``
    (a column per channel).
    """
    total = gate.sum(1) + up.sum(1) + down.sum(0)
    for b in (gate_bias, up_bias):
        if b is not None:
            total = total + b
    return total


# -- the three criteria ---------------------------------------------------------------------------------


def taylor_attention(weights: dict, grads: dict, *, n_kv: int) -> torch.Tensor:
    """Taylor score per KV group: ``sum over the group of |W * dL/dW|`` (Adapt-Pruner's "param_first").

    ``weights``/``grads``: ``{"q", "k", "v", "o"}`` (+ optional ``"q_bias"``, ``"k_bias"``, ``"v_bias"``).
    """
    e = {n: taylor_elementwise(weights[n], grads[n]) for n in weights}
    return attention_group_sums(
        e["q"], e["k"], e["v"], e["o"], n_kv=n_kv, q_bias=e.get("q_bias"), k_bias=e.get("k_bias"), v_bias=e.get("v_bias")
    )


def taylor_mlp(weights: dict, grads: dict) -> torch.Tensor:
    """Taylor score per MLP channel; ``weights``/``grads``: ``{"gate", "up", "down"}`` (+ biases)."""
    e = {n: taylor_elementwise(weights[n], grads[n]) for n in weights}
    return mlp_channel_sums(e["gate"], e["up"], e["down"], gate_bias=e.get("gate_bias"), up_bias=e.get("up_bias"))


def magnitude_attention(weights: dict, *, n_kv: int) -> torch.Tensor:
    """L2 norm of all the weights of each KV group."""
    e = {n: squared_elementwise(w) for n, w in weights.items()}
    return attention_group_sums(
        e["q"], e["k"], e["v"], e["o"], n_kv=n_kv, q_bias=e.get("q_bias"), k_bias=e.get("k_bias"), v_bias=e.get("v_bias")
    ).sqrt()


def magnitude_mlp(weights: dict) -> torch.Tensor:
    """L2 norm of each MLP channel's gate row, up row and down column together."""
    e = {n: squared_elementwise(w) for n, w in weights.items()}
    return mlp_channel_sums(e["gate"], e["up"], e["down"], gate_bias=e.get("gate_bias"), up_bias=e.get("up_bias")).sqrt()


def fluctuation(variance: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """FLAP's fluctuation metric per input channel j of a Linear: ``Var_tokens(x_j) * ||W[:, j]||^2``.

    ``variance``: ``(in,)`` sample variance of each input channel over calibration tokens;
    ``weight``: ``(out, in)``. Removing channel j and replacing it by its mean (the bias
    compensation below) changes the output by ``W[:, j] (x_j - mean_j)``, whose expected squared
    norm is this metric.
    """
    if variance.shape != weight.shape[1:]:
        raise ValueError(f"variance {tuple(variance.shape)} does not match weight columns {weight.shape[1]}")
    return variance.float() * weight.float().pow(2).sum(0)


def group_mean(channel_scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """Mean over consecutive groups of ``group_size`` channels: ``(n*group_size,) -> (n,)``."""
    return channel_scores.reshape(-1, group_size).mean(1)


def standardize(x: torch.Tensor) -> torch.Tensor:
    """``(x - mean) / std`` over all entries (FLAP puts attention and MLP scores on one scale this way)."""
    x = x.double()
    std = x.std() if x.numel() > 1 else x.new_tensor(0.0)
    return (x - x.mean()) / std if std > 0 else x - x.mean()


# -- activation statistics -----------------------------------------------------------------------------


def update_moments(moments: tuple | None, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Add tokens ``x`` (``(..., channels)``) to running ``(sum, sum of squares, count)`` in float64."""
    flat = x.detach().reshape(-1, x.shape[-1]).double()
    s, sq = flat.sum(0), flat.pow(2).sum(0)
    if moments is None:
        return s, sq, flat.shape[0]
    return moments[0] + s, moments[1] + sq, moments[2] + flat.shape[0]


def mean_and_variance(moments: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased sample variance per channel from ``(sum, sum of squares, count)``."""
    s, sq, n = moments
    mean = s / n
    var = (sq - n * mean.pow(2)) / max(n - 1, 1)
    return mean, var.clamp_min(0)


def compensation_bias(weight: torch.Tensor, mean_in: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """FLAP's bias compensation: ``W[:, removed] @ mean_in[removed]``, shape ``(out,)``.

    Added to the Linear's bias after its ``removed`` input channels are cut, so the output keeps
    the removed channels' average contribution.
    """
    removed = torch.as_tensor(removed, dtype=torch.long)
    return (weight[:, removed].double() @ mean_in[removed].double()).to(weight.dtype)


# -- layer importance (Adapt-Pruner) -----------------------------------------------------------------


def cosine_similarity_sum(x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
    """Sum over tokens of ``cos(x_t, y_t)`` along the hidden dimension, and the token count.

    ``x``/``y``: a layer's input and output hidden states, ``(batch, seq, hidden)``.
    """
    if x.shape != y.shape:
        raise ValueError(f"layer input {tuple(x.shape)} and output {tuple(y.shape)} differ")
    cos = torch.nn.functional.cosine_similarity(x.double(), y.double(), dim=-1)  # (batch, seq)
    return float(cos.sum()), cos.numel()

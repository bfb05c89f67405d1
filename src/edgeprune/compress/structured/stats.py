"""One calibration pass over a model: layer importance, group scores, activation moments.

This is the part that walks the model and hooks it; the maths is in ``importance.py``.

- Layer importance (Adapt-Pruner): a forward *pre*-hook that sees keyword arguments captures each
  decoder layer's input hidden state (transformers passes it positionally or as
  ``hidden_states=``), a forward hook its output; ``-mean cos(input, output)`` per token.
- Taylor scores: the causal-LM loss on the windows is back-propagated (micro-batched, gradients
  summed) into the block Linears only (embeddings, norms and the LM head are frozen for the pass),
  then ``|W * dL/dW|`` is summed per group, one layer at a time.
- Magnitude scores need no data.
- FLAP statistics: running sum / sum of squares of the inputs of o_proj and down_proj (float64).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from edgeprune.compress.sequential import CALIB_DTYPES
from edgeprune.compress.structured import importance as imp

CRITERIA = ("taylor", "magnitude", "fluctuation")


@dataclass
class CalibStats:
    tokens: int = 0
    loss: float | None = None
    layer_importance: list[float] | None = None  # -mean cos(input, output) per layer
    attn_scores: list[torch.Tensor | None] = field(default_factory=list)  # (kv_l,) per layer
    mlp_scores: list[torch.Tensor | None] = field(default_factory=list)  # (ff_l,) per layer
    attn_channel_scores: list[torch.Tensor | None] = field(default_factory=list)  # fluctuation, (n_rep*d*kv_l,)
    o_moments: list[tuple | None] = field(default_factory=list)
    down_moments: list[tuple | None] = field(default_factory=list)


def _attn_weights(attn) -> dict:
    w = {"q": attn.q_proj.weight, "k": attn.k_proj.weight, "v": attn.v_proj.weight, "o": attn.o_proj.weight}
    for n in ("q", "k", "v"):
        b = getattr(attn, f"{n}_proj").bias
        if b is not None:
            w[f"{n}_bias"] = b
    return w


def _mlp_weights(mlp) -> dict:
    w = {"gate": mlp.gate_proj.weight, "up": mlp.up_proj.weight, "down": mlp.down_proj.weight}
    for n in ("gate", "up"):
        b = getattr(mlp, f"{n}_proj").bias
        if b is not None:
            w[f"{n}_bias"] = b
    return w


@contextlib.contextmanager
def _only_block_linears_require_grad(model):
    """Gradients only for the block Linears being scored; restores every flag afterwards."""
    saved = {p: p.requires_grad for p in model.parameters()}
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for layer in model.model.layers:
            for part in (layer.self_attn, layer.mlp):
                if part is not None:
                    for p in part.parameters():
                        p.requires_grad_(True)
        yield
    finally:
        for p, flag in saved.items():
            p.requires_grad_(flag)
            p.grad = None


@contextlib.contextmanager
def _hooks(model, stats: CalibStats, *, layer_cos: bool, moments: bool):
    layers = model.model.layers
    cos_sum, cos_n = [0.0] * len(layers), [0] * len(layers)
    inputs: dict[int, torch.Tensor] = {}
    handles = []

    def pre(i):
        def hook(module, args, kwargs):
            inputs[i] = (args[0] if args else kwargs["hidden_states"]).detach()

        return hook

    def post(i):
        def hook(module, args, kwargs, output):
            out = output[0] if isinstance(output, (tuple, list)) else output
            s, n = imp.cosine_similarity_sum(inputs.pop(i), out.detach())
            cos_sum[i] += s
            cos_n[i] += n

        return hook

    def moment(table, i):
        def hook(module, args):
            table[i] = imp.update_moments(table[i], args[0])

        return hook

    stats.o_moments = [None] * len(layers)
    stats.down_moments = [None] * len(layers)
    try:
        for i, layer in enumerate(layers):
            if layer_cos:
                handles.append(layer.register_forward_pre_hook(pre(i), with_kwargs=True))
                handles.append(layer.register_forward_hook(post(i), with_kwargs=True))
            if moments:
                if layer.self_attn is not None:
                    handles.append(layer.self_attn.o_proj.register_forward_pre_hook(moment(stats.o_moments, i)))
                if layer.mlp is not None:
                    handles.append(layer.mlp.down_proj.register_forward_pre_hook(moment(stats.down_moments, i)))
        yield
    finally:
        for h in handles:
            h.remove()
    if layer_cos:
        stats.layer_importance = [-(s / n) if n else 0.0 for s, n in zip(cos_sum, cos_n)]


def collect_stats(model, windows: torch.Tensor | None, *, criterion: str, layer_cos: bool = True, moments: bool = False,
                  micro_batch: int = 4, autocast: torch.dtype | None = None, progress: bool = False) -> CalibStats:  # fmt: skip
    """Run the calibration pass that ``criterion`` and the other flags need; see the module docstring.

    ``model``: an ``EdgepruneLlamaForCausalLM``; ``windows``: ``(n, seq_len)`` token ids (may be
    None only for ``criterion="magnitude"`` without ``layer_cos`` / ``moments``). ``autocast``
    (e.g. ``torch.bfloat16``): forward and backward matmuls under CPU autocast (2-3x faster on
    CPUs with bf16 instructions); weights, gradients and all statistics stay float32/float64.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}: use one of {', '.join(CRITERIA)}")
    stats = CalibStats()
    needs_data = criterion in ("taylor", "fluctuation") or layer_cos or moments
    layers = model.model.layers
    if needs_data:
        if windows is None or len(windows) == 0:
            raise ValueError("this calibration pass needs token windows")
        grads = criterion == "taylor"
        chunks = torch.split(windows, micro_batch)
        loss_sum = 0.0
        from tqdm.auto import tqdm

        grad_ctx = _only_block_linears_require_grad(model) if grads else contextlib.nullcontext()
        with grad_ctx, _hooks(model, stats, layer_cos=layer_cos, moments=moments or criterion == "fluctuation"):
            cast = torch.autocast("cpu", dtype=autocast) if autocast is not None else contextlib.nullcontext()
            for chunk in tqdm(chunks, desc=f"calibration ({criterion})", disable=not progress, leave=False):
                with torch.set_grad_enabled(grads):
                    with cast:
                        out = model(input_ids=chunk, labels=chunk, use_cache=False)
                    if grads:
                        # mean over micro-batches of the mean token loss: gradients of the overall mean
                        (out.loss * (len(chunk) / len(windows))).backward()
                loss_sum += float(out.loss.detach()) * len(chunk)
            if grads:
                _taylor_scores(model, stats)
        stats.loss = loss_sum / len(windows)
        stats.tokens = windows.numel()
    if criterion == "magnitude":
        stats.attn_scores = [None if l.self_attn is None else imp.magnitude_attention(
            {k: v.detach() for k, v in _attn_weights(l.self_attn).items()}, n_kv=l.self_attn.num_key_value_heads)
            for l in layers]  # fmt: skip
        stats.mlp_scores = [None if l.mlp is None else imp.magnitude_mlp(
            {k: v.detach() for k, v in _mlp_weights(l.mlp).items()}) for l in layers]  # fmt: skip
    if criterion == "fluctuation":
        _fluctuation_scores(model, stats)
    return stats


def _taylor_scores(model, stats: CalibStats) -> None:
    stats.attn_scores, stats.mlp_scores = [], []
    with torch.no_grad():
        for layer in model.model.layers:
            a, m = layer.self_attn, layer.mlp
            if a is None:
                stats.attn_scores.append(None)
            else:
                w = _attn_weights(a)
                stats.attn_scores.append(imp.taylor_attention(
                    {k: v.detach() for k, v in w.items()}, {k: _grad(v) for k, v in w.items()}, n_kv=a.num_key_value_heads))  # fmt: skip
            if m is None:
                stats.mlp_scores.append(None)
            else:
                w = _mlp_weights(m)
                stats.mlp_scores.append(imp.taylor_mlp({k: v.detach() for k, v in w.items()}, {k: _grad(v) for k, v in w.items()}))


def _grad(p: torch.Tensor) -> torch.Tensor:
    return p.grad if p.grad is not None else torch.zeros_like(p)


def _fluctuation_scores(model, stats: CalibStats) -> None:
    """FLAP per channel; attention channels are kept per channel (FLAP standardises them before
    averaging per group), MLP channels are groups already."""
    stats.attn_scores, stats.mlp_scores, stats.attn_channel_scores = [], [], []
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            if layer.self_attn is None or stats.o_moments[i] is None:
                stats.attn_channel_scores.append(None)
                stats.attn_scores.append(None)
            else:
                _, var = imp.mean_and_variance(stats.o_moments[i])
                ch = imp.fluctuation(var, layer.self_attn.o_proj.weight.detach())
                stats.attn_channel_scores.append(ch)
                stats.attn_scores.append(imp.group_mean(ch, ch.numel() // layer.self_attn.num_key_value_heads))
            if layer.mlp is None or stats.down_moments[i] is None:
                stats.mlp_scores.append(None)
            else:
                _, var = imp.mean_and_variance(stats.down_moments[i])
                stats.mlp_scores.append(imp.fluctuation(var, layer.mlp.down_proj.weight.detach()))


def sample_windows(calib, cfg, gen):
    return None if calib is None else calib.sample(cfg.calib_windows, gen)


def one_pass_stats(model, cfg, calib, gen, report, *, progress: bool):
    """Scores from one calibration pass (none for magnitude scores without bias compensation), as the
    uniform and FLAP methods take them; the report keeps the first layer importance measured."""
    m = cfg.resolved
    data_pass = m.criterion != "magnitude" or m.bias_compensation
    stats = collect_stats(model, sample_windows(calib, cfg, gen) if data_pass else None, criterion=m.criterion,
                          layer_cos=bool(data_pass), moments=m.bias_compensation, micro_batch=cfg.micro_batch,
                          autocast=CALIB_DTYPES[cfg.calib_dtype], progress=progress)  # fmt: skip
    if stats.layer_importance is not None and report.layer_importance is None:
        report.layer_importance = stats.layer_importance
    return stats

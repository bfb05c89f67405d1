"""Cutting whole KV groups and MLP channels out of a Llama-family model.

Three pieces, kept apart as Torch-Pruning does (see STYLE.md, "score, cut, couple"):
- ``coupled_rows``: which rows/columns a KV group or an MLP channel owns (the coupling model);
- ``slice_linear``: a pure cut of a Linear's rows or columns;
- ``cut_widths``: builds the smaller per-layer-width model from a choice of what each layer keeps.
Scoring (which groups to keep) lives elsewhere; ``random_keep`` is a seeded stand-in used by
export round-trip benchmarks and tests until real importance scores exist.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edgeprune.compress.structured import allocation as alloc
from edgeprune.compress.structured import importance as imp
from edgeprune.errors import EdgepruneError


@dataclass(frozen=True)
class LayerKeep:
    """What one decoder layer keeps: KV-group indices and MLP channel indices (sorted)."""

    kv_groups: tuple[int, ...]
    mlp_channels: tuple[int, ...]


def group_rows(groups, group_size: int) -> torch.Tensor:
    """Row indices owned by whole groups of ``group_size`` consecutive rows."""
    # e.g. groups (0, 2), size 3 -> rows 0 1 2 6 7 8
    groups = torch.as_tensor(list(groups), dtype=torch.long)
    return (groups[:, None] * group_size + torch.arange(group_size)[None, :]).reshape(-1)


def coupled_rows(kv_groups, *, n_rep: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(q/o indices, k/v indices) of the kept KV groups under GQA.

    KV head g serves query heads g*n_rep .. g*n_rep+n_rep-1 (transformers' ``repeat_kv`` order),
    so a KV group owns n_rep*head_dim consecutive q rows (o columns) and head_dim k/v rows.
    """
    return group_rows(kv_groups, n_rep * head_dim), group_rows(kv_groups, head_dim)


def slice_linear(linear: nn.Linear, *, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Linear:
    """A new Linear keeping output ``rows`` and input ``cols`` (None keeps all)."""
    w = linear.weight.detach()
    if rows is not None:
        w = w[rows]
    if cols is not None:
        w = w[:, cols]
    new = nn.Linear(w.shape[1], w.shape[0], bias=linear.bias is not None, dtype=w.dtype, device=w.device)
    with torch.no_grad():
        new.weight.copy_(w)
        if linear.bias is not None:
            new.bias.copy_(linear.bias.detach() if rows is None else linear.bias.detach()[rows])
    return new


def cut_widths(model, keep: dict[int, LayerKeep]):
    """Return a new ``EdgepruneLlamaForCausalLM`` in which layer i keeps only ``keep[i]``.

    Layers absent from ``keep`` are copied whole. Embeddings, norms and hidden size are unchanged.
    """
    from edgeprune.models import EdgepruneLlamaForCausalLM, to_per_layer
    from edgeprune.models.configuration_edgeprune_llama import EdgepruneLlamaConfig

    src = to_per_layer(model)
    cfg = src.config
    heads, kv, ff = cfg.heads_per_layer(), cfg.kv_heads_per_layer(), cfg.intermediate_per_layer()
    new_heads, new_kv, new_ff = list(heads), list(kv), list(ff)
    for i, k in keep.items():
        if not 0 <= i < cfg.num_hidden_layers:
            raise EdgepruneError(f"layer {i} does not exist: the model has {cfg.num_hidden_layers} layers")
        if any(g >= kv[i] or g < 0 for g in k.kv_groups) or any(c >= ff[i] or c < 0 for c in k.mlp_channels):
            raise EdgepruneError(f"layer {i}: kept indices out of range ({kv[i]} KV groups, {ff[i]} MLP channels)")
        n_rep = heads[i] // kv[i] if kv[i] else 0
        new_kv[i], new_heads[i], new_ff[i] = len(k.kv_groups), len(k.kv_groups) * n_rep, len(k.mlp_channels)
    new_cfg = EdgepruneLlamaConfig(
        **{**cfg.to_dict(), "num_attention_heads": new_heads, "num_key_value_heads": new_kv, "intermediate_size": new_ff}
    )
    new_cfg._attn_implementation = cfg._attn_implementation
    dtype = next(src.parameters()).dtype
    new = EdgepruneLlamaForCausalLM(new_cfg).to(dtype)
    state = {}
    for name, tensor in src.state_dict().items():
        state[name] = tensor
    new_state = new.state_dict()
    for name in new_state:
        if name in state and state[name].shape == new_state[name].shape:
            new_state[name] = state[name]
    for i, k in keep.items():
        old, layer = src.model.layers[i], new.model.layers[i]
        if layer.self_attn is not None:
            n_rep = heads[i] // kv[i]
            qo, kvr = coupled_rows(k.kv_groups, n_rep=n_rep, head_dim=cfg.head_dim)
            a = old.self_attn
            parts = {"q_proj": slice_linear(a.q_proj, rows=qo), "k_proj": slice_linear(a.k_proj, rows=kvr),
                     "v_proj": slice_linear(a.v_proj, rows=kvr), "o_proj": slice_linear(a.o_proj, cols=qo)}  # fmt: skip
            for pname, lin in parts.items():
                for t in ("weight", "bias"):
                    if getattr(lin, t) is not None:
                        new_state[f"model.layers.{i}.self_attn.{pname}.{t}"] = getattr(lin, t).detach()
        if layer.mlp is not None:
            ch = torch.as_tensor(list(k.mlp_channels), dtype=torch.long)
            m = old.mlp
            parts = {"gate_proj": slice_linear(m.gate_proj, rows=ch), "up_proj": slice_linear(m.up_proj, rows=ch),
                     "down_proj": slice_linear(m.down_proj, cols=ch)}  # fmt: skip
            for pname, lin in parts.items():
                for t in ("weight", "bias"):
                    if getattr(lin, t) is not None:
                        new_state[f"model.layers.{i}.mlp.{pname}.{t}"] = getattr(lin, t).detach()
    new.load_state_dict(new_state)
    if new_cfg.tie_word_embeddings:
        new.tie_weights()
    new.generation_config = src.generation_config
    return new.eval()


def random_keep(config, *, attn_keep: float, mlp_keep: float, align: int = 32, seed: int = 0) -> dict[int, LayerKeep]:
    """Seeded random per-layer choice: each layer keeps a random fraction of KV groups and MLP channels.

    Fractions vary per layer around the given means (so widths really differ by layer); MLP
    widths are multiples of ``align``; layer 0 keeps at least one KV group (llama.cpp derives the
    head size from layer 0).
    """
    g = torch.Generator().manual_seed(seed)
    heads_kv, ff = config.kv_heads_per_layer(), config.intermediate_per_layer()
    keep = {}
    for i in range(config.num_hidden_layers):
        jitter = float(torch.rand((), generator=g)) * 0.4 - 0.2  # +-20% around the mean
        n_kv = round(heads_kv[i] * min(1.0, max(0.0, attn_keep + jitter)))
        n_kv = max(n_kv, 1) if i == 0 else n_kv
        n_ff = int(round(ff[i] * min(1.0, max(0.0, mlp_keep + jitter)) / align) * align)
        n_ff = min(max(n_ff, align), ff[i])
        kv_groups = torch.randperm(heads_kv[i], generator=g)[:n_kv].sort().values
        channels = torch.randperm(ff[i], generator=g)[:n_ff].sort().values
        keep[i] = LayerKeep(tuple(kv_groups.tolist()), tuple(channels.tolist()))
    return keep


def add_output_biases(model, attn: dict[int, torch.Tensor], mlp: dict[int, torch.Tensor]):
    """Return a new model whose o_proj (layers in ``attn``) / down_proj (layers in ``mlp``) biases
    are increased by the given ``(hidden,)`` vectors (FLAP's bias compensation after a cut).

    Llama has no such biases, so the config gets ``o_proj_bias=True`` (and ``mlp_bias=True`` if
    ``mlp`` is non-empty; the per-layer config has one MLP bias flag, so gate/up get zero biases,
    which change nothing). Existing biases are kept and added to.
    """
    from edgeprune.models import EdgepruneLlamaForCausalLM, to_per_layer
    from edgeprune.models.configuration_edgeprune_llama import EdgepruneLlamaConfig

    src = to_per_layer(model)
    cfg = src.config
    flags = {"o_proj_bias": bool(cfg.o_proj_bias or attn), "mlp_bias": bool(cfg.mlp_bias or mlp)}
    for table, part in ((attn, "self_attn"), (mlp, "mlp")):
        for i in table:
            if getattr(src.model.layers[i], part) is None:
                raise EdgepruneError(f"layer {i} has no {part}: cannot add a bias to it")
    new_cfg = EdgepruneLlamaConfig(**{**cfg.to_dict(), **flags})
    new_cfg._attn_implementation = cfg._attn_implementation
    new = EdgepruneLlamaForCausalLM(new_cfg).to(next(src.parameters()).dtype)
    state = new.state_dict()
    for name in state:
        if name.endswith((".bias",)) and name not in src.state_dict():
            state[name] = torch.zeros_like(state[name])
    for name, tensor in src.state_dict().items():
        if name in state:
            state[name] = tensor
    for i, b in attn.items():
        key = f"model.layers.{i}.self_attn.o_proj.bias"
        state[key] = state[key] + b.to(state[key].dtype)
    for i, b in mlp.items():
        key = f"model.layers.{i}.mlp.down_proj.bias"
        state[key] = state[key] + b.to(state[key].dtype)
    new.load_state_dict(state)
    if new_cfg.tie_word_embeddings:
        new.tie_weights()
    new.generation_config = src.generation_config
    return new.eval()


# -- from scores to a cut (used by every structured method) ------------------------------------------


def keep_from_scores(model, stats, kv, ff) -> dict[int, LayerKeep]:
    """Per layer, the ``kv[i]`` / ``ff[i]`` highest-scoring groups (only layers that change)."""
    cfg = model.config
    cur_kv, cur_ff = cfg.kv_heads_per_layer(), cfg.intermediate_per_layer()
    keep = {}
    for i in range(cfg.num_hidden_layers):
        if kv[i] == cur_kv[i] and ff[i] == cur_ff[i]:
            continue
        groups = tuple(range(cur_kv[i])) if kv[i] == cur_kv[i] else alloc.keep_top(stats.attn_scores[i], kv[i])
        chans = tuple(range(cur_ff[i])) if ff[i] == cur_ff[i] else alloc.keep_top(stats.mlp_scores[i], ff[i])
        keep[i] = LayerKeep(groups, chans)
    return keep


def cut_kept(model, keep: dict[int, LayerKeep], stats, bias_compensation: bool):
    if not keep:
        return model
    attn_b, mlp_b = {}, {}
    if bias_compensation:
        cfg = model.config
        heads, kvs = cfg.heads_per_layer(), cfg.kv_heads_per_layer()
        for i, k in keep.items():
            layer = model.model.layers[i]
            if layer.self_attn is not None and len(k.kv_groups) < kvs[i] and stats.o_moments[i] is not None:
                qo, _ = coupled_rows(k.kv_groups, n_rep=heads[i] // kvs[i], head_dim=cfg.head_dim)
                removed = complement(qo, heads[i] * cfg.head_dim)
                mean, _ = imp.mean_and_variance(stats.o_moments[i])
                attn_b[i] = imp.compensation_bias(layer.self_attn.o_proj.weight.detach(), mean, removed)
            if layer.mlp is not None and len(k.mlp_channels) < layer.mlp.intermediate_size and stats.down_moments[i] is not None:
                removed = complement(torch.tensor(k.mlp_channels), layer.mlp.intermediate_size)
                mean, _ = imp.mean_and_variance(stats.down_moments[i])
                mlp_b[i] = imp.compensation_bias(layer.mlp.down_proj.weight.detach(), mean, removed)
    new = cut_widths(model, keep)
    if attn_b or mlp_b:
        new = add_output_biases(new, attn_b, mlp_b)
    return new


def complement(kept: torch.Tensor, n: int) -> torch.Tensor:
    mask = torch.ones(n, dtype=torch.bool)
    mask[torch.as_tensor(kept, dtype=torch.long)] = False
    return mask.nonzero().flatten()

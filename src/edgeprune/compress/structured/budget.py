"""What a structured-pruning target means in parameters: block parameter counts, the shape the
cut leaves, the layers a uniform method keeps dense, and whether a target is reachable at all."""

from __future__ import annotations

from edgeprune.compress.structured import allocation as alloc
from edgeprune.compress.structured.config import StructuredPrune
from edgeprune.errors import EdgepruneError


def param_counts(model) -> tuple[int, int, int]:
    """``(block parameters, total parameters, total bytes)``; tied weights counted once."""
    block = sum(p.numel() for layer in model.model.layers for p in layer.parameters())
    seen, total, nbytes = set(), 0, 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
            nbytes += p.numel() * p.element_size()
    return block, total, nbytes


def widths_of(config) -> dict:
    return {"heads": config.heads_per_layer(), "kv_heads": config.kv_heads_per_layer(),
            "intermediate": config.intermediate_per_layer()}  # fmt: skip



def frozen_layers(cfg: StructuredPrune, n_layers: int) -> tuple[int, ...]:
    if cfg.resolved.allocation != "uniform":
        return ()
    return tuple(sorted(set(range(min(cfg.keep_first, n_layers))) | set(range(max(0, n_layers - cfg.keep_last), n_layers))))


def check_reachable(config, cfg: StructuredPrune) -> tuple[int, int]:
    """``(dense block params, target block params)``; EdgepruneError if the target cannot be met."""
    shape = shape_for(config, cfg)
    kv, ff = config.kv_heads_per_layer(), config.intermediate_per_layer()
    p0 = alloc.BlockShape.from_config(config).block_params(kv, ff)
    target = int(p0 * (1.0 - cfg.target))
    frozen = frozen_layers(cfg, config.num_hidden_layers)
    if len(frozen) == config.num_hidden_layers:
        raise EdgepruneError(
            f"keep_first={cfg.keep_first} and keep_last={cfg.keep_last} keep all {len(frozen)} layers dense: lower them"
        )
    lo = shape.block_params(*alloc.min_widths(kv, ff, align=cfg.align, frozen=frozen))
    if lo > target:
        most = 1.0 - lo / p0
        raise EdgepruneError(
            f"target {cfg.target:g} is unreachable: with align={cfg.align}, at least one KV group and {cfg.align} "
            f"MLP channels per layer{' and the kept first/last layers' if frozen else ''}, at most {most:.1%} of the "
            f"block parameters can be removed; lower the target or the alignment"
        )
    return p0, target


def shape_for(config, cfg: StructuredPrune) -> alloc.BlockShape:
    shape = alloc.BlockShape.from_config(config)
    if cfg.resolved.bias_compensation:  # the cut adds o_proj and MLP biases
        shape = alloc.BlockShape(shape.hidden, shape.head_dim, shape.n_rep, shape.qkv_bias, True, True)
    return shape

"""Uniform structured pruning (LLM-Pruner's setting): one ratio for every layer but the kept first
and last ones, groups ranked by first-order Taylor (``taylor-uniform``) or L2 magnitude
(``magnitude-uniform``, no data) scores. Adapt-Pruner's baselines."""

from __future__ import annotations

from edgeprune.compress.structured import allocation as alloc
from edgeprune.compress.structured.budget import frozen_layers, shape_for
from edgeprune.compress.structured.cut import cut_kept, keep_from_scores
from edgeprune.compress.structured.stats import one_pass_stats
from edgeprune.errors import EdgepruneError


def prune_uniform(model, stage_target, cfg, calib, gen, report, *, stage, progress):
    """LLM-Pruner: one ratio for every layer but the kept first/last ones."""
    m = cfg.resolved
    config = model.config
    shape = shape_for(config, cfg)
    cur_kv, cur_ff = config.kv_heads_per_layer(), config.intermediate_per_layer()
    frozen = frozen_layers(cfg, config.num_hidden_layers)
    stats = one_pass_stats(model, cfg, calib, gen, report, progress=progress)
    try:
        ratio, kv, ff = alloc.solve_uniform(shape, cur_kv, cur_ff, stage_target, align=cfg.align, frozen=frozen,
                                            max_ratio=cfg.max_sparsity)  # fmt: skip
    except ValueError:
        raise EdgepruneError(f"no uniform ratio reaches the target {cfg.target:g}: lower it or keep fewer layers dense") from None
    report.mini_steps.append({"stage": stage, "ratio": round(ratio, 4), "kv_heads": kv, "intermediate": ff,
                              "block_params": shape.block_params(kv, ff), "calib_loss": stats.loss})  # fmt: skip
    return cut_kept(model, keep_from_scores(model, stats, kv, ff), stats, m.bias_compensation)

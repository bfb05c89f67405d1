"""FLAP (arXiv 2312.11983): fluctuation scores standardised per module type across layers, one
global threshold (so layers lose different widths), and bias compensation of the removed channels'
mean output."""

from __future__ import annotations

import torch

from edgeprune.compress.structured import allocation as alloc
from edgeprune.compress.structured import importance as imp
from edgeprune.compress.structured.budget import shape_for
from edgeprune.compress.structured.cut import cut_kept, keep_from_scores
from edgeprune.compress.structured.stats import one_pass_stats


def prune_flap(model, stage_target, cfg, calib, gen, report, *, stage, progress):
    """FLAP: standardise scores per module type across layers, keep all above one global threshold."""
    m = cfg.resolved
    config = model.config
    shape = shape_for(config, cfg)
    cur_kv, cur_ff = config.kv_heads_per_layer(), config.intermediate_per_layer()
    stats = one_pass_stats(model, cfg, calib, gen, report, progress=progress)
    attn_layers = [i for i in range(config.num_hidden_layers) if cur_kv[i]]
    mlp_layers = [i for i in range(config.num_hidden_layers) if cur_ff[i]]
    attn_std: list = [torch.zeros(0)] * config.num_hidden_layers
    mlp_std: list = [torch.zeros(0)] * config.num_hidden_layers
    if m.criterion == "fluctuation":
        # FLAP: standardise attention *channels* over all layers, then average per group
        flat = imp.standardize(torch.cat([stats.attn_channel_scores[i] for i in attn_layers]))
        for i, chunk in zip(attn_layers, torch.split(flat, [stats.attn_channel_scores[i].numel() for i in attn_layers])):
            attn_std[i] = imp.group_mean(chunk, chunk.numel() // cur_kv[i])
    else:
        flat = imp.standardize(torch.cat([stats.attn_scores[i] for i in attn_layers]))
        for i, chunk in zip(attn_layers, torch.split(flat, [cur_kv[i] for i in attn_layers])):
            attn_std[i] = chunk
    flat = imp.standardize(torch.cat([stats.mlp_scores[i] for i in mlp_layers]))
    for i, chunk in zip(mlp_layers, torch.split(flat, [cur_ff[i] for i in mlp_layers])):
        mlp_std[i] = chunk
    kv, ff = alloc.global_threshold_widths(shape, attn_std, mlp_std, cur_kv, cur_ff, stage_target, align=cfg.align)
    report.mini_steps.append({"stage": stage, "kv_heads": kv, "intermediate": ff,
                              "block_params": shape.block_params(kv, ff), "calib_loss": stats.loss})  # fmt: skip
    stats.attn_scores, stats.mlp_scores = attn_std, mlp_std
    return cut_kept(model, keep_from_scores(model, stats, kv, ff), stats, m.bias_compensation)

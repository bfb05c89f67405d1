"""Adapt-Pruner (arXiv 2502.03460): layer-wise adaptive sparsity. Mini-steps of ``delta``: each
re-measures layer importance (-mean cosine of a layer's input and output) and Taylor scores on a
fresh calibration draw, moves each layer's sparsity by ``delta - A * importance`` and cuts to it,
until the stage target (the last mini-step shortened to land on it)."""

from __future__ import annotations

import copy
import math

import torch

from edgeprune.compress.sequential import CALIB_DTYPES
from edgeprune.compress.structured import allocation as alloc
from edgeprune.compress.structured.budget import shape_for
from edgeprune.compress.structured.cut import cut_kept, keep_from_scores
from edgeprune.compress.structured.stats import collect_stats, sample_windows
from edgeprune.errors import EdgepruneError


def prune_adaptive(model, stage_target, cfg, calib, gen, report, *, stage, progress, snapshots=(), on_snapshot=None):
    """Adapt-Pruner: mini-steps of ``delta`` with importance re-measured, until the stage target.

    ``snapshots``: ``[(target, block parameters)]`` larger than ``stage_target``: when a mini-step
    crosses one, the model a run stopping there would return goes to ``on_snapshot``."""
    pending = sorted(snapshots, key=lambda x: -x[1])
    m = cfg.resolved
    config = model.config
    n = config.num_hidden_layers
    init_kv, init_ff = config.kv_heads_per_layer(), config.intermediate_per_layer()
    sparsity = torch.zeros(n, dtype=torch.float64)
    max_steps = math.ceil(cfg.max_sparsity / cfg.delta) * 4 + 10
    step = 0
    from tqdm.auto import tqdm

    bar = tqdm(desc=f"adapt stage {stage}", unit="mini-step", disable=not progress, leave=False)
    while alloc.BlockShape.from_config(model.config).block_params(
        model.config.kv_heads_per_layer(), model.config.intermediate_per_layer()) > stage_target:  # fmt: skip
        step += 1
        if step > max_steps:
            raise EdgepruneError(
                f"Adapt-Pruner did not reach the target in {max_steps} mini-steps (max_sparsity={cfg.max_sparsity}): "
                "raise max_sparsity or lower the target"
            )
        config = model.config
        shape = shape_for(config, cfg)
        cur_kv, cur_ff = config.kv_heads_per_layer(), config.intermediate_per_layer()
        stats = collect_stats(model, sample_windows(calib, cfg, gen), criterion=m.criterion, layer_cos=True,
                              moments=m.bias_compensation, micro_batch=cfg.micro_batch, autocast=CALIB_DTYPES[cfg.calib_dtype], progress=False)  # fmt: skip
        if report.layer_importance is None:
            report.layer_importance = stats.layer_importance
        report.layer_importance_final = stats.layer_importance
        norm = alloc.normalize_importance(stats.layer_importance)
        increment = alloc.update_sparsity(sparsity, norm, delta=cfg.delta, amplitude=cfg.amplitude,
                                          max_sparsity=cfg.max_sparsity) - sparsity  # fmt: skip

        def widths(f: float):
            s = (sparsity + f * increment).clamp(0, cfg.max_sparsity)
            return alloc.widths_at_sparsity(init_kv, init_ff, cur_kv, cur_ff, s, head_dim=config.head_dim, align=cfg.align)

        def record(f: float, kv, ff) -> dict:
            return {
                "stage": stage, "step": step, "block_params": shape.block_params(kv, ff), "fraction_of_step": round(f, 4),
                "calib_loss": stats.loss, "importance": [round(x, 4) for x in norm.tolist()],
                "sparsity": [round(x, 4) for x in (sparsity + f * increment).clamp(0, cfg.max_sparsity).tolist()],
                "kv_heads": kv, "intermediate": ff,
            }  # fmt: skip

        while pending and shape.block_params(*widths(1.0)) <= pending[0][1]:  # this mini-step crosses a snapshot
            x, snap_target = pending.pop(0)
            fs = alloc.smallest_fraction(lambda f: shape.block_params(*widths(f)), snap_target)
            kv_s, ff_s = widths(fs)
            snap = cut_kept(model, keep_from_scores(model, stats, kv_s, ff_s), stats, m.bias_compensation)
            snap_report = copy.deepcopy(report)
            snap_report.mini_steps.append(record(fs, kv_s, ff_s))
            snap_report.sparsity = snap_report.mini_steps[-1]["sparsity"]
            snap_report.target = x
            snap_report.block_params_target = snap_target
            snap_report.config = {**report.config, "target": x}
            on_snapshot(x, snap, snap_report)
            del snap
        f = alloc.smallest_fraction(lambda f: shape.block_params(*widths(f)), stage_target)
        new_sparsity = (sparsity + f * increment).clamp(0, cfg.max_sparsity)
        kv, ff = widths(f)
        rec = record(f, kv, ff)
        keep = keep_from_scores(model, stats, kv, ff)
        model = cut_kept(model, keep, stats, m.bias_compensation)
        sparsity = new_sparsity
        params = rec["block_params"]
        report.mini_steps.append(rec)
        bar.update(1)
        bar.set_postfix(params=f"{params / 1e6:.2f}M", target=f"{stage_target / 1e6:.2f}M")
    bar.close()
    report.sparsity = [round(x, 4) for x in sparsity.tolist()]
    return model

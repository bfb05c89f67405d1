"""The depth-pruning step (``step: depth``): score every decoder layer on calibration windows, remove
the lowest, record which original layers are kept.

The walk is block by block (:mod:`edgeprune.compress.sequential`): catch what layer 0 receives for
every window, run layer l on it, compare input and output, feed the output to layer l + 1. Memory
is one layer boundary's hidden states (``windows x seq x hidden``), ``k + 1`` of them for the
``consecutive`` score (Gromov et al. compare ``x_l`` with ``x_l+k``), never the whole model's.
"""

from __future__ import annotations

import time
from collections import deque

import torch

from edgeprune.compress.depth import scores as sc
from edgeprune.compress.depth.config import Depth, DepthReport
from edgeprune.compress.depth.remove import kept_layers, remove_layers
from edgeprune.compress.sequential import capture_block_inputs, decoder_layers, run_block
from edgeprune.compress.structured import importance as imp
from edgeprune.compress.structured.allocation import normalize_importance
from edgeprune.errors import EdgepruneError


@torch.no_grad()
def layer_scores(model, ids: torch.Tensor, *, span: int = 1, batch_size: int = 8, progress: bool = False) -> dict:
    """One block-by-block pass over ``ids`` ``(n, seq)`` -> ``{"influence": [BI_l], "importance":
    [-mean cos_l], "angular": [d(x_l, x_l+span)]}`` (the last with ``n_layers - span + 1`` entries)."""
    layers = decoder_layers(model)
    n = len(layers)
    if not 1 <= span <= n:
        raise ValueError(f"span must be in 1..{n}, got {span}")
    from tqdm.auto import tqdm

    was = model.training
    model.eval()
    try:
        inputs = capture_block_inputs(model, ids, batch_size)
        cos = [(0.0, 0)] * n  # (sum of cos over tokens, tokens) per layer
        angular = []
        window = deque([inputs.hidden], maxlen=span + 1)  # the last span + 1 boundaries, each per batch
        for i in tqdm(range(n), desc="depth scores", unit="layer", disable=not progress, leave=False):
            outs = run_block(layers[i], inputs)
            sums = [imp.cosine_similarity_sum(x, y) for x, y in zip(inputs.hidden, outs)]
            cos[i] = (sum(s for s, _ in sums), sum(t for _, t in sums))
            inputs.hidden = outs
            window.append(outs)
            if len(window) == span + 1:  # boundaries i + 1 - span (oldest) and i + 1 (newest)
                pairs = [sc.angular_sum(x, y) for x, y in zip(window[0], window[-1])]
                angular.append(sum(s for s, _ in pairs) / max(sum(t for _, t in pairs), 1))
    finally:
        model.train(was)
    return {"influence": [sc.block_influence(s, t) for s, t in cos], "importance": [-(s / t) if t else 0.0 for s, t in cos],
            "angular": angular}  # fmt: skip


def calibration_ids(calib, cfg: Depth) -> torch.Tensor:
    if calib is None or len(calib) == 0:
        raise EdgepruneError("depth pruning scores layers on calibration text: pass calibration windows (StepContext(calib=...))")
    ids = calib.ids if hasattr(calib, "ids") else calib
    return ids[: cfg.calib_windows] if cfg.calib_windows else ids


def depth_prune(model, cfg: Depth, calib, *, progress: bool = True):
    """Remove ``cfg``'s number of decoder layers from ``model`` in place -> ``(model, DepthReport)``."""
    t0 = time.perf_counter()
    n = len(decoder_layers(model))
    k = cfg.n_remove(n)  # bad counts fail before any forward
    ids = calibration_ids(calib, cfg)
    report = DepthReport(step=cfg.kind, config=cfg.to_dict(), layers_before=n,
                         params_before=sum(p.numel() for p in model.parameters()),
                         calibration={"windows": int(ids.shape[0]), "seq_len": int(ids.shape[1]),
                                      "source": getattr(calib, "source", None)})  # fmt: skip
    protect = {"protect_first": cfg.protect_first, "protect_last": cfg.protect_last}
    walk = {"batch_size": cfg.batch_size, "progress": progress}
    if cfg.score == "adapt":
        # Adapt-Pruner re-measures importance after every cut: one layer per round, the least important
        for _ in range(k):
            m = len(decoder_layers(model))
            s = layer_scores(model, ids, **walk)["importance"]
            report.scores = report.scores or s
            cut = sc.lowest(s, 1, sc.removable(m, **protect))[0]
            report.rounds.append({"importance": s, "normalized": normalize_importance(s).tolist(), "removed": cut})
            remove_layers(model, [cut])
        report.removed = _removed_input_indices(n, report)
    else:
        s = layer_scores(model, ids, span=k if cfg.score == "consecutive" else 1, **walk)
        if cfg.score == "consecutive":
            report.scores = s["angular"]
            drop = sc.best_window(s["angular"], k, n, **protect)
        else:
            report.scores = s["influence"]
            drop = sc.lowest(s["influence"], k, sc.removable(n, **protect))
        report.removed = drop
        remove_layers(model, drop)
    report.layers_after = len(decoder_layers(model))
    report.kept = kept_layers(model.config)
    report.params_after = sum(p.numel() for p in model.parameters())
    report.wall_s = time.perf_counter() - t0
    return model, report


def _removed_input_indices(n: int, report: DepthReport) -> list[int]:
    """The input model's indices of the layers the adapt rounds removed (each round numbers the model of its moment)."""
    alive = list(range(n))
    gone = []
    for r in report.rounds:
        gone.append(alive.pop(r["removed"]))
    return sorted(gone)


def apply(model, cfg: Depth, ctx):
    """``apply(model, cfg, ctx)`` of the step protocol (:mod:`edgeprune.steps`): score on ``ctx``'s
    calibration windows and remove layers."""
    return depth_prune(model, cfg, ctx.calibration(cfg, model), progress=ctx.progress)

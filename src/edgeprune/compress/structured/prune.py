"""Structured width pruning of Llama-family models: Adapt-Pruner and the baselines it must beat.

``StructuredPrune`` (``config.py``) is the step config; ``structured_prune`` here runs the stages
and calls the method's module; ``apply`` is the step protocol's entry (``step: prune``). Methods
(``config.METHODS``, a data table):

| method              | allocation across layers                          | score within a layer     | module         |
|---------------------|---------------------------------------------------|--------------------------|----------------|
| ``adapt``           | adaptive: mini-steps, s_l += delta - A * I_hat_l  | first-order Taylor       | ``adapt.py``   |
| ``taylor-uniform``  | one ratio, first/last layers kept (LLM-Pruner)    | first-order Taylor       | ``uniform.py`` |
| ``magnitude-uniform``| same                                             | L2 magnitude (no data)   | ``uniform.py`` |
| ``flap``            | one threshold on standardised scores (FLAP AL-AM) | fluctuation + bias comp. | ``flap.py``    |

**The target** is the fraction of *decoder-block* parameters removed (q/k/v/o, gate/up/down,
their biases and the block norms; embeddings, final norm and LM head excluded). The pruned model
has at most ``(1 - target)`` of the dense block parameters, and the report also gives total
parameters and bytes. Hidden size, vocabulary and layer count stay; attention loses whole KV
groups (a KV head with its query heads), MLPs lose channels in multiples of ``align``; no layer
loses its attention or MLP entirely (see ``allocation.py``).

**Stages** (Adapt-Accel): stage s of N prunes to ``P0 - (P0 - P_target) * s / N`` then, if
``train`` is set, trains on its share of the token budget (WSD schedule global across stages, KD
from the dense model). With ``stages=1`` and no ``train`` it is one-shot pruning.

Departures from the official Adapt-Pruner code, each for a stated reason:
- the last mini-step of a stage is shortened (``allocation.smallest_fraction``) so the count lands
  on the stage target instead of overshooting by up to ``delta`` of the parameters (fair
  comparisons at equal size);
- kept widths are rounded *up* to whole units (KV groups, ``align`` channels);
- calibration windows are drawn from the given pool each mini-step (the official code draws 512
  fresh SlimPajama windows of 64 tokens; edgeprune has no corpus offline, and 2 CPU cores).
"""

from __future__ import annotations

import copy
import json
import time

import torch

from edgeprune.compress.structured.adapt import prune_adaptive
from edgeprune.compress.structured.budget import check_reachable, param_counts, widths_of
from edgeprune.compress.structured.config import StructuredPrune, StructuredPruneReport
from edgeprune.compress.structured.flap import prune_flap
from edgeprune.compress.structured.recovery import stage_token_split, train
from edgeprune.compress.training import TopKTeacher, world
from edgeprune.compress.structured.uniform import prune_uniform
from edgeprune.errors import EdgepruneError
from edgeprune.memory import peak_rss_mb

# how each method's allocation cuts one stage (config.METHODS names the allocation)
ALLOCATIONS = {"adaptive": prune_adaptive, "uniform": prune_uniform, "global": prune_flap}


def finish_report(report: StructuredPruneReport, model, t0: float) -> StructuredPruneReport:
    block1, total1, bytes1 = param_counts(model)
    report.block_params_after, report.total_params_after, report.bytes_after = block1, total1, bytes1
    report.removed_fraction = 1.0 - block1 / report.block_params_before
    report.widths_after = widths_of(model.config)
    report.wall_s = time.perf_counter() - t0
    report.peak_rss_mb = peak_rss_mb()
    return report


def structured_prune(model, cfg: StructuredPrune, calib, *, train_data=None, progress: bool = True,
                     snapshots: tuple[float, ...] = (), on_snapshot=None, on_train_log=None):  # fmt: skip
    """Apply ``cfg`` to ``model`` -> ``(pruned per-layer model, StructuredPruneReport)``.

    ``model`` is not modified (it is the distillation teacher when training). ``calib``:
    :class:`~edgeprune.data.calib.TokenWindows`; ``train_data``: windows to train on
    (default ``calib``).

    ``snapshots`` (one-shot Adapt-Pruner only: ``stages=1``, no training): smaller targets passed
    on the way to ``cfg.target``. Adapt-Pruner's mini-steps up to a smaller target are exactly
    those of a run with that target (same calibration draws), so at the mini-step that crosses
    one, the model a run with that target would return (its last mini-step shortened the same
    way) is cut aside and handed to ``on_snapshot(target, model, report)``; one run gives every
    target, with ``wall_s`` the time at which each was reached.

    ``on_train_log(stage, step, steps, record, model)``: called after every recovery-training step.
    """
    from edgeprune.models import to_per_layer

    t0 = time.perf_counter()
    m = cfg.resolved
    snapshots = tuple(sorted(float(x) for x in snapshots))
    if snapshots:
        if m.allocation != "adaptive" or cfg.stages != 1 or cfg.train is not None or on_snapshot is None:
            raise EdgepruneError("snapshots need method adapt, stages=1, no training and an on_snapshot callback")
        if not all(0 < x < cfg.target for x in snapshots):
            raise EdgepruneError(f"snapshot targets must lie in (0, {cfg.target:g}), got {list(snapshots)}")
    dense = to_per_layer(model)  # EdgepruneError for unsupported architectures
    needs_data = m.criterion != "magnitude" or m.allocation == "adaptive" or m.bias_compensation or cfg.train
    if needs_data and (calib is None or len(calib) == 0):
        raise EdgepruneError(
            f"the calibration set is empty: method {cfg.method!r} needs calibration windows "
            "(edgeprune.compress.calibration_windows)"
        )
    p0, target_params = check_reachable(dense.config, cfg)
    train_data = calib if train_data is None else train_data
    if cfg.train is not None and (train_data is None or len(train_data) == 0):
        raise EdgepruneError("recovery training needs token windows: pass train_data or calib")

    block0, total0, bytes0 = param_counts(dense)
    assert block0 == p0, (block0, p0)  # the width formula and the module agree
    report = StructuredPruneReport(
        method=cfg.method, criterion=m.criterion, allocation=m.allocation, target=cfg.target, align=cfg.align,
        stages=cfg.stages, target_counts="decoder-block parameters (attention, MLP, their norms); embeddings, "
        "final norm and LM head excluded", block_params_before=block0, block_params_after=0,
        block_params_target=target_params, removed_fraction=0.0, total_params_before=total0, total_params_after=0,
        bytes_before=bytes0, bytes_after=0, dtype=str(next(dense.parameters()).dtype).replace("torch.", ""),
        widths_before=widths_of(dense.config), widths_after={}, layer_importance=None, layer_importance_final=None,
        sparsity=None, calibration=calib.describe() if calib is not None else None, config=cfg.to_dict(),
    )  # fmt: skip
    gen = torch.Generator().manual_seed(cfg.seed)
    teacher = dense if (cfg.train is not None and cfg.train.kd_alpha > 0) else None
    student = dense  # never trained in place: copied below if a stage leaves it uncut
    teacher_flags = {p: p.requires_grad for p in teacher.parameters()} if teacher is not None else {}
    # top-k teacher logits kept across the stages: every stage draws from the same windows
    kd_teacher = TopKTeacher(teacher, cfg.train.kd_topk, cfg.train.kd_temperature) if teacher is not None and cfg.train.kd_topk else teacher
    for p in teacher_flags:
        p.requires_grad_(False)
    stage_tokens = stage_token_split(cfg.train.tokens, cfg.stages, cfg.train.split) if cfg.train else []
    seq = train_data.seq_len if cfg.train else 1
    global_batch = cfg.train.batch_size * world()[1] if cfg.train else 1
    total_steps = sum(t // (global_batch * seq) for t in stage_tokens)
    steps_done = 0
    for stage in range(1, cfg.stages + 1):
        stage_target = p0 - round((p0 - target_params) * stage / cfg.stages)
        prune = ALLOCATIONS[m.allocation]
        student.eval()
        extra = {}
        if snapshots:
            extra["snapshots"] = [(x, p0 - round((p0 - int(p0 * (1.0 - x))) * stage / cfg.stages)) for x in snapshots]
            extra["on_snapshot"] = lambda x, mod, rep: on_snapshot(x, mod, finish_report(rep, mod, t0))
        student = prune(student, stage_target, cfg, calib, gen, report, stage=stage, progress=progress, **extra)
        if cfg.train is not None:
            if student is dense:
                student = copy.deepcopy(dense)
                for p in student.parameters():  # the teacher's flags were copied too
                    p.requires_grad_(True)
            rep = train(student, train_data.ids, cfg.train, tokens=stage_tokens[stage - 1], teacher=kd_teacher,
                        step_offset=steps_done, total_steps=total_steps, progress=progress,
                        on_log=None if on_train_log is None else (lambda *a, _s=stage: on_train_log(_s, *a)))  # fmt: skip
            steps_done += rep.steps
            report.train.append({"stage": stage, **rep.to_dict()})
            student.eval()
    finish_report(report, student, t0)
    block1 = report.block_params_after
    if block1 > target_params:
        raise AssertionError(f"pruning stopped at {block1} > target {target_params} block parameters")
    for p, flag in teacher_flags.items():  # the caller's model is left as it was given
        p.requires_grad_(flag)
    return student.eval(), report


# -- saving ---------------------------------------------------------------------------------------------

REPORT_NAME = "prune_report.json"
RECIPE_NAME = "prune.yaml"


def save_pruned(out, model, tokenizer, report: StructuredPruneReport, *, extra: dict | None = None, source_gguf=None):
    """Write ``out/``: the per-layer model (``save_pretrained``, safetensors + its code), the tokenizer,
    ``prune_report.json`` (per-layer widths, importances, parameter counts) and ``prune.yaml`` (the step).
    ``source_gguf``: the GGUF the tokenizer came from (``LoadedModel.source_gguf``); its tokenizer
    keys are recorded in ``tokenizer.gguf`` so the directory exports to GGUF on its own.

    Atomic: everything is written to a temporary directory renamed into place at the end, so a
    failure leaves no ``out`` behind.
    """
    from edgeprune.models.save import save_model

    data = {**report.to_dict(), **(extra or {})}
    files = {REPORT_NAME: json.dumps(data, indent=2) + "\n", RECIPE_NAME: StructuredPrune.from_dict(report.config).to_yaml()}
    return save_model(out, model, tokenizer, source_gguf=source_gguf, files=files)


# -- the step (``step: prune``) ------------------------------------------------------------------------


def apply(model, cfg: StructuredPrune, ctx):
    """``apply(model, cfg, ctx)`` of the step protocol (:mod:`edgeprune.steps`): prune on the windows
    ``ctx`` draws (its recovery training on its training windows)."""
    return structured_prune(model, cfg, ctx.calibration(cfg, model), train_data=ctx.training(cfg, model),
                            progress=ctx.progress)  # fmt: skip

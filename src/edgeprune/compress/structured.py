"""Structured width pruning of Llama-family models: Adapt-Pruner and the baselines it must beat.

``StructuredPrune`` is the step config; ``structured_prune`` (registered for it, applied through
``edgeprune.compress.compress``) walks the model. Methods (``METHODS``, a data table):

| method              | allocation across layers                          | score within a layer     |
|---------------------|---------------------------------------------------|--------------------------|
| ``adapt``           | adaptive: mini-steps, s_l += delta - A * I_hat_l  | first-order Taylor       |
| ``taylor-uniform``  | one ratio, first/last layers kept (LLM-Pruner)    | first-order Taylor       |
| ``magnitude-uniform``| same                                             | L2 magnitude (no data)   |
| ``flap``            | one threshold on standardised scores (FLAP AL-AM) | fluctuation + bias comp. |

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
import math
import time
from dataclasses import asdict, dataclass, field

import torch

from edgeprune.compress import allocation as alloc
from edgeprune.compress import importance as imp
from edgeprune.compress.sequential import CALIB_DTYPES
from edgeprune.compress.config import StrictConfig, check_choice, check_fraction, check_int
from edgeprune.compress.cut import LayerKeep, add_output_biases, coupled_rows, cut_widths
from edgeprune.compress.stats import CRITERIA, collect_stats
from edgeprune.compress.train import TrainConfig, stage_token_split, train, world
from edgeprune.errors import EdgepruneError
from edgeprune.memory import peak_rss_mb  # also imported from here by the sparsify CLI and bench/structured.py


@dataclass(frozen=True)
class Method:
    allocation: str  # "adaptive" | "uniform" | "global"
    criterion: str  # one of stats.CRITERIA
    bias_compensation: bool


METHODS: dict[str, Method] = {
    "adapt": Method("adaptive", "taylor", False),
    "taylor-uniform": Method("uniform", "taylor", False),
    "magnitude-uniform": Method("uniform", "magnitude", False),
    "flap": Method("global", "fluctuation", True),
}


@dataclass(frozen=True)
class StructuredPrune(StrictConfig):
    """Structured width pruning (see the module docstring). Strict: unknown keys are errors."""

    STEP = "prune"
    kind = "structured_prune"
    NESTED = {"train": TrainConfig}

    target: float = 0.25  # fraction of decoder-block parameters to remove, in (0, 1)
    method: str = "adapt"  # a key of METHODS
    criterion: str | None = None  # override the method's within-layer score (taylor, magnitude, fluctuation)
    align: int = 32  # MLP widths in multiples of this (device profiles set it; 32 suits llama.cpp / ORT kernels)
    stages: int = 1  # prune-then-train stages (Adapt-Accel); 1 = one-shot
    delta: float = 0.02  # Adapt-Pruner's per-mini-step sparsity increment (ratio 1.0 / 50 steps)
    amplitude: float = 0.02  # A: how far layer importance moves a layer's sparsity (released scripts: 0.02)
    max_sparsity: float = 0.99  # per-layer cap, as in the official code
    calib_windows: int = 32  # windows drawn from the pool per mini-step or one-shot pass (official: 512 x 64 tokens; 2 CPU cores)
    micro_batch: int = 4  # windows per forward/backward in calibration
    calib_dtype: str = "bfloat16"  # calibration matmuls under CPU autocast (2-3x faster with bf16 instructions); "float32" to disable
    keep_first: int = 1  # uniform methods: this many first layers stay dense (LLM-Pruner keeps the first ones)
    keep_last: int = 1  # uniform methods: this many last layers stay dense
    bias_compensation: bool | None = None  # FLAP's bias term; None = the method's default
    seed: int = 0
    train: TrainConfig | None = None  # recovery training after each stage (None: no training)
    version: int = 1

    def check(self) -> list[str]:
        p = check_fraction("target", self.target)
        p += check_choice("method", self.method, list(METHODS))
        if self.criterion is not None:
            p += check_choice("criterion", self.criterion, CRITERIA)
        p += check_int("align", self.align, minimum=1) + check_int("stages", self.stages, minimum=1)
        p += check_fraction("delta", self.delta) + check_fraction("amplitude", self.amplitude, low_open=False)
        p += check_fraction("max_sparsity", self.max_sparsity, high_open=True)
        p += check_int("calib_windows", self.calib_windows, minimum=1) + check_int("micro_batch", self.micro_batch, minimum=1)
        p += check_choice("calib_dtype", self.calib_dtype, tuple(CALIB_DTYPES))
        p += check_int("keep_first", self.keep_first, minimum=0) + check_int("keep_last", self.keep_last, minimum=0)
        if self.bias_compensation is not None and not isinstance(self.bias_compensation, bool):
            p.append(f"bias_compensation must be true, false or null, got {self.bias_compensation!r}")
        p += check_int("seed", self.seed, minimum=0)
        if self.train is not None and not isinstance(self.train, TrainConfig):
            p.append(f"train must be a TrainConfig (or a mapping of its settings), got {type(self.train).__name__}")
        return p

    @property
    def resolved(self) -> Method:
        m = METHODS[self.method]
        return Method(
            m.allocation,
            self.criterion or m.criterion,
            m.bias_compensation if self.bias_compensation is None else self.bias_compensation,
        )


# -- report ---------------------------------------------------------------------------------------------


@dataclass
class StructuredPruneReport:
    method: str
    criterion: str
    allocation: str
    target: float
    align: int
    stages: int
    target_counts: str  # what the target counts, in words
    block_params_before: int
    block_params_after: int
    block_params_target: int
    removed_fraction: float  # of block parameters
    total_params_before: int
    total_params_after: int
    bytes_before: int  # parameter bytes at the model's dtype
    bytes_after: int
    dtype: str
    widths_before: dict
    widths_after: dict
    layer_importance: list[float] | None  # -mean cos(in, out) per layer, dense model (None: not measured)
    layer_importance_final: list[float] | None  # the same, last measurement before the last cut
    sparsity: list[float] | None  # adapt: the per-layer channel sparsity reached (last stage)
    mini_steps: list[dict] = field(default_factory=list)
    calibration: dict | None = None
    train: list[dict] = field(default_factory=list)
    wall_s: float = 0.0
    peak_rss_mb: float = 0.0
    notes: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"


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


def _widths(config) -> dict:
    return {"heads": config.heads_per_layer(), "kv_heads": config.kv_heads_per_layer(),
            "intermediate": config.intermediate_per_layer()}  # fmt: skip


# -- the step -------------------------------------------------------------------------------------------


def _frozen_layers(cfg: StructuredPrune, n_layers: int) -> tuple[int, ...]:
    if cfg.resolved.allocation != "uniform":
        return ()
    return tuple(sorted(set(range(min(cfg.keep_first, n_layers))) | set(range(max(0, n_layers - cfg.keep_last), n_layers))))


def check_reachable(config, cfg: StructuredPrune) -> tuple[int, int]:
    """``(dense block params, target block params)``; EdgepruneError if the target cannot be met."""
    shape = _shape_for(config, cfg)
    kv, ff = config.kv_heads_per_layer(), config.intermediate_per_layer()
    p0 = alloc.BlockShape.from_config(config).block_params(kv, ff)
    target = int(p0 * (1.0 - cfg.target))
    frozen = _frozen_layers(cfg, config.num_hidden_layers)
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


def _shape_for(config, cfg: StructuredPrune) -> alloc.BlockShape:
    shape = alloc.BlockShape.from_config(config)
    if cfg.resolved.bias_compensation:  # the cut adds o_proj and MLP biases
        shape = alloc.BlockShape(shape.hidden, shape.head_dim, shape.n_rep, shape.qkv_bias, True, True)
    return shape


def _finish_report(report: StructuredPruneReport, model, t0: float) -> StructuredPruneReport:
    block1, total1, bytes1 = param_counts(model)
    report.block_params_after, report.total_params_after, report.bytes_after = block1, total1, bytes1
    report.removed_fraction = 1.0 - block1 / report.block_params_before
    report.widths_after = _widths(model.config)
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
        widths_before=_widths(dense.config), widths_after={}, layer_importance=None, layer_importance_final=None,
        sparsity=None, calibration=calib.describe() if calib is not None else None, config=cfg.to_dict(),
    )  # fmt: skip
    gen = torch.Generator().manual_seed(cfg.seed)
    teacher = dense if (cfg.train is not None and cfg.train.kd_alpha > 0) else None
    student = dense  # never trained in place: copied below if a stage leaves it uncut
    teacher_flags = {p: p.requires_grad for p in teacher.parameters()} if teacher is not None else {}
    for p in teacher_flags:
        p.requires_grad_(False)
    stage_tokens = stage_token_split(cfg.train.tokens, cfg.stages, cfg.train.split) if cfg.train else []
    seq = train_data.seq_len if cfg.train else 1
    global_batch = cfg.train.batch_size * world()[1] if cfg.train else 1
    total_steps = sum(t // (global_batch * seq) for t in stage_tokens)
    steps_done = 0
    for stage in range(1, cfg.stages + 1):
        stage_target = p0 - round((p0 - target_params) * stage / cfg.stages)
        prune = {"adaptive": _prune_adaptive, "uniform": _prune_uniform, "global": _prune_global}[m.allocation]
        student.eval()
        extra = {}
        if snapshots:
            extra["snapshots"] = [(x, p0 - round((p0 - int(p0 * (1.0 - x))) * stage / cfg.stages)) for x in snapshots]
            extra["on_snapshot"] = lambda x, mod, rep: on_snapshot(x, mod, _finish_report(rep, mod, t0))
        student = prune(student, stage_target, cfg, calib, gen, report, stage=stage, progress=progress, **extra)
        if cfg.train is not None:
            if student is dense:
                student = copy.deepcopy(dense)
                for p in student.parameters():  # the teacher's flags were copied too
                    p.requires_grad_(True)
            rep = train(student, train_data.ids, cfg.train, tokens=stage_tokens[stage - 1], teacher=teacher,
                        step_offset=steps_done, total_steps=total_steps, progress=progress,
                        on_log=None if on_train_log is None else (lambda *a, _s=stage: on_train_log(_s, *a)))  # fmt: skip
            steps_done += rep.steps
            report.train.append({"stage": stage, **rep.to_dict()})
            student.eval()
    _finish_report(report, student, t0)
    block1 = report.block_params_after
    if block1 > target_params:
        raise AssertionError(f"pruning stopped at {block1} > target {target_params} block parameters")
    for p, flag in teacher_flags.items():  # the caller's model is left as it was given
        p.requires_grad_(flag)
    return student.eval(), report


# -- allocations ----------------------------------------------------------------------------------------


def _keep_from_scores(model, stats, kv, ff) -> dict[int, LayerKeep]:
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


def _cut(model, keep: dict[int, LayerKeep], stats, bias_compensation: bool):
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
                removed = _complement(qo, heads[i] * cfg.head_dim)
                mean, _ = imp.mean_and_variance(stats.o_moments[i])
                attn_b[i] = imp.compensation_bias(layer.self_attn.o_proj.weight.detach(), mean, removed)
            if layer.mlp is not None and len(k.mlp_channels) < layer.mlp.intermediate_size and stats.down_moments[i] is not None:
                removed = _complement(torch.tensor(k.mlp_channels), layer.mlp.intermediate_size)
                mean, _ = imp.mean_and_variance(stats.down_moments[i])
                mlp_b[i] = imp.compensation_bias(layer.mlp.down_proj.weight.detach(), mean, removed)
    new = cut_widths(model, keep)
    if attn_b or mlp_b:
        new = add_output_biases(new, attn_b, mlp_b)
    return new


def _complement(kept: torch.Tensor, n: int) -> torch.Tensor:
    mask = torch.ones(n, dtype=torch.bool)
    mask[torch.as_tensor(kept, dtype=torch.long)] = False
    return mask.nonzero().flatten()


def _windows(calib, cfg, gen):
    return None if calib is None else calib.sample(cfg.calib_windows, gen)


def _prune_adaptive(model, stage_target, cfg, calib, gen, report, *, stage, progress, snapshots=(), on_snapshot=None):
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
        shape = _shape_for(config, cfg)
        cur_kv, cur_ff = config.kv_heads_per_layer(), config.intermediate_per_layer()
        stats = collect_stats(model, _windows(calib, cfg, gen), criterion=m.criterion, layer_cos=True,
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
            snap = _cut(model, _keep_from_scores(model, stats, kv_s, ff_s), stats, m.bias_compensation)
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
        keep = _keep_from_scores(model, stats, kv, ff)
        model = _cut(model, keep, stats, m.bias_compensation)
        sparsity = new_sparsity
        params = rec["block_params"]
        report.mini_steps.append(rec)
        bar.update(1)
        bar.set_postfix(params=f"{params / 1e6:.2f}M", target=f"{stage_target / 1e6:.2f}M")
    bar.close()
    report.sparsity = [round(x, 4) for x in sparsity.tolist()]
    return model


def _prune_uniform(model, stage_target, cfg, calib, gen, report, *, stage, progress):
    """LLM-Pruner: one ratio for every layer but the kept first/last ones."""
    m = cfg.resolved
    config = model.config
    shape = _shape_for(config, cfg)
    cur_kv, cur_ff = config.kv_heads_per_layer(), config.intermediate_per_layer()
    frozen = _frozen_layers(cfg, config.num_hidden_layers)
    data_pass = m.criterion != "magnitude" or m.bias_compensation
    stats = collect_stats(model, _windows(calib, cfg, gen) if data_pass else None, criterion=m.criterion,
                          layer_cos=bool(data_pass), moments=m.bias_compensation, micro_batch=cfg.micro_batch, autocast=CALIB_DTYPES[cfg.calib_dtype],
                          progress=progress)  # fmt: skip
    if stats.layer_importance is not None and report.layer_importance is None:
        report.layer_importance = stats.layer_importance
    try:
        ratio, kv, ff = alloc.solve_uniform(shape, cur_kv, cur_ff, stage_target, align=cfg.align, frozen=frozen,
                                            max_ratio=cfg.max_sparsity)  # fmt: skip
    except ValueError:
        raise EdgepruneError(f"no uniform ratio reaches the target {cfg.target:g}: lower it or keep fewer layers dense") from None
    report.mini_steps.append({"stage": stage, "ratio": round(ratio, 4), "kv_heads": kv, "intermediate": ff,
                              "block_params": shape.block_params(kv, ff), "calib_loss": stats.loss})  # fmt: skip
    return _cut(model, _keep_from_scores(model, stats, kv, ff), stats, m.bias_compensation)


def _prune_global(model, stage_target, cfg, calib, gen, report, *, stage, progress):
    """FLAP: standardise scores per module type across layers, keep all above one global threshold."""
    m = cfg.resolved
    config = model.config
    shape = _shape_for(config, cfg)
    cur_kv, cur_ff = config.kv_heads_per_layer(), config.intermediate_per_layer()
    data_pass = m.criterion != "magnitude" or m.bias_compensation
    stats = collect_stats(model, _windows(calib, cfg, gen) if data_pass else None, criterion=m.criterion,
                          layer_cos=bool(data_pass), moments=m.bias_compensation, micro_batch=cfg.micro_batch, autocast=CALIB_DTYPES[cfg.calib_dtype],
                          progress=progress)  # fmt: skip
    if stats.layer_importance is not None and report.layer_importance is None:
        report.layer_importance = stats.layer_importance
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
    return _cut(model, _keep_from_scores(model, stats, kv, ff), stats, m.bias_compensation)


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

"""Recovery on a budget (``step: recover``): given a token or CPU-second budget, a pruned model gets
local reconstruction of its blocks against the dense model first, then distillation from the
dense model for whatever is left.

Why this order and not one of the two alone: reconstruction fits each block to the dense block's
outputs on the same text, so every token it reads is a dense *target per layer*: it moves a freshly
pruned model furthest per token. But it is local (block by block, on few windows that every block
sees ``epochs`` times) and flattens once each block has matched its dense twin on that text.
Distillation trains all blocks together against the dense model's next-token distribution, so it
fixes what the local fits left (errors that add up across blocks), and keeps paying, slowly, for
as long as there is new text. ``bench/recovery_budget.py`` measures both out of domain, as a curve
of perplexity against tokens spent.

The split (:func:`split_budget`, pure): reconstruction takes ``recon_share`` of the budget, at most
``recon_max_tokens`` (its tokens are ``windows x seq_len x epochs``; fewer than ``MIN_RECON_WINDOWS``
windows is not worth a pass and goes to distillation), distillation the rest in whole optimizer
steps. A CPU-second budget is turned into tokens by a timed pilot: two distillation steps on a copy
of the model give tokens per CPU-second (``time.process_time``: this process, all its threads);
after reconstruction the tokens left are recomputed from the CPU-seconds actually left.

Sparse models stay sparse: with ``recon_prune`` reconstruction chooses N:M masks block by block as
it fits (the ``reconstruct`` step's in-loop pruning), and distillation keeps every weight that is
exactly zero at zero (``keep_zeros``: the masks re-applied after each optimizer step — masked
distillation, which is what AST amounts to at these budgets, ``bench/results/sparse24_notes.md``).

Distillation defaults are the fast ones (``compress.training``): the teacher's top-64 logits kept
per window and bf16 autocast where the CPU has it. The ``curve`` of the report is the model's
perplexity on a held-out slice before, after reconstruction and at ``curve_points`` points of
distillation: the ``general`` text's held-out documents (never trained on) where the data directory
has them, or the caller's ``probe``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from edgeprune.compress.config import StrictConfig, check_fraction, check_int
from edgeprune.compress.structured.recovery import TrainConfig
from edgeprune.errors import EdgepruneError

MIN_RECON_WINDOWS = 8  # fewer reconstruction windows than this fit a block to too little text to pay
PILOT_STEPS = 2  # distillation steps timed on a copy of the model to turn CPU-seconds into tokens


@dataclass(frozen=True)
class Recover(StrictConfig):
    """Recovery on a budget: local reconstruction first, then distillation from the dense model."""

    STEP = "recover"
    kind = "recover"

    tokens: int = 400_000  # the budget: reconstruction (windows x seq_len x epochs) + distillation tokens; 0: no token cap
    cpu_seconds: float = 0.0  # > 0: a budget of this process's CPU-seconds (the token budget, if set, still caps it)
    recon_share: float = 0.25  # at most this fraction of the budget goes to reconstruction (0: distillation only)
    recon_max_tokens: int = 131_072  # ... and at most this many tokens (256 windows of 256 tokens, 2 epochs)
    recon_epochs: int = 2
    recon_lr: float = 1e-3
    recon_prune: str | None = None  # choose N:M masks inside reconstruction, block by block: magnitude | wanda | sparsegpt
    recon_pattern: str = "2:4"  # the pattern recon_prune chooses
    keep_zeros: bool = True  # weights that are exactly zero stay zero through distillation (a 2:4 model stays 2:4)
    batch_size: int = 4  # distillation sequences per optimizer step
    lr: float = 1e-4  # distillation peak learning rate (warmup-stable-decay)
    kd_alpha: float = 1.0  # distillation weight (1: KL to the teacher only; 0: cross-entropy only)
    kd_temperature: float = 1.0
    kd_topk: int = 64  # the teacher's top-k logits kept per window (0: the full logits, live)
    train_dtype: str = "auto"  # bf16 autocast where the CPU has it
    curve_points: int = 4  # held-out probes during distillation (plus before and after reconstruction); 0: none
    probe_windows: int = 8  # held-out windows per probe
    seed: int = 0
    version: int = 1

    def check(self) -> list[str]:
        p = check_int("tokens", self.tokens, minimum=0)
        p += check_fraction("cpu_seconds", self.cpu_seconds, low_open=False, high=math.inf)
        if not p and self.tokens == 0 and self.cpu_seconds == 0:
            p.append("a budget is needed: set tokens > 0 or cpu_seconds > 0")
        p += check_fraction("recon_share", self.recon_share, low_open=False, high_open=False)
        p += check_int("recon_max_tokens", self.recon_max_tokens, minimum=0) + check_int("recon_epochs", self.recon_epochs, minimum=1)
        p += check_fraction("recon_lr", self.recon_lr, high=1.0) + check_int("curve_points", self.curve_points, minimum=0)
        p += check_int("probe_windows", self.probe_windows, minimum=1) + check_int("seed", self.seed, minimum=0)
        if not isinstance(self.keep_zeros, bool):
            p.append(f"keep_zeros must be true or false, got {self.keep_zeros!r}")
        if self.recon_prune is not None and self.recon_share == 0:
            p.append("recon_prune chooses masks inside reconstruction: it needs recon_share > 0")
        for make in (lambda: self.train_config(1), lambda: self.reconstruct_config(0)):
            try:  # the phases' own settings: their checks, with their messages
                make()
            except EdgepruneError as exc:
                p.append(str(exc).split(": ", 1)[-1])
        return p

    @property
    def budget_tokens(self) -> int:
        """Tokens the training windows are drawn for (:mod:`edgeprune.data.calib_policy`): the token
        budget, or for a CPU budget alone as many as the policy allows."""
        return self.tokens or 1 << 40

    def train_config(self, tokens: int) -> TrainConfig:
        return TrainConfig(tokens=max(int(tokens), 1), batch_size=self.batch_size, lr=self.lr, kd_alpha=self.kd_alpha,
                           kd_temperature=self.kd_temperature, kd_topk=self.kd_topk, train_dtype=self.train_dtype,
                           seed=self.seed)  # fmt: skip

    def reconstruct_config(self, windows: int):
        from edgeprune.compress.reconstruct.local import Reconstruct

        return Reconstruct(epochs=self.recon_epochs, lr=self.recon_lr, calib_windows=windows, prune=self.recon_prune,
                           pattern=self.recon_pattern, seed=self.seed)  # fmt: skip


# -- pure maths ------------------------------------------------------------------------------------------


def split_budget(tokens: int, *, recon_share: float, recon_max_tokens: int, recon_epochs: int, seq_len: int,
                 step_tokens: int, recon_pool: int) -> tuple[int, int]:  # fmt: skip
    """``(reconstruction windows, distillation tokens)`` for a budget of ``tokens``.

    Reconstruction gets ``min(recon_share * tokens, recon_max_tokens)`` tokens as whole windows of
    ``seq_len`` read ``recon_epochs`` times, at most ``recon_pool`` windows (those drawn), none when
    that is fewer than ``MIN_RECON_WINDOWS``; distillation gets the rest in whole steps of
    ``step_tokens`` (``batch x seq_len``)."""
    recon = min(int(tokens * recon_share), recon_max_tokens)
    windows = min(recon // (seq_len * recon_epochs), recon_pool)
    if windows < MIN_RECON_WINDOWS:
        windows = 0
    rest = max(tokens - windows * seq_len * recon_epochs, 0)
    return windows, (rest // step_tokens) * step_tokens


def probe_steps(steps: int, points: int) -> list[int]:
    """The optimizer steps (1-based) after which a probe runs: ``points`` evenly spaced, the last at ``steps``."""
    if steps <= 0 or points <= 0:
        return []
    return sorted({max(1, round(steps * (i + 1) / points)) for i in range(points)})


def zero_masks(model, *, min_fraction: float = 0.01) -> dict:
    """``{weight: mask}`` of the decoder Linears whose weights are at least ``min_fraction`` exact zeros
    (a pruned pattern; a dense float weight has next to none): ``mask`` is 1 where the weight is not zero."""
    from edgeprune.compress.sequential import block_linears, decoder_layers

    out = {}
    for layer in decoder_layers(model):
        for lin in block_linears(layer).values():
            nz = lin.weight.detach() != 0
            if 1.0 - float(nz.float().mean()) >= min_fraction:
                out[lin.weight] = nz.to(lin.weight.dtype)
    return out


# -- the run ---------------------------------------------------------------------------------------------


@dataclass
class RecoverReport:
    step: str = "recover"
    config: dict = field(default_factory=dict)
    budget_tokens: int = 0  # the token budget the run worked to (a CPU budget turned into tokens)
    budget_cpu_s: float = 0.0
    pilot_tokens_per_cpu_s: float | None = None  # distillation throughput timed before the run (CPU budgets)
    recon_windows: int = 0
    recon_tokens: int = 0
    recon_cpu_s: float = 0.0
    train_tokens: int = 0
    train_cpu_s: float = 0.0
    spent_tokens: int = 0
    spent_cpu_s: float = 0.0
    # reconstruction's block error before / after (mean over blocks), copied from ``reconstruct`` because a
    # build's stage figures keep a report's scalars only
    recon_rel_mse_before: float | None = None
    recon_rel_mse_after: float | None = None
    probe: str = ""  # what the curve scores
    curve: list[dict] = field(default_factory=list)  # {phase, tokens, cpu_s, **probe figures}
    reconstruct: dict | None = None
    train: dict | None = None
    wall_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _pilot_rate(model, windows, cfg: Recover, teacher) -> float:
    """Distillation tokens per CPU-second, timed on a copy of ``model`` (after one untimed step)."""
    from edgeprune.compress.structured.recovery import train

    trial = copy.deepcopy(model)
    seq = windows.shape[1]
    ids = windows[: cfg.batch_size * (PILOT_STEPS + 1)]
    tc = cfg.train_config(cfg.batch_size * seq)
    train(trial, ids[: cfg.batch_size], tc, teacher=teacher, progress=False)
    c0 = time.process_time()
    rep = train(trial, ids[cfg.batch_size :], tc, tokens=PILOT_STEPS * cfg.batch_size * seq, teacher=teacher, progress=False)
    del trial
    return rep.tokens / max(time.process_time() - c0, 1e-6)


def recover(model, cfg: Recover, *, dense, calib, train_windows, probe: Callable | None = None, probe_name: str = "",
            on_point: Callable | None = None, progress: bool = True) -> tuple:  # fmt: skip
    """Spend ``cfg``'s budget on ``model`` (pruned, in place) -> ``(model, RecoverReport)``.

    ``calib``: reconstruction windows (the first ones are used), ``train_windows``: distillation
    windows, both ``TokenWindows`` or ``(n, seq_len)`` ids; ``dense``: the teacher and the
    reconstruction target; ``probe(model) -> dict`` of figures (e.g. ``{"ppl": ...}``) for the curve,
    ``on_point(entry)`` called with each curve entry as it is made (a long run shows its curve as it goes)."""
    import torch

    from edgeprune.compress.reconstruct.local import reconstruct
    from edgeprune.compress.structured.recovery import train
    from edgeprune.compress.training import TopKTeacher

    t0, c0 = time.perf_counter(), time.process_time()
    rep = RecoverReport(config=cfg.to_dict(), probe=probe_name)
    calib_ids = calib.ids if hasattr(calib, "ids") else calib
    train_ids = train_windows.ids if hasattr(train_windows, "ids") else train_windows
    seq = int(train_ids.shape[1])
    if calib_ids is not None and int(calib_ids.shape[1]) != seq:
        raise EdgepruneError(f"reconstruction windows are {int(calib_ids.shape[1])} tokens, distillation windows {seq}: draw both at one length")
    step_tokens = cfg.batch_size * seq
    teacher = dense
    if cfg.kd_alpha > 0 and cfg.kd_topk:  # one cache for the pilot and the run: the pilot's windows are not paid twice
        teacher = TopKTeacher(dense, cfg.kd_topk, cfg.kd_temperature)

    def spent() -> float:
        return time.process_time() - c0

    def point(phase: str, tokens: int, m) -> None:
        if probe is None:
            return
        was = m.training
        m.eval()
        try:
            figures = probe(m)
        finally:
            m.train(was)
        rep.curve.append({"phase": phase, "tokens": tokens, "cpu_s": round(spent(), 2), **figures})
        if on_point is not None:
            on_point(rep.curve[-1])

    budget = cfg.tokens
    if cfg.cpu_seconds > 0:
        rate = _pilot_rate(model, train_ids, cfg, teacher)
        rep.pilot_tokens_per_cpu_s = round(rate, 2)
        by_cpu = int(max(cfg.cpu_seconds - spent(), 0) * rate)
        budget = min(budget, by_cpu) if budget else by_cpu
    rep.budget_tokens, rep.budget_cpu_s = int(budget), float(cfg.cpu_seconds)
    pool = 0 if calib_ids is None else int(calib_ids.shape[0])
    windows, train_tokens = split_budget(budget, recon_share=cfg.recon_share, recon_max_tokens=cfg.recon_max_tokens,
                                         recon_epochs=cfg.recon_epochs, seq_len=seq, step_tokens=step_tokens,
                                         recon_pool=pool)  # fmt: skip
    point("start", 0, model)
    if windows:
        c1 = spent()
        model, rrep = reconstruct(model, cfg.reconstruct_config(windows), calib_ids, dense=dense, progress=progress)
        rep.recon_windows, rep.recon_tokens = windows, windows * seq * cfg.recon_epochs
        rep.recon_cpu_s = round(spent() - c1, 2)
        rep.reconstruct = rrep.to_dict()
        rep.recon_rel_mse_before, rep.recon_rel_mse_after = rrep.rel_mse_before, rrep.rel_mse_after
        point("reconstruct", rep.recon_tokens, model)
    if windows == 0 and cfg.recon_prune is not None:
        raise EdgepruneError(f"a budget of {budget} tokens leaves reconstruction fewer than {MIN_RECON_WINDOWS} windows to choose "
                             f"its {cfg.recon_pattern} masks on: raise tokens (or cpu_seconds) or recon_share")  # fmt: skip
    if cfg.cpu_seconds > 0:  # what is left of the CPU budget, at the pilot's rate
        left = int(max(cfg.cpu_seconds - spent(), 0) * rep.pilot_tokens_per_cpu_s)
        cap = max(budget - rep.recon_tokens, 0)
        train_tokens = (min(left, cap) // step_tokens) * step_tokens
    if train_tokens >= step_tokens:
        tc = cfg.train_config(train_tokens)
        steps = train_tokens // step_tokens
        at = set(probe_steps(steps, cfg.curve_points))

        def on_log(step, _steps, _record, m):
            if step in at:
                point("distill", rep.recon_tokens + step * step_tokens, m)

        masks = zero_masks(model) if cfg.keep_zeros else {}

        @torch.no_grad()
        def keep_zeros():  # Adam moves a zero weight off zero; the pattern (and what it saves) must survive
            for w, m in masks.items():
                w.mul_(m)

        c2 = spent()
        trep = train(model, train_ids, tc, teacher=teacher if cfg.kd_alpha > 0 else None, progress=progress, on_log=on_log,
                     after_step=keep_zeros if masks else None)  # fmt: skip
        rep.train_tokens, rep.train_cpu_s = trep.tokens, round(spent() - c2, 2)
        rep.train = {**trep.to_dict(), "teacher_forwards": getattr(teacher, "forwards", None)}
    rep.spent_tokens = rep.recon_tokens + rep.train_tokens
    rep.spent_cpu_s = round(spent(), 2)
    rep.wall_s = round(time.perf_counter() - t0, 2)
    return model, rep


# -- the held-out probe ------------------------------------------------------------------------------------


def heldout_probe(tokenizer, *, n_windows: int, seq_len: int, data_dir=None):
    """``(probe, name)``: perplexity on ``n_windows`` windows of the ``general`` text's held-out
    documents (never drawn for calibration or training), or ``(None, reason)`` without ``general``."""
    import torch

    from edgeprune.compress.training import distill_loss
    from edgeprune.data.calib import text_windows
    from edgeprune.data.general import general_dir, general_heldout_text

    if general_dir(data_dir) is None:
        return None, "none (no general/ text in the data directory: no held-out slice to score)"
    try:
        ids = text_windows(general_heldout_text(data_dir), tokenizer, seq_len=seq_len, n_windows=n_windows, seed=0,
                           source="general held-out").ids  # (n, seq_len)  # fmt: skip
    except EdgepruneError as exc:  # too little held-out text for one window: no curve, the recovery still runs
        return None, f"none ({exc})"

    def probe(model) -> dict:
        nll, count = 0.0, 0
        with torch.no_grad():
            for rows in ids.split(4):
                # the training loss's own next-token CE (causal shift included), weighted by predicted tokens
                ce = distill_loss(model(input_ids=rows, use_cache=False).logits, None, rows, ce_weight=1.0, kd_weight=0.0,
                                  temperature=1.0)[1]  # fmt: skip
                nll += float(ce) * rows[:, 1:].numel()
                count += rows[:, 1:].numel()
        return {"heldout_ppl": round(math.exp(nll / count), 4)}

    return probe, f"general held-out documents, {len(ids)} windows of {seq_len} tokens"


# -- the step (``step: recover``) --------------------------------------------------------------------------


def apply(model, cfg: Recover, ctx):
    """``apply(model, cfg, ctx)`` of the step protocol (:mod:`edgeprune.steps`): spend the budget on
    ``ctx``'s calibration windows (reconstruction) and training windows (distillation), against its dense original."""
    dense = ctx.require_dense("recovery (reconstruction targets and the distillation teacher)")
    calib = ctx.calibration(cfg, model) if cfg.recon_share > 0 else None
    train_windows = ctx.training(cfg, model)
    if train_windows is None:
        raise EdgepruneError("recovery needs training text: pass a calibration source or training windows")
    probe, name = (None, "none (curve_points 0)")
    if cfg.curve_points:
        probe, name = heldout_probe(ctx._tokenizer(), n_windows=cfg.probe_windows, seq_len=int(train_windows.ids.shape[1]),
                                    data_dir=ctx.data_dir)  # fmt: skip
    if probe is not None:
        dense_fig = probe(dense.eval())
        name += f"; dense model: {dense_fig}"
    ctx.log(f"recover: budget {cfg.tokens or '-'} tokens / {cfg.cpu_seconds or '-'} CPU-s; probe: {name}")
    return recover(model, cfg, dense=dense, calib=calib, train_windows=train_windows, probe=probe, probe_name=name,
                   progress=ctx.progress)  # fmt: skip

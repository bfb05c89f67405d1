"""Recovery training after pruning: a plain torch loop that runs unchanged under ``torchrun`` (DDP).

- AdamW, warmup-stable-decay learning rate (``wsd_lr``), gradient-norm clipping;
- optional knowledge distillation from the dense model (``kd_loss``: KL at temperature T scaled
  by T**2, mixed with the causal-LM cross-entropy by ``kd_alpha``);
- optional gradient checkpointing;
- a token budget: ``steps = tokens // (batch_size * world_size * seq_len)``.

Distributed (the plumbing lives in :mod:`edgeprune.compress.training`): if ``torch.distributed`` is
initialised (``torchrun`` + :func:`~edgeprune.compress.training.distributed_from_env`,
or the caller's own ``init_process_group``), the model is wrapped in ``DistributedDataParallel``:
every rank draws the same seeded permutation of the windows and takes its own slice of each
global batch, gradients are averaged by DDP, and every rank ends with the same weights. On CPU
use the ``gloo`` backend, on CUDA ``nccl``. Not done: FSDP (the 135M-1B models this targets fit
on one device; FSDP would wrap the same loop with ``fully_shard``).

The maths (``wsd_lr``, ``stage_token_split``; ``training.kd_loss``) are pure functions, tested alone.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass, field

import torch

from edgeprune.compress.config import StrictConfig, check_choice, check_fraction, check_int
from edgeprune.compress.training import (TRAIN_DTYPES, adamw, embedding_params, kd_loss, lm_step, mean_over_ranks,
                                         TopKTeacher, resolve_autocast, set_gradient_checkpointing, set_lr, shuffled_order,
                                         world, wrap_ddp)  # fmt: skip
# re-exported for the importers of its old home here (cli/prune_cmd.py, cli/sparsify_cmd.py; structured.py imports world)
from edgeprune.errors import EdgepruneError

SPLITS = ("linear", "constant")


@dataclass(frozen=True)
class TrainConfig(StrictConfig):
    """Recovery training settings (nested in ``StructuredPrune.train``)."""

    STEP = "train"
    kind = "train"

    tokens: int = 200_000  # total budget over all stages (sized for ~30 min on 2 uncontended CPU cores, 135M)
    batch_size: int = 4  # sequences per rank per optimiser step
    lr: float = 1e-4  # peak; the paper's 2e-5 is for batches of 128 over billions of tokens
    min_lr_ratio: float = 0.1  # LR at the end of the decay, as a fraction of the peak
    warmup: float = 0.05  # fraction of all steps (WSD: Adapt-Pruner's 5% warmup)
    decay: float = 0.1  # fraction of all steps, at the end (WSD: the last 10% decay linearly)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    kd_alpha: float = 0.0  # weight of the distillation loss (0: CE only, as the released scripts; 1: KD only)
    kd_temperature: float = 2.0
    kd_topk: int = 0  # > 0: distil from the teacher's top-k logits, computed once per window and kept (0: live, full)
    gradient_checkpointing: bool = False
    train_dtype: str = "float32"  # "bfloat16": matmuls under CPU autocast (master weights, Adam state float32); "auto": bf16 where the CPU has it
    freeze_embeddings: bool = False  # the token embedding / tied LM head is not pruned: freezing it saves its gradient and Adam state
    split: str = "linear"  # how the budget is shared by stages: "linear" (stage i gets 2i/(N(N+1))) or "constant"
    seed: int = 0
    version: int = 1

    def check(self) -> list[str]:
        p = check_int("tokens", self.tokens, minimum=1) + check_int("batch_size", self.batch_size, minimum=1)
        p += check_fraction("lr", self.lr, high=1.0) + check_fraction("min_lr_ratio", self.min_lr_ratio, low_open=False, high_open=False)
        p += check_fraction("warmup", self.warmup, low_open=False, high_open=True)
        p += check_fraction("decay", self.decay, low_open=False, high_open=False)
        if not p and self.warmup + self.decay > 1:
            p.append(f"warmup + decay must be <= 1, got {self.warmup + self.decay}")
        p += check_fraction("weight_decay", self.weight_decay, low_open=False, high=10.0)
        p += check_fraction("grad_clip", self.grad_clip, low_open=False, high=math.inf)
        p += check_fraction("kd_alpha", self.kd_alpha, low_open=False, high_open=False)
        p += check_fraction("kd_temperature", self.kd_temperature, high=100.0) + check_int("kd_topk", self.kd_topk, minimum=0)
        if not isinstance(self.gradient_checkpointing, bool):
            p.append(f"gradient_checkpointing must be true or false, got {self.gradient_checkpointing!r}")
        if not isinstance(self.freeze_embeddings, bool):
            p.append(f"freeze_embeddings must be true or false, got {self.freeze_embeddings!r}")
        p += check_choice("train_dtype", self.train_dtype, (*TRAIN_DTYPES, "auto"))
        p += check_choice("split", self.split, SPLITS) + check_int("seed", self.seed, minimum=0)
        return p


# -- pure maths ------------------------------------------------------------------------------------------


def wsd_lr(step: int, total: int, *, peak: float, warmup: float = 0.05, decay: float = 0.1, min_ratio: float = 0.0) -> float:
    """Warmup-stable-decay: linear warmup over ``warmup*total`` steps, constant, then linear decay to
    ``min_ratio*peak`` over the last ``decay*total`` steps. ``step`` counts from 0."""
    n_warm, n_decay = int(round(warmup * total)), int(round(decay * total))
    if n_warm and step < n_warm:
        return peak * (step + 1) / n_warm
    decay_start = total - n_decay
    if n_decay and step >= decay_start:
        frac = (step - decay_start + 1) / n_decay
        return peak * (1.0 - (1.0 - min_ratio) * frac)
    return peak


def stage_token_split(total: int, stages: int, split: str = "linear") -> list[int]:
    """Tokens per stage. ``linear``: stage i (1-based) gets ``2i / (N(N+1))`` of the budget, as
    Adapt-Pruner's scripts do (later stages, with more removed, train longer)."""
    if split == "constant":
        shares = [1.0 / stages] * stages
    elif split == "linear":
        shares = [2 * i / (stages * (stages + 1)) for i in range(1, stages + 1)]
    else:
        raise ValueError(f"unknown split {split!r}")
    out = [int(total * s) for s in shares]
    out[-1] += total - sum(out)
    return out


# -- the loop -------------------------------------------------------------------------------------------


@dataclass
class TrainReport:
    steps: int
    tokens: int  # tokens seen, all ranks together
    world_size: int
    seq_len: int
    first_loss: float | None
    last_loss: float | None
    losses: list[float] = field(default_factory=list)  # mean loss of each logged step
    lr_last: float = 0.0
    kd_alpha: float = 0.0
    wall_s: float = 0.0
    tokens_per_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def train(model, windows: torch.Tensor, config: TrainConfig, *, tokens: int | None = None, teacher=None,
          step_offset: int = 0, total_steps: int | None = None, progress: bool = True, log_every: int = 1,
          on_log=None, after_step=None) -> TrainReport:  # fmt: skip
    """Train ``model`` in place on ``windows`` (``(n, seq_len)`` ids) for ``tokens`` (default: the budget).

    ``step_offset`` / ``total_steps`` place these steps in a longer schedule (the WSD schedule is
    global across pruning stages). ``teacher``: a frozen model for distillation (``kd_alpha > 0``).
    ``on_log(step, steps, record, model)`` is called on rank 0 after every optimizer step (``step``
    counts from 1; ``record``: loss, ce, kl, lr), e.g. to measure a learning curve. ``after_step()``
    runs on every rank right after each optimizer step, before ``on_log`` (e.g. to re-apply sparsity masks).
    """
    rank, world_size = world()
    tokens = config.tokens if tokens is None else tokens
    seq_len = windows.shape[1]
    global_batch = config.batch_size * world_size
    steps = tokens // (global_batch * seq_len)
    if steps == 0:
        raise EdgepruneError(
            f"a budget of {tokens} tokens is less than one step ({global_batch} x {seq_len} tokens): raise the token "
            "budget or lower batch_size"
        )
    total_steps = steps if total_steps is None else total_steps
    use_kd = config.kd_alpha > 0 and teacher is not None
    if config.kd_alpha > 0 and teacher is None:
        raise EdgepruneError("kd_alpha > 0 needs a teacher model: pass teacher= or set kd_alpha 0")

    order = shuffled_order(len(windows), steps * global_batch, config.seed + step_offset)  # the same on every rank

    was_training = model.training
    if config.gradient_checkpointing:
        set_gradient_checkpointing(model, True)
    model.train()
    net = wrap_ddp(model)
    saved_flags = {}
    if config.freeze_embeddings:
        for p in embedding_params(model):
            saved_flags.setdefault(p, p.requires_grad)
            p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = adamw(params, lr=config.lr, weight_decay=config.weight_decay)
    if teacher is not None:
        teacher.eval()
        if use_kd and config.kd_topk and not isinstance(teacher, TopKTeacher):
            teacher = TopKTeacher(teacher, config.kd_topk, config.kd_temperature)  # this call's windows; pass one in to keep it longer
    loss_fn = functools.partial(kd_loss, alpha=config.kd_alpha if use_kd else 0.0, temperature=config.kd_temperature)

    from tqdm.auto import tqdm

    report = TrainReport(steps=steps, tokens=steps * global_batch * seq_len, world_size=world_size, seq_len=seq_len,
                         first_loss=None, last_loss=None, kd_alpha=config.kd_alpha if use_kd else 0.0)  # fmt: skip
    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc="recovery training", disable=not progress or rank != 0, leave=False)
    for step in bar:
        lr = wsd_lr(step_offset + step, total_steps, peak=config.lr, warmup=config.warmup, decay=config.decay,
                    min_ratio=config.min_lr_ratio)  # fmt: skip
        set_lr(opt, lr)
        # global batch step*global_batch .. +global_batch; this rank's slice of it
        start = step * global_batch + rank * config.batch_size
        ids = windows[order[start : start + config.batch_size]]
        sums = lm_step(net, opt, params, ids, loss_fn, teacher=teacher if use_kd else None,
                       dtype=resolve_autocast(config.train_dtype), grad_clip=config.grad_clip)  # fmt: skip
        if after_step is not None:
            after_step()
        value = float(mean_over_ranks(sums[:1]))  # the loss logged is the mean over ranks; ce and kl stay this rank's
        if report.first_loss is None:
            report.first_loss = value
        report.last_loss = value
        if step % log_every == 0 or step == steps - 1:
            report.losses.append(round(value, 5))
        bar.set_postfix(loss=f"{value:.3f}", lr=f"{lr:.2e}")
        if on_log is not None and rank == 0:
            on_log(step + 1, steps, {"loss": value, "ce": float(sums[1]), "kl": float(sums[2]), "lr": lr}, model)
        report.lr_last = lr
    bar.close()
    report.wall_s = time.perf_counter() - t0
    report.tokens_per_s = report.tokens / report.wall_s if report.wall_s > 0 else math.inf
    if config.gradient_checkpointing:
        set_gradient_checkpointing(model, False)
    model.train(was_training)
    model.zero_grad(set_to_none=True)
    for p, flag in saved_flags.items():
        p.requires_grad_(flag)
    return report


# -- the step (``step: train``) ---------------------------------------------------------------------------


def apply(model, cfg: TrainConfig, ctx):
    """``apply(model, cfg, ctx)`` of the step protocol (:mod:`edgeprune.steps`): recovery training on
    ``ctx``'s training windows (``self`` text by the dense original), distilling from it when ``kd_alpha`` > 0."""
    windows = ctx.training(cfg, model)
    teacher = ctx.require_dense("distillation (kd_alpha > 0)") if cfg.kd_alpha > 0 else None
    return model, train(model, windows.ids, cfg, teacher=teacher, progress=ctx.progress)

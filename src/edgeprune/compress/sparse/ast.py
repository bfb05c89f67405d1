"""AST: semi-structured (N:M) adaptive sparse training with distillation and SLoRB (arXiv 2407.20584,
thu-ml/Adaptive-Sparse-Trainer; notes in shared/notes/compression-methods.md section 2).

``SparseTrain`` is the step config; ``sparse_train`` (registered for it) does, in order:

1. **Initial mask.** ``init="magnitude"`` is AST's: the top-N of every M by ``|W|``, dense weights
   kept. ``init="wanda"`` / ``"sparsegpt"`` start from that one-shot result instead (calibrated
   layer by layer on ``calib``); the pruned weights then start at 0 and must regrow to win back
   their place, so the one-shot mask is kept until training says otherwise. ``init="none"``: the
   model is already N:M sparse (e.g. pruned and then locally reconstructed); its zeros are the
   first mask, and the dense teacher must be passed (a copy of a pruned model teaches nothing).
2. **Masked training.** Every decoder Linear becomes a :class:`~edgeprune.compress.sparse_modules.MaskedLinear`:
   forward ``W ⊙ M``, straight-through gradient to the dense ``W``. Every ``mask_every`` optimizer
   steps (AST: 10) the mask is recomputed from the dense weights (top-N of M by ``|W|``); the
   flip rates against the previous and the initial mask are logged.
3. **Annealed SR-STE decay.** Before each optimizer step, ``g <- g + lambda(t) * (¬M ⊙ W)``, with
   ``lambda`` rising linearly from 0 to ``decay_cap`` over the first ``decay_ramp`` of the steps,
   then constant: pruned weights are pulled to zero more and more, so masks settle.
4. **Distillation** from the dense model (a frozen copy taken before pruning): forward KL at
   temperature ``T`` (default 2) scaled by ``T^2``, mixed with cross-entropy:
   ``ce_weight * CE + kd_weight * T^2 * KL(teacher_T || student_T)`` (AST's GPT-2 weights
   0.33 / 0.67 by default; its LLaMA run used 1 / 0.5).
5. **SLoRB** (``slorb=True``): ``y = (W ⊙ M) x + L S x``, ``S`` summing inputs in groups of
   ``slorb_k`` (16), trained with the rest; 1/16 extra weights per Linear. ``L`` starts as AST's
   group mean of the pruned weights ``(1 - M) ⊙ W`` for the magnitude init. After a
   SparseGPT / Wanda init that mean *raises* the layer error (the kept weights already compensate
   part of the pruned ones; measured 1.04-1.96x on SmolLM2-135M layers), so there ``L`` is the
   Hessian-weighted least-squares fit of the residual, computed in the one-shot calibration pass
   (``NMPrune.slorb_k``; 8-11 % lower layer error than no SLoRB).
6. **Finalize**: MaskedLinears become plain sparse ``nn.Linear`` (or ``SLoRBLinear``);
   ``sparse_modules.merge_all_slorb`` folds SLoRB into dense weights for GGUF / ONNX.

Departures from the official code, each for a stated reason: the decay is added to the gradient
as described in the paper (the GPT-2 code's integer-mask bitwise-not looks like a sign bug, the
LLaMA code applies it in a callback); S is fixed (the released configs train it: that would add
``d^2/k`` parameters and break the merge into a 2:4 + low-rank form); the embedding / tied LM head
is frozen by default (it is not pruned; freezing it saves its weight gradient and Adam state);
matmuls run under bfloat16 autocast by default (CPU bf16 instructions make them 2-4x faster;
master weights, optimizer state and losses stay float32).

Distributed: under ``torchrun`` (``edgeprune.compress.training.distributed_from_env``) the model is
wrapped in DDP; every rank draws the same seeded order and takes its slice of each global batch;
gradients are averaged before the decay term and the mask update, which are deterministic
functions of identical weights, so every rank ends with identical weights.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from edgeprune.compress.sparse import masks as mk
from edgeprune.compress.sequential import block_linears, decoder_layers
from edgeprune.compress.config import StrictConfig, check_choice, check_fraction, check_int
from edgeprune.compress.sparse.modules import MaskedLinear, SLoRBLinear, replace_module, slorb_init
from edgeprune.compress.training import (TRAIN_DTYPES, adamw, distill_loss, embedding_params, lm_step, mean_over_ranks,
                                         resolve_autocast, set_lr, shuffled_order, world, wrap_ddp)  # fmt: skip
from edgeprune.errors import EdgepruneError

INITS = ("magnitude", "wanda", "sparsegpt", "none")


@dataclass(frozen=True)
class SparseTrain(StrictConfig):
    """AST sparse training: masked STE training with mask re-selection, SR-STE decay, KD and SLoRB."""

    STEP = "sparse_train"
    kind = "sparse_train"

    pattern: str = "2:4"
    init: str = "sparsegpt"  # first mask: magnitude (AST's) | wanda | sparsegpt (one-shot on the calibration windows) | none (already N:M sparse)
    # training budget, all ranks together: ~0.009 CPU-s per token for the 135M model with bf16 autocast on
    # one AVX-512-BF16 core, so 300k tokens ~ 45 CPU-minutes (+ init and data): about an hour on 2 cores
    tokens: int = 300_000
    batch_size: int = 8  # sequences per optimizer step, all ranks together
    micro_batch: int = 2  # sequences per forward on one rank (memory: the logits are 49k wide)
    lr: float = 2e-4  # peak AdamW learning rate (AST GPT-2: 2e-4; 3e-4 > 1e-4 in a 12-step probe on SmolLM2-135M)
    min_lr_ratio: float = 0.1  # cosine decay ends at this fraction of the peak (AST: 0.1)
    warmup: float = 0.05  # fraction of steps with linear warmup
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    mask_every: int = 10  # optimizer steps between mask re-selections (AST: 10)
    decay_cap: float = 6e-5  # SR-STE lambda cap (AST LLaMA: 6e-5, GPT-2: 1e-4)
    decay_ramp: float = 0.5  # fraction of steps over which lambda rises linearly from 0 to the cap
    ce_weight: float = 0.33  # AST GPT-2 path
    kd_weight: float = 0.67
    temperature: float = 2.0
    slorb: bool = True
    slorb_k: int = 16
    freeze_embeddings: bool = True
    train_dtype: str = "bfloat16"  # autocast dtype for forward/backward matmuls; "float32" to disable
    seed: int = 0
    version: int = 1

    def check(self) -> list[str]:
        p = []
        try:
            if mk.parse_pattern(self.pattern) is None:
                p.append("sparse training needs an N:M pattern (e.g. 2:4), not unstructured")
        except EdgepruneError as exc:
            p.append(str(exc))
        p += check_choice("init", self.init, INITS) + check_int("tokens", self.tokens, minimum=1)
        p += check_int("batch_size", self.batch_size, minimum=1) + check_int("micro_batch", self.micro_batch, minimum=1)
        p += check_fraction("lr", self.lr, high=1.0) + check_fraction("min_lr_ratio", self.min_lr_ratio, low_open=False, high_open=False)
        p += check_fraction("warmup", self.warmup, low_open=False) + check_fraction("weight_decay", self.weight_decay, low_open=False, high=10.0)
        p += check_fraction("grad_clip", self.grad_clip, low_open=False, high=math.inf)
        p += check_int("mask_every", self.mask_every, minimum=1)
        p += check_fraction("decay_cap", self.decay_cap, low_open=False, high=1.0)
        p += check_fraction("decay_ramp", self.decay_ramp, low_open=False, high_open=False)
        p += check_fraction("ce_weight", self.ce_weight, low_open=False, high=100.0)
        p += check_fraction("kd_weight", self.kd_weight, low_open=False, high=100.0)
        if not p and self.ce_weight == 0 and self.kd_weight == 0:
            p.append("ce_weight and kd_weight are both 0: nothing to train on")
        p += check_fraction("temperature", self.temperature, high=100.0)
        p += check_int("slorb_k", self.slorb_k, minimum=1) + check_choice("train_dtype", self.train_dtype, tuple(TRAIN_DTYPES))
        for flag in ("slorb", "freeze_embeddings"):
            if not isinstance(getattr(self, flag), bool):
                p.append(f"{flag} must be true or false, got {getattr(self, flag)!r}")
        p += check_int("seed", self.seed, minimum=0)
        return p

    @property
    def nm(self) -> tuple[int, int]:
        return mk.parse_pattern(self.pattern)


# -- pure maths ------------------------------------------------------------------------------------------


def cosine_lr(step: int, total: int, *, peak: float, warmup: float, min_ratio: float) -> float:
    """Linear warmup over ``warmup * total`` steps, then cosine from ``peak`` to ``min_ratio * peak``."""
    n_warm = int(round(warmup * total))
    if step < n_warm:
        return peak * (step + 1) / n_warm
    frac = (step - n_warm) / max(1, total - n_warm - 1)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def decay_lambda(step: int, total: int, *, cap: float, ramp: float) -> float:
    """Annealed SR-STE strength: 0 at step 0, linear to ``cap`` at ``ramp * total`` steps, then ``cap``."""
    n_ramp = ramp * total
    return cap if n_ramp <= 0 else cap * min(1.0, step / n_ramp)


def add_sr_ste_decay_(grad: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, lam: float) -> None:
    """``grad += lam * (¬M ⊙ W)`` in place (pulls pruned weights towards 0)."""
    if lam:
        grad.add_(torch.where(mask, torch.zeros((), dtype=weight.dtype), weight.detach()), alpha=lam)


# -- the step ------------------------------------------------------------------------------------------


@dataclass
class SparseTrainReport:
    config: dict
    init: dict | None = None  # the one-shot report (wanda / sparsegpt init)
    steps: int = 0
    tokens: int = 0  # trained tokens, all ranks
    world_size: int = 1
    seq_len: int = 0
    train_data: dict | None = None
    losses: list[dict] = field(default_factory=list)  # every logged step: step, loss, ce, kl, lr, lambda
    mask_updates: list[dict] = field(default_factory=list)  # step, flip vs previous, flip vs initial
    slorb_params: int = 0
    resumed_from: int = 0  # the step a checkpoint resumed from (0: a fresh run)
    wall_s: float = 0.0  # this session's (a resumed run counts from the resume)
    tokens_per_s: float = 0.0
    threads: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def masked_linears(model) -> dict[str, MaskedLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, MaskedLinear)}


def wrap_masked(model, cfg: SparseTrain) -> dict[str, MaskedLinear]:
    """Swap every decoder Linear for a MaskedLinear. SLoRB: a SLoRBLinear (from the one-shot init)
    keeps its fitted ``L``; a plain Linear gets AST's init, the group mean of ``(1 - M) ⊙ W``."""
    n, m = cfg.nm
    wrapped = {}
    for i, layer in enumerate(decoder_layers(model)):
        for name, lin in block_linears(layer).items():
            path = f"{_layers_path(model)}.{i}.{name}"
            w = lin.weight.detach().float()
            if cfg.init == "magnitude":
                mask = mk.nm_mask(mk.magnitude_scores(w), n, m)
            else:  # the one-shot result: pruned weights are zero
                mask = mk.nm_mask_from_weight(w, n, m)
            slorb_l = None
            if cfg.slorb:
                if lin.in_features % cfg.slorb_k:
                    raise EdgepruneError(
                        f"SLoRB group size {cfg.slorb_k} does not divide the input width {lin.in_features} of {path}: "
                        "pick a slorb_k dividing it or disable slorb"
                    )
                if isinstance(lin, SLoRBLinear) and lin.slorb_k == cfg.slorb_k:
                    slorb_l = lin.slorb_L.detach().float()
                else:
                    slorb_l = slorb_init(torch.where(mask, torch.zeros(()), w), cfg.slorb_k)
            new = MaskedLinear(lin, mask, slorb_k=cfg.slorb_k if cfg.slorb else 0, slorb_l=slorb_l)
            replace_module(model, path, new)
            wrapped[path] = new
    return wrapped


def _layers_path(model) -> str:
    layers = decoder_layers(model)
    for name, mod in model.named_modules():
        if mod is layers:
            return name
    raise EdgepruneError("cannot locate the decoder layers in the model")


def finalize(model) -> int:
    """Replace every MaskedLinear by its inference form (sparse Linear / SLoRBLinear); returns the count."""
    found = masked_linears(model)
    for path, mod in found.items():
        replace_module(model, path, mod.to_inference())
    return len(found)


def _decay_pruned(wrapped: dict[str, MaskedLinear], lam: float) -> None:
    """Annealed SR-STE on every masked weight's gradient: pull pruned weights to zero."""
    for mod in wrapped.values():
        if mod.weight.grad is not None:
            add_sr_ste_decay_(mod.weight.grad, mod.weight, mod.mask, lam)


@torch.no_grad()
def update_masks(wrapped: dict[str, MaskedLinear], nm: tuple[int, int]) -> float:
    """Re-select every mask from its dense weights; returns the overall flip rate vs the old masks."""
    flipped = kept = 0
    for mod in wrapped.values():
        new = mk.nm_mask(mod.weight.detach().abs().float(), *nm)
        flipped += int((new & ~mod.mask).sum())
        kept += int(new.sum())
        mod.mask.copy_(new)
    return flipped / max(kept, 1)


def _save_checkpoint(path: Path, step: int, model, opt, report: SparseTrainReport, cfg: SparseTrain, initial) -> None:
    """Everything needed to continue after ``step`` optimizer steps, written atomically."""
    from edgeprune.fileio import atomic_file

    state = {"config": cfg.to_dict(), "step": step, "model": model.state_dict(), "optimizer": opt.state_dict(),
             "initial_masks": initial, "report": report.to_dict()}  # fmt: skip
    with atomic_file(path, overwrite=True) as tmp:
        torch.save(state, tmp)


def _load_checkpoint(path: Path, cfg: SparseTrain) -> dict | None:
    if not path.is_file():
        return None
    try:
        state = torch.load(path, weights_only=False)
    except Exception as exc:  # a torn or foreign file
        raise EdgepruneError(f"cannot resume from {path} ({type(exc).__name__}): delete it to start over") from None
    if state.get("config") != cfg.to_dict():
        raise EdgepruneError(f"the checkpoint {path} was written with other sparse_train settings: delete it or use those")
    return state


def sparse_train(model, cfg: SparseTrain, calib=None, *, train_data=None, progress: bool = True,
                 teacher=None, on_log: Callable[[int, dict], None] | None = None,
                 checkpoint: str | Path | None = None, checkpoint_every: int = 10):  # fmt: skip
    """Apply ``cfg`` to ``model`` in place -> ``(model, SparseTrainReport)`` (see the module docstring).

    ``calib``: windows for the one-shot init (wanda / sparsegpt); ``train_data``: windows to train on
    (default ``calib``); ``teacher``: the dense model to distil from (default: a copy of ``model``
    taken before anything changes); ``on_log(step, record)`` is called on rank 0 at each logged step.
    ``checkpoint``: a file to save the training state to every ``checkpoint_every`` steps (rank 0)
    and to resume from when it exists (same settings and data; ``model`` is again the dense model):
    long CPU runs survive being stopped.
    """
    from tqdm.auto import tqdm

    from edgeprune.compress.sparse.oneshot import NMPrune, check_model, nm_prune

    t0 = time.perf_counter()
    nm = cfg.nm
    check_model(model, nm=nm)
    train_data = calib if train_data is None else train_data
    if train_data is None or len(train_data) == 0:
        raise EdgepruneError("sparse training needs token windows: pass train_data or calib (edgeprune.compress.calibration_windows)")
    rank, world_size = world()
    global_batch = cfg.batch_size
    if global_batch % world_size:
        raise EdgepruneError(f"batch_size {global_batch} is not divisible by the {world_size} ranks: pick a multiple of {world_size}")
    per_rank = global_batch // world_size
    seq_len = train_data.seq_len
    steps = cfg.tokens // (global_batch * seq_len)
    if steps == 0:
        raise EdgepruneError(
            f"a budget of {cfg.tokens} tokens is less than one step ({global_batch} x {seq_len} tokens): raise tokens or lower batch_size"
        )
    report = SparseTrainReport(config=cfg.to_dict(), steps=steps, tokens=steps * global_batch * seq_len,
                               world_size=world_size, seq_len=seq_len, train_data=train_data.describe(),
                               threads=torch.get_num_threads())  # fmt: skip

    # 1. teacher and initial mask (or the state of an interrupted run)
    if cfg.init == "none" and teacher is None and cfg.kd_weight > 0:
        raise EdgepruneError(
            "init 'none' trains a model that is already pruned: pass the dense model as teacher=, or set kd_weight 0"
        )
    if teacher is None and cfg.kd_weight > 0:
        teacher = copy.deepcopy(model)
    if teacher is not None:
        teacher.eval().requires_grad_(False)
    checkpoint = Path(checkpoint).expanduser() if checkpoint is not None else None
    resume = _load_checkpoint(checkpoint, cfg) if checkpoint is not None else None
    if resume is not None:  # the masked structure only; weights, masks and SLoRB come from the checkpoint
        cfg_struct = dataclasses.replace(cfg, init="magnitude")
        wrapped = wrap_masked(model, cfg_struct)
        model.load_state_dict(resume["model"])
        report.init = resume["report"].get("init")
    elif cfg.init not in ("magnitude", "none"):
        init = NMPrune(pattern=cfg.pattern, method=cfg.init, slorb_k=cfg.slorb_k if cfg.slorb else 0)
        _, init_rep = nm_prune(model, init, calib, progress=progress and rank == 0)
        report.init = init_rep.to_dict()
        report.init.pop("per_layer", None)
    if resume is None:
        wrapped = wrap_masked(model, cfg)
    initial = resume["initial_masks"] if resume is not None else {k: v.mask.clone() for k, v in wrapped.items()}
    report.slorb_params = sum(m.slorb_L.numel() for m in wrapped.values() if m.slorb_L is not None)

    # 2. optimizer over what trains
    frozen = {id(p) for p in embedding_params(model)} if cfg.freeze_embeddings else set()
    saved_flags = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) not in frozen)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = adamw(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    first = 0
    if resume is not None:
        opt.load_state_dict(resume["optimizer"])
        first = report.resumed_from = resume["step"]
        for key in ("losses", "mask_updates"):
            setattr(report, key, resume["report"][key])

    net = wrap_ddp(model)
    loss_fn = functools.partial(distill_loss, ce_weight=cfg.ce_weight, kd_weight=cfg.kd_weight, temperature=cfg.temperature)
    order = shuffled_order(len(train_data), steps * global_batch, cfg.seed)  # the same order on every rank

    was_training = model.training
    model.train()
    bar = tqdm(range(first, steps), desc=f"AST {cfg.pattern}", disable=not progress or rank != 0, leave=False,
               initial=first, total=steps)  # fmt: skip
    try:
        for step in bar:
            lr = cosine_lr(step, steps, peak=cfg.lr, warmup=cfg.warmup, min_ratio=cfg.min_lr_ratio)
            lam = decay_lambda(step, steps, cap=cfg.decay_cap, ramp=cfg.decay_ramp)
            set_lr(opt, lr)
            start = step * global_batch + rank * per_rank
            ids = train_data.ids[order[start : start + per_rank]]  # (per_rank, seq)
            # the SR-STE decay goes on the averaged, clipped gradients, right before the step
            sums = lm_step(net, opt, params, ids, loss_fn, teacher=teacher if cfg.kd_weight > 0 else None,
                           dtype=resolve_autocast(cfg.train_dtype), micro_batch=cfg.micro_batch, grad_clip=cfg.grad_clip,
                           before_step=functools.partial(_decay_pruned, wrapped, lam))  # fmt: skip
            if (step + 1) % cfg.mask_every == 0:
                flip = update_masks(wrapped, nm)
                flip0 = sum(int((v.mask & ~initial[k]).sum()) for k, v in wrapped.items()) / max(1, sum(int(v.sum()) for v in initial.values()))
                report.mask_updates.append({"step": step + 1, "flip_prev": round(flip, 6), "flip_initial": round(flip0, 6)})
            mean_over_ranks(sums)
            rec = {"step": step + 1, "loss": round(float(sums[0]), 5), "ce": round(float(sums[1]), 5),
                   "kl": round(float(sums[2]), 5), "lr": lr, "lambda": lam}  # fmt: skip
            report.losses.append(rec)
            bar.set_postfix(loss=f"{rec['loss']:.3f}", kl=f"{rec['kl']:.3f}")
            if on_log is not None and rank == 0:
                on_log(step + 1, rec)
            if checkpoint is not None and rank == 0 and (step + 1) % checkpoint_every == 0 and step + 1 < steps:
                _save_checkpoint(checkpoint, step + 1, model, opt, report, cfg, initial)
    finally:
        bar.close()
        for p, flag in saved_flags.items():
            p.requires_grad_(flag)
        model.zero_grad(set_to_none=True)
    finalize(model)
    model.train(was_training)
    report.wall_s = time.perf_counter() - t0
    done = report.tokens * (steps - first) / steps  # tokens trained in this session
    report.tokens_per_s = done / report.wall_s if report.wall_s > 0 else math.inf
    return model, report



# -- the step (``step: sparse_train``) -------------------------------------------------------------------


def apply(model, cfg: SparseTrain, ctx):
    """``apply(model, cfg, ctx)`` of the step protocol (:mod:`edgeprune.steps`): the one-shot start on
    ``ctx``'s calibration windows, training on its training windows, distilling from ``ctx``'s dense
    original (default: a copy of ``model`` taken before anything changes)."""
    return sparse_train(model, cfg, ctx.calibration(cfg, model), train_data=ctx.training(cfg, model),
                        teacher=ctx.dense_model(), progress=ctx.progress)  # fmt: skip

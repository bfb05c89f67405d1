"""The training plumbing that recovery training (``train.py``), AST (``sparse_train.py``) and local
reconstruction (``reconstruct.py``) share, in one place so the three loops cannot drift apart:

- **distributed**: :func:`world`, :func:`distributed_from_env` (``torchrun``), :func:`wrap_ddp`,
  :func:`mean_over_ranks`. Every rank draws the same :func:`shuffled_order` and takes its slice of
  each global batch; DDP averages the gradients, so every rank ends with the same weights;
- **mixed precision**: ``TRAIN_DTYPES`` (the one table of autocast dtype names),
  :func:`resolve_autocast`, :func:`autocast`. Autocast is CPU autocast: master weights, optimizer
  state and the losses stay float32;
- **distillation**: :func:`distill_loss`, ``ce_weight * CE + kd_weight * T^2 * KL``, and
  :func:`kd_loss`, its ``alpha`` form (pure tensor maths, tested alone); the teacher's logits are
  either live (a full ``(batch, seq, vocab)`` tensor) or its top-k, :class:`TopK`, computed once per
  window and kept by :class:`TopKTeacher`, so a window seen again costs no teacher forward;
- **gradient checkpointing**: :func:`set_gradient_checkpointing`;
- **the optimizer step**: :func:`adamw`, :func:`set_lr`, :func:`clip_and_step`, and :func:`lm_step`,
  one step of a causal LM (micro-batches, teacher logits, loss, backward, clip, step).

The step modules keep what differs between them: schedules, budgets, masks, reports, checkpoints.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

# autocast dtype of each train_dtype / autocast name ("float32": no autocast); reconstruct adds "auto"
TRAIN_DTYPES = {"float32": None, "bfloat16": torch.bfloat16}


# -- pure maths ------------------------------------------------------------------------------------------


class TopK(NamedTuple):
    """A teacher's ``k`` largest logits per position: ``values`` ``(batch, seq, k)`` float32, their
    vocabulary ``indices`` ``(batch, seq, k)``, and ``log_norm`` ``(batch, seq)``: the log-sum-exp of
    all the teacher's logits divided by ``temperature``, so the k kept tokens have their true
    probabilities and the rest of the vocabulary one bucket of the remaining mass (None: the k are
    renormalised among themselves)."""

    values: torch.Tensor
    indices: torch.Tensor
    log_norm: torch.Tensor | None = None
    temperature: float | None = None

    def positions(self, sl: slice) -> TopK:
        """The same teacher answer at positions ``sl`` (dim 1)."""
        norm = self.log_norm[:, sl] if self.log_norm is not None else None
        return TopK(self.values[:, sl], self.indices[:, sl], norm, self.temperature)


def topk_kl(student_logits: torch.Tensor, teacher: TopK, temperature: float) -> torch.Tensor:
    """Per-position ``KL(teacher_T || student_T)`` over the teacher's top k tokens plus one bucket for
    the rest of the vocabulary: ``sum_i p_t,i log(p_t,i / p_s,i) + r_t log(r_t / r_s)``, with ``r`` the
    mass outside the k. Merging the tail into one bucket can only lower a KL, so this is a lower
    bound that tends to the full KL as k grows, exactly it at k = vocab. ``student_logits``
    ``(batch, seq, vocab)`` -> ``(batch, seq)``. Without ``teacher.log_norm`` the k are renormalised
    among themselves and there is no bucket."""
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1).gather(-1, teacher.indices.long())
    if teacher.log_norm is None:
        log_p_t = F.log_softmax(teacher.values.float() / temperature, dim=-1)  # over the k kept: renormalised
        return (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)
    if teacher.temperature is not None and teacher.temperature != temperature:
        raise ValueError(f"the teacher's top-k were normalised at temperature {teacher.temperature}, the loss uses {temperature}")
    log_p_t = teacher.values.float() / temperature - teacher.log_norm.float().unsqueeze(-1)
    p_t = log_p_t.exp()
    rest_t = (1 - p_t.sum(-1)).clamp_min(0)
    rest_s = (1 - log_p_s.exp().sum(-1)).clamp_min(1e-12)
    return (p_t * (log_p_t - log_p_s)).sum(-1) + torch.xlogy(rest_t, rest_t) - rest_t * rest_s.log()


def distill_loss(student_logits, teacher_logits, labels, *, ce_weight: float, kd_weight: float, temperature: float,
                 ignore_index: int = -100):  # fmt: skip
    """``ce_weight * CE(student, labels) + kd_weight * T^2 * KL(teacher_T || student_T)``, mean over the
    predicted tokens (those whose label is not ``ignore_index``).

    ``*_logits``: ``(batch, seq, vocab)`` predicting the *next* token (the causal shift is done here:
    position t predicts ``labels[t + 1]``); ``labels``: ``(batch, seq)``. Without a teacher (or with
    ``kd_weight`` 0) the loss is ``ce_weight * CE``. ``teacher_logits`` may be a :class:`TopK`
    (:func:`topk_kl`). Returns ``(loss, ce, kl)``, the last two detached, for logging.
    """
    s = student_logits[:, :-1].float()
    tgt = labels[:, 1:]
    ce = F.cross_entropy(s.reshape(-1, s.shape[-1]), tgt.reshape(-1), ignore_index=ignore_index)
    if teacher_logits is None or kd_weight == 0:
        return ce_weight * ce, ce.detach(), torch.zeros(())
    if isinstance(teacher_logits, TopK):
        kl_tok = topk_kl(s, teacher_logits.positions(slice(None, -1)), temperature)
    else:
        t = teacher_logits[:, :-1].float()
        log_p_s = F.log_softmax(s / temperature, dim=-1)
        log_p_t = F.log_softmax(t / temperature, dim=-1)
        kl_tok = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)  # (batch, seq-1)
    mask = tgt != ignore_index
    # with nothing ignored this is, to the bit on CPU, the plain mean AST used
    kl = (kl_tok * mask).sum() / mask.sum().clamp_min(1)
    return ce_weight * ce + kd_weight * temperature**2 * kl, ce.detach(), kl.detach()


def kd_loss(student_logits, teacher_logits, labels, *, alpha: float, temperature: float, ignore_index: int = -100):
    """``(1 - alpha) * CE + alpha * T**2 * KL``: :func:`distill_loss` with weights summing to 1
    (recovery training's form). Without a teacher the loss is the plain CE, whatever ``alpha``."""
    if teacher_logits is None:
        alpha = 0.0
    return distill_loss(student_logits, teacher_logits, labels, ce_weight=1 - alpha, kd_weight=alpha,
                        temperature=temperature, ignore_index=ignore_index)  # fmt: skip


# -- mixed precision ------------------------------------------------------------------------------------


def resolve_autocast(name: str):
    """``None`` (float32) or ``torch.bfloat16`` for a name of ``TRAIN_DTYPES``; ``auto``: bfloat16 where
    oneDNN has bf16 kernels for this CPU."""
    if name != "auto":
        return TRAIN_DTYPES[name]
    try:
        return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None
    except (AttributeError, RuntimeError):
        return None


def autocast(dtype):
    """CPU autocast to ``dtype``, or nothing for ``None``."""
    return torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()


# -- distributed -----------------------------------------------------------------------------------------


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` when not distributed."""
    d = _dist()
    return (d.get_rank(), d.get_world_size()) if d else (0, 1)


@contextlib.contextmanager
def distributed_from_env():
    """Initialise ``torch.distributed`` from ``torchrun``'s environment (``WORLD_SIZE`` > 1) and tear it
    down afterwards; a no-op in a plain process or if the caller already initialised it."""
    import torch.distributed as dist

    started = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        started = True
    try:
        yield world()
    finally:
        if started:
            dist.destroy_process_group()


def wrap_ddp(model):
    """``model`` in ``DistributedDataParallel`` when ``torch.distributed`` is initialised, else ``model``."""
    if _dist() is None:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model)


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """``values`` averaged over the ranks, in place (unchanged in one process); for logging."""
    d = _dist()
    if d is not None:
        d.all_reduce(values)
        values /= d.get_world_size()
    return values


def shuffled_order(n: int, draws: int, seed: int) -> torch.Tensor:
    """Indices of ``draws`` windows out of ``n``: seeded permutations back to back, so every rank
    draws the same order without talking to the others."""
    gen = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randperm(n, generator=gen) for _ in range(math.ceil(draws / n))])


# -- model switches --------------------------------------------------------------------------------------


def set_gradient_checkpointing(model, on: bool) -> None:
    # transformers 5 renamed gradient_checkpointing_* to activation_checkpointing_* (old names warn)
    if hasattr(model, "activation_checkpointing_enable"):
        if on:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.activation_checkpointing_disable()
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()


def embedding_params(model) -> list[torch.nn.Parameter]:
    """The token embedding's and the LM head's parameters (the same tensor twice when tied): never
    pruned, so freezing them saves their gradient and Adam state."""
    out = []
    for mod in (model.get_input_embeddings(), model.get_output_embeddings()):
        if mod is not None:
            out += list(mod.parameters())
    return out


# -- a teacher whose logits are computed once per window ---------------------------------------------------


class TopKTeacher:
    """Wraps a frozen teacher so each distinct window's top-``k`` logits are computed once and kept.

    Called like a model (``teacher(input_ids=ids, use_cache=False).logits``), it returns a
    :class:`TopK` for the batch: rows seen before come from the cache (keyed by their token bytes, so
    any window order or micro-batching finds them), new rows run through the teacher (under the
    caller's autocast) and are kept. Recovery training draws the same windows again across epochs and
    pruning stages, where the dense teacher's answer never changes: the teacher forward is paid once
    per window instead of once per draw. Memory: ``k * 8 + 4`` bytes per token (float32 values, int32
    indices, the log-sum-exp at ``temperature``): 64 -> 516 B/token, 100 MB for 200k distinct tokens."""

    def __init__(self, teacher, k: int, temperature: float | None = None):
        # temperature: the distillation's, to keep each position's log-sum-exp at it (the tail bucket of
        # topk_kl); None keeps none and the k are renormalised among themselves
        self.teacher, self.k, self.temperature = teacher, int(k), temperature
        self.cache: dict[bytes, tuple[torch.Tensor, ...]] = {}
        self.forwards = 0  # teacher rows actually run (for reports and tests)

    def eval(self):
        self.teacher.eval()
        return self

    @staticmethod
    def _key(row: torch.Tensor) -> bytes:
        return hashlib.blake2b(row.contiguous().numpy().tobytes(), digest_size=16).digest()

    def __call__(self, input_ids: torch.Tensor, use_cache: bool = False):
        keys = [self._key(r) for r in input_ids.cpu()]
        missing = [i for i, key in enumerate(keys) if key not in self.cache]
        if missing:
            with torch.no_grad():
                logits = self.teacher(input_ids=input_ids[missing], use_cache=False).logits.float()  # (m, seq, vocab)
                top = logits.topk(self.k, dim=-1)
                norm = torch.logsumexp(logits / self.temperature, dim=-1) if self.temperature else None  # (m, seq)
            for j, i in enumerate(missing):
                kept = (top.values[j].clone(), top.indices[j].to(torch.int32).clone())
                self.cache[keys[i]] = kept + ((norm[j].clone(),) if norm is not None else ())
            self.forwards += len(missing)
        rows = [self.cache[key] for key in keys]
        values, indices = torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows])  # (batch, seq, k)
        norm = torch.stack([r[2] for r in rows]) if self.temperature else None  # (batch, seq)
        return _Logits(TopK(values, indices, norm, self.temperature))


class _Logits(NamedTuple):
    logits: TopK


# -- the optimizer step ----------------------------------------------------------------------------------


def adamw(params: list[torch.nn.Parameter], *, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW (betas 0.9 / 0.95) with weight decay on matrices only, not on norms and biases."""
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.95), eps=1e-8)  # fmt: skip


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def clip_and_step(opt: torch.optim.Optimizer, params, grad_clip: float, *, before_step: Callable[[], None] | None = None) -> None:
    """Clip the gradient norm of ``params`` to ``grad_clip`` (0: no clipping), run ``before_step``
    (e.g. AST's SR-STE decay, which must not be clipped), step."""
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if before_step is not None:
        before_step()
    opt.step()


def lm_step(net, opt: torch.optim.Optimizer, params, ids: torch.Tensor, loss_fn: Callable, *, teacher=None, dtype=None,
            micro_batch: int | None = None, grad_clip: float = 0.0,
            before_step: Callable[[], None] | None = None) -> torch.Tensor:  # fmt: skip
    """One optimizer step of a causal LM on this rank's ``ids`` ``(batch, seq)``.

    The batch runs in micro-batches of ``micro_batch`` sequences (default: all at once), their
    gradients accumulated with weights ``len(chunk) / len(ids)`` (under DDP, synchronised on the last
    only). Each forward, and the ``teacher``'s without gradients, runs under :func:`autocast`
    ``dtype``; ``loss_fn(logits, teacher_logits, chunk) -> (loss, ce, kl)`` runs outside it, in
    float32. Then :func:`clip_and_step`. Returns this rank's ``[loss, ce, kl]`` (float64), averaged
    over the micro-batches.
    """
    opt.zero_grad(set_to_none=True)
    sums = torch.zeros(3, dtype=torch.float64)
    micro = list(ids.split(micro_batch or len(ids)))
    ddp = _dist() is not None
    for j, chunk in enumerate(micro):
        sync = j == len(micro) - 1
        with net.no_sync() if ddp and not sync else contextlib.nullcontext():
            with autocast(dtype):
                logits = net(input_ids=chunk, use_cache=False).logits
                t_logits = None
                if teacher is not None:
                    with torch.no_grad():
                        t_logits = teacher(input_ids=chunk, use_cache=False).logits
            loss, ce, kl = loss_fn(logits, t_logits, chunk)
            (loss * (len(chunk) / len(ids))).backward()
        sums += torch.tensor([float(loss.detach()), float(ce), float(kl)], dtype=torch.float64) * len(chunk) / len(ids)
    clip_and_step(opt, params, grad_clip, before_step=before_step)
    return sums

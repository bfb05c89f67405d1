"""Local reconstruction after pruning: fit each pruned submodel to the dense model's activations,
block by block, in memory bounded by one submodel ("A Free Lunch in LLM Compression: Revisiting
Retraining after Pruning", arXiv 2510.14444; code ZIB-IOL/Free-Lunch-in-LLM-Compression).

The decoder of both models is cut into the same consecutive submodels (``granularity``):

- ``block`` with ``blocks: k``: k whole decoder layers (k must divide the depth);
- ``attn_mlp``: the attention sub-block (pre-norm, attention, residual add) and the MLP sub-block;
- ``linear``: each Linear alone, its target the dense Linear's output (needs the pruned Linears to
  keep the dense shapes, i.e. N:M or unstructured sparsity, not structured pruning).

For each submodel in order: (optionally) choose its masks right now from the pruned stream's
statistics (``prune``: magnitude / Wanda / SparseGPT, as sequential Wanda / SparseGPT do); compute
the targets with the dense submodel; train the pruned submodel's surviving weights (``trainable:
all``) or a masked LoRA (``lora``: ``W + M ⊙ BA``, merged at the end, so the sparsity is kept)
with AdamW and a linear warmup, then a linear (or cosine) decay; propagate. What feeds a submodel (``inputs``):

- ``dense`` (a): the dense model's activations as inputs, the dense submodel's outputs on them as
  targets: every submodel learns in isolation;
- ``pruned`` (b): the pruned (already reconstructed) stream as inputs, the dense submodel applied
  to *those* inputs as targets;
- ``pruned_true`` (c): the pruned stream as inputs, the dense model's *true* activations (its own
  stream) as targets: later submodels also correct the drift of earlier ones.

Masks stay fixed: gradients of pruned weights are zeroed and the mask re-applied after every
optimizer step, so a pruned weight stays exactly 0 (the mask is ``weight != 0``, so the rare
weight that is exactly 0 in the checkpoint itself stays 0 too); structured pruning removed channels outright
(the pruned model's shapes are smaller) and they stay removed. Dense and pruned submodels may
differ in width inside; they meet at the block boundaries (hidden states of the same size).

Depth-pruned models (``edgeprune.compress.depth``: the config records the kept original layers
``k_0 < k_1 < ...``): student block i is fitted to carry the dense hidden state entering original
layer ``k_i`` to the one entering ``k_(i+1)``, i.e. it imitates dense layers ``k_i .. k_(i+1) - 1``
(block 0 also the dense layers before ``k_0``, the last block those after it). Only granularity
``block`` with ``blocks: 1``. By default only the blocks next to a removed gap train
(``depth_blocks: neighbours``: the block before a gap absorbs it, the one after it corrects the
drift); the others keep their weights and only carry the streams on.

Memory: the calibration activations live as per-batch chunks of ``(batch, seq, hidden)``: the
pruned stream, the dense stream (modes a, c) and the targets, i.e. at most three copies of one
layer's activations, whatever the depth; plus the gradients and AdamW state of one submodel. With
``release_dense`` the dense layers are freed (moved to the meta device) once used. The report
carries the peak RSS and the working memory above the RSS at the start.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from edgeprune.compress.sparse import masks as mk
from edgeprune.compress.reconstruct import maths as rm
from edgeprune.compress.sequential import (
    BlockInputs,
    block_linears,
    capture_block_inputs,
    collect_input_stats,
    decoder_layers,
)
from edgeprune.compress.config import StrictConfig, check_choice, check_fraction, check_int
from edgeprune.compress.depth.remove import kept_layers, source_layers
from edgeprune.compress.sparse.modules import replace_module
from edgeprune.compress.training import TRAIN_DTYPES, autocast, clip_and_step, resolve_autocast, set_lr
from edgeprune.errors import EdgepruneError
from edgeprune.memory import PeakRss, rss_mb

GRANULARITIES = ("block", "attn_mlp", "linear")
INPUTS = ("dense", "pruned", "pruned_true")
TRAINABLE = ("all", "lora")
OPTIMIZERS = ("adamw",)
PRUNE_METHODS = ("magnitude", "wanda", "sparsegpt")
DEPTH_BLOCKS = ("neighbours", "all")  # which blocks of a depth-pruned model train (see the module docstring)
AUTOCAST = (*TRAIN_DTYPES, "auto")  # auto: bfloat16 where the CPU has bf16 kernels (training.resolve_autocast)
# the order Linears are fitted in at granularity "linear": groups sharing one input are fitted together
LINEAR_GROUPS = (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("self_attn.o_proj",),
                 ("mlp.gate_proj", "mlp.up_proj"), ("mlp.down_proj",))  # fmt: skip


@dataclass(frozen=True)
class Reconstruct(StrictConfig):
    """Fit each pruned submodel to the dense model's activations (see the module docstring)."""

    STEP = "reconstruct"
    kind = "reconstruct"

    granularity: str = "block"  # block | attn_mlp | linear
    blocks: int = 1  # decoder layers per submodel, for granularity "block" (must divide the depth)
    inputs: str = "pruned_true"  # dense (a) | pruned (b) | pruned_true (c): see the module docstring
    trainable: str = "all"  # all surviving weights (and norms) | lora (masked LoRA + norms, merged at the end)
    lora_rank: int = 16  # PERP / the paper's MaskLoRA rank
    lora_alpha: float = 32.0
    loss: str = "mse"  # mse | cosine
    optimizer: str = "adamw"
    lr: float = 1e-3  # peak; the best of 3e-5..1e-3 on the first blocks of SmolLM2-135M (bench/reconstruct.py; the paper sweeps 1e-7..5e-4 for 8B models)
    min_lr_ratio: float = 0.0  # LR at the end of the decay, as a fraction of the peak
    schedule: str = "linear"  # linear | cosine: the decay after the warmup
    warmup: float = 0.1  # fraction of each submodel's steps (the paper's 10% linear warmup)
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # 0: no clipping
    epochs: int = 4  # passes over the calibration windows per submodel (128 x 256 tokens: 590 CPU-s for SmolLM2-135M; 6.6 min on 2 cores)
    batch_size: int = 4  # windows per optimizer step (and per activation chunk)
    calib_windows: int = 0  # use the first N calibration windows (0: all)
    prune: str | None = None  # choose masks in the loop: magnitude | wanda | sparsegpt (None: keep the model's zeros)
    pattern: str = "2:4"  # the in-loop pattern: N:M or unstructured
    sparsity: float = 0.5  # for pattern "unstructured"
    damp: float = 0.01  # SparseGPT damping
    # auto | float32 | bfloat16: CPU autocast of the forwards and backwards (weights, optimizer state and the loss stay
    # float32). auto = bfloat16 where the CPU has bf16 instructions (3x faster on AVX512-BF16), else float32
    autocast: str = "auto"
    depth_blocks: str = "neighbours"  # depth-pruned models: neighbours (of a removed gap) | all blocks
    seed: int = 0
    version: int = 1

    def check(self) -> list[str]:
        p = check_choice("granularity", self.granularity, GRANULARITIES) + check_int("blocks", self.blocks, minimum=1)
        if self.granularity != "block" and self.blocks != 1 and not isinstance(self.blocks, bool):
            p.append(f"blocks is a setting of granularity 'block', got blocks {self.blocks} with granularity {self.granularity!r}")
        p += check_choice("inputs", self.inputs, INPUTS) + check_choice("trainable", self.trainable, TRAINABLE)
        p += check_int("lora_rank", self.lora_rank, minimum=1) + check_fraction("lora_alpha", self.lora_alpha, high=1e6)
        p += check_choice("loss", self.loss, rm.LOSSES) + check_choice("optimizer", self.optimizer, OPTIMIZERS)
        p += check_fraction("lr", self.lr, high=1.0)
        p += check_fraction("min_lr_ratio", self.min_lr_ratio, low_open=False, high_open=False)
        p += check_choice("schedule", self.schedule, rm.SCHEDULES)
        p += check_fraction("warmup", self.warmup, low_open=False, high_open=True)
        p += check_fraction("weight_decay", self.weight_decay, low_open=False, high=10.0)
        p += check_fraction("grad_clip", self.grad_clip, low_open=False, high=1e6)
        p += check_int("epochs", self.epochs, minimum=1) + check_int("batch_size", self.batch_size, minimum=1)
        p += check_int("calib_windows", self.calib_windows, minimum=0)
        if self.prune is not None:
            p += check_choice("prune", self.prune, PRUNE_METHODS)
        try:
            mk.parse_pattern(self.pattern)
        except EdgepruneError as exc:
            p.append(str(exc))
        p += check_fraction("sparsity", self.sparsity, low_open=False) + check_fraction("damp", self.damp, high=10.0)
        p += check_choice("autocast", self.autocast, tuple(AUTOCAST)) + check_int("seed", self.seed, minimum=0)
        p += check_choice("depth_blocks", self.depth_blocks, DEPTH_BLOCKS)
        return p

    @property
    def label(self) -> str:
        g = f"block{self.blocks}" if self.granularity == "block" else self.granularity
        return f"{g}/{self.inputs}/{self.trainable}"


@dataclass
class ReconstructReport:
    step: str
    config: dict
    submodels: int = 0
    steps: int = 0  # optimizer steps over all submodels
    calibration: dict | None = None
    trainable_params: int = 0  # summed over submodels
    params_pruned_in_loop: int = 0
    autocast: str = ""  # what "auto" resolved to
    zeros_before: int = 0  # exact zeros in the decoder Linears before / after (must be equal, or grow by the in-loop pruning)
    zeros_after: int = 0
    rel_mse_before: float | None = None  # mean over submodels of ||pred - target||^2 / ||target||^2, before training
    rel_mse_after: float | None = None  # ... after training (same inputs)
    wall_s: float = 0.0
    rss_start_mb: float = 0.0
    peak_rss_mb: float = 0.0  # sampled while this step ran (not the process's lifetime peak)
    working_mb: float = 0.0  # peak RSS - RSS at the start: activations, one submodel's optimizer state
    per_submodel: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# -- checks before any work ---------------------------------------------------------------------------


def check_pair(model, dense) -> None:
    """EdgepruneError unless ``model`` is a pruned version of ``dense`` (same depth, hidden size, head size)."""
    if dense is None:
        raise EdgepruneError("reconstruction needs the dense model the pruned one came from: pass dense=")
    a, b = model.config, dense.config
    la, lb = len(decoder_layers(model)), len(decoder_layers(dense))
    kept = kept_layers(a)
    if kept is not None and (len(kept) != la or source_layers(a) != lb):
        raise EdgepruneError(
            f"the pruned model keeps layers {kept} of a {source_layers(a)}-layer model and the dense model has {lb}: "
            "pass the dense model it was depth-pruned from"
        )
    if la != lb and kept is None:
        raise EdgepruneError(
            f"the pruned model has {la} decoder layers and the dense model {lb}: pass the dense model it was pruned from"
        )
    for key in ("hidden_size", "vocab_size"):
        if getattr(a, key, None) != getattr(b, key, None):
            raise EdgepruneError(
                f"the pruned model's {key} is {getattr(a, key, None)} and the dense model's {getattr(b, key, None)}: "
                "pass the dense model it was pruned from"
            )
    for name, mod in model.named_modules():
        if getattr(mod, "edgeprune_quant", None) is not None:
            raise EdgepruneError(f"{name} is quantized: reconstruct before quantizing (training would change the codes)")


def _check_linear_shapes(model, dense) -> None:
    for i, (lp, ld) in enumerate(zip(decoder_layers(model), decoder_layers(dense))):
        dl = block_linears(ld)
        for name, lin in block_linears(lp).items():
            if name not in dl or dl[name].weight.shape != lin.weight.shape:
                raise EdgepruneError(
                    f"granularity 'linear' needs each pruned Linear to keep its dense shape, but layers.{i}.{name} "
                    f"is {tuple(lin.weight.shape)} (dense {tuple(dl[name].weight.shape) if name in dl else 'absent'}): "
                    "structured pruning changed it; use granularity attn_mlp or block"
                )


def _linear_zeros(model) -> int:
    return sum(int((lin.weight == 0).sum()) for layer in decoder_layers(model) for lin in block_linears(layer).values())


# -- submodel functions -------------------------------------------------------------------------------


def _call_layers(layers: list[nn.Module]) -> Callable:
    def fn(h, kw):
        for layer in layers:
            out = layer(h, **kw)
            h = out[0] if isinstance(out, tuple) else out
        return h

    return fn


def _attn_part(layer: nn.Module) -> Callable:
    """``h + attn(ln1(h))`` (identity when structured pruning removed the attention)."""

    def fn(h, kw):
        if getattr(layer, "self_attn", None) is None:
            return h
        out = layer.self_attn(layer.input_layernorm(h), position_embeddings=kw.get("position_embeddings"),
                              attention_mask=kw.get("attention_mask"))  # fmt: skip
        return h + (out[0] if isinstance(out, tuple) else out)

    return fn


def _mlp_part(layer: nn.Module) -> Callable:
    def fn(h, kw):
        if getattr(layer, "mlp", None) is None:
            return h
        return h + layer.mlp(layer.post_attention_layernorm(h))

    return fn


@dataclass
class Submodel:
    name: str
    pruned_fn: Callable  # (hidden, kwargs) -> hidden
    dense_fn: Callable
    modules: list[nn.Module]  # the pruned modules whose parameters train (layers or sub-blocks)
    stages: list[tuple[Callable, dict[str, nn.Linear]]]  # in-loop pruning: (pruned fn of one stage, its Linears by name)
    dense_layers: list[int]  # dense layers finished once this submodel is done (release_dense)


def _depth_submodels(model, dense, cfg: Reconstruct, kept: list[int]) -> list[Submodel]:
    """Student block i against the dense span it replaces (``rm.dense_spans``); blocks that do not train
    (``depth_blocks: neighbours`` away from a gap) get no modules: they only carry the streams on."""
    if cfg.granularity != "block" or cfg.blocks != 1:
        raise EdgepruneError(
            f"a depth-pruned model (kept layers {kept}) reconstructs at granularity 'block' with blocks 1, got "
            f"granularity {cfg.granularity!r} with blocks {cfg.blocks}: pass granularity block, blocks 1"
        )
    lp, ld = decoder_layers(model), decoder_layers(dense)
    spans = rm.dense_spans(kept, len(ld))
    trains = rm.gap_neighbours(spans) if cfg.depth_blocks == "neighbours" else [True] * len(spans)
    subs = []
    for i, ((s, e), fit) in enumerate(zip(spans, trains)):
        lins = {f"layers.{i}.{n}": m for n, m in block_linears(lp[i]).items()}
        subs.append(Submodel(f"layers.{i} (dense {s}-{e - 1})" if e - s > 1 else f"layers.{i} (dense {s})",
                             _call_layers([lp[i]]), _call_layers(list(ld[s:e])), [lp[i]] if fit else [],
                             [(_call_layers([lp[i]]), lins)], list(range(s, e))))  # fmt: skip
    return subs


def _submodels(model, dense, cfg: Reconstruct) -> list[Submodel]:
    kept = kept_layers(model.config)
    if kept is not None:
        return _depth_submodels(model, dense, cfg, kept)
    lp, ld = decoder_layers(model), decoder_layers(dense)
    subs = []
    if cfg.granularity == "block":
        for s, e in rm.block_windows(len(lp), cfg.blocks):
            stages = [(_call_layers([lp[i]]), {f"layers.{i}.{n}": m for n, m in block_linears(lp[i]).items()}) for i in range(s, e)]
            subs.append(Submodel(f"layers.{s}-{e - 1}" if e - s > 1 else f"layers.{s}", _call_layers(list(lp[s:e])),
                                 _call_layers(list(ld[s:e])), list(lp[s:e]), stages, list(range(s, e))))  # fmt: skip
    else:  # attn_mlp (granularity linear is handled by _fit_linears, per layer)
        for i in range(len(lp)):
            for part, fn_of, keep in (("attn", _attn_part, ("self_attn", "input_layernorm")),
                                      ("mlp", _mlp_part, ("mlp", "post_attention_layernorm"))):  # fmt: skip
                mods = [getattr(lp[i], k) for k in keep if getattr(lp[i], k, None) is not None]
                lins = {f"layers.{i}.{n}": m for n, m in block_linears(lp[i]).items() if n.startswith(keep[0] + ".")}
                subs.append(Submodel(f"layers.{i}.{part}", fn_of(lp[i]), fn_of(ld[i]), mods, [(fn_of(lp[i]), lins)],
                                     [i] if part == "mlp" else []))  # fmt: skip
    return subs


# -- in-loop pruning ----------------------------------------------------------------------------------


@torch.no_grad()
def _prune_linear(lin: nn.Linear, stats, cfg: Reconstruct) -> int:
    from edgeprune.compress.sparse.sparsegpt import sparsegpt_prune

    nm = mk.parse_pattern(cfg.pattern)
    w = lin.weight.detach().float()
    if cfg.prune == "sparsegpt":
        new = sparsegpt_prune(w, stats.xtx, nm=nm, sparsity=cfg.sparsity, damp=cfg.damp).weight
    else:
        scores = mk.wanda_scores(w, stats.norm) if cfg.prune == "wanda" else mk.magnitude_scores(w)
        keep = mk.make_mask(scores, nm, cfg.sparsity, per_row=cfg.prune == "wanda")
        new = torch.where(keep, w, torch.zeros((), dtype=w.dtype))
    lin.weight.copy_(new.to(lin.weight.dtype))
    return int((new == 0).sum())


@torch.no_grad()
def _prune_stages(stages, hidden: list[torch.Tensor], kwargs: list[dict], cfg: Reconstruct, ac) -> int:
    """Prune each stage's Linears from the statistics of its inputs on the pruned stream, in order
    (each stage sees the outputs of the stages before it, already pruned)."""
    pruned = 0
    for fn, lins in stages:
        if not lins:
            hidden = [fn(h, kw) for h, kw in zip(hidden, kwargs)] if len(stages) > 1 else hidden
            continue
        with collect_input_stats(lins, hessian=cfg.prune == "sparsegpt") as stats, autocast(ac):
            outs = [fn(h, kw) for h, kw in zip(hidden, kwargs)] if cfg.prune != "magnitude" else None
        for name, lin in lins.items():
            pruned += _prune_linear(lin, stats[name] if cfg.prune != "magnitude" else None, cfg)
        if len(stages) > 1:  # the next stage is calibrated on this stage's pruned outputs
            with autocast(ac):
                hidden = [fn(h, kw).float() for h, kw in zip(hidden, kwargs)]
        del outs
    return pruned


# -- training one submodel ----------------------------------------------------------------------------


@contextlib.contextmanager
def _trainable(modules: list[nn.Module], linears: list[tuple[nn.Module, str, nn.Linear]], cfg: Reconstruct, gen):
    """Yield ``(params, masks)`` of the submodel; for ``lora`` the Linears are wrapped for the duration
    and merged back on exit. ``linears``: ``(root module, path inside it, Linear)``."""
    lin_ids = {id(lin.weight) for _, _, lin in linears}
    wrapped: list[tuple[nn.Module, str, rm.MaskedLoRALinear]] = []
    try:
        if cfg.trainable == "all":
            params = [p for m in modules for p in m.parameters()]
            masks = {lin.weight: rm.weight_mask(lin.weight) for _, _, lin in linears}
        else:
            # LoRA on the Linears; the rest (norms, biases) trains as is (the paper's SelectivePEFT)
            params = [p for m in modules for p in m.parameters() if id(p) not in lin_ids and p.ndim == 1]
            masks = {}
            for root, path, lin in linears:
                wrap = rm.MaskedLoRALinear(lin, cfg.lora_rank, cfg.lora_alpha, generator=gen)
                replace_module(root, path, wrap)
                wrapped.append((root, path, wrap))
                params += [wrap.lora_A, wrap.lora_B]
        seen, unique = set(), []
        for p in params:  # tied or shared parameters once
            if id(p) not in seen:
                seen.add(id(p))
                unique.append(p)
        yield unique, masks
    finally:
        for root, path, wrap in wrapped:
            replace_module(root, path, wrap.merged())


def _fit(fn: Callable, params: list[nn.Parameter], masks: dict, inputs: list[torch.Tensor], kwargs: list[dict],
         targets: list[torch.Tensor], cfg: Reconstruct, gen: torch.Generator, ac) -> dict:  # fmt: skip
    """AdamW on ``loss(fn(inputs[j]), targets[j])`` over shuffled chunks; masks enforced after each step."""
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * len(inputs)
    step, epoch_losses = 0, []
    for _ in range(cfg.epochs):
        running = 0.0
        for j in torch.randperm(len(inputs), generator=gen).tolist():
            lr = rm.schedule_lr(step, total, peak=cfg.lr, warmup=cfg.warmup, min_ratio=cfg.min_lr_ratio, kind=cfg.schedule)
            set_lr(opt, lr)
            with autocast(ac):
                out = fn(inputs[j], kwargs[j])
            loss = rm.recon_loss(out, targets[j], cfg.loss)
            loss.backward()
            rm.mask_grads(masks)  # before clipping: the norm is that of the gradients that will be applied
            clip_and_step(opt, params, cfg.grad_clip)
            opt.zero_grad(set_to_none=True)
            rm.enforce_masks(masks)
            running += float(loss.detach())
            step += 1
        epoch_losses.append(running / len(inputs))
    for p in params:
        p.requires_grad_(False)
    del opt
    return {"steps": step, "epoch_loss": epoch_losses}


@torch.no_grad()
def _run(fn: Callable, hidden: list[torch.Tensor], kwargs: list[dict], ac) -> list[torch.Tensor]:
    with autocast(ac):
        return [fn(h, kw).float() for h, kw in zip(hidden, kwargs)]


def _rel_mse(outs: list[torch.Tensor], targets: list[torch.Tensor]) -> float:
    num = sum(float((o.double() - t.double()).pow(2).sum()) for o, t in zip(outs, targets))
    den = sum(float(t.double().pow(2).sum()) for t in targets)
    return num / max(den, 1e-30)


# -- granularity "linear" -----------------------------------------------------------------------------


class _Caught(Exception):
    pass


@torch.no_grad()
def _linear_inputs(layer_fn: Callable, lin: nn.Linear, hidden, kwargs, ac) -> list[torch.Tensor]:
    """What ``lin`` receives when ``layer_fn`` runs on each chunk (the forward stops right there)."""
    got = []

    def hook(module, args):
        got.append(args[0].detach().float())
        raise _Caught

    handle = lin.register_forward_pre_hook(hook)
    try:
        for h, kw in zip(hidden, kwargs):
            try:
                with autocast(ac):
                    layer_fn(h, kw)
            except _Caught:
                pass
    finally:
        handle.remove()
    return got


def _fit_linears(i: int, lp: nn.Module, ld: nn.Module, P: BlockInputs | None, D: BlockInputs | None,
                 cfg: Reconstruct, gen, ac, report: ReconstructReport) -> None:  # fmt: skip
    """Granularity ``linear``: fit layer ``i``'s Linears one by one, in the order of the forward."""
    from edgeprune.compress.sequential import InputStats

    pl, dl = block_linears(lp), block_linears(ld)
    fp, fd = _call_layers([lp]), _call_layers([ld])
    for group in LINEAR_GROUPS:
        names = [n for n in group if n in pl]
        if not names:
            continue
        first = names[0]
        # inputs: the pruned stream (b, c) or the dense stream (a); targets: the dense Linear on those inputs
        # (a, b) or on the dense stream's own inputs (c)
        x_p = _linear_inputs(fp, pl[first], P.hidden, P.kwargs, ac) if P is not None else None
        x_d = _linear_inputs(fd, dl[first], D.hidden, D.kwargs, ac) if cfg.inputs in ("dense", "pruned_true") else None
        x_in = x_d if cfg.inputs == "dense" else x_p
        x_tgt = x_d if cfg.inputs in ("dense", "pruned_true") else x_p
        for name in names:
            t0 = time.perf_counter()
            lin = pl[name]
            if cfg.prune is not None:
                stats = InputStats(lin.in_features, cfg.prune == "sparsegpt")
                for x in x_p:
                    stats.add(x)
                report.params_pruned_in_loop += _prune_linear(lin, stats, cfg)
            with torch.no_grad(), autocast(ac):
                targets = [dl[name](x).float() for x in x_tgt]
            before = _rel_mse(_run(lambda x, kw: lin(x), x_in, [{}] * len(x_in), ac), targets)
            with _trainable([lin], [(lp, name, lin)], cfg, gen) as (params, masks):
                mod = lp.get_submodule(name)
                fit = _fit(lambda x, kw, m=mod: m(x), params, masks, x_in, [{}] * len(x_in), targets, cfg, gen, ac)
            lin = pl[name] = lp.get_submodule(name)
            after = _rel_mse(_run(lambda x, kw: lin(x), x_in, [{}] * len(x_in), ac), targets)
            report.per_submodel.append({"name": f"layers.{i}.{name}", "rel_mse_before": before, "rel_mse_after": after,
                                        "trainable": sum(p.numel() for p in params), "wall_s": time.perf_counter() - t0, **fit})  # fmt: skip
            report.steps += fit["steps"]
            report.trainable_params += sum(p.numel() for p in params)
            del targets


# -- the step -----------------------------------------------------------------------------------------


def calibration_ids(calib, cfg: Reconstruct) -> torch.Tensor:
    if calib is None or len(calib) == 0:
        raise EdgepruneError("the calibration set is empty: pass calibration windows (edgeprune.compress.calibration_windows)")
    ids = calib.ids if hasattr(calib, "ids") else calib
    return ids[: cfg.calib_windows] if cfg.calib_windows else ids


def reconstruct(model, cfg: Reconstruct, calib=None, *, dense=None, train_data=None, progress: bool = True,
                release_dense: bool = False):  # fmt: skip
    """Reconstruct ``model`` (pruned) against ``dense`` in place -> ``(model, ReconstructReport)``.

    ``calib`` (or ``train_data``, which wins): the windows both the targets and the fit use.
    ``release_dense``: free each dense layer once it is no longer needed (the caller gives ``dense`` up).
    """
    t_start = time.perf_counter()
    check_pair(model, dense)
    ids = calibration_ids(train_data if train_data is not None else calib, cfg)
    depth = kept_layers(model.config) is not None
    if cfg.granularity == "linear" and not depth:
        _check_linear_shapes(model, dense)
    # bad blocks fail here, and any granularity but block 1 of a depth-pruned model
    subs = _submodels(model, dense, cfg) if cfg.granularity != "linear" or depth else None
    if cfg.prune is not None:
        nm = mk.parse_pattern(cfg.pattern)
        if nm is not None:
            for i, layer in enumerate(decoder_layers(model)):
                for name, lin in block_linears(layer).items():
                    mk.check_divides(lin.in_features, nm[1], f"layers.{i}.{name}")
    ac = resolve_autocast(cfg.autocast)
    sampler = PeakRss().start()
    report = ReconstructReport(step=cfg.kind, config=cfg.to_dict(), rss_start_mb=rss_mb(),
                               calibration={"windows": int(ids.shape[0]), "seq_len": int(ids.shape[1]),
                                            "source": getattr(train_data if train_data is not None else calib, "source", None)})  # fmt: skip
    report.zeros_before = _linear_zeros(model)
    report.autocast = "bfloat16" if ac is not None else "float32"
    gen = torch.Generator().manual_seed(cfg.seed)
    was = (model.training, dense.training)
    grad_flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    dense.eval()
    for p, _ in grad_flags:
        p.requires_grad_(False)
    from tqdm.auto import tqdm

    try:
        need_p = cfg.inputs != "dense" or cfg.prune is not None
        need_d = cfg.inputs in ("dense", "pruned_true")
        with torch.no_grad():
            P = capture_block_inputs(model, ids, cfg.batch_size) if need_p else None
            D = capture_block_inputs(dense, ids, cfg.batch_size) if need_d or cfg.granularity == "linear" else None
        if D is not None and not need_d and cfg.granularity != "linear":
            D = None
        ld = decoder_layers(dense)
        before, after = [], []
        if cfg.granularity == "linear":
            lp = decoder_layers(model)
            for i in tqdm(range(len(lp)), desc="reconstruct (linear)", unit="layer", disable=not progress, leave=False):
                _fit_linears(i, lp[i], ld[i], P, D if need_d else None, cfg, gen, ac, report)
                if P is not None:
                    P.hidden = _run(_call_layers([lp[i]]), P.hidden, P.kwargs, ac)
                if D is not None and need_d:
                    D.hidden = _run(_call_layers([ld[i]]), D.hidden, D.kwargs, ac)
                if release_dense:
                    ld[i].to("meta")
            report.submodels = len(report.per_submodel)
        else:
            for sub in tqdm(subs, desc=f"reconstruct ({cfg.label})", unit="submodel", disable=not progress, leave=False):
                t0 = time.perf_counter()
                if cfg.prune is not None:
                    report.params_pruned_in_loop += _prune_stages(sub.stages, P.hidden, P.kwargs, cfg, ac)
                src = D if cfg.inputs == "dense" else P
                # targets: the dense submodel on the dense stream (a, c: also the dense stream's next state)
                # or on the pruned stream (b)
                targets = _run(sub.dense_fn, (D if need_d else P).hidden, src.kwargs, ac)
                linears = [(m, n, lin) for m in sub.modules for n, lin in m.named_modules() if isinstance(lin, nn.Linear)]
                outs0 = _run(sub.pruned_fn, src.hidden, src.kwargs, ac)
                rel0 = _rel_mse(outs0, targets)
                n_params = 0
                fit = {"steps": 0, "epoch_loss": []}
                if sub.modules:
                    del outs0
                    with _trainable(sub.modules, linears, cfg, gen) as (params, masks):
                        n_params = sum(p.numel() for p in params)
                        fit = _fit(sub.pruned_fn, params, masks, src.hidden, src.kwargs, targets, cfg, gen, ac)
                    outs = _run(sub.pruned_fn, src.hidden, src.kwargs, ac)
                else:  # nothing trained (a depth-pruned model's block away from a gap): the same outputs
                    outs = outs0
                rel1 = _rel_mse(outs, targets)
                before.append(rel0)
                after.append(rel1)
                # propagate: the pruned stream through the reconstructed submodel, the dense stream = the targets
                if P is not None:
                    P.hidden = outs if src is P else _run(sub.pruned_fn, P.hidden, P.kwargs, ac)
                del outs
                if need_d:
                    D.hidden = targets
                del targets
                if release_dense:
                    for i in sub.dense_layers:
                        ld[i].to("meta")
                report.steps += fit["steps"]
                report.trainable_params += n_params
                report.per_submodel.append({"name": sub.name, "rel_mse_before": rel0, "rel_mse_after": rel1,
                                            "trainable": n_params, "wall_s": time.perf_counter() - t0,
                                            "rss_mb": rss_mb(), **fit})  # fmt: skip
            report.submodels = len(subs)
        rows = report.per_submodel
        report.rel_mse_before = sum(r["rel_mse_before"] for r in rows) / max(len(rows), 1)
        report.rel_mse_after = sum(r["rel_mse_after"] for r in rows) / max(len(rows), 1)
    finally:
        model.train(was[0])
        dense.train(was[1])
        for p, flag in grad_flags:
            p.requires_grad_(flag)
        report.peak_rss_mb = sampler.stop()  # this call's peak, not the process's lifetime peak
    report.zeros_after = _linear_zeros(model)
    report.wall_s = time.perf_counter() - t_start
    report.working_mb = max(0.0, report.peak_rss_mb - report.rss_start_mb)
    return model, report


# -- the step (``step: reconstruct``) --------------------------------------------------------------------


def apply(model, cfg: Reconstruct, ctx):
    """``apply(model, cfg, ctx)`` of the step protocol (:mod:`edgeprune.steps`): fit ``model`` to
    ``ctx``'s dense original on its calibration windows (``self`` text is the dense model's)."""
    dense = ctx.require_dense("reconstruction")
    return reconstruct(model, cfg, ctx.calibration(cfg, model), dense=dense, progress=ctx.progress,
                       release_dense=ctx.release_dense)  # fmt: skip

"""One-shot N:M sparsity and group-wise weight quantization steps: the orchestration around the pure
maths of ``masks.py``, ``sparsegpt.py`` and ``quantize.py``.

Steps (strict configs, rows of ``edgeprune.steps.registry``, applied with
``edgeprune.compress.compress(model, step, calib)``; both change ``model`` in place and return it):

- :class:`NMPrune` (``nm_prune``): every Linear of every decoder layer gets an N:M (default 2:4)
  or unstructured mask, by ``magnitude`` (no data), ``wanda`` or ``sparsegpt`` (OBS weight update).
  Data-driven methods calibrate layer by layer on the pruned stream (``sequential.sequential``).
  An optional nested ``quant`` quantizes each layer right after pruning it, in the same pass.
  ``slorb_k > 0`` also fits a SLoRB term per Linear (``sparse_modules.slorb_lstsq``: the
  Hessian-weighted least-squares fit of what pruning removed) and swaps in a ``SLoRBLinear``, so
  the next layers are calibrated on the corrected stream.
- :class:`WeightQuant` (``weight_quant``): int4/int8 group-wise quantization of the decoder
  Linears by round-to-nearest (``rtn``, no data) or ``gptq``; zeros stay exactly zero (so an N:M
  model stays N:M). ``embedding="int8"`` also stores the token embedding (and an untied LM head)
  as int8.

Quantized modules keep float weights equal to the dequantized values (the model runs as usual) and
carry their codes in ``module.edgeprune_quant`` (a :class:`~edgeprune.compress.quantize.QuantizedWeight`
with int8 codes), which the compressed artifact (``packed.py``) stores.

Where 2:4 pays: only on GPUs with sparse tensor cores (Ampere and later: Jetson Orin, RTX 30/40,
A100/H100) through a sparse kernel path (TensorRT, cuSPARSELt). On CPUs, phones and llama.cpp,
2:4 saves storage only (see ``DeviceProfile.sparse_24_note``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from edgeprune.compress import masks as mk
from edgeprune.compress.sequential import CALIB_DTYPES, block_linears, decoder_layers, sequential
from edgeprune.compress.config import StrictConfig, check_choice, check_fraction, check_int
from edgeprune.compress.quantize import QuantizedWeight, QuantSpec, check_group, rtn_quantize
from edgeprune.compress.sparse_modules import SLoRBLinear, replace_module, slorb_lstsq
from edgeprune.compress.sparsegpt import gptq_quantize, sparsegpt_prune
from edgeprune.errors import EdgepruneError

PRUNE_METHODS = ("magnitude", "wanda", "sparsegpt")
QUANT_METHODS = ("rtn", "gptq")
EMBEDDING_MODES = ("int8", "keep")


@dataclass(frozen=True)
class WeightQuant(StrictConfig):
    """Group-wise int4/int8 weight quantization of the decoder Linears (zeros stay zero)."""

    STEP = "quantize"
    kind = "weight_quant"

    bits: int = 4
    group_size: int = 64  # input columns per scale; must divide every Linear's input width (576 = 9 x 64)
    symmetric: bool = True
    method: str = "gptq"  # "rtn" (no data) or "gptq" (error-compensating, needs calibration windows)
    embedding: str = "int8"  # "int8": token embedding (and an untied LM head) as int8, same group size; "keep"
    batch_size: int = 8  # calibration windows per block forward (gptq)
    blocksize: int = 128  # GPTQ column block
    damp: float = 0.01  # GPTQ damping, a fraction of mean(diag(H))
    act_order: bool = True  # GPTQ: columns by decreasing H[j, j], grids fixed up front (static groups): 1.31x vs 1.50x dense ppl at int4 g64 on SmolLM2-135M
    calib_dtype: str = "bfloat16"  # block forwards during calibration (stats stay float32): 2-4x faster on CPU
    version: int = 1

    def check(self) -> list[str]:
        p = [] if self.bits in (4, 8) and not isinstance(self.bits, bool) else [f"bits {self.bits!r} is not one of 4, 8"]
        p += check_int("group_size", self.group_size, minimum=1)
        for flag in ("symmetric", "act_order"):
            if not isinstance(getattr(self, flag), bool):
                p.append(f"{flag} must be true or false, got {getattr(self, flag)!r}")
        p += check_choice("method", self.method, QUANT_METHODS) + check_choice("embedding", self.embedding, EMBEDDING_MODES)
        p += check_int("batch_size", self.batch_size, minimum=1) + check_int("blocksize", self.blocksize, minimum=1)
        p += check_fraction("damp", self.damp, high=10.0) + check_choice("calib_dtype", self.calib_dtype, tuple(CALIB_DTYPES))
        return p

    @property
    def spec(self) -> QuantSpec:
        return QuantSpec(self.bits, self.group_size, self.symmetric)

    @property
    def label(self) -> str:
        return f"int{self.bits}"


@dataclass(frozen=True)
class NMPrune(StrictConfig):
    """One-shot N:M or unstructured pruning of every decoder Linear (magnitude, Wanda, SparseGPT)."""

    STEP = "sparsify"
    kind = "nm_prune"
    NESTED = {"quant": WeightQuant}

    pattern: str = "2:4"  # "N:M" (keep N of every M consecutive inputs) or "unstructured"
    method: str = "wanda"  # magnitude | wanda | sparsegpt
    sparsity: float = 0.5  # fraction removed, for pattern "unstructured" only
    quant: WeightQuant | None = None  # quantize each layer right after pruning it, in the same pass
    slorb_k: int = 0  # > 0: add a SLoRB term per Linear (groups of k inputs), fitted by Hessian least squares
    batch_size: int = 8  # calibration windows per block forward
    blocksize: int = 128  # SparseGPT column block
    damp: float = 0.01  # SparseGPT damping, a fraction of mean(diag(H))
    calib_dtype: str = "bfloat16"  # block forwards during calibration (stats stay float32): 2-4x faster on CPU
    version: int = 1

    def check(self) -> list[str]:
        p = []
        try:
            mk.parse_pattern(self.pattern)
        except EdgepruneError as exc:
            p.append(str(exc))
        p += check_choice("method", self.method, PRUNE_METHODS)
        p += check_fraction("sparsity", self.sparsity, low_open=False)
        if self.quant is not None and not isinstance(self.quant, WeightQuant):
            p.append(f"quant must be a weight_quant mapping, got {self.quant!r}")
        p += check_int("slorb_k", self.slorb_k, minimum=0)
        p += check_int("batch_size", self.batch_size, minimum=1) + check_int("blocksize", self.blocksize, minimum=1)
        p += check_fraction("damp", self.damp, high=10.0) + check_choice("calib_dtype", self.calib_dtype, tuple(CALIB_DTYPES))
        return p

    @property
    def nm(self) -> tuple[int, int] | None:
        return mk.parse_pattern(self.pattern)


@dataclass
class SparsifyReport:
    step: str
    config: dict
    layers: int = 0
    linears: int = 0
    params_pruned: int = 0  # weights set to zero by the mask
    params_linear: int = 0  # weights of all decoder Linears
    sparsity: float = 0.0
    calibration: dict | None = None
    obs_loss: float | None = None  # summed OBS error estimate (sparsegpt / gptq)
    wall_s: float = 0.0
    per_layer: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# -- checks before any work ---------------------------------------------------------------------------


def check_model(model, *, nm: tuple[int, int] | None = None, quant: WeightQuant | None = None) -> None:
    """EdgepruneError naming the first Linear whose width the pattern or the quant group does not divide."""
    for i, layer in enumerate(decoder_layers(model)):
        for name, lin in block_linears(layer).items():
            where = f"layers.{i}.{name}"
            if nm is not None:
                mk.check_divides(lin.in_features, nm[1], where)
            if quant is not None:
                check_group(lin.in_features, quant.group_size, where)
    if quant is not None and quant.embedding == "int8":
        emb = model.get_input_embeddings()
        check_group(emb.weight.shape[1], quant.group_size, "the token embedding")


def _needs_calib(calib, what: str):
    if calib is None or len(calib) == 0:
        raise EdgepruneError(
            f"{what} needs calibration windows: pass calib (edgeprune.compress.calibration_windows) or use "
            "method magnitude / rtn"
        )
    return calib.ids


# -- quantization helpers -----------------------------------------------------------------------------


def attach_quant(module: nn.Module, qw: QuantizedWeight) -> None:
    """Set ``module.weight`` to the dequantized values and remember the codes for packing."""
    deq = qw.dequantize().to(module.weight.dtype)
    with torch.no_grad():
        module.weight.copy_(deq)
    # int8 codes are enough for 4 and 8 bits (symmetric codes are signed, asymmetric fit after the shift)
    module.edgeprune_quant = QuantizedWeight(
        codes=(qw.codes - qw.spec.qmin).to(torch.uint8), scale=qw.scale.to(torch.float16),
        zero=qw.zero.to(torch.uint8), spec=qw.spec,
    )  # fmt: skip
    slorb = getattr(module, "slorb_L", None)
    if slorb is not None:  # the SLoRB correction is stored as float16: round it now so logits match the file
        with torch.no_grad():
            slorb.copy_(slorb.half().to(slorb.dtype))


def stored_quant(module: nn.Module) -> QuantizedWeight | None:
    """The codes attached by :func:`attach_quant`, as ``QuantizedWeight`` with int32 codes (or None)."""
    q = getattr(module, "edgeprune_quant", None)
    if q is None:
        return None
    return QuantizedWeight(q.codes.to(torch.int32) + q.spec.qmin, q.scale.float(), q.zero.to(torch.int32), q.spec)


def _quantize_linear(lin: nn.Linear, cfg: WeightQuant, hessian: torch.Tensor | None) -> float:
    w = lin.weight.detach().float()
    keep = w != 0  # zeros stay zero: an N:M layer stays N:M
    if cfg.method == "gptq":
        res = gptq_quantize(w, hessian, cfg.spec, keep=keep, blocksize=cfg.blocksize, damp=cfg.damp, act_order=cfg.act_order)
        attach_quant(lin, res.quantized)
        return res.loss
    attach_quant(lin, rtn_quantize(w, cfg.spec, keep))
    return 0.0


def quantize_embeddings(model, cfg: WeightQuant) -> None:
    if cfg.embedding != "int8":
        return
    spec = QuantSpec(8, cfg.group_size, True)
    emb = model.get_input_embeddings()
    attach_quant(emb, rtn_quantize(emb.weight.detach().float(), spec))
    head = model.get_output_embeddings()
    if head is not None and head.weight is not emb.weight:
        attach_quant(head, rtn_quantize(head.weight.detach().float(), spec))


def _with_slorb(layer: nn.Module, name: str, lin: nn.Linear, k: int) -> SLoRBLinear:
    """Swap ``lin`` (at ``name`` inside ``layer``) for a SLoRBLinear with the same weights and L = 0."""
    if isinstance(lin, SLoRBLinear):
        return lin
    new = SLoRBLinear(lin.in_features, lin.out_features, bias=lin.bias is not None, slorb_k=k, device="meta")
    new.weight = lin.weight
    new.bias = lin.bias
    new.slorb_L = nn.Parameter(torch.zeros(lin.out_features, lin.in_features // k, dtype=lin.weight.dtype))
    replace_module(layer, name, new)
    return new


# -- the steps ----------------------------------------------------------------------------------------


def nm_prune(model, cfg: NMPrune, calib=None, *, progress: bool = True):
    """Apply ``cfg`` to ``model`` in place -> ``(model, SparsifyReport)``."""
    t0 = time.perf_counter()
    nm = cfg.nm
    check_model(model, nm=nm, quant=cfg.quant)
    data_needed = cfg.method != "magnitude" or (cfg.quant is not None and cfg.quant.method == "gptq")
    ids = _needs_calib(calib, f"method {cfg.method}" + (" with gptq" if cfg.quant else "")) if data_needed else None
    report = SparsifyReport(step=cfg.kind, config=cfg.to_dict(), calibration=calib.describe() if ids is not None else None)
    hessian = cfg.method == "sparsegpt" or (cfg.quant is not None and cfg.quant.method == "gptq") or cfg.slorb_k > 0
    if cfg.slorb_k:
        for i, layer in enumerate(decoder_layers(model)):
            for name, lin in block_linears(layer).items():
                if lin.in_features % cfg.slorb_k:
                    raise EdgepruneError(
                        f"SLoRB group size {cfg.slorb_k} does not divide the input width {lin.in_features} of "
                        f"layers.{i}.{name}: pick a slorb_k dividing it or 0"
                    )
        if ids is None:
            ids = _needs_calib(calib, "slorb_k > 0 (a Hessian least-squares fit)")
            report.calibration = calib.describe()
    obs = [0.0]

    def process(i, layer, linears, stats):
        out = {"layer": i}
        for name, lin in linears.items():
            if cfg.slorb_k:
                lin = _with_slorb(layer, name, lin, cfg.slorb_k)
            w = lin.weight.detach().float()
            if cfg.method == "sparsegpt":
                res = sparsegpt_prune(w, stats[name].xtx, nm=nm, sparsity=cfg.sparsity, blocksize=cfg.blocksize, damp=cfg.damp)
                new, obs[0] = res.weight, obs[0] + res.loss
            else:
                scores = mk.wanda_scores(w, stats[name].norm) if cfg.method == "wanda" else mk.magnitude_scores(w)
                keep = mk.make_mask(scores, nm, cfg.sparsity, per_row=cfg.method == "wanda")
                new = torch.where(keep, w, torch.zeros((), dtype=w.dtype))
            with torch.no_grad():
                if cfg.slorb_k:  # fit L to what this Linear lost, on its calibration inputs
                    lin.slorb_L.copy_(slorb_lstsq(w - new, stats[name].xtx, cfg.slorb_k, cfg.damp).to(lin.slorb_L.dtype))
                lin.weight.copy_(new.to(lin.weight.dtype))
            report.params_pruned += int((new == 0).sum())
            if cfg.quant is not None:
                obs[0] += _quantize_linear(lin, cfg.quant, stats[name].xtx if cfg.quant.method == "gptq" else None)
            report.linears += 1
            report.params_linear += w.numel()
        return out

    if ids is not None:
        report.per_layer = sequential(model, ids, process, hessian=hessian, batch_size=cfg.batch_size, calib_dtype=cfg.calib_dtype, progress=progress,
                                      desc=f"{cfg.method} {cfg.pattern}")  # fmt: skip
    else:
        report.per_layer = [process(i, layer, block_linears(layer), None) for i, layer in enumerate(decoder_layers(model))]
    if cfg.quant is not None:
        quantize_embeddings(model, cfg.quant)
    report.layers = len(report.per_layer)
    report.sparsity = report.params_pruned / max(report.params_linear, 1)
    report.obs_loss = obs[0] if hessian else None
    report.wall_s = time.perf_counter() - t0
    return model, report


def weight_quant(model, cfg: WeightQuant, calib=None, *, progress: bool = True):
    """Quantize ``model``'s decoder Linears (and embedding) in place -> ``(model, SparsifyReport)``."""
    t0 = time.perf_counter()
    check_model(model, quant=cfg)
    report = SparsifyReport(step=cfg.kind, config=cfg.to_dict())
    obs = [0.0]

    def process(i, layer, linears, stats):
        for name, lin in linears.items():
            obs[0] += _quantize_linear(lin, cfg, stats[name].xtx if stats is not None else None)
            report.linears += 1
            report.params_linear += lin.weight.numel()
            report.params_pruned += int((lin.weight == 0).sum())
        return {"layer": i}

    if cfg.method == "gptq":
        ids = _needs_calib(calib, "method gptq")
        report.calibration = calib.describe()
        report.per_layer = sequential(model, ids, process, hessian=True, batch_size=cfg.batch_size, calib_dtype=cfg.calib_dtype, progress=progress,
                                      desc=f"gptq {cfg.spec.name}")  # fmt: skip
    else:
        report.per_layer = [process(i, layer, block_linears(layer), None) for i, layer in enumerate(decoder_layers(model))]
    quantize_embeddings(model, cfg)
    report.layers = len(report.per_layer)
    report.sparsity = report.params_pruned / max(report.params_linear, 1)
    report.obs_loss = obs[0] if cfg.method == "gptq" else None
    report.wall_s = time.perf_counter() - t0
    return model, report


# -- the steps (``step: sparsify``, ``step: quantize``) ----------------------------------------------


def apply_nm_prune(model, cfg: NMPrune, ctx):
    """``apply(model, cfg, ctx)`` of the step protocol (:mod:`edgeprune.steps`)."""
    return nm_prune(model, cfg, ctx.calibration(cfg, model), progress=ctx.progress)


def apply_weight_quant(model, cfg: WeightQuant, ctx):
    """``apply(model, cfg, ctx)`` of the step protocol (:mod:`edgeprune.steps`)."""
    return weight_quant(model, cfg, ctx.calibration(cfg, model), progress=ctx.progress)

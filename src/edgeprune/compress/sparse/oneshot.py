"""One-shot N:M sparsity (``step: sparsify``): every Linear of every decoder layer gets an N:M
(default 2:4) or unstructured mask, by ``magnitude`` (no data), ``wanda`` (|W| x input norm,
``masks.wanda_scores``) or ``sparsegpt`` (OBS weight update, ``sparsegpt.py``): the orchestration
around that pure maths. It changes ``model`` in place and returns it.

Data-driven methods calibrate layer by layer on the pruned stream (``sequential.sequential``).
An optional nested ``quant`` (:class:`~edgeprune.compress.quant.weights.WeightQuant`) quantizes
each layer right after pruning it, in the same pass. ``slorb_k > 0`` also fits a SLoRB term per
Linear (``modules.slorb_lstsq``: the Hessian-weighted least-squares fit of what pruning removed)
and swaps in a ``SLoRBLinear``, so the next layers are calibrated on the corrected stream.

Where 2:4 pays: only on GPUs with sparse tensor cores (Ampere and later: Jetson Orin, RTX 30/40,
A100/H100) through a sparse kernel path (TensorRT, cuSPARSELt). On CPUs, phones and llama.cpp,
2:4 saves storage only (see ``DeviceProfile.sparse_24_note``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from edgeprune.compress.config import StrictConfig, check_choice, check_fraction, check_int
from edgeprune.compress.quant.weights import (SparsifyReport, WeightQuant, check_group_widths, needs_calib,
                                              quantize_embeddings, quantize_linear)  # fmt: skip
from edgeprune.compress.sequential import CALIB_DTYPES, block_linears, decoder_layers, sequential
from edgeprune.compress.sparse import masks as mk
from edgeprune.compress.sparse.modules import SLoRBLinear, replace_module, slorb_lstsq
from edgeprune.compress.sparse.sparsegpt import sparsegpt_prune
from edgeprune.errors import EdgepruneError

PRUNE_METHODS = ("magnitude", "wanda", "sparsegpt")


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



# -- checks before any work ---------------------------------------------------------------------------


def check_model(model, *, nm: tuple[int, int] | None = None, quant: WeightQuant | None = None) -> None:
    """EdgepruneError naming the first Linear whose width the pattern (then the quant group) does not divide."""
    if nm is not None:
        for i, layer in enumerate(decoder_layers(model)):
            for name, lin in block_linears(layer).items():
                mk.check_divides(lin.in_features, nm[1], f"layers.{i}.{name}")
    if quant is not None:
        check_group_widths(model, quant)


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



# -- the step (``step: sparsify``) ------------------------------------------------------------------


def nm_prune(model, cfg: NMPrune, calib=None, *, progress: bool = True):
    """Apply ``cfg`` to ``model`` in place -> ``(model, SparsifyReport)``."""
    t0 = time.perf_counter()
    nm = cfg.nm
    check_model(model, nm=nm, quant=cfg.quant)
    data_needed = cfg.method != "magnitude" or (cfg.quant is not None and cfg.quant.method == "gptq")
    ids = needs_calib(calib, f"method {cfg.method}" + (" with gptq" if cfg.quant else "")) if data_needed else None
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
            ids = needs_calib(calib, "slorb_k > 0 (a Hessian least-squares fit)")
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
                obs[0] += quantize_linear(lin, cfg.quant, stats[name].xtx if cfg.quant.method == "gptq" else None)
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


def apply(model, cfg: NMPrune, ctx):
    """``apply(model, cfg, ctx)`` of the step protocol (:mod:`edgeprune.steps`)."""
    return nm_prune(model, cfg, ctx.calibration(cfg, model), progress=ctx.progress)

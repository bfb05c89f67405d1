"""A budgeted build: make candidates, score them on held-out text, time them, ship the fastest that
meets the user's bounds (``edgeprune build --max-ppl-ratio R [--max-bytes B] [--min-decode-tps S]``).

Candidates:

- the dense model in each type the target's format offers (``default_types``: the export
  registry row's quantized types between its 4bit and 8bit types, e.g. GGUF q8_0 ... q4_0, ONNX
  int8, int4), the *plain quantization* every compressed result must beat;
- Adapt-Pruner models at several ratios, all from **one** run (its snapshots: the mini-steps to a
  smaller target are exactly those of a run with that target), each fitted back to the dense model
  by local reconstruction (the ``reconstruct`` step through the step protocol), in the same types.

Calibration text is the build's ``--calib`` source, else the step context's default (``general``
where the data directory has it, else ``self``); held-out scoring uses the first ``ppl_windows``
windows of each evaluation text (``--eval``; by default WikiText-2 test and tiny-shakespeare, two
domains, both shipped with the package), which nothing is fitted or tuned on; a candidate's ppl
ratio is its worst over those texts. Decode speed is measured on the host (fresh processes, the profile
harness) and predicted everywhere (``devices.cost.predict``); other targets use the prediction.

Layout under ``--out DIR``, each directory written atomically with a manifest holding its inputs
hash, so a rerun or ``--resume`` never recomputes a finished piece::

    DIR/search/reference/TEXT-HASH/   the dense model's perplexity on one held-out text (a ratio's denominator)
    DIR/search/models/adaptNN-HASH/   a pruned + reconstructed model (model/)
    DIR/search/cands/NAME-HASH/       one candidate: its artifact, bytes, predicted speed
    DIR/search/speed/NAME-HASH/       its decode/prefill speed measured on the host
    DIR/search/scores/NAME-TEXT-HASH/ one candidate's perplexity on one held-out text
    DIR/<artifact>                    the shipped artifact (a hard link to its candidate's)
    DIR/report.json, report.md, frontier.png
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgeprune.errors import EdgepruneError
from edgeprune.pipeline import frontier as fr
from edgeprune.pipeline.builddir import check_build_dir, inputs_hash, source_identity


# A search makes several compressed models only to rank them against plain quants, so their steps run
# lighter than the step defaults, sized for a whole search within 45 min on 2 cores (135M): Adapt-
# Pruner samples 8 windows per mini-step (step default 32), reconstruction fits one epoch on 16
# windows (step default 4 epochs on all). Pass prune= / reconstruct= for the full strength.
SEARCH_PRUNE_WINDOWS = 8
SEARCH_RECON = {"epochs": 1, "calib_windows": 16}


def _prune_default():
    from edgeprune.compress.structured.config import StructuredPrune

    return StructuredPrune(method="adapt", calib_windows=SEARCH_PRUNE_WINDOWS)


def _reconstruct_default():
    from edgeprune.compress.reconstruct.local import Reconstruct

    return Reconstruct(**SEARCH_RECON)


def _depth_default():
    from edgeprune.compress.depth.config import Depth

    return Depth()


@dataclass(frozen=True)
class SearchConfig:
    """The search's settings (the bounds are :class:`~edgeprune.pipeline.frontier.Bounds`)."""

    ratios: tuple[float, ...] = (0.1, 0.2, 0.3)  # Adapt-Pruner targets, all from one run; () = none
    depths: tuple[int, ...] = (3, 6)  # decoder layers removed (the depth step), each model its own run; () = none
    types: tuple[str, ...] | None = None  # None: default_types() of the target's format
    format: str = "auto"  # the target's preferred format, or a registered one
    ppl_windows: int = 4  # held-out windows: 4 x 1024 tokens keeps a candidate's scoring to ~a minute on 2 cores
    seq_len: int = 1024
    prune: object = field(default_factory=_prune_default)  # StructuredPrune; its target is replaced by each ratio
    depth: object = field(default_factory=_depth_default)  # Depth; its layers are replaced by each of depths
    reconstruct: object = field(default_factory=_reconstruct_default)  # Reconstruct config; None: no reconstruction
    # llama.cpp's importance matrix from the calibration text: the dense model in each type that reads
    # one is a candidate with and without it; compressed models use it in those types
    imatrix: bool = True
    imatrix_windows: int = 32  # x imatrix_seq_len calibration tokens
    imatrix_seq_len: int = 512
    # a compressed model whose most precise type already misses --max-ppl-ratio is not made in smaller
    # types (rounding harder never brought a model back under the bound in any run we made)
    skip_hopeless: bool = True
    measure: bool = True  # on the host, measure decode speed too (False: predicted only)
    prompt_tokens: int = 128
    gen_tokens: int = 64
    reps: int = 3
    verify: bool = True  # exporters read each artifact back

    def settings(self) -> dict:
        return {"ratios": list(self.ratios), "depths": list(self.depths), "types": list(self.types) if self.types else None,
                "format": self.format, "ppl_windows": self.ppl_windows, "seq_len": self.seq_len, "prune": self.prune.to_dict(),
                "depth": self.depth.to_dict(), "reconstruct": self.reconstruct.to_dict() if self.reconstruct is not None else None,
                "imatrix": self.imatrix, "imatrix_windows": self.imatrix_windows, "imatrix_seq_len": self.imatrix_seq_len,
                "skip_hopeless": self.skip_hopeless,
                "measure": self.measure, "prompt_tokens": self.prompt_tokens, "gen_tokens": self.gen_tokens,
                "reps": self.reps, "verify": self.verify}  # fmt: skip


@dataclass(frozen=True)
class Spec:
    """One candidate to make: a model (the dense one, an Adapt-Pruner ratio or a number of decoder
    layers removed) in one type, with or without llama.cpp's importance matrix."""

    kind: str  # "dense" | "adapt" | "depth"
    value: float | int | None  # adapt: the ratio; depth: layers removed; dense: None
    quant: str
    imatrix: bool = False

    @property
    def model_name(self) -> str:
        if self.kind == "adapt":
            return f"adapt{round(self.value * 100):02d}"
        return fr.DENSE if self.kind == "dense" else f"depth{self.value}"

    @property
    def name(self) -> str:
        return f"{self.model_name}-{self.quant}" + ("-imatrix" if self.imatrix else "")

    def method(self, reconstruct: bool) -> str:
        what = {"dense": fr.DENSE, "adapt": f"adapt {self.value}", "depth": f"depth -{self.value} layers"}[self.kind]
        if self.kind != "dense" and reconstruct:
            what += " + reconstruct"
        return what + (" + imatrix" if self.imatrix else "")


# why 2:4 (N:M) sparse models are not candidates, per format: a candidate must be able to win on
# speed or bytes, and neither runtime stores or multiplies 2:4 weights as such
NOT_SEARCHED = {
    "gguf": "2:4 sparse models: not candidates: llama.cpp has no 2:4 storage or kernels, so a 2:4 model's GGUF "
            "is as large and decodes as fast as the dense one's, at a worse perplexity",
    "onnx": "2:4 sparse models: not candidates: onnxruntime's CPU kernels multiply 2:4 weights as dense ones (no "
            "speed-up); the saving is storage only, through edgeprune's packed format, which onnxruntime does not read",
}

# the held-out texts a search scores on by default: two domains (Wikipedia, Shakespeare's plays),
# both shipped with the package; the bound applies to the worse ratio of the two
DEFAULT_HELD_OUT = ("wikitext2", "shakespeare")


def held_out_texts(eval_data: str | tuple[str, ...] | list[str] | None, calib) -> tuple[str, ...]:
    """The held-out texts from ``--eval`` (a name, a file, or several comma-separated); one line
    when one of them is also the calibration text."""
    if eval_data is None:
        texts = DEFAULT_HELD_OUT
    elif isinstance(eval_data, str):
        texts = tuple(t.strip() for t in eval_data.split(",") if t.strip())
    else:
        texts = tuple(str(t) for t in eval_data)
    if not texts:
        raise EdgepruneError("--eval names no text: pass a corpus name or file, or several comma-separated")
    if len(set(texts)) != len(texts):
        raise EdgepruneError(f"--eval names a text twice ({','.join(texts)}): name each once")
    if calib is not None and str(calib) in texts:
        raise EdgepruneError(f"--calib and --eval both name {calib}: the held-out text must not be the calibration text; "
                             f"calibrate on general or your own text")  # fmt: skip
    return texts


def text_label(text: str) -> str:
    """A short name for a held-out text: the corpus name, or a file's stem."""
    return text if "/" not in text and "." not in text else Path(text).stem


# -- pure: what to make -----------------------------------------------------------------------------


def default_types(row) -> tuple[str, ...]:
    """The export row's quantized types from its 8bit type down to its 4bit type (by bytes per
    weight), largest first, leaving out the variants that sit a few percent from a kept neighbour
    (K-quant ``_s``/``_l`` mixes, the legacy ``_1`` types, ``base-variant`` names such as ONNX
    ``int8-dynamic``): ``--types`` names any of them."""
    from edgeprune.devices.cost import BYTES_PER_WEIGHT

    hi, lo = (BYTES_PER_WEIGHT[row.bit_widths[k]] for k in ("8bit", "4bit"))
    kept = [q for q in row.quants() if q in BYTES_PER_WEIGHT and lo <= BYTES_PER_WEIGHT[q] <= hi
            and not q.endswith(("_s", "_l", "_1")) and "-" not in q]  # fmt: skip
    return tuple(sorted(kept, key=lambda q: -BYTES_PER_WEIGHT[q]))


def with_budget(target: str, bounds: fr.Bounds) -> fr.Bounds:
    """``bounds`` with the plan's memory budget (``--max-memory`` or the device's usable memory)."""
    import dataclasses

    from edgeprune.devices.profiles import get_device
    from edgeprune.pipeline.plan import memory_budget

    return dataclasses.replace(bounds, max_memory_bytes=memory_budget(get_device(target), bounds.max_memory_bytes)[0])


def candidate_specs(types: tuple[str, ...], ratios: tuple[float, ...], depths: tuple[int, ...] = (),
                    imatrix_types: tuple[str, ...] = ()) -> list[Spec]:  # fmt: skip
    """Every model in every type, the dense ones first, each model's most precise type first. The
    dense model is also made in each of ``imatrix_types`` with the importance matrix (plain
    quantization as llama.cpp users do it); compressed models take it in those types instead."""
    order = sorted(types, key=_precision_order)
    out = []
    for kind, values in (("dense", (None,)), ("adapt", sorted(ratios)), ("depth", sorted(depths))):
        for v in values:
            for q in order:
                if kind == "dense" or q not in imatrix_types:
                    out.append(Spec(kind, v, q))
                if q in imatrix_types:
                    out.append(Spec(kind, v, q, imatrix=True))
    return out


def _precision_order(q: str) -> float:
    from edgeprune.devices.cost import BYTES_PER_WEIGHT

    return -BYTES_PER_WEIGHT.get(q, 0.0)


def imatrix_types(fmt: str, types: tuple[str, ...], cfg) -> tuple[str, ...]:
    """The searched types whose quantizer reads an importance matrix (GGUF's llama.cpp types)."""
    if not cfg.imatrix or fmt != "gguf":
        return ()
    from edgeprune.export.gguf.imatrix import type_problems

    return tuple(q for q in types if not type_problems(q))


def check_search(target: str, cfg: SearchConfig, bounds: fr.Bounds) -> tuple[str, tuple[str, ...]]:
    """``(format, types)`` for ``target``; one line naming every problem (unknown types for the
    format, bad ratios, contradictory bounds) before anything is loaded."""
    from edgeprune.devices.profiles import get_device
    from edgeprune.export.registry import FORMATS
    from edgeprune.pipeline.plan import resolve_export

    problems = list(bounds.problems())
    fmt = None
    try:
        fmt = resolve_export(get_device(target), cfg.format, "auto")[0]
    except EdgepruneError as exc:
        problems.append(str(exc))
    types: tuple[str, ...] = ()
    if fmt is not None:
        row = FORMATS[fmt]
        types = tuple(cfg.types) if cfg.types else default_types(row)
        bad = [q for q in types if q not in row.quants()]
        if bad:
            problems.append(f"unknown {fmt} type(s) for {target}: {', '.join(bad)}; {fmt} offers {', '.join(row.quants())}")
        if not types:
            problems.append(f"no {fmt} types to search: pass --types")
    bad_r = [r for r in cfg.ratios if not 0 < r < 1]
    if bad_r:
        problems.append(f"pruning ratios must lie in (0, 1), got {', '.join(map(str, bad_r))}")
    bad_d = [d for d in cfg.depths if not isinstance(d, int) or isinstance(d, bool) or d < 1]
    if bad_d:
        problems.append(f"--depths counts decoder layers to remove: whole numbers >= 1, got {', '.join(map(str, bad_d))}")
    if cfg.ppl_windows < 1 or cfg.seq_len < 16:
        problems.append(f"held-out scoring needs >= 1 window of >= 16 tokens, got {cfg.ppl_windows} x {cfg.seq_len}")
    if problems:
        raise EdgepruneError(" | ".join(problems))
    return fmt, types


# -- cached pieces ----------------------------------------------------------------------------------


class Cache:
    """Directories under ``root``, each complete with a manifest naming its inputs hash; ``computed``
    lists what this run had to make (a resumed run reuses the rest)."""

    def __init__(self, root: Path, log: Callable[[str], None]):
        self.root, self.log, self.computed = root, log, []

    def done(self, rel: str, inputs: str) -> bool:
        return (self.root / f"{rel}-{inputs}" / "manifest.json").is_file()

    def get(self, rel: str, inputs: str, make: Callable[[Path], dict]) -> tuple[Path, dict]:
        """``(directory, manifest)`` of ``rel`` for ``inputs``: the finished one, or ``make(tmp) ->
        figures`` run now."""
        from edgeprune.fileio import atomic_dir, write_text_atomic

        d = self.root / f"{rel}-{inputs}"
        mf = d / "manifest.json"
        if mf.is_file():
            return d, json.loads(mf.read_text())
        for stale in d.parent.glob(f".{d.name}.*.tmp") if d.parent.is_dir() else ():
            shutil.rmtree(stale, ignore_errors=True)
        self.log(f"[search] {rel}: running")
        t0 = time.perf_counter()
        with atomic_dir(d) as tmp:
            figures = make(tmp)
            manifest = {"name": rel, "inputs_hash": inputs, "wall_s": round(time.perf_counter() - t0, 2), "figures": figures}
            write_text_atomic(tmp / "manifest.json", json.dumps(manifest, indent=2) + "\n")
        self.computed.append(rel)
        self.log(f"[search] {rel}: finished in {manifest['wall_s']:.1f}s")
        return d, manifest


# -- the search -------------------------------------------------------------------------------------


def _perplexity(what, tokenizer, cfg: SearchConfig, text: str) -> dict:
    from edgeprune.eval import Evaluator, PerplexityConfig

    ev = Evaluator(what, tokenizer=tokenizer, batch_tokens=cfg.seq_len, progress=False)
    try:
        rep = ev.perplexity(PerplexityConfig(data=text, seq_len=cfg.seq_len, limit_tokens=cfg.ppl_windows * cfg.seq_len))
    finally:
        ev.close()
    return {"ppl": rep.ppl, "tokens": rep.tokens, "windows": rep.windows}


def _measure(path: str, cfg: SearchConfig) -> dict:
    """Decode and prefill tokens/s on the host (the profile harness), with the load average then."""
    from edgeprune.runtime.profile import profile

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    res = profile(path, prompt_tokens=cfg.prompt_tokens, gen_tokens=cfg.gen_tokens, reps=cfg.reps)
    s = res.summary
    return {"decode_tps": s["decode_tps"]["median"], "prefill_tps": s["prefill_tps"]["median"], "runtime": res.runtime,
            "threads": res.threads, "loadavg_1m": load}  # fmt: skip


def _predict(path: str, target: str, cfg: SearchConfig) -> dict:
    from edgeprune.describe import describe
    from edgeprune.devices.cost import artifact_cost, predict
    from edgeprune.devices.profiles import get_device

    p = predict(get_device(target), artifact_cost(describe(path)), prompt_tokens=cfg.prompt_tokens, gen_tokens=cfg.gen_tokens)
    return {"decode_tps": p.decode_tps, "memory_bytes": p.memory_bytes, "decode_bound": p.decode_bound}


def _reconstruct_and_save(tmp: Path, model, figures: dict, cfg: SearchConfig, ctx, loaded) -> dict:
    """A compressed model fitted back to the dense one (when the search reconstructs) and saved as
    ``tmp/model``; ``figures`` gains the reconstruction's."""
    from edgeprune.models.save import save_model
    from edgeprune.steps import apply

    if cfg.reconstruct is not None:
        model, rep = apply(model, cfg.reconstruct, ctx)
        figures.update(rel_mse_before=rep.rel_mse_before, rel_mse_after=rep.rel_mse_after, reconstruct_wall_s=rep.wall_s)
    save_model(tmp / "model", model, loaded.tokenizer, source_gguf=loaded.source_gguf)
    return figures


def _pruned_models(cache: Cache, loaded, key: dict, cfg: SearchConfig, calib, log) -> dict[float, Path]:
    """Each ratio's pruned (+ reconstructed) model directory; the missing ones from one Adapt-Pruner
    run to the largest missing ratio, its snapshots giving the smaller ones."""
    import dataclasses

    from edgeprune.compress.structured.prune import structured_prune
    from edgeprune.steps import StepContext

    def inputs(r):
        return _model_inputs(key, cfg, Spec("adapt", r, ""), calib)

    def rel(r):
        return f"models/{Spec('adapt', r, '').model_name}"

    done = {r: cache.root / f"{rel(r)}-{inputs(r)}" for r in cfg.ratios}
    missing = sorted(r for r in cfg.ratios if not cache.done(rel(r), inputs(r)))
    if not missing:
        return done
    ctx = StepContext(tokenizer=loaded.tokenizer, calib=calib, dense=loaded.model, progress=False, log=log)
    top = dataclasses.replace(cfg.prune, target=missing[-1])

    def keep(r, model, report):
        def make(tmp: Path) -> dict:
            figures = {"ratio": r, "removed_fraction": report.removed_fraction, "params": report.total_params_after,
                       "prune_wall_s": report.wall_s, "calibration": str(calib)}  # fmt: skip
            return _reconstruct_and_save(tmp, model, figures, cfg, ctx, loaded)

        cache.get(rel(r), inputs(r), make)

    log(f"[search] Adapt-Pruner: one run to {top.target:g}, snapshots at {', '.join(f'{r:g}' for r in missing[:-1]) or 'none'}")
    windows = ctx.calibration(top, loaded.model)
    final, report = structured_prune(loaded.model, top, windows, progress=False, snapshots=tuple(missing[:-1]),
                                     on_snapshot=keep)  # fmt: skip
    keep(missing[-1], final, report)
    return done


def _model_inputs(key, cfg: SearchConfig, spec: Spec, calib) -> str | None:
    """The inputs hash of ``spec``'s model (None: the dense model, which is the source itself)."""
    import dataclasses

    recon = cfg.reconstruct.to_dict() if cfg.reconstruct is not None else None
    if spec.kind == "adapt":
        return inputs_hash(key, dataclasses.replace(cfg.prune, target=spec.value).to_dict(), recon, calib)
    if spec.kind == "depth":
        return inputs_hash(key, dataclasses.replace(cfg.depth, layers=spec.value, fraction=None).to_dict(), recon, calib)
    return None


def _depth_models(cache: Cache, loaded, key: dict, cfg: SearchConfig, calib, log) -> dict[int, Path]:
    """Each depth's model directory: the depth step (``layers`` removed) and, when the search
    reconstructs, local reconstruction of the blocks beside each gap, both through the step protocol."""
    import copy
    import dataclasses

    from edgeprune.steps import StepContext, apply

    done = {}
    ctx = StepContext(tokenizer=loaded.tokenizer, calib=calib, dense=loaded.model, progress=False, log=log)  # windows drawn once
    for d in sorted(cfg.depths):
        spec = Spec("depth", d, "")

        def make(tmp: Path, d=d) -> dict:
            # the step removes layers in place: a copy, so the dense model stays the teacher and reference
            model, rep = apply(copy.deepcopy(loaded.model), dataclasses.replace(cfg.depth, layers=d, fraction=None), ctx)
            figures = {"layers": d, "removed": list(rep.removed), "kept": list(rep.kept), "params": rep.params_after,
                       "calibration": str(calib)}  # fmt: skip
            return _reconstruct_and_save(tmp, model, figures, cfg, ctx, loaded)

        done[d] = cache.get(f"models/{spec.model_name}", _model_inputs(key, cfg, spec, calib), make)[0]
    return done


def _imatrix_file(cache: Cache, spec: Spec, model_inputs: str, lm, cfg: SearchConfig, calib) -> Path:
    """``spec``'s model's importance matrix on the calibration text (llama.cpp's GGUF imatrix file),
    computed once per model."""
    from edgeprune.export.gguf.imatrix import compute_imatrix, write_imatrix

    inputs = inputs_hash(model_inputs, calib, cfg.imatrix_windows, cfg.imatrix_seq_len)

    def make(tmp: Path) -> dict:
        im = compute_imatrix(lm().model, lm().tokenizer, calib, n_windows=cfg.imatrix_windows,
                             seq_len=cfg.imatrix_seq_len, progress=False)  # fmt: skip
        write_imatrix(tmp / "imatrix.gguf", im)
        return {"calibration": str(calib), "tokens": cfg.imatrix_windows * cfg.imatrix_seq_len}

    return cache.get(f"imatrix/{spec.model_name}", inputs, make)[0] / "imatrix.gguf"


def search(target: str, bounds: fr.Bounds, cfg: SearchConfig | None = None, *, model: str | None = None,
           out: str | Path | None = None, calib: str | None = None,
           eval_data: str | tuple[str, ...] | None = None, resume: bool = False, log=None) -> dict:  # fmt: skip
    """Run a budgeted build; returns the report (also ``out/report.json``). ``eval_data``: the
    held-out texts (default :data:`DEFAULT_HELD_OUT`); every candidate is scored on each, and the
    bound applies to its worst ratio. Raises :class:`~edgeprune.pipeline.frontier.NoCandidate`
    (exit code 2) when no candidate meets ``bounds``: the report is written, nothing is shipped."""
    from edgeprune.data.general import default_source, default_source_note
    from edgeprune.export.registry import FORMATS
    from edgeprune.fileio import write_text_atomic
    from edgeprune.models import load
    from edgeprune.models.builtin import DEFAULT_MODEL

    cfg = cfg or SearchConfig()
    log = log or (lambda msg: print(msg, flush=True))
    source = model or DEFAULT_MODEL
    out = Path(out or f"dist/{target}")
    fmt, types = check_search(target, cfg, bounds)
    bounds = with_budget(target, bounds)
    if calib is None and (cfg.ratios or cfg.depths or cfg.imatrix):
        log("no --calib given: " + default_source_note())
    calib = calib or default_source()
    texts = held_out_texts(eval_data, calib)
    check_build_dir(out, resume=resume)
    header = {"format": 1, "target": target, "model": source, "search": cfg.settings(), "bounds": bounds.__dict__,
              "held_out": list(texts)}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "build.json", json.dumps(header, indent=2, default=str) + "\n")
    row = FORMATS[fmt]
    measured = target == "host" and cfg.measure
    key = source_identity(source)
    cache = Cache(out / "search", log)
    loaded = None

    def dense():
        nonlocal loaded
        if loaded is None:
            loaded = load(source)
        return loaded

    def scoring(text: str) -> dict:
        return {"eval": text, "ppl_windows": cfg.ppl_windows, "seq_len": cfg.seq_len}

    refs = {}
    for text in texts:
        _, ref = cache.get(f"reference/{text_label(text)}", inputs_hash(key, scoring(text)),
                           lambda tmp, text=text: {**_perplexity(dense().model, dense().tokenizer, cfg, text),
                                                   "what": _source_note(source)})  # fmt: skip
        refs[text] = ref["figures"]
    specs = candidate_specs(types, tuple(cfg.ratios), tuple(cfg.depths), imatrix_types(fmt, types, cfg))
    speed = {"measured": measured, "target": target, "prompt": cfg.prompt_tokens, "gen": cfg.gen_tokens, "reps": cfg.reps}
    cand_inputs = {sp.name: _cand_inputs(key, cfg, sp, fmt, calib) for sp in specs}

    def missing(kind):
        return any(sp.kind == kind and not cache.done(f"cands/{sp.name}", cand_inputs[sp.name]) for sp in specs)

    # the compressed models, only when one of their candidates is missing
    model_dirs = {("adapt", r): d for r, d in (_pruned_models(cache, dense(), key, cfg, calib, log) if missing("adapt") else {}).items()}
    model_dirs.update({("depth", k): d for k, d in (_depth_models(cache, dense(), key, cfg, calib, log) if missing("depth") else {}).items()})
    scored: list[fr.Scored] = []
    skipped: list[str] = []
    hopeless: dict[str, str] = {}  # model name -> the candidate that showed it cannot meet the ppl bound
    current: dict = {}

    def loaded_model(spec: Spec):
        src = "dense" if spec.kind == "dense" else str(model_dirs[(spec.kind, spec.value)] / "model")
        if current.get("src") != src:
            current.clear()
            current.update(src=src, loaded=dense() if spec.kind == "dense" else load(src))
        return current["loaded"]

    for spec in specs:
        if spec.model_name in hopeless:
            skipped.append(spec.name)
            continue
        inputs = cand_inputs[spec.name]

        def make(tmp: Path, spec=spec) -> dict:
            lm = loaded_model(spec)
            extra = {}
            if spec.imatrix:
                extra["imatrix"] = _imatrix_file(cache, spec, _model_inputs(key, cfg, spec, calib) or inputs_hash(key),
                                                 lambda: loaded_model(spec), cfg, calib)  # fmt: skip
            done = row.export(lm.model, lm.tokenizer, tmp, spec.quant, verify=cfg.verify, source_gguf=dense().source_gguf,
                              **extra)  # fmt: skip
            path = str(tmp / done.artifact)
            return {"artifact": done.artifact, "bytes": done.bytes, "predicted": _predict(path, target, cfg)}

        d, manifest = cache.get(f"cands/{spec.name}", inputs, make)
        f = manifest["figures"]
        path = str(d / f["artifact"])
        if measured:  # a piece of its own: a speed taken on a busy machine can be retaken alone (--remeasure)
            f["measured"] = cache.get(f"speed/{spec.name}", inputs_hash(inputs, speed), lambda tmp: _measure(path, cfg))[1]["figures"]
        # held-out scores: one cached piece per (candidate, text), so adding a text scores only it
        ppls = {text: cache.get(f"scores/{spec.name}-{text_label(text)}", inputs_hash(inputs, scoring(text)),
                                lambda tmp, text=text: _perplexity(path, dense().tokenizer, cfg, text))[1]["figures"]["ppl"]
                for text in texts}  # fmt: skip
        ratios = {text_label(t): ppls[t] / refs[t]["ppl"] for t in texts}
        worst = max(texts, key=lambda t: ppls[t] / refs[t]["ppl"])
        meas = (f.get("measured") or {}).get("decode_tps")
        pred = f["predicted"]["decode_tps"]
        scored.append(fr.Scored(name=spec.name, method=spec.method(cfg.reconstruct is not None), quant=spec.quant,
                                bytes=f["bytes"], ppl=ppls[worst], ppl_ratio=ratios[text_label(worst)],
                                ppl_ratios=ratios, decode_tps=meas if meas is not None else pred,
                                decode_tps_measured=meas, decode_tps_predicted=pred,
                                memory_bytes=f["predicted"]["memory_bytes"],
                                loadavg_1m=(f.get("measured") or {}).get("loadavg_1m"), path=path))  # fmt: skip
        if (cfg.skip_hopeless and spec.kind != "dense" and bounds.max_ppl_ratio is not None
                and scored[-1].ppl_ratio > bounds.max_ppl_ratio and spec.model_name not in hopeless):  # fmt: skip
            hopeless[spec.model_name] = spec.name
    windows = f"the first {cfg.ppl_windows} x {cfg.seq_len} tokens of each"
    notes = {"calibration": str(calib),
             "held_out": f"{', '.join(texts)}: {windows} (scored only; nothing is calibrated, fitted or tuned on "
                         "them); a candidate's ppl ratio is its worst over these texts",
             "reference": {"what": refs[texts[0]]["what"], "ppl": {text_label(t): refs[t]["ppl"] for t in texts}},
             "speed": "measured on the host (median of fresh processes), predicted by the roofline model" if measured
             else f"predicted for {target} by the roofline cost model (devices.cost.predict)", "format": fmt,
             "computed": list(cache.computed), "skipped": skipped, "hopeless": hopeless,
             "not_searched": NOT_SEARCHED.get(fmt)}  # fmt: skip
    try:
        chosen = fr.choose(scored, bounds)
    except fr.NoCandidate as exc:
        _unship(out)
        write_search_report(out, header, scored, bounds, None, str(exc), notes)
        raise
    shipped = _ship(chosen, row, out)
    report = write_search_report(out, header, scored, bounds, chosen, fr.verdict(chosen, scored, bounds), notes,
                                 shipped=shipped)  # fmt: skip
    return report


def _source_note(source: str) -> str:
    """What the dense reference is, truthfully (the embedded model is a dequantized GGUF)."""
    from edgeprune.describe import describe
    from edgeprune.models.builtin import is_builtin

    note = "the dense model in torch float32"
    if is_builtin(source) or str(source).endswith(".gguf"):
        note += f" (weights dequantized from a {describe(source).get('dtype')} GGUF)"
    return note


def _cand_inputs(key, cfg: SearchConfig, spec: Spec, fmt: str, calib) -> str:
    model = _model_inputs(key, cfg, spec, calib)
    im = (calib, cfg.imatrix_windows, cfg.imatrix_seq_len) if spec.imatrix else None
    return inputs_hash(key, model, fmt, spec.quant, im, cfg.verify, cfg.prompt_tokens, cfg.gen_tokens)


def _ship(chosen: fr.Scored, row, out: Path) -> str:
    """One copy: the chosen artifact hard-linked (its whole folder, for folder formats) into ``out``
    as ``NAME.ext`` (or ``NAME/``); an earlier run's shipped artifact is removed."""
    from edgeprune.fileio import atomic_dir, atomic_file, link_or_copy

    src = Path(chosen.path)
    if row.folder and src.is_file():
        src = src.parent
    dst = out / (chosen.name if src.is_dir() else f"{chosen.name}{src.suffix}")
    _unship(out, keep=dst)
    if src.is_dir():
        with atomic_dir(dst) as tmp:
            shutil.copytree(src, tmp, dirs_exist_ok=True, copy_function=link_or_copy)
    else:
        with atomic_file(dst, overwrite=True) as tmp:
            tmp.unlink(missing_ok=True)
            link_or_copy(src, tmp)
    return str(dst)


def _unship(out: Path, keep: Path | None = None) -> None:
    """Remove the artifact an earlier run of this build shipped (named in its report.json)."""
    old = out / "report.json"
    if not old.is_file():
        return
    prev = json.loads(old.read_text()).get("shipped")
    if prev and Path(prev).name and (out / Path(prev).name) != keep:
        p = out / Path(prev).name
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


# -- the report -------------------------------------------------------------------------------------


def write_search_report(out: Path, header: dict, scored: list[fr.Scored], bounds: fr.Bounds, chosen: fr.Scored | None,
                        verdict: str, notes: dict, *, shipped: str | None = None) -> dict:  # fmt: skip
    """``report.json``, ``report.md`` and ``frontier.png`` of a search."""
    from edgeprune.fileio import write_text_atomic

    by_speed = {c.name for c in fr.pareto(scored)}
    by_bytes = {c.name for c in fr.pareto(scored, speed="bytes")}
    rows = [{**c.to_dict(), "meets": fr.meets(c, bounds), "misses": fr.misses(c, bounds),
             "frontier_speed": c.name in by_speed, "frontier_bytes": c.name in by_bytes,
             "gap_flag": c.speed_gap is not None and c.speed_gap > fr.GAP_FLAG} for c in scored]  # fmt: skip
    report = {"target": header["target"], "model": header["model"], "search": header["search"],
              "bounds": {k: v for k, v in bounds.__dict__.items() if v is not None}, "verdict": verdict,
              "chosen": chosen.name if chosen else None, "shipped": shipped, **notes, "candidates": rows}  # fmt: skip
    write_text_atomic(out / "report.json", json.dumps(report, indent=2, default=str) + "\n")
    write_text_atomic(out / "report.md", search_markdown(report) + "\n")
    if rows:
        frontier_plot(rows, out / "frontier.png", bounds=bounds, chosen=report["chosen"])
    return report


def skipped_text(r: dict) -> str:
    """``adapt10 in q6_k, q4_0 (adapt10-q8_0 already misses the ppl bound); ...``: the skipped candidates by model."""
    out = []
    for model, because in r["hopeless"].items():
        names = [n for n in r["skipped"] if n.startswith(f"{model}-")]
        if names:
            out.append(f"{model} in {', '.join(n[len(model) + 1 :] for n in names)} ({because} already misses the ppl bound)")
    return "; ".join(out)


def _tps(v) -> str:
    return "" if v is None else f"{v:.1f}"


def search_markdown(r: dict) -> str:
    ref = r["reference"]
    lines = [f"# edgeprune budgeted build: {r['model']} for {r['target']}", "", r["verdict"], "",
             f"- shipped: {r['shipped'] or 'nothing'}",
             f"- bounds: {', '.join(f'{k} {v}' for k, v in r['bounds'].items()) or 'none'}",
             f"- held-out text: {r['held_out']}",
             f"- calibration text (pruning, reconstruction): {r['calibration']}",
             f"- reference: {ref['what']}, held-out ppl {', '.join(f'{t} {v:.3f}' for t, v in ref['ppl'].items())} "
             "(ppl ratio = candidate ppl / this, on each text)",
             f"- speed: {r['speed']}; a gap between measured and predicted decode above {fr.GAP_FLAG:.0%} is flagged (!)",
             f"- format: {r['format']}; computed in this run: {len(r['computed'])} piece(s), the rest from the cache",
             *([f"- not made: {skipped_text(r)}"] if r.get("skipped") else []),
             *([f"- {r['not_searched']}"] if r.get("not_searched") else []),
             "", f"| candidate | method | quant | MiB | {' | '.join(f'ppl ratio {t}' for t in ref['ppl'])} | worst | "
             "decode tok/s measured | predicted | load avg | meets bounds | frontier |",
             "|---|---|---|---:|" + "---:|" * (len(ref["ppl"]) + 1) + "---:|---:|---:|---|---|"]  # fmt: skip
    for c in sorted(r["candidates"], key=lambda c: -c["decode_tps"]):
        mark = " **(shipped)**" if c["name"] == r["chosen"] else ""
        gap = " (!)" if c["gap_flag"] else ""
        front = "/".join(k for k, f in (("speed", c["frontier_speed"]), ("bytes", c["frontier_bytes"])) if f)
        meets = "yes" if c["meets"] else "no: " + ", ".join(f"{k} by {v:.0%}" for k, v in c["misses"].items())
        load = c.get("loadavg_1m")
        per_text = " | ".join(f"{c['ppl_ratios'].get(t, float('nan')):.3f}" for t in ref["ppl"])
        lines.append(f"| {c['name']}{mark} | {c['method']} | {c['quant']} | {c['bytes'] / 2**20:.1f} | {per_text} | "
                     f"{c['ppl_ratio']:.3f} | {_tps(c['decode_tps_measured'])}{gap} | {_tps(c['decode_tps_predicted'])} | "
                     f"{'' if load is None else f'{load:.2f}'} | {meets} | {front} |")  # fmt: skip
    lines += ["", "![frontier](frontier.png)"]
    return "\n".join(lines)


def frontier_plot(rows: list[dict], path: Path, *, bounds: fr.Bounds | None = None, chosen: str | None = None,
                  title: str = "held-out quality vs speed and size") -> None:  # fmt: skip
    """Two panels: ppl ratio vs decode tok/s and vs MiB; plain quantization in its own colour, the
    frontier drawn, points labelled, the bounds dashed, the shipped candidate ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgeprune.fileio import atomic_file

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, label, front_key in ((axes[0], "decode_tps", "decode tok/s", "frontier_speed"),
                                      (axes[1], "bytes", "MiB", "frontier_bytes")):  # fmt: skip
        def x(c, key=key):
            return c[key] / 2**20 if key == "bytes" else c[key]

        for plain, colour, name in ((True, "#4477aa", "plain quantization (dense)"), (False, "#ee6677", "compressed")):
            pts = [c for c in rows if c["plain"] == plain]
            if pts:
                ax.scatter([x(c) for c in pts], [c["ppl_ratio"] for c in pts], color=colour, label=name, zorder=3)
        front = sorted((c for c in rows if c[front_key]), key=x)
        ax.plot([x(c) for c in front], [c["ppl_ratio"] for c in front], "k--", lw=1, label="Pareto frontier", zorder=2)
        for c in rows:
            ax.annotate(c["name"], (x(c), c["ppl_ratio"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
            if c["name"] == chosen:
                ax.scatter([x(c)], [c["ppl_ratio"]], s=200, facecolors="none", edgecolors="green", lw=2, label="shipped", zorder=4)
        if bounds is not None and bounds.max_ppl_ratio is not None:
            ax.axhline(bounds.max_ppl_ratio, color="grey", ls=":", lw=1)
        limit = bounds and (bounds.min_decode_tps if key == "decode_tps" else bounds.max_bytes and bounds.max_bytes / 2**20)
        if limit:
            ax.axvline(limit, color="grey", ls=":", lw=1)
        ax.set_xlabel(label)
        ax.set_ylabel("held-out ppl / dense ppl (worst text)")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_file(path, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)

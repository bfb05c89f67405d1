"""Run a recipe for a target: resumable stages, each written atomically with a manifest.

Layout of ``--out DIR``::

    DIR/build.json                 target, model source, recipe, plan (written first)
    DIR/stages/NN-STEP/            one directory per step, renamed into place when complete
        manifest.json              step config, inputs hash, figures, outputs (sha256 each)
        model/ | model-q4_0.gguf | onnx/ ...
    DIR/<final artifacts>          copies of the last exported artifacts
    DIR/report.md, report.json, quality_vs_size.png, predicted_tps.png

A stage's *inputs hash* chains the previous stage's hash with this step's config and the plan,
so ``--resume`` skips exactly the stages whose inputs did not change. A stage killed half-way
leaves only a hidden ``.NN-STEP.*.tmp`` directory, removed on the next run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgeprune.pipeline.builddir import check_build_dir, inputs_hash, source_identity  # noqa: F401 (re-exported)
from edgeprune.pipeline.plan import Plan, make_plan
from edgeprune.pipeline.recipes import Recipe, parse_recipe
from edgeprune.steps import step_for
from edgeprune.errors import EdgepruneError
from edgeprune.fileio import check_output_dir, write_text_atomic
from edgeprune.models import tokenizer_record
from edgeprune.memory import peak_rss_mb, release_memory, rss_mb

BUILD_FORMAT = 1


@dataclass
class BuildContext:
    out: Path
    target: str
    model_source: str  # what edgeprune.models.load() reads for the current stage
    source_gguf: str | None  # the original GGUF, whose tokenizer KVs the GGUF exporter copies
    plan: Plan
    calib: str | None
    eval_data: str
    dense_source: str = ""  # the build's input model (reconstruction fits to it)
    log: object = print
    remote: str | None = None  # profile on this board instead of the host
    remote_options: dict = field(default_factory=dict)
    artifacts: list[dict] = field(default_factory=list)
    stages: list[dict] = field(default_factory=list)
    _loaded: tuple | None = None  # (source, LoadedModel) cache across consecutive stages

    def model(self):
        from edgeprune.models import load

        if self._loaded is None or self._loaded[0] != self.model_source:
            self._loaded = (self.model_source, load(self.model_source))
        return self._loaded[1]

    def forget_model(self) -> None:
        self._loaded = None

    def dense_model(self):
        """The build's input model, freshly loaded (a compression step may have changed the cached one)."""
        from edgeprune.models import load

        return load(self.dense_source).model


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def prepare(target: str, *, model: str | None, recipe: str, out: str | Path, max_memory_bytes: int | None = None,
            min_decode_tps: float | None = None, remote: str | None = None) -> tuple[Recipe, Plan, dict]:  # fmt: skip
    """Validate everything that can be validated without loading weights (``--dry-run``)."""
    from edgeprune.describe import describe, resolve_artifact
    from edgeprune.devices.cost import artifact_cost
    from edgeprune.devices.profiles import get_device
    from edgeprune.models.builtin import DEFAULT_MODEL

    problems = []
    profile = recipe_obj = plan = info = None
    try:
        profile = get_device(target)
    except EdgepruneError as exc:
        problems.append(str(exc))
    try:
        recipe_obj = parse_recipe(recipe)
    except EdgepruneError as exc:
        problems.append(str(exc))
    source = model or DEFAULT_MODEL
    try:
        resolve_artifact(source)
        info = describe(source)
    except EdgepruneError as exc:
        problems.append(str(exc))
    if remote:
        from edgeprune.runtime.remote import parse_remote

        try:
            parse_remote(remote)
        except EdgepruneError as exc:
            problems.append(str(exc))
    out = Path(out)
    try:
        check_output_dir(out, exist_ok=True, parents=True)  # whether it holds a build is build()'s question
    except EdgepruneError as exc:
        problems.append(str(exc))
    if profile is not None and info is not None and recipe_obj is not None:
        export = next((s for s in recipe_obj.steps if s.STEP == "export"), None)
        try:
            plan = make_plan(profile, artifact_cost(info), format=getattr(export, "format", "auto"),
                             quant=getattr(export, "quant", "auto"), max_memory_bytes=max_memory_bytes,
                             min_decode_tps=min_decode_tps)  # fmt: skip
        except EdgepruneError as exc:
            problems.append(str(exc))
    if problems:
        raise EdgepruneError(" | ".join(problems))
    return recipe_obj.fit_to_plan(plan), plan, info


def build(
    target: str = "host",
    *,
    model: str | None = None,
    recipe: str | None = None,
    out: str | Path | None = None,
    calib: str | None = None,
    eval_data: str | None = None,
    resume: bool = False,
    max_memory_bytes: int | None = None,
    min_decode_tps: float | None = None,
    remote: str | None = None,
    remote_options: dict | None = None,
    max_ppl_ratio: float | None = None,
    max_bytes: int | None = None,
    search=None,
    log=None,
):
    """Run a build; returns the report dict (also written to ``out/report.json``).

    ``remote``: ``ssh://user@host[:port]`` or ``adb://SERIAL``: profile steps measure on that board
    (``remote_options``: :class:`edgeprune.runtime.remote.RemoteOptions` fields) instead of here.

    ``max_ppl_ratio`` / ``max_bytes`` make it a budgeted build (``edgeprune build --max-ppl-ratio``):
    a search over plain quants and compressed candidates (``search``: a
    :class:`~edgeprune.pipeline.search.SearchConfig`) that ships the fastest meeting every bound,
    with ``min_decode_tps`` and ``max_memory_bytes`` as further bounds; ``recipe`` and ``remote``
    do not apply to it. ``eval_data``: the evaluation text (default wikitext2; a search takes
    several and defaults to wikitext2 and shakespeare)."""
    from edgeprune.pipeline.frontier import Bounds

    bounds = Bounds(max_ppl_ratio=max_ppl_ratio, max_bytes=max_bytes, min_decode_tps=min_decode_tps,
                    max_memory_bytes=max_memory_bytes)  # fmt: skip
    if bounds.searches():
        if recipe is not None or remote is not None:
            raise EdgepruneError("a budgeted build (max_ppl_ratio / max_bytes) makes its own candidates and measures on "
                                 "the host: drop recipe= and remote=, or drop the bounds")  # fmt: skip
        from edgeprune.pipeline.search import search as run_search

        return run_search(target, bounds, search, model=model, out=out, calib=calib, eval_data=eval_data,
                          resume=resume, log=log)  # fmt: skip
    eval_data = eval_data or "wikitext2"
    from edgeprune.pipeline.recipes import DEFAULT_RECIPE
    from edgeprune.pipeline.report import write_report
    from edgeprune.models.builtin import DEFAULT_MODEL, builtin_path, is_builtin

    log = log or (lambda msg: print(msg, flush=True))
    recipe = recipe or DEFAULT_RECIPE
    source = model or DEFAULT_MODEL
    out = Path(out or f"dist/{target}")
    check_build_dir(out, resume=resume)
    recipe_obj, plan, _ = prepare(target, model=source, recipe=recipe, out=out, max_memory_bytes=max_memory_bytes,
                                  min_decode_tps=min_decode_tps, remote=remote)  # fmt: skip
    header = {"format": BUILD_FORMAT, "target": target, "model": source, "recipe": recipe_obj.name,
              "steps": [s.to_dict() for s in recipe_obj.steps], "plan": plan.to_dict()}  # fmt: skip
    build_json = out / "build.json"
    if build_json.is_file():  # resuming (check_build_dir refused anything else)
        previous = json.loads(build_json.read_text())
        if {k: previous.get(k) for k in ("target", "model", "steps")} != {k: header[k] for k in ("target", "model", "steps")}:
            log("note: target, model or recipe changed since the last run; stages whose inputs changed run again")
    (out / "stages").mkdir(parents=True, exist_ok=True)
    write_text_atomic(build_json, json.dumps(header, indent=2) + "\n")
    for stale in (out / "stages").glob(".*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)  # a stage killed mid-write

    # the GGUF whose tokenizer keys the exporter copies: the source itself, or a model directory's record
    if is_builtin(source):
        gguf = str(builtin_path(source))
    elif source.endswith(".gguf"):
        gguf = source
    else:
        record = tokenizer_record.find(source) if Path(source).is_dir() else None
        gguf = str(record) if record is not None else None
    ctx = BuildContext(out=out, target=target, model_source=source, source_gguf=gguf, plan=plan,
                       calib=calib, eval_data=eval_data, dense_source=source, log=log,
                       remote=remote, remote_options=dict(remote_options or {}))  # fmt: skip
    for line in plan.lines():
        log(line)
    if calib is None and any(step_for(s).changes_model for s in recipe_obj.steps):
        from edgeprune.data.general import default_source, default_source_note

        log("no --calib given: " + default_source_note())
        ctx.calib = calib = default_source()  # resolved once: the stages and the resume hash see the same source
    prev = inputs_hash(source_identity(source), plan.to_dict()["format"], plan.to_dict()["quant"], calib, eval_data)
    for i, cfg in enumerate(recipe_obj.steps, 1):
        name = f"{i:02d}-{cfg.STEP}"
        stage_dir = out / "stages" / name
        where = {"remote": remote} if cfg.STEP == "profile" and remote else {}  # a board's figures are not the host's
        inputs = inputs_hash(prev, cfg.to_dict(), where) if where else inputs_hash(prev, cfg.to_dict())
        manifest_file = stage_dir / "manifest.json"
        if manifest_file.is_file():
            manifest = json.loads(manifest_file.read_text())
            if manifest.get("inputs_hash") == inputs:
                log(f"[{name}] done earlier (inputs unchanged): skipped")
                _apply_outputs(ctx, stage_dir, manifest)
                ctx.stages.append(manifest)
                prev = inputs
                continue
            shutil.rmtree(stage_dir)
        log(f"[{name}] running")
        t0 = time.perf_counter()
        from edgeprune.pipeline.stages import run_stage
        from edgeprune.fileio import atomic_dir

        with atomic_dir(stage_dir) as tmp:
            figures, outputs = run_stage(ctx, cfg, tmp)
            manifest = {
                "stage": name, "step": cfg.STEP, "config": cfg.to_dict(), "inputs_hash": inputs,
                "wall_s": round(time.perf_counter() - t0, 2), "figures": figures, "memory": process_memory(),
                "outputs": {k: {"path": v, "sha256": sha256_file(tmp / v) if (tmp / v).is_file() else None}
                            for k, v in outputs.items()},
            }  # fmt: skip
            write_text_atomic(tmp / "manifest.json", json.dumps(manifest, indent=2) + "\n")
        _apply_outputs(ctx, stage_dir, manifest)
        ctx.stages.append(manifest)
        release_memory()
        log(f"[{name}] finished in {manifest['wall_s']:.1f}s: {_short(figures)}")
        prev = inputs
    return write_report(ctx, header)


def process_memory() -> dict:
    """This process's resident memory now and its peak so far, in MiB (empty where unavailable)."""
    rss = rss_mb()
    return {"rss_mb": int(rss), "peak_rss_mb": int(peak_rss_mb())} if rss else {}


def _apply_outputs(ctx: BuildContext, stage_dir: Path, manifest: dict) -> None:
    """Carry a finished stage's outputs into the context (the next stage's inputs)."""
    outs = manifest.get("outputs", {})
    if "model" in outs:
        ctx.model_source = str(stage_dir / outs["model"]["path"])
    for key, o in outs.items():
        if key.startswith("artifact"):
            fig = manifest["figures"]
            ctx.artifacts.append({"path": str(stage_dir / o["path"]), "format": fig.get("format"),
                                  "quant": fig.get("quant"), "bytes": fig.get("bytes"), "sha256": o["sha256"]})  # fmt: skip


def _short(figures: dict) -> str:
    keys = [k for k in ("ppl", "params", "bytes", "decode_tps", "prefill_tps") if k in figures]
    return ", ".join(f"{k}={figures[k]:.4g}" if isinstance(figures[k], float) else f"{k}={figures[k]}" for k in keys)

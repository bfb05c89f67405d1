"""The build's measuring and writing steps: export, evaluate, profile (configs and ``apply``).

They take the step protocol's signature like every step (``apply(model, cfg, ctx) -> (model,
report)``, :mod:`edgeprune.steps`), return the model they were given, write only into
``ctx.build_dir`` and name what they wrote in ``ctx.outputs``; their report is the stage's figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeprune.config import StepConfig
from edgeprune.errors import EdgepruneError
from edgeprune.export.common import unknown_choice
from edgeprune.export.registry import BIT_WIDTHS, FORMATS, all_quants, format_names
from edgeprune.pipeline.plan import AUTO_FORMATS


IMATRIX_FORMAT = "gguf"  # the format whose quantizer reads an importance matrix (llama.cpp's)


@dataclass(frozen=True)
class Export(StepConfig):
    """Write a deployable artifact in one of the registered formats (GGUF for llama.cpp, ONNX for onnxruntime)."""

    STEP = "export"

    format: str = "auto"  # "auto": the target's preferred format; "alt": its second (or the other one)
    # one of the format's types (GGUF q8_0, q4_k_m, ...; ONNX fp32, int8, int4), a bit width (4bit,
    # 8bit, float) resolved for the chosen format, or "auto": the target's preferred type
    quant: str = "auto"
    verify: bool = True
    # GGUF only: weight llama.cpp's rounding by an importance matrix computed from the build's
    # calibration windows (ctx.calibration), written beside the artifact as imatrix.gguf
    imatrix: bool = False

    def check(self) -> list[str]:
        problems = unknown_choice("export format", self.format, AUTO_FORMATS + format_names())
        # the types the chosen format's exporter accepts; any format's while the target decides
        quants = FORMATS[self.format].quants() if self.format in FORMATS else all_quants()
        valid = quants + BIT_WIDTHS
        if self.quant != "auto" and self.quant not in valid:
            problems.append(f"export quant {self.quant!r} is not one of {', '.join(valid)}")
        if not isinstance(self.imatrix, bool):
            problems.append(f"export imatrix must be true or false, got {self.imatrix!r}")
        elif self.imatrix and self.format in FORMATS and self.format != IMATRIX_FORMAT:
            problems.append(f"export imatrix applies to {IMATRIX_FORMAT} files only, not {self.format}: set format gguf or drop imatrix")
        elif self.imatrix and self.format == IMATRIX_FORMAT and self.quant in quants:
            from edgeprune.export.gguf.imatrix import type_problems

            problems += type_problems(self.quant)
        return problems


@dataclass(frozen=True)
class Evaluate(StepConfig):
    """Measure quality: WikiText-2 perplexity and optional zero-shot tasks."""

    STEP = "evaluate"

    ppl: bool = True
    seq_len: int = 1024
    limit_tokens: int | None = 16384  # a fixed prefix (16 windows of 1024) of the test set keeps builds short; None = all
    tasks: tuple[str, ...] = ()
    limit: int | None = 200  # examples per zero-shot task
    # tokens per forward pass: one 1024-token window keeps the logits of a 49k-vocabulary model at
    # 200 MB (four windows at once pushed a build's peak RSS past 4 GB in onnxruntime)
    batch_tokens: int = 1024

    def check(self) -> list[str]:
        problems = []
        if self.seq_len < 16:
            problems.append(f"evaluate seq_len must be >= 16, got {self.seq_len}")
        if self.batch_tokens < self.seq_len:
            problems.append(f"evaluate batch_tokens ({self.batch_tokens}) must hold one window ({self.seq_len})")
        if self.limit_tokens is not None and self.limit_tokens < self.seq_len:
            problems.append(f"evaluate limit_tokens ({self.limit_tokens}) is shorter than one window ({self.seq_len})")
        return problems


@dataclass(frozen=True)
class Profile(StepConfig):
    """Measure speed and memory of the exported artifacts on the host (llama-bench methodology)."""

    STEP = "profile"

    prompt_tokens: int = 512
    gen_tokens: int = 128
    reps: int = 3

    def check(self) -> list[str]:
        bad = [k for k in ("prompt_tokens", "gen_tokens", "reps") if getattr(self, k) < 1]
        return [f"profile {k} must be >= 1" for k in bad]


# -- apply ------------------------------------------------------------------------------------------


def export(model, cfg: Export, ctx):
    """Write the artifact the plan chose for ``ctx.target`` into ``ctx.build_dir``."""
    from edgeprune.devices.profiles import get_device
    from edgeprune.export.registry import get_format
    from edgeprune.pipeline.plan import resolve_export

    fmt, _, quant, _ = resolve_export(get_device(ctx.target), cfg.format, cfg.quant)
    extra = {"imatrix": _imatrix(model, cfg, ctx, fmt, quant)} if cfg.imatrix else {}
    done = get_format(fmt).export(model, ctx.tokenizer, ctx.build_dir, quant, verify=cfg.verify, source_gguf=ctx.source_gguf, **extra)
    ctx.outputs["artifact"] = done.artifact
    figures = {"format": fmt, "quant": quant, "bytes": done.bytes, "verify": done.report.get("verify")}
    if cfg.imatrix:  # the file as the stage directory names it (the report's path is the temporary one)
        figures["imatrix"] = {**done.report["imatrix"], "file": ctx.outputs["imatrix"]}
    return model, figures


def _imatrix(model, cfg: Export, ctx, fmt: str, quant: str) -> Path:
    """The importance matrix of ``model`` on the build's calibration windows, as ``imatrix.gguf`` in the
    stage directory (llama.cpp's format: ``llama-quantize --imatrix`` reads it too)."""
    from edgeprune.export.gguf.imatrix import collect_imatrix, type_problems, write_imatrix

    # the target chose format and type only now ("auto"): refuse before drawing any text
    problems = ([f"export imatrix applies to {IMATRIX_FORMAT} files only, but the target chose {fmt}: set format gguf"]
                if fmt != IMATRIX_FORMAT else type_problems(quant))  # fmt: skip
    if problems:
        raise EdgepruneError(problems[0])
    windows = ctx.calibration(cfg, model)
    if windows is None:
        raise EdgepruneError("export imatrix needs calibration text: give the build a --calib source")
    path = write_imatrix(ctx.build_dir / "imatrix.gguf", collect_imatrix(model, windows, progress=ctx.progress))
    ctx.outputs["imatrix"] = path.name
    return path


def evaluate(model, cfg: Evaluate, ctx):
    """Perplexity (and zero-shot if asked) of the last exported artifact, else of ``model``."""
    from edgeprune.eval import Evaluator, PerplexityConfig, ZeroShotConfig

    if ctx.artifacts:
        art = ctx.artifacts[-1]
        figures = {"what": f"{art['format']} {art['quant']}", "bytes": art["bytes"], "path": art["path"]}
        ev = Evaluator(art["path"], tokenizer=ctx.tokenizer, batch_tokens=cfg.batch_tokens)  # its format's runtime
    else:
        params = sum(p.numel() for p in model.parameters())
        what = "torch fp32"
        source = _gguf_weights_type(ctx.source_gguf)
        if source:  # fp32 here holds a dequantized grid, not a float checkpoint: say so
            what += f" (weights dequantized from a {source} GGUF)"
        figures = {"what": what, "bytes": params * 4, "params": params}
        ev = Evaluator(model, tokenizer=ctx.tokenizer, batch_tokens=cfg.batch_tokens)
    try:
        if cfg.ppl:
            rep = ev.perplexity(PerplexityConfig(data=ctx.eval_data, seq_len=cfg.seq_len, limit_tokens=cfg.limit_tokens))
            figures.update(ppl=rep.ppl, tokens=rep.tokens, seq_len=cfg.seq_len, windows=rep.windows)
        if cfg.tasks:
            results = ev.zeroshot(ZeroShotConfig(tasks=tuple(cfg.tasks), limit=cfg.limit))
            figures["zeroshot"] = {r.task: r.acc for r in results}
            figures["acc_avg"] = sum(r.acc for r in results) / len(results)
    finally:
        ev.close()
    return model, figures


def _gguf_weights_type(path) -> str | None:
    """The weight type of the GGUF a build's model was loaded from; None when there is none, or when
    the file is a pruned directory's tokenizer record (tokenizer keys only, no weights)."""
    from edgeprune.models import tokenizer_record

    if not path or Path(path).name == tokenizer_record.RECORD_NAME:
        return None
    from edgeprune.describe import describe

    return describe(path).get("dtype")


def profile(model, cfg: Profile, ctx):
    """Speed and memory of the last exported artifact, here or on ``ctx.remote``, and what every
    known device is predicted to do with it."""
    from edgeprune.describe import describe
    from edgeprune.devices.cost import artifact_cost, predict
    from edgeprune.devices.profiles import device_names, get_device
    from edgeprune.runtime.profile import profile as measure

    if not ctx.artifacts:
        raise EdgepruneError("profile step has no exported artifact to measure: put an export step before it")
    art = ctx.artifacts[-1]
    options = None
    if ctx.remote:
        from edgeprune.runtime.remote import RemoteOptions

        options = RemoteOptions(**ctx.remote_options)
    res = measure(art["path"], prompt_tokens=cfg.prompt_tokens, gen_tokens=cfg.gen_tokens, reps=cfg.reps,
                  remote=ctx.remote, remote_options=options)  # fmt: skip
    cost = artifact_cost(describe(art["path"]))
    predicted = {n: predict(get_device(n), cost, prompt_tokens=cfg.prompt_tokens, gen_tokens=cfg.gen_tokens).to_dict()
                 for n in device_names()}  # fmt: skip
    s = res.summary
    figures = {
        "runtime": res.runtime, "artifact": art["path"], "bytes": art["bytes"], "where": ctx.remote or "host",
        "prefill_tps": s["prefill_tps"]["median"], "decode_tps": s["decode_tps"]["median"],
        "ttft_ms": s["ttft_ms"]["median"], "peak_rss_mb": s["peak_rss_mb"]["median"],
        "summary": s, "predicted": predicted,
    }  # fmt: skip
    return model, figures

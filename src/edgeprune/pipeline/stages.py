"""What each step does inside a build. Every function writes only into ``tmp`` (the stage's
temporary directory) and returns (figures, outputs relative to the stage directory)."""

from __future__ import annotations

import inspect
from pathlib import Path

from edgeprune.compress.calib_shapes import DEFAULT_SHAPE, calib_shape
from edgeprune.config import StepConfig, step_entry
from edgeprune.errors import EdgepruneError
from edgeprune.models import tokenizer_record


def run_stage(ctx, cfg: StepConfig, tmp: Path) -> tuple[dict, dict]:
    handler = _HANDLERS.get(cfg.STEP, _compress_stage)
    return handler(ctx, cfg, tmp)


def _param_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _evaluate(ctx, cfg, tmp: Path) -> tuple[dict, dict]:
    """Perplexity (and zero-shot if asked) of the current model, or of the last exported artifact."""
    from edgeprune.eval import Evaluator, PerplexityConfig, ZeroShotConfig

    loaded = ctx.model()
    if ctx.artifacts:
        art = ctx.artifacts[-1]
        subject = {"what": f"{art['format']} {art['quant']}", "bytes": art["bytes"], "path": art["path"]}
        ev = Evaluator(art["path"], tokenizer=loaded.tokenizer, batch_tokens=cfg.batch_tokens)  # its format's runtime
    else:
        params = _param_count(loaded.model)
        subject = {"what": "torch fp32", "bytes": params * 4, "params": params}
        ev = Evaluator(loaded.model, tokenizer=loaded.tokenizer, batch_tokens=cfg.batch_tokens)
    figures = dict(subject)
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
    return figures, {}


def _export(ctx, cfg, tmp: Path) -> tuple[dict, dict]:
    from edgeprune.devices.profiles import get_device
    from edgeprune.export.registry import get_format
    from edgeprune.pipeline.plan import resolve_export

    fmt, _, quant, _ = resolve_export(get_device(ctx.target), cfg.format, cfg.quant)
    loaded = ctx.model()
    done = get_format(fmt).export(loaded.model, loaded.tokenizer, tmp, quant, verify=cfg.verify, source_gguf=ctx.source_gguf)
    figures = {"format": fmt, "quant": quant, "bytes": done.bytes, "verify": done.report.get("verify")}
    return figures, {"artifact": done.artifact}


def _profile(ctx, cfg, tmp: Path) -> tuple[dict, dict]:
    from edgeprune.describe import describe
    from edgeprune.devices.cost import artifact_cost, predict
    from edgeprune.devices.profiles import device_names, get_device
    from edgeprune.runtime.profile import profile

    if not ctx.artifacts:
        raise EdgepruneError("profile step has no exported artifact to measure: put an export step before it")
    art = ctx.artifacts[-1]
    options = None
    if ctx.remote:
        from edgeprune.runtime.remote import RemoteOptions

        options = RemoteOptions(**ctx.remote_options)
    res = profile(art["path"], prompt_tokens=cfg.prompt_tokens, gen_tokens=cfg.gen_tokens, reps=cfg.reps,
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
    return figures, {}


def _compress_stage(ctx, cfg, tmp: Path) -> tuple[dict, dict]:
    """Any registered compression step: apply it, save the new model for the next stage."""
    entry = step_entry(cfg)
    loaded = ctx.model()
    if ctx.calib is None:
        from edgeprune.models.cache import cache_root

        ctx.log(f"  no --calib given: calibrating on text the model generates itself (seeded; cached in {cache_root()})")
    apply = entry.apply or _IN_BUILD.get(cfg.STEP, _apply_with_calibration)
    kwargs = {"calib": ctx.calib, "tokenizer": loaded.tokenizer}
    if "dense" in inspect.signature(apply).parameters:
        kwargs["dense"] = ctx.dense_model  # called only by steps that fit to the dense original
    result = apply(loaded.model, cfg, **kwargs)
    model, report = result if isinstance(result, tuple) else (result, {})
    model.save_pretrained(tmp / "model")
    loaded.tokenizer.save_pretrained(tmp / "model")
    tokenizer_record.write(tmp / "model", ctx.source_gguf)  # the stage's model exports from the CLI too
    ctx.forget_model()  # the next stage reads the saved model (what --resume would read too)
    params = _param_count(model)
    nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    figures = {"params": params, "nonzero_params": nonzero, "bytes": params * 4,
               "calibration": ctx.calib or "self-generated by the model (seeded)"}  # fmt: skip
    rep = report.to_dict() if hasattr(report, "to_dict") else dict(report or {})
    figures.update({k: v for k, v in rep.items() if isinstance(v, (int, float, str, bool)) and k not in figures})
    return figures, {"model": "model"}


TRAIN_SEQ_LEN = DEFAULT_SHAPE[1]  # the window length of recovery training in a build


def _apply_with_calibration(model, cfg, *, calib: str | None, tokenizer, dense=None, progress: bool = False):
    """Apply ``implementation(cfg)`` with calibration windows drawn from ``calib`` (a source name; None:
    the model's own text), as many as the step's CLI draws (compress.calib_shapes)."""
    from edgeprune.compress.calib import calibration_windows
    from edgeprune.config import implementation

    fn = implementation(cfg)
    n_windows, seq_len = calib_shape(cfg.kind)
    windows = calibration_windows(tokenizer, calib or "self", n_windows=n_windows, seq_len=seq_len,
                                  seed=0, model=model, progress=progress)  # fmt: skip
    kwargs = {"progress": progress}
    params = inspect.signature(fn).parameters
    if "dense" in params:  # steps that fit a pruned model to its dense original
        kwargs["dense"] = dense()
    if "teacher" in params and dense is not None:  # distil from the build's input model, not from a copy of the
        kwargs["teacher"] = dense()  # current one (already pruned when an earlier step pruned it)
    return fn(model, cfg, windows, **kwargs)


def _train_in_build(model, cfg, *, calib: str | None, tokenizer, dense=None, progress: bool = False):
    """The ``train`` step: recovery training of the current model on ``calib`` text (default: text the
    dense model generated), distilling from the build's input model when ``kd_alpha`` > 0."""
    from edgeprune.compress.calib import calibration_windows
    from edgeprune.compress.train import train

    original = dense() if calib is None or cfg.kd_alpha > 0 else None
    n = max(1, min(4096, -(-cfg.tokens // TRAIN_SEQ_LEN)))
    windows = calibration_windows(tokenizer, calib or "self", n_windows=n, seq_len=TRAIN_SEQ_LEN, seed=cfg.seed,
                                  model=original, progress=progress)  # fmt: skip
    teacher = original if cfg.kd_alpha > 0 else None
    report = train(model, windows.ids, cfg, teacher=teacher, progress=progress)
    return model, report


def _sparse_train_in_build(model, cfg, *, calib: str | None, tokenizer, dense=None, progress: bool = False):
    """AST in a build: its one-shot start calibrated as on the CLI, its training text drawn apart (as
    many windows as the CLI draws for the budget), the build's input model teaching."""
    from edgeprune.compress.calib import calibration_windows
    from edgeprune.compress.calib_shapes import AST_TRAIN_SEQ_LEN, ast_train_windows
    from edgeprune.compress.sparse_train import sparse_train

    teacher = dense()
    n_windows, seq_len = calib_shape(cfg.kind)
    windows = None
    if cfg.init not in ("magnitude", "none"):
        windows = calibration_windows(tokenizer, calib or "self", n_windows=n_windows, seq_len=seq_len, seed=0,
                                      model=teacher, progress=progress)  # fmt: skip
    train_data = calibration_windows(tokenizer, calib or "self", n_windows=ast_train_windows(cfg.tokens), seq_len=AST_TRAIN_SEQ_LEN,
                                     seed=cfg.seed + 1, model=teacher, progress=progress)  # fmt: skip
    return sparse_train(model, cfg, windows, train_data=train_data, teacher=teacher, progress=progress)


# steps whose implementation needs more than calibration windows in a build
_IN_BUILD = {"train": _train_in_build, "sparse_train": _sparse_train_in_build}


_HANDLERS = {"evaluate": _evaluate, "export": _export, "profile": _profile}

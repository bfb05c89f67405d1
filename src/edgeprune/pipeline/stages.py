"""What each step does inside a build. Every function writes only into ``tmp`` (the stage's
temporary directory) and returns (figures, outputs relative to the stage directory)."""

from __future__ import annotations

import inspect
from pathlib import Path

from edgeprune.compress.calib_policy import draw_calibration, draw_training, policy, reads_calibration, training_tokens
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
    loaded = ctx.model()
    if ctx.calib is None:
        from edgeprune.models.cache import cache_root

        ctx.log(f"  no --calib given: calibrating on text the model generates itself (seeded; cached in {cache_root()})")
    apply = in_build_apply(cfg)
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


def in_build_apply(cfg: StepConfig):
    """How a build applies compression step ``cfg``: ``apply(model, cfg, *, calib, tokenizer, dense, progress)``,
    ``calib`` the build's source name (None: ``self``), ``dense()`` loading the build's input model."""
    return step_entry(cfg).apply or _IN_BUILD.get(cfg.STEP, _apply_with_calibration)


def _apply_with_calibration(model, cfg, *, calib: str | None, tokenizer, dense=None, progress: bool = False):
    """Apply ``implementation(cfg)`` on the windows its step draws from ``calib`` (compress.calib_policy:
    as the step's CLI draws with its defaults), its training windows too where it trains; the build's
    input model is its dense original, its teacher and the writer of ``self`` text where the policy says."""
    from edgeprune.config import implementation

    fn = implementation(cfg)
    params = inspect.signature(fn).parameters
    wants_dense = "dense" in params or "teacher" in params or (calib is None and policy(cfg.kind).self_text_by == "dense")
    original = dense() if dense is not None and wants_dense else None
    windows = None
    if reads_calibration(cfg):
        windows = draw_calibration(cfg, tokenizer, calib, model=model, dense=original, progress=progress)
    kwargs = {"progress": progress}
    if training_tokens(cfg) is not None:
        kwargs["train_data"] = draw_training(cfg, tokenizer, calib, model=model, dense=original, progress=progress)
    if "dense" in params:  # steps that fit a pruned model to its dense original
        kwargs["dense"] = original
    if "teacher" in params and original is not None:  # distil from the build's input model, not from a copy of the
        kwargs["teacher"] = original  # current one (already pruned when an earlier step pruned it)
    return fn(model, cfg, windows, **kwargs)


def _train_in_build(model, cfg, *, calib: str | None, tokenizer, dense=None, progress: bool = False):
    """The ``train`` step: recovery training of the current model on ``calib`` text (default: text the
    dense model generated), distilling from the build's input model when ``kd_alpha`` > 0."""
    from edgeprune.compress.train import train

    original = dense() if calib is None or cfg.kd_alpha > 0 else None
    windows = draw_training(cfg, tokenizer, calib, model=model, dense=original, progress=progress)
    report = train(model, windows.ids, cfg, teacher=original if cfg.kd_alpha > 0 else None, progress=progress)
    return model, report


# steps whose implementation is not ``fn(model, cfg, windows, ...)``
_IN_BUILD = {"train": _train_in_build}


_HANDLERS = {"evaluate": _evaluate, "export": _export, "profile": _profile}

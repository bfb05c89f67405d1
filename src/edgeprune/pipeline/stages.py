"""One stage of a build: give the step its context, apply it, keep what it made.

Every step runs through the step protocol (``apply(model, cfg, ctx)``, :mod:`edgeprune.steps`)
with a :class:`~edgeprune.steps.StepContext` made from the build: the current model and its
tokenizer, the build's ``--calib`` source (None: ``self``), the build's input model as the dense
original, the stage's temporary directory and the artifacts of earlier stages. A step that changes
the model has its result saved as ``model/`` for the next stage (and for ``--resume``).
"""

from __future__ import annotations

from pathlib import Path

from edgeprune.config import StepConfig
from edgeprune.data.general import default_source
from edgeprune.models.save import save_model
from edgeprune.steps import StepContext, apply, step_for


def step_context(build, tmp: Path, *, tokenizer=None) -> StepContext:
    """The context a build gives a step writing into ``tmp``."""
    return StepContext(
        tokenizer=tokenizer, calib=build.calib or default_source(), dense=build.dense_model, release_dense=True, progress=False,
        log=build.log, build_dir=tmp, target=build.target, artifacts=list(build.artifacts),
        source_gguf=build.source_gguf, eval_data=build.eval_data, remote=build.remote,
        remote_options=dict(build.remote_options),
    )  # fmt: skip


def run_stage(build, cfg: StepConfig, tmp: Path) -> tuple[dict, dict]:
    """Apply ``cfg`` within ``build`` -> (figures, outputs relative to the stage directory)."""
    row = step_for(cfg)
    loaded = build.model() if row.reads_model else None
    ctx = step_context(build, tmp, tokenizer=loaded.tokenizer if loaded is not None else None)
    model, report = apply(loaded.model if loaded is not None else None, cfg, ctx)
    rep = report.to_dict() if hasattr(report, "to_dict") else dict(report or {})
    if not row.changes_model:
        return rep, dict(ctx.outputs)
    save_model(tmp / "model", model, loaded.tokenizer, source_gguf=build.source_gguf)  # exports from the CLI too
    build.forget_model()  # the next stage reads the saved model (what --resume would read too)
    params = sum(p.numel() for p in model.parameters())
    nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    figures = {"params": params, "nonzero_params": nonzero, "bytes": params * 4,
               "calibration": build.calib or default_source()}  # fmt: skip
    figures.update({k: v for k, v in rep.items() if isinstance(v, (int, float, str, bool)) and k not in figures})
    return figures, {**ctx.outputs, "model": "model"}

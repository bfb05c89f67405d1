"""The one table of steps: a recipe's ``step:`` name -> its config class and its ``apply``.

Every step, whether it changes the model (prune, sparsify, quantize, sparse_train, reconstruct,
train) or measures and writes artifacts (export, evaluate, profile), is one row here and one
function with one signature::

    apply(model, cfg, ctx: StepContext) -> (model, report)

The Python API (:func:`edgeprune.compress.compress`), the CLI verbs and the build all call
:func:`apply`; none of them names a step. Adding a step is one module (its config class and its
``apply``) and one row (:data:`BUILTIN` below, or :func:`register` from outside the package).

Rows name their code as ``"module:attribute"`` strings, imported on first use: this module imports
nothing of the steps, so ``import edgeprune.steps`` loads neither torch nor the compression code,
and no step module needs to import the registry (no import cycle, visible or hidden).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass

from edgeprune.config import StepConfig
from edgeprune.errors import EdgepruneError


def _resolve(ref):
    """``"module:attribute"`` -> the attribute (imported now); anything else as it is."""
    if not isinstance(ref, str):
        return ref
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Step:
    """One step: its recipe name, its config class and its ``apply`` (objects or ``"module:name"``)."""

    name: str
    config: type[StepConfig] | str
    apply: Callable | str  # (model, cfg, ctx) -> (model, report)
    # a build saves the model this step returns as the next stage's input (False: the step
    # measures or writes artifacts and returns the model it was given)
    changes_model: bool = True
    reads_model: bool = True  # False: the step needs no model in memory (a build passes None)

    def config_class(self) -> type[StepConfig]:
        return _resolve(self.config)

    def apply_fn(self) -> Callable:
        return _resolve(self.apply)

    @property
    def doc(self) -> str:
        lines = (self.config_class().__doc__ or "").strip().splitlines()
        return lines[0] if lines else ""


BUILTIN: tuple[Step, ...] = (
    Step("prune", "edgeprune.compress.structured.config:StructuredPrune", "edgeprune.compress.structured.prune:apply"),
    Step("sparsify", "edgeprune.compress.sparse.oneshot:NMPrune", "edgeprune.compress.sparse.oneshot:apply"),
    Step("quantize", "edgeprune.compress.quant.weights:WeightQuant", "edgeprune.compress.quant.weights:apply"),
    Step("sparse_train", "edgeprune.compress.sparse.ast:SparseTrain", "edgeprune.compress.sparse.ast:apply"),
    Step("depth", "edgeprune.compress.depth.config:Depth", "edgeprune.compress.depth.prune:apply"),
    Step("reconstruct", "edgeprune.compress.reconstruct.local:Reconstruct", "edgeprune.compress.reconstruct.local:apply"),
    Step("train", "edgeprune.compress.structured.recovery:TrainConfig", "edgeprune.compress.structured.recovery:apply"),  # recovery training alone
    Step("recover", "edgeprune.compress.recover:Recover", "edgeprune.compress.recover:apply"),  # reconstruction + distillation on one budget
    Step("export", "edgeprune.pipeline.build_steps:Export", "edgeprune.pipeline.build_steps:export", changes_model=False),
    Step("evaluate", "edgeprune.pipeline.build_steps:Evaluate", "edgeprune.pipeline.build_steps:evaluate",
         changes_model=False),  # fmt: skip
    Step("profile", "edgeprune.pipeline.build_steps:Profile", "edgeprune.pipeline.build_steps:profile",
         changes_model=False, reads_model=False),  # fmt: skip
)

STEPS: dict[str, Step] = {s.name: s for s in BUILTIN}


def register(step: Step) -> Step:
    """Add a step from outside the package (a plugin, a test): one row, checked like the built-ins."""
    if step.name in STEPS and STEPS[step.name] != step:
        raise ValueError(f"step {step.name!r} is already registered ({STEPS[step.name].config})")
    cls = step.config_class()
    if cls.STEP != step.name:
        raise ValueError(f"{cls.__name__}.STEP is {cls.STEP!r}, registered as {step.name!r}")
    STEPS[step.name] = step
    return step


def unregister(name: str) -> None:
    """Remove a row added with :func:`register` (built-in rows stay)."""
    if name in STEPS and STEPS[name] not in BUILTIN:
        del STEPS[name]


def step_for(name_or_config: str | StepConfig) -> Step:
    """The row of a step name (or a config's ``kind``, the long name) or of a config object."""
    if isinstance(name_or_config, StepConfig):
        row = STEPS.get(name_or_config.STEP)
        if row is not None and row.config_class() is type(name_or_config):
            return row
        names = ", ".join(sorted(STEPS))
        raise EdgepruneError(
            f"no step is registered for {type(name_or_config).__name__}: registered steps are {names}; "
            "register one with edgeprune.steps.register(Step(name, ConfigClass, apply))"
        )
    name = str(name_or_config)
    if name in STEPS:
        return STEPS[name]
    for row in STEPS.values():  # the long name (``structured_prune``) works too
        if row.config_class().kind == name:
            return row
    close = difflib.get_close_matches(name, list(STEPS), n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise EdgepruneError(f"unknown step {name!r}{hint}: registered steps are {', '.join(sorted(STEPS))}")


def apply(model, cfg: StepConfig, ctx):
    """Apply step ``cfg`` to ``model`` in context ``ctx`` -> ``(model, report)``: the one call site."""
    if ctx.device is not None and model is not None:
        model = model.to(ctx.device)
    return step_for(cfg).apply_fn()(model, cfg, ctx)


def config_from_dict(data: dict, *, where: str = "") -> StepConfig:
    """The registered config for ``{step: NAME, settings...}`` (or the wrapped form ``{NAME: {settings}}``)."""
    if isinstance(data, dict) and "step" not in data and len(data) == 1:
        ((name, settings),) = data.items()
        if isinstance(settings, (dict, type(None))):
            return step_for(str(name)).config_class().from_dict(settings or {}, where=where)
    if not isinstance(data, dict) or "step" not in data:
        raise EdgepruneError(f"each recipe step needs a 'step:' key{' (' + where + ')' if where else ''}")
    row = step_for(data["step"])
    return row.config_class().from_dict({**data, "step": row.name}, where=where)


def config_from_yaml(text: str) -> StepConfig:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise EdgepruneError(f"not valid YAML: {str(exc).splitlines()[0]}") from None
    return config_from_dict(data)

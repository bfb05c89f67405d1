"""Strict step configs and the one registry of steps, by name and by config type.

Every step of a build (prune, sparsify, quantize, sparse_train, reconstruct, export, evaluate,
profile), and every config nested in one (a training schedule), is one frozen dataclass that
- rejects unknown keys with a "did you mean" (a misspelt recipe key must never silently do nothing),
- carries a ``version`` and refuses versions it does not read, so recipes can be migrated later,
- round-trips to a plain dict and to YAML (``to_dict`` / ``from_dict``, ``to_yaml`` / ``from_yaml``;
  nested configs become nested mappings, tuples become lists and back),
- validates its values when built: ``check()`` returns *all* problems and the constructor raises
  one :class:`EdgepruneError` joining them, so an invalid config never exists.

The registry maps a step name (the ``step:`` key in a recipe) to its config class, and the config
class to the function that applies it (``fn(model, config, calib, *, train_data, progress)``).
Built-in steps live in modules listed in ``BUILTIN_STEPS`` and are imported on first lookup, so
``import edgeprune.config`` loads neither torch nor the compression code.

    @register_step("prune", kind="structured_prune")
    @dataclass(frozen=True)
    class StructuredPrune(StepConfig):
        target: float = 0.25

    @register(StructuredPrune)
    def structured_prune(model, cfg, calib=None, *, train_data=None, progress=True): ...
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from edgeprune.errors import EdgepruneError


@dataclass(frozen=True)
class StepConfig:
    """Base of all step configs. Subclasses are frozen dataclasses with defaults for every field."""

    version: int = 1
    STEP: ClassVar[str] = ""  # the recipe name, set by @register_step
    kind: ClassVar[str] = ""  # a longer name used in messages and reports (default: STEP or the class name)
    VERSIONS: ClassVar[tuple[int, ...]] = (1,)  # versions this code reads
    NESTED: ClassVar[dict[str, type]] = {}  # field name -> StepConfig subclass of a nested config

    def __post_init__(self):
        problems = []
        if self.version not in self.VERSIONS:
            problems.append(
                f"version {self.version!r} is not supported (this edgeprune reads version "
                f"{', '.join(map(str, self.VERSIONS))})"
            )
        problems += self.check()
        if problems:
            raise EdgepruneError(f"invalid {self.step_label()} step: " + "; ".join(problems))

    @classmethod
    def step_label(cls) -> str:
        return cls.STEP or cls.kind or cls.__name__

    # -- validation -----------------------------------------------------------------------------
    def check(self) -> list[str]:
        """Problems with this config's values (empty when valid). Override and extend."""
        return []

    def validate(self) -> StepConfig:
        """Kept for callers that validate explicitly; construction already validated."""
        problems = self.check()
        if problems:
            raise EdgepruneError(f"invalid {self.step_label()} step: " + "; ".join(problems))
        return self

    # -- dict / YAML ----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        out: dict[str, Any] = {"step": self.STEP} if self.STEP else {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, StepConfig):
                value = value.to_dict()
                value.pop("step", None)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict, *, where: str = "") -> StepConfig:
        if not isinstance(data, dict):
            raise EdgepruneError(f"{cls.step_label()} must be a mapping of settings, got {type(data).__name__}")
        data = dict(data)
        if "step" in data and data["step"] in (cls.STEP, cls.kind):  # a recipe entry names its step
            data.pop("step")
        known = {f.name: f for f in fields(cls)}
        unknown = [k for k in data if k not in known]
        at = f" in {where}" if where else ""
        if unknown:
            msgs = []
            for k in unknown:
                close = difflib.get_close_matches(str(k), list(known), n=1, cutoff=0.6)
                msgs.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise EdgepruneError(
                f"unknown key {', '.join(msgs)} for step {cls.step_label()}{at}: "
                f"valid keys are {', '.join(k for k in known if k != 'version')}"
            )
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for k, v in data.items():
            if k in cls.NESTED and isinstance(v, dict):
                v = cls.NESTED[k].from_dict(v, where=where)
            # YAML has lists, not tuples: coerce where the field is declared as a tuple
            elif isinstance(v, list) and typing.get_origin(hints.get(k)) is tuple:
                v = tuple(v)
            kwargs[k] = v
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise EdgepruneError(f"bad value for step {cls.step_label()}{at}: {exc}") from None

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> StepConfig:
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise EdgepruneError(f"not valid YAML: {str(exc).splitlines()[0]}") from None
        if isinstance(data, dict) and len(data) == 1 and next(iter(data)) in (cls.kind, cls.STEP):
            data = next(iter(data.values())) or {}  # the wrapped form {kind: {settings}}
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> StepConfig:
        return dataclasses.replace(self, **changes)


# -- value checks shared by every config's check() ----------------------------------------------


def check_fraction(name: str, value, *, low_open: bool = True, high_open: bool = True, low=0.0, high=1.0) -> list[str]:
    """``[problem]`` if ``value`` is not a number in the (open/closed) interval, else ``[]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return [f"{name} must be a number, got {value!r}"]
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        lb, hb = ("(" if low_open else "["), (")" if high_open else "]")
        return [f"{name} must be in {lb}{low:g}, {high:g}{hb}, got {value!r}"]
    return []


def check_int(name: str, value, *, minimum: int | None = None) -> list[str]:
    if isinstance(value, bool) or not isinstance(value, int):
        return [f"{name} must be an integer, got {value!r}"]
    if minimum is not None and value < minimum:
        return [f"{name} must be >= {minimum}, got {value}"]
    return []


def check_choice(name: str, value, choices) -> list[str]:
    if value not in choices:
        close = difflib.get_close_matches(str(value), list(choices), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return [f"{name} {value!r} is not one of {', '.join(choices)}{hint}"]
    return []


# -- the registry --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepEntry:
    name: str
    config: type[StepConfig]
    # in a build: (model, config, *, calib=<source name or None>, tokenizer, progress) -> (model, report);
    # None: the build runner handles the step itself, or applies implementation(config) generically
    apply: Callable | None
    doc: str


STEPS: dict[str, StepEntry] = {}
_IMPLEMENTATIONS: dict[type, Callable] = {}

# step name -> (module that defines and registers it, config class name); imported on first lookup
BUILTIN_STEPS: dict[str, tuple[str, str]] = {
    "evaluate": ("edgeprune.pipeline.steps", "Evaluate"),
    "export": ("edgeprune.pipeline.steps", "Export"),
    "profile": ("edgeprune.pipeline.steps", "Profile"),
    "prune": ("edgeprune.compress.structured", "StructuredPrune"),
    "sparsify": ("edgeprune.compress.sparsify", "NMPrune"),
    "quantize": ("edgeprune.compress.sparsify", "WeightQuant"),
    "sparse_train": ("edgeprune.compress.sparse_train", "SparseTrain"),
    "reconstruct": ("edgeprune.compress.reconstruct", "Reconstruct"),
    "train": ("edgeprune.compress.train", "TrainConfig"),  # recovery training / distillation on its own
}
_builtins_loaded = False


def load_builtin_steps() -> None:
    """Import the modules of the built-in steps (each registers itself); a module this installation
    lacks is skipped, its step stays unknown."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    for name, (module, class_name) in BUILTIN_STEPS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # a missing dependency inside an existing module is a real error
                raise
            continue
        if name not in STEPS:  # modules that only define the config get their recipe name here
            register_step(name)(getattr(mod, class_name))


def register_step(name: str, *, apply: Callable | None = None, kind: str | None = None):
    """Class decorator: bind step ``name`` to this config class (optionally its in-build apply)."""

    def deco(cls: type[StepConfig]) -> type[StepConfig]:
        if name in STEPS and STEPS[name].config is not cls:
            raise ValueError(f"step {name!r} is registered twice ({STEPS[name].config.__name__}, {cls.__name__})")
        cls.STEP = name
        if kind is not None:
            cls.kind = kind
        doc = (cls.__doc__ or "").strip().splitlines()
        STEPS[name] = StepEntry(name, cls, apply, doc[0] if doc else "")
        return cls

    return deco


def set_apply(name: str, apply: Callable) -> None:
    """Attach the in-build implementation later (keeps config modules free of heavy imports)."""
    STEPS[name] = dataclasses.replace(STEPS[name], apply=apply)


def register(config_type: type) -> Callable[[Callable], Callable]:
    """Decorator: bind ``config_type`` to ``fn(model, config, calib, *, train_data, progress) -> (model, report)``."""

    def bind(fn: Callable) -> Callable:
        if config_type in _IMPLEMENTATIONS and _IMPLEMENTATIONS[config_type] is not fn:
            raise ValueError(f"{config_type.__name__} is already registered to {_IMPLEMENTATIONS[config_type]}")
        _IMPLEMENTATIONS[config_type] = fn
        return fn

    return bind


def implementation(config) -> Callable:
    """The function registered for ``type(config)``; EdgepruneError listing the registered ones if none."""
    load_builtin_steps()
    fn = _IMPLEMENTATIONS.get(type(config))
    if fn is None:
        names = ", ".join(f"{t.__name__} ({t.kind or t.STEP or '?'})" for t in _IMPLEMENTATIONS) or "none"
        raise EdgepruneError(
            f"no step implementation is registered for {type(config).__name__}: registered are {names}; "
            "pass one of these configs or register an implementation with edgeprune.config.register"
        )
    return fn


def implementations() -> dict[type, Callable]:
    load_builtin_steps()
    return dict(_IMPLEMENTATIONS)


def _lookup(name: str) -> StepEntry | None:
    if name in STEPS:
        return STEPS[name]
    return next((e for e in STEPS.values() if e.config.kind == name), None)  # the long name works too


def step_entry(name_or_config: str | StepConfig) -> StepEntry:
    name = name_or_config if isinstance(name_or_config, str) else name_or_config.STEP
    entry = _lookup(name)
    if entry is None:
        load_builtin_steps()
        entry = _lookup(name)
    if entry is None:
        close = difflib.get_close_matches(str(name), list(STEPS), n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        what = name if isinstance(name_or_config, str) else type(name_or_config).__name__
        raise EdgepruneError(f"unknown step {what!r}{hint}: registered steps are {', '.join(sorted(STEPS)) or 'none'}")
    return entry


def config_from_dict(data: dict, *, where: str = "") -> StepConfig:
    """The registered config for ``{step: NAME, settings...}`` (or the wrapped form ``{NAME: {settings}}``)."""
    if isinstance(data, dict) and "step" not in data and len(data) == 1:
        (name, settings), = data.items()
        if isinstance(settings, (dict, type(None))):
            return step_entry(str(name)).config.from_dict(settings or {}, where=where)
    if not isinstance(data, dict) or "step" not in data:
        raise EdgepruneError(f"each recipe step needs a 'step:' key{' (' + where + ')' if where else ''}")
    entry = step_entry(data["step"])
    data = {**data, "step": entry.name}
    return entry.config.from_dict(data, where=where)


def config_from_yaml(text: str) -> StepConfig:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise EdgepruneError(f"not valid YAML: {str(exc).splitlines()[0]}") from None
    return config_from_dict(data)

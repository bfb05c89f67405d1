"""Strict step configs: the base every step's settings derive from.

Every step of a build (prune, sparsify, quantize, sparse_train, reconstruct, export, evaluate,
profile), and every config nested in one (a training schedule), is one frozen dataclass that
- rejects unknown keys with a "did you mean" (a misspelt recipe key must never silently do nothing),
- carries a ``version`` and refuses versions it does not read, so recipes can be migrated later,
- round-trips to a plain dict and to YAML (``to_dict`` / ``from_dict``, ``to_yaml`` / ``from_yaml``;
  nested configs become nested mappings, tuples become lists and back),
- validates its values when built: ``check()`` returns *all* problems and the constructor raises
  one :class:`EdgepruneError` joining them, so an invalid config never exists.

Which config belongs to which step name, and the function that applies it, is the one table in
:mod:`edgeprune.steps.registry`; this module knows no step.

    @dataclass(frozen=True)
    class StructuredPrune(StepConfig):
        STEP = "prune"
        target: float = 0.25
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from edgeprune.errors import EdgepruneError


@dataclass(frozen=True)
class StepConfig:
    """Base of all step configs. Subclasses are frozen dataclasses with defaults for every field."""

    version: int = 1
    STEP: ClassVar[str] = ""  # the recipe name (the row in edgeprune.steps.registry)
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

"""Strict step configs and the registry of steps by name.

Every step of a build (prune, sparsify, reconstruct, quantize, export, evaluate, profile) is
described by one frozen dataclass that
- rejects unknown keys with a "did you mean" (a misspelt recipe key must never silently do nothing),
- carries a ``version`` so recipes written today can be migrated later,
- round-trips to a plain dict and to YAML (``to_dict`` / ``from_dict``, ``to_yaml`` / ``from_yaml``),
- validates its own values in ``check()`` and returns *all* problems at once (``--dry-run``).

The registry maps a step name (the ``step:`` key in a recipe) to its config class and to the
function that applies it; an unknown name lists the registered ones.

    @register_step("prune", apply=structured_prune)
    @dataclass(frozen=True)
    class StructuredPrune(StepConfig):
        target: float = 0.25
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from edgeprune.errors import EdgepruneError


@dataclass(frozen=True)
class StepConfig:
    """Base of all step configs. Subclasses are frozen dataclasses with defaults for every field."""

    version: int = 1
    STEP: ClassVar[str] = ""  # set by @register_step

    # -- validation -----------------------------------------------------------------------------
    def check(self) -> list[str]:
        """Problems with this config's values (empty when valid). Override and extend."""
        return []

    def validate(self) -> StepConfig:
        problems = self.check()
        if problems:
            raise EdgepruneError(f"invalid {self.STEP or type(self).__name__} step: " + "; ".join(problems))
        return self

    # -- dict / YAML ----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        out = {"step": self.STEP} if self.STEP else {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict, *, where: str = "") -> StepConfig:
        data = dict(data)
        data.pop("step", None)
        known = {f.name: f for f in fields(cls)}
        unknown = [k for k in data if k not in known]
        if unknown:
            msgs = []
            for k in unknown:
                close = difflib.get_close_matches(k, list(known), n=1, cutoff=0.6)
                msgs.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            at = f" in {where}" if where else ""
            raise EdgepruneError(
                f"unknown key {', '.join(msgs)} for step {cls.STEP or cls.__name__}{at}: "
                f"valid keys are {', '.join(k for k in known if k != 'version')}"
            )
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for k, v in data.items():
            # YAML has lists, not tuples: coerce where the field is declared as a tuple
            if isinstance(v, list) and typing.get_origin(hints.get(k)) is tuple:
                v = tuple(v)
            kwargs[k] = v
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise EdgepruneError(f"bad value for step {cls.STEP or cls.__name__}: {exc}") from None

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> StepConfig:
        import yaml

        return cls.from_dict(yaml.safe_load(text) or {})

    def replace(self, **changes: Any) -> StepConfig:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class StepEntry:
    name: str
    config: type[StepConfig]
    apply: Callable | None  # (model, config, **context) -> result; None: handled by the build runner
    doc: str


STEPS: dict[str, StepEntry] = {}


def register_step(name: str, *, apply: Callable | None = None):
    """Class decorator: bind step ``name`` to this config class (and optionally its implementation)."""

    def deco(cls: type[StepConfig]) -> type[StepConfig]:
        if name in STEPS and STEPS[name].config is not cls:
            raise ValueError(f"step {name!r} is registered twice ({STEPS[name].config.__name__}, {cls.__name__})")
        cls.STEP = name
        STEPS[name] = StepEntry(name, cls, apply, (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "")
        return cls

    return deco


def set_apply(name: str, apply: Callable) -> None:
    """Attach the implementation later (keeps config modules free of heavy imports)."""
    STEPS[name] = dataclasses.replace(STEPS[name], apply=apply)


def step_entry(name_or_config: str | StepConfig) -> StepEntry:
    name = name_or_config if isinstance(name_or_config, str) else name_or_config.STEP
    if name not in STEPS:
        close = difflib.get_close_matches(str(name), list(STEPS), n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        what = name if isinstance(name_or_config, str) else type(name_or_config).__name__
        raise EdgepruneError(f"unknown step {what!r}{hint}: registered steps are {', '.join(sorted(STEPS)) or 'none'}")
    return STEPS[name]


def config_from_dict(data: dict, *, where: str = "") -> StepConfig:
    """Build the registered config for ``data['step']``."""
    if not isinstance(data, dict) or "step" not in data:
        raise EdgepruneError(f"each recipe step needs a 'step:' key{' (' + where + ')' if where else ''}")
    return step_entry(data["step"]).config.from_dict(data, where=where)

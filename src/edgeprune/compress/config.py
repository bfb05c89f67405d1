"""Strict, versioned, YAML-round-tripping config dataclasses for compression steps.

Every step config (and every config nested in one, e.g. a training schedule) derives from
:class:`StrictConfig`: a frozen dataclass that

- rejects unknown keys when built from a dict, naming the known ones (a misspelt recipe key must
  not silently do nothing);
- carries ``version`` and refuses versions it does not read;
- round-trips through ``to_dict`` / ``from_dict`` and ``to_yaml`` / ``from_yaml`` (nested configs
  become nested mappings);
- validates its values in ``check()``, raising :class:`EdgepruneError` with one line per problem
  joined, so a recipe reports every problem at once.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from edgeprune.errors import EdgepruneError


@dataclass(frozen=True)
class StrictConfig:
    """Base class; subclasses are ``@dataclass(frozen=True)`` with a ``version: int = 1`` field."""

    # name of this config in a recipe / YAML file ("structured_prune")
    kind: ClassVar[str] = "config"
    # versions this code reads
    VERSIONS: ClassVar[tuple[int, ...]] = (1,)
    # field name -> StrictConfig subclass, for fields holding a nested config (or None)
    NESTED: ClassVar[dict[str, type]] = {}
    # the step name in a build recipe (``step: prune``), set when the config is also registered
    # with the build's recipe registry (``edgeprune.compress.registry.bridge_to_recipes``)
    STEP: ClassVar[str] = ""

    def __post_init__(self):
        problems = []
        if getattr(self, "version", 1) not in self.VERSIONS:
            problems.append(
                f"{self.kind} version {getattr(self, 'version', None)!r} is not supported "
                f"(this edgeprune reads version {', '.join(map(str, self.VERSIONS))})"
            )
        problems += self.check()
        if problems:
            raise EdgepruneError(f"invalid {self.kind}: " + "; ".join(problems))

    def check(self) -> list[str]:
        """Problems with the values (empty when valid). Subclasses extend this."""
        return []

    # -- dict / YAML ----------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = ""):
        if not isinstance(data, dict):
            raise EdgepruneError(f"{cls.kind} must be a mapping of settings, got {type(data).__name__}")
        data = dict(data)
        if "step" in data and data["step"] in (cls.STEP, cls.kind):  # a recipe entry names its step
            data.pop("step")
        known = [f.name for f in fields(cls)]
        unknown = [k for k in data if k not in known]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(str(k), known, n=1)
                hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            at = f" in {where}" if where else ""
            raise EdgepruneError(
                f"unknown {cls.kind} setting(s) {', '.join(hints)}{at}: known are {', '.join(sorted(known))}"
            )
        kwargs = dict(data)
        for name, sub in cls.NESTED.items():
            if isinstance(kwargs.get(name), dict):
                kwargs[name] = sub.from_dict(kwargs[name])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"step": self.STEP} if self.STEP else {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, StrictConfig) else value
        return out

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump({self.kind: self.to_dict()}, sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise EdgepruneError(f"not valid YAML: {str(exc).splitlines()[0]}") from None
        if isinstance(data, dict) and set(data) == {cls.kind}:
            data = data[cls.kind]
        return cls.from_dict(data)


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

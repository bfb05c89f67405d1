"""What the GGUF and ONNX exporters share: the strict settings base, what an export step wrote, versions.

``ExportConfig`` puts the export settings on the project's one strict config base
(:class:`edgeprune.config.StepConfig`: frozen, unknown keys rejected with a "did you mean",
versioned, dict/YAML round trip, every problem reported at once); a format adds its own fields
and checks. Imports neither torch nor any exporter backend.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from edgeprune.config import StepConfig
from edgeprune.errors import EdgepruneError


@dataclass(frozen=True)
class ExportConfig(StepConfig):
    """Settings every exporter has. Subclasses set ``FORMAT`` and ``LOWERCASE`` (fields normalised
    to lower case before checking, so ``Q8_0`` and ``INT8`` are accepted)."""

    verify: bool = True  # read the artifact back and compare its logits with the torch model's

    FORMAT: ClassVar[str] = ""
    LOWERCASE: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self):
        for name in self.LOWERCASE:
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, value.lower())
        try:
            super().__post_init__()
        except EdgepruneError as exc:
            # "invalid ONNX export step: a; b" -> "a; b": the problems read as settings, not recipe steps
            prefix = f"invalid {self.step_label()} step: "
            msg = str(exc)
            raise EdgepruneError(msg[len(prefix) :] if msg.startswith(prefix) else msg) from None

    @classmethod
    def step_label(cls) -> str:
        return f"{cls.FORMAT} export"

    def check(self) -> list[str]:
        if not isinstance(self.verify, bool):
            return [f"verify must be true or false, got {self.verify!r}"]
        return []


@dataclass(frozen=True)
class Exported:
    """What a build's export step wrote into its stage directory (a registry row's ``export`` returns it)."""

    artifact: str  # path of the artifact's main file, relative to the stage directory
    bytes: int  # on disk, every file the runtime loads
    report: dict  # the exporter's report (its "verify" entry is the read-back check)


def unknown_choice(what: str, value, choices: Sequence[str]) -> list[str]:
    """``["unknown <what> 'x' (did you mean 'y'?): use one of a, b"]``, or ``[]`` when ``value`` is a choice."""
    if isinstance(value, str) and value in choices:
        return []
    hint = difflib.get_close_matches(str(value).lower(), list(choices), n=1)
    did = f" (did you mean {hint[0]!r}?)" if hint else ""
    return [f"unknown {what} {value!r}{did}: use one of {', '.join(choices)}"]


def versions(dists: Sequence[str]) -> dict[str, str | None]:
    """Installed versions of ``dists`` (None where one is absent), for export reports."""
    from importlib import metadata

    out = {}
    for dist in dists:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out

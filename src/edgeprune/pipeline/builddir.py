"""A build directory's bookkeeping, shared by recipe builds (``runner``) and budgeted builds
(``search``): the inputs hash that names a finished piece, the model source's identity in it, and
the check that ``--out`` can take a build."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from edgeprune.errors import EdgepruneError
from edgeprune.fileio import check_output_dir


def inputs_hash(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def source_identity(source: str) -> dict:
    """What the model source is, for the inputs hash: a name, or a file/dir with size and mtime."""
    from edgeprune.describe import resolve_artifact

    kind, path = resolve_artifact(source)
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    return {"source": source, "kind": kind, "files": [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]}


def check_build_dir(out: Path, *, resume: bool) -> None:
    """Refuse an ``out`` that cannot take this build, in microseconds, before anything is loaded:
    a path that cannot be a writable folder, a folder holding something else, or a finished or
    half-done build without ``resume``. An empty folder is fine."""
    check_output_dir(out, exist_ok=True, parents=True)
    if out.is_dir() and any(out.iterdir()):
        if not (out / "build.json").is_file():
            raise EdgepruneError(f"{out} exists and is not an edgeprune build: choose another --out")
        if not resume:
            raise EdgepruneError(f"{out} already holds a build: pass --resume to continue it, or choose another --out")

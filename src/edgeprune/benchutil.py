"""What every benchmark writes: one JSON document and a markdown table, both atomically.

The JSON shape, shared by all benches under ``bench/``::

    {"bench": name, "command": the command line, "machine": {cpu, cores, memory_gb, ...},
     "versions": {python, torch, transformers, edgeprune, ...}, "rows": [{...}, ...]}

Rows are flat dicts; the markdown table shows the columns a bench chooses. Nothing here imports
torch: versions come from package metadata, the machine from :func:`edgeprune.devices.host.machine_info`.
"""

from __future__ import annotations

import json
import math
import platform
import shlex
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from edgeprune.devices.host import machine_info
from edgeprune.fileio import write_text_atomic

DEFAULT_PACKAGES = ("edgeprune", "torch", "transformers", "numpy", "onnxruntime", "llama-cpp-python", "gguf")


def versions(packages: Sequence[str] = DEFAULT_PACKAGES) -> dict:
    """Installed versions (None where a package is absent), plus Python's."""
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def command_line(argv: Sequence[str] | None = None) -> str:
    argv = list(sys.argv if argv is None else argv)
    return " ".join(shlex.quote(a) for a in ["python", *argv])


def bench_document(bench: str, rows: list[dict], *, command: str | None = None, **extra) -> dict:
    """The shared JSON document; ``extra`` keys (e.g. ``model``) go after the standard ones."""
    return {"bench": bench, "command": command or command_line(), "machine": machine_info(), "versions": versions(),
            **extra, "rows": rows}  # fmt: skip


def write_json_atomic(path: str | Path, obj) -> Path:
    """JSON with NaN/inf written as null (strict JSON), replacing ``path`` atomically."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, json.dumps(_strict(obj), indent=2) + "\n")


def _strict(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    return obj


def markdown_table(rows: list[dict], columns: Sequence[str], *, digits: int = 4) -> str:
    """A GitHub markdown table of ``columns``; floats to ``digits`` significant places, blanks for None."""

    def cell(v) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            if not math.isfinite(v):
                return str(v)
            return f"{v:.{digits}g}" if abs(v) < 10 ** digits else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_bench(doc: dict, json_path: str | Path, md_path: str | Path | None, columns: Sequence[str], *,
                title: str | None = None) -> str:  # fmt: skip
    """Write the JSON (and markdown) atomically; return the markdown text."""
    m = doc.get("machine", {})
    head = title or f"# {doc['bench']}"
    md = (f"{head}\n\n{m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('memory_gb', '?')} GB; "
          f"`{doc['command']}`\n\n{markdown_table(doc['rows'], columns)}\n")  # fmt: skip
    write_json_atomic(json_path, doc)
    if md_path is not None:
        write_text_atomic(md_path, md)
    return md

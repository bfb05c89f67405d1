"""GGUF export for llama.cpp: uniform Llama-family models as ``llama``/``qwen2``, per-layer widths as ``deci``.

    from edgeprune.export.gguf import export_gguf
    report = export_gguf(model, tokenizer, "model.gguf", qtype="q8_0")

Names load lazily so that importing the package costs nothing until an export runs.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "export_gguf": "edgeprune.export.gguf.api",
    "GGUFExportConfig": "edgeprune.export.gguf.api",
    "GGUFExportReport": "edgeprune.export.gguf.api",
    "GGUFVerifyResult": "edgeprune.export.gguf.verify",
    "permute_qk": "edgeprune.export.gguf.layout",
    "QTYPES": "edgeprune.export.gguf.tables",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'edgeprune.export.gguf' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)

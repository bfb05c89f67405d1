"""GGUF export for llama.cpp: uniform Llama-family models as ``llama``/``qwen2``, per-layer widths as ``deci``.

    from edgeprune.export.gguf import export_gguf
    report = export_gguf(model, tokenizer, "model.gguf", qtype="q8_0")

Names load lazily so that importing the package costs nothing until an export runs.
"""

from __future__ import annotations

from edgeprune._lazy import lazy_attributes

_LAZY = {
    "export_gguf": "edgeprune.export.gguf.api",
    "GGUFExportConfig": "edgeprune.export.gguf.api",
    "GGUFExportReport": "edgeprune.export.gguf.api",
    "GGUFVerifyResult": "edgeprune.export.gguf.verify",
    "permute_qk": "edgeprune.export.gguf.layout",
    "QTYPES": "edgeprune.export.gguf.tables",
}

__getattr__, __all__ = lazy_attributes(__name__, _LAZY)

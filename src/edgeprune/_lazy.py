"""Lazy package attributes: names that live in submodules, imported on first use.

Packages use this so that ``import edgeprune.eval`` (and the CLI's startup) does not pay for torch,
transformers or onnxruntime until a name that needs them is touched.
"""

from __future__ import annotations

import importlib
from typing import Callable


def lazy_attributes(package: str, table: dict[str, str], after: Callable[[], None] | None = None):
    """``(__getattr__, __all__)`` for ``package``: ``table`` maps each public name to its module.
    ``after`` runs after every lazy import (e.g. to register model classes once transformers is in)."""

    def __getattr__(name: str):
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(table[name]), name)
        if after is not None:
            after()
        return value

    return __getattr__, sorted(table)

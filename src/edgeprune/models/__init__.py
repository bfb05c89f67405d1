"""Loading models from every source, and the per-layer-width model that pruning produces.

Names are imported lazily so that light users (``edgeprune inspect``, built-in name lookup) do
not pay for importing torch and transformers.
"""

from __future__ import annotations

import importlib

from edgeprune import _autoregister

_LAZY = {
    "BUILTIN_MODELS": "edgeprune.models.builtin",
    "DEFAULT_MODEL": "edgeprune.models.builtin",
    "EdgepruneLlamaConfig": "edgeprune.models.configuration_edgeprune_llama",
    "EdgepruneLlamaForCausalLM": "edgeprune.models.modeling_edgeprune_llama",
    "per_layer_config": "edgeprune.models.convert",
    "to_per_layer": "edgeprune.models.convert",
    "LoadedModel": "edgeprune.models.loading",
    "load": "edgeprune.models.loading",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'edgeprune.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    if "transformers" in __import__("sys").modules:
        _autoregister.register_now()
    return value

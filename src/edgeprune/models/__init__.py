"""Loading models from every source, and the per-layer-width model that pruning produces.

Names are imported lazily so that light users (``edgeprune inspect``, built-in name lookup) do
not pay for importing torch and transformers.
"""

from __future__ import annotations

import sys

from edgeprune._lazy import lazy_attributes
from edgeprune.models.registration import register_now

_LAZY = {
    "BUILTIN_MODELS": "edgeprune.models.builtin",
    "DEFAULT_MODEL": "edgeprune.models.builtin",
    "EdgepruneLlamaConfig": "edgeprune.models.configuration_edgeprune_llama",
    "EdgepruneLlamaForCausalLM": "edgeprune.models.modeling_edgeprune_llama",
    "per_layer_config": "edgeprune.models.convert",
    "to_per_layer": "edgeprune.models.convert",
    "LoadedModel": "edgeprune.models.loading",
    "load": "edgeprune.models.loading",
    "save_model": "edgeprune.models.save",
}


def _register_if_loaded() -> None:
    # Our model classes register with transformers' Auto* as soon as transformers is imported.
    if "transformers" in sys.modules:
        register_now()


__getattr__, __all__ = lazy_attributes(__name__, _LAZY, after=_register_if_loaded)

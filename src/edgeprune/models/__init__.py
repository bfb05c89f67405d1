"""Loading models from every source, and the per-layer-width model that pruning produces."""

from edgeprune import _autoregister
from edgeprune.models.builtin import BUILTIN_MODELS, DEFAULT_MODEL
from edgeprune.models.configuration_edgeprune_llama import EdgepruneLlamaConfig
from edgeprune.models.convert import per_layer_config, to_per_layer
from edgeprune.models.load import LoadedModel, load
from edgeprune.models.modeling_edgeprune_llama import EdgepruneLlamaForCausalLM

__all__ = [
    "BUILTIN_MODELS",
    "DEFAULT_MODEL",
    "EdgepruneLlamaConfig",
    "EdgepruneLlamaForCausalLM",
    "LoadedModel",
    "load",
    "per_layer_config",
    "to_per_layer",
]

_READY = True
_autoregister.register_now()

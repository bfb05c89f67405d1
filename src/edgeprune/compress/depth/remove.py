"""Cut whole decoder layers out of a Llama-family model (stock transformers or ``edgeprune_llama``), in place.

What must change with the layer list, or the model breaks quietly:
- ``model.model.layers`` (the ModuleList: state-dict names renumber to 0..m-1, which the GGUF and ONNX
  exporters read);
- ``config.num_hidden_layers`` and every per-layer list in the config (``edgeprune_llama``'s heads /
  KV heads / MLP widths, ``layer_types`` where the family has one);
- each module's ``layer_idx``: the KV cache is indexed by it, so a kept layer 7 that is now the 5th
  layer must write cache slot 5 (``DynamicCache`` has ``num_hidden_layers`` slots);
- the record of which original layers are kept (``config.edgeprune_kept_layers``) and how many the
  original had (``config.edgeprune_source_layers``): reconstruction pairs kept layers with the dense
  model's gaps from it, and reports show it. It is saved with the config and survives a reload.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from edgeprune.compress.sequential import decoder_layers
from edgeprune.errors import EdgepruneError

KEPT_KEY = "edgeprune_kept_layers"
SOURCE_KEY = "edgeprune_source_layers"
PER_LAYER_KEYS = ("num_attention_heads", "num_key_value_heads", "intermediate_size", "layer_types")


def kept_layers(config) -> list[int] | None:
    """The original indices of the model's layers when it was depth pruned, else None."""
    kept = getattr(config, KEPT_KEY, None)
    return list(kept) if kept is not None else None


def source_layers(config) -> int:
    """How many decoder layers the original (unpruned) model had."""
    return int(getattr(config, SOURCE_KEY, None) or config.num_hidden_layers)


def remove_layers(model, drop: Sequence[int]):
    """Remove decoder layers ``drop`` (indices in ``model`` as it is) in place -> ``model``."""
    layers = decoder_layers(model)
    n = len(layers)
    drop = sorted(set(int(i) for i in drop))
    bad = [i for i in drop if not 0 <= i < n]
    if bad:
        raise EdgepruneError(f"layer index {bad[0]} is out of range: the model has {n} decoder layers (0..{n - 1})")
    keep = [i for i in range(n) if i not in drop]
    if not keep:
        raise EdgepruneError(f"removing {len(drop)} of {n} decoder layers leaves none: remove fewer layers")
    config = model.config
    original = kept_layers(config) or list(range(n))  # a model pruned before: indices compose
    inner = getattr(model, "model", model)
    inner.layers = nn.ModuleList([layers[i] for i in keep])
    for new, layer in enumerate(inner.layers):
        for mod in layer.modules():  # the layer, its attention (the KV cache slot), any other holder
            if isinstance(getattr(mod, "layer_idx", None), int):
                mod.layer_idx = new
    for key in PER_LAYER_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, (list, tuple)) and len(value) == n:
            setattr(config, key, [value[i] for i in keep])
    setattr(config, SOURCE_KEY, source_layers(config))  # before num_hidden_layers changes
    setattr(config, KEPT_KEY, [original[i] for i in keep])
    config.num_hidden_layers = len(keep)
    if hasattr(config, "validate_widths"):  # edgeprune_llama: the per-layer lists must match the depth
        config.validate_widths()
    return model

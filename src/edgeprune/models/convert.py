"""Convert a stock Llama / Mistral / Qwen2 model into the per-layer-width ``edgeprune_llama`` model.

The conversion changes no number: weights keep their names (``model.layers.N.self_attn.q_proj``
...), so the state dict is copied as is, and logits match the source model.
"""

from __future__ import annotations

import warnings

from edgeprune.errors import EdgepruneError
from edgeprune.models import families

# Config keys carried over verbatim from the source config.
_SHARED_KEYS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "hidden_act", "max_position_embeddings",
    "initializer_range", "rms_norm_eps", "pad_token_id", "bos_token_id", "eos_token_id",
    "tie_word_embeddings", "rope_parameters", "attention_dropout",
)  # fmt: skip
# What earlier steps recorded in the config and later ones read (depth pruning's kept original layers,
# edgeprune.compress.depth.remove): carried over when present, so a depth-pruned model stays one after conversion.
_RECORD_KEYS = ("edgeprune_kept_layers", "edgeprune_source_layers")

# Bias layout per source family: (q/k/v bias, o bias, mlp bias), read from the source config.
_BIASES = {
    "llama": lambda c: (c.attention_bias, c.attention_bias, c.mlp_bias),
    "mistral": lambda c: (False, False, False),
    "qwen2": lambda c: (True, False, False),
}


def per_layer_config(config):
    """An EdgepruneLlamaConfig describing ``config`` (a Llama/Mistral/Qwen2 config) exactly."""
    from edgeprune.models.configuration_edgeprune_llama import EdgepruneLlamaConfig

    mt = config.model_type
    if mt == "edgeprune_llama":
        return config
    if mt not in _BIASES:
        families.check_model_type(mt, "to_per_layer")
        raise EdgepruneError(
            f"{mt!r} models cannot be converted to per-layer widths yet: supported are {', '.join(_BIASES)}"
        )
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        warnings.warn(
            f"{mt} sliding-window attention ({config.sliding_window} tokens) is not modelled by edgeprune_llama: "
            "outputs match only for sequences up to the window"
        )
    qkv_bias, o_bias, mlp_bias = _BIASES[mt](config)
    n = config.num_hidden_layers
    kwargs = {k: getattr(config, k) for k in _SHARED_KEYS if hasattr(config, k)}
    new = EdgepruneLlamaConfig(
        **kwargs,
        num_attention_heads=[config.num_attention_heads] * n,
        num_key_value_heads=[config.num_key_value_heads] * n,
        intermediate_size=[config.intermediate_size] * n,
        head_dim=getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads,
        attention_bias=qkv_bias,
        o_proj_bias=o_bias,
        mlp_bias=mlp_bias,
        source_model_type=mt,
    )
    for key in _RECORD_KEYS:
        if getattr(config, key, None) is not None:
            setattr(new, key, getattr(config, key))
    new._attn_implementation = config._attn_implementation
    return new


def to_per_layer(model):
    """Return an ``EdgepruneLlamaForCausalLM`` with the same weights as ``model`` (same dtype)."""
    from edgeprune.models.modeling_edgeprune_llama import EdgepruneLlamaForCausalLM

    if model.config.model_type == "edgeprune_llama":
        return model
    config = per_layer_config(model.config)
    dtype = next(model.parameters()).dtype
    new = EdgepruneLlamaForCausalLM(config).to(dtype)
    missing, unexpected = new.load_state_dict(model.state_dict(), strict=False)
    # lm_head may be absent from the source state dict when embeddings are tied
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    unexpected = [k for k in unexpected if "rotary_emb" not in k]
    if missing or unexpected:
        raise EdgepruneError(
            f"cannot convert {model.config.model_type} to per-layer widths: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}"
        )
    if config.tie_word_embeddings:
        new.tie_weights()
    new.generation_config = model.generation_config
    return new.eval() if not model.training else new

"""A Llama-family decoder whose layers each have their own heads, KV heads and MLP width.

Numerically identical to transformers' Llama/Qwen2/Mistral when every layer keeps its full width:
it reuses their RMSNorm, rotary embedding, attention kernels and mask construction, and only the
shapes differ per layer. Layers with 0 heads skip attention; layers with 0 MLP channels skip the
MLP. Layers without attention still append an empty (0-head) entry to the KV cache so the cache's
sequence length stays right for every layer.

This file is copied next to the weights by ``save_pretrained``; it must import nothing from
edgeprune so that plain transformers can load the directory with ``trust_remote_code=True``.

The KV cache is passed as ``cache`` (transformers >= 5.24, which warns on the old name). An app
that loads a saved directory may run an older 5.x, which passes and reads ``past_key_values``:
the model takes either name and returns its cache under the name the installed version declares.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.models.llama.modeling_llama import (
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
    eager_attention_forward,
)

from .configuration_edgeprune_llama import EdgepruneLlamaConfig

# "cache" from transformers 5.24 on, "past_key_values" before (the name outputs and masks take)
CACHE_KW = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"


def _cache_arg(cache, kwargs: dict):
    """The KV cache under either name; the old one is removed from ``kwargs`` so it goes no further."""
    old = kwargs.pop("past_key_values", None)
    return cache if cache is not None else old


class EdgepruneLlamaAttention(nn.Module):
    def __init__(self, config: EdgepruneLlamaConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_heads = config.heads_per_layer()[layer_idx]
        self.num_key_value_heads = config.kv_heads_per_layer()[layer_idx]
        # eager_attention_forward reads this to repeat KV heads for GQA
        self.num_key_value_groups = self.num_heads // self.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = True
        h, d, qkv_bias = config.hidden_size, self.head_dim, config.attention_bias
        self.q_proj = nn.Linear(h, self.num_heads * d, bias=qkv_bias)
        self.k_proj = nn.Linear(h, self.num_key_value_heads * d, bias=qkv_bias)
        self.v_proj = nn.Linear(h, self.num_key_value_heads * d, bias=qkv_bias)
        self.o_proj = nn.Linear(self.num_heads * d, h, bias=config.o_proj_bias)

    def forward(self, hidden_states, position_embeddings, attention_mask=None, cache=None, **kwargs):
        input_shape = hidden_states.shape[:-1]
        # (batch, seq, hidden) -> (batch, heads, seq, head_dim)
        q = self.q_proj(hidden_states).view(*input_shape, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(hidden_states).view(*input_shape, self.num_key_value_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(hidden_states).view(*input_shape, self.num_key_value_heads, self.head_dim).transpose(1, 2)
        cos, sin = position_embeddings
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        out, weights = attention_interface(
            self,
            q,
            k,
            v,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            **kwargs,
        )
        # (batch, seq, heads, head_dim) -> (batch, seq, heads * head_dim)
        out = out.reshape(*input_shape, self.num_heads * self.head_dim).contiguous()
        return self.o_proj(out), weights


class EdgepruneLlamaMLP(nn.Module):
    def __init__(self, config: EdgepruneLlamaConfig, layer_idx: int):
        super().__init__()
        h, f = config.hidden_size, config.intermediate_per_layer()[layer_idx]
        self.intermediate_size = f
        self.gate_proj = nn.Linear(h, f, bias=config.mlp_bias)
        self.up_proj = nn.Linear(h, f, bias=config.mlp_bias)
        self.down_proj = nn.Linear(f, h, bias=config.mlp_bias)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class EdgepruneLlamaDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: EdgepruneLlamaConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.hidden_size = config.hidden_size
        has_attn = config.heads_per_layer()[layer_idx] > 0
        has_mlp = config.intermediate_per_layer()[layer_idx] > 0
        # Removed sub-blocks are None (not zero-sized modules) so no norm weight is kept for them.
        self.self_attn = EdgepruneLlamaAttention(config, layer_idx) if has_attn else None
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps) if has_attn else None
        self.mlp = EdgepruneLlamaMLP(config, layer_idx) if has_mlp else None
        self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps) if has_mlp else None
        self.head_dim = config.head_dim

    def forward(
        self,
        hidden_states,
        attention_mask=None,
        position_ids=None,
        cache: Cache | None = None,
        use_cache=False,
        position_embeddings=None,
        **kwargs,
    ):
        cache = _cache_arg(cache, kwargs)
        if self.self_attn is not None:
            residual = hidden_states
            attn_out, _ = self.self_attn(
                self.input_layernorm(hidden_states),
                position_embeddings=position_embeddings,
                attention_mask=attention_mask,
                cache=cache,
                **kwargs,
            )
            hidden_states = residual + attn_out
        elif cache is not None:
            # Keep this layer's (empty) cache entry in step: (batch, 0 heads, seq, head_dim)
            b, s = hidden_states.shape[:2]
            empty = hidden_states.new_zeros(b, 0, s, self.head_dim)
            cache.update(empty, empty, self.layer_idx)
        if self.mlp is not None:
            hidden_states = hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))
        return hidden_states


class EdgepruneLlamaPreTrainedModel(PreTrainedModel):
    config_class = EdgepruneLlamaConfig
    config: EdgepruneLlamaConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["EdgepruneLlamaDecoderLayer"]
    _skip_keys_device_placement = [CACHE_KW]
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_attention_backend = True
    _can_compile_fullgraph = False


class EdgepruneLlamaModel(EdgepruneLlamaPreTrainedModel):
    def __init__(self, config: EdgepruneLlamaConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(
            [EdgepruneLlamaDecoderLayer(config, i) for i in range(config.num_hidden_layers)]
        )
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=config)
        self.gradient_checkpointing = False
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache: Cache | None = None,
        inputs_embeds=None,
        use_cache=None,
        output_hidden_states=None,
        **kwargs,
    ):
        cache = _cache_arg(cache, kwargs)
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if position_ids is None:
            past_seen = cache.get_seq_length() if cache is not None else 0
            position_ids = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + past_seen
            position_ids = position_ids.unsqueeze(0)
        causal_mask = create_causal_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            **{CACHE_KW: cache},
        )
        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids=position_ids)
        all_hidden = [] if output_hidden_states else None
        for layer in self.layers:
            if all_hidden is not None:
                all_hidden.append(hidden_states)
            hidden_states = layer(
                hidden_states,
                attention_mask=causal_mask,
                position_ids=position_ids,
                cache=cache if use_cache else None,
                use_cache=use_cache,
                position_embeddings=position_embeddings,
                **kwargs,
            )
        hidden_states = self.norm(hidden_states)
        if all_hidden is not None:
            all_hidden.append(hidden_states)
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
            **{CACHE_KW: cache if use_cache else None},
        )


class EdgepruneLlamaForCausalLM(EdgepruneLlamaPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: EdgepruneLlamaConfig):
        super().__init__(config)
        self.model = EdgepruneLlamaModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache: Cache | None = None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        logits_to_keep: int | torch.Tensor = 0,
        output_hidden_states=None,
        **kwargs,
    ):
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=_cache_arg(cache, kwargs),
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        # Only compute the logits that are asked for (generation needs the last position only).
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep, :])
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            **{CACHE_KW: getattr(outputs, CACHE_KW)},
        )


__all__ = [
    "EdgepruneLlamaForCausalLM",
    "EdgepruneLlamaModel",
    "EdgepruneLlamaPreTrainedModel",
]

"""Config for a Llama-family decoder whose layers may each have their own width.

Structured pruning leaves every layer with its own number of attention heads, KV heads and MLP
channels; stock ``LlamaConfig`` holds one number for all layers. Here ``num_attention_heads``,
``num_key_value_heads`` and ``intermediate_size`` may be per-layer lists. A layer with 0 heads has
no attention (the residual passes through); a layer with 0 MLP channels has no MLP.

This file is copied next to the weights by ``save_pretrained`` and imported by plain transformers
with ``trust_remote_code=True``: it must import nothing from edgeprune.
"""

from __future__ import annotations

from transformers.configuration_utils import PreTrainedConfig
from transformers.modeling_rope_utils import RopeParameters


def _per_layer(name: str, value, n_layers: int) -> list[int]:
    """Broadcast an int to ``n_layers`` and check a list; raise ValueError naming the field."""
    values = [value] * n_layers if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"{name} must be an int or a list of {n_layers} ints, got {type(value).__name__}")
    if len(values) != n_layers:
        raise ValueError(f"{name} has {len(values)} entries but the model has num_hidden_layers={n_layers}")
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name}[{i}] must be a non-negative int, got {v!r}")
    return list(values)


class EdgepruneLlamaConfig(PreTrainedConfig):
    model_type = "edgeprune_llama"
    keys_to_ignore_at_inference = ["cache", "past_key_values"]  # the KV cache, as 5.24+ and older 5.x name it

    vocab_size: int = 32000
    hidden_size: int = 4096
    num_hidden_layers: int = 32
    # int (all layers) or one entry per layer
    num_attention_heads: int | list[int] = 32
    num_key_value_heads: int | list[int] | None = None
    intermediate_size: int | list[int] = 11008
    # Head size is shared by all layers (pruning removes whole heads), so it must be explicit.
    head_dim: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    tie_word_embeddings: bool = False
    rope_parameters: RopeParameters | dict | None = None
    # Biases: Llama puts `attention_bias` on q/k/v/o; Qwen2 has q/k/v bias and no o bias.
    attention_bias: bool = False
    o_proj_bias: bool | None = None
    mlp_bias: bool = False
    attention_dropout: float = 0.0
    # The model_type this model came from ("llama", "qwen2", "mistral"): exporters use it.
    source_model_type: str | None = None

    def __post_init__(self, **kwargs):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            if not isinstance(self.num_attention_heads, int) or self.num_attention_heads == 0:
                raise ValueError("head_dim must be given when num_attention_heads is a per-layer list")
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.o_proj_bias is None:
            self.o_proj_bias = self.attention_bias
        super().__post_init__(**kwargs)
        self.validate_widths()

    # -- per-layer accessors -------------------------------------------------------------------
    def heads_per_layer(self) -> list[int]:
        return _per_layer("num_attention_heads", self.num_attention_heads, self.num_hidden_layers)

    def kv_heads_per_layer(self) -> list[int]:
        return _per_layer("num_key_value_heads", self.num_key_value_heads, self.num_hidden_layers)

    def intermediate_per_layer(self) -> list[int]:
        return _per_layer("intermediate_size", self.intermediate_size, self.num_hidden_layers)

    def validate_widths(self) -> None:
        """Check the per-layer lists; raise ValueError with the offending layer."""
        heads, kv, ff = self.heads_per_layer(), self.kv_heads_per_layer(), self.intermediate_per_layer()
        if not isinstance(self.head_dim, int) or self.head_dim <= 0 or self.head_dim % 2:
            raise ValueError(f"head_dim must be a positive even int (RoPE pairs dimensions), got {self.head_dim!r}")
        for i, (h, k) in enumerate(zip(heads, kv)):
            if (h == 0) != (k == 0):
                raise ValueError(f"layer {i}: {h} attention heads with {k} KV heads; both must be 0 or both > 0")
            if k and h % k:
                raise ValueError(f"layer {i}: {h} attention heads is not a multiple of its {k} KV heads")
        del ff  # validated by _per_layer

    def validate_architecture(self):
        # Hook of transformers' strict validation: the stock check assumes uniform heads.
        self.validate_widths()

    @property
    def is_uniform(self) -> bool:
        return (
            len(set(self.heads_per_layer())) == 1
            and len(set(self.kv_heads_per_layer())) == 1
            and len(set(self.intermediate_per_layer())) == 1
        )


__all__ = ["EdgepruneLlamaConfig"]

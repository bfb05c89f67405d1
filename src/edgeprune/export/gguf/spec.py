"""What a GGUF file will say about a model: architecture, widths, RoPE, from its transformers config."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from gguf import GGUFValueType, RopeScalingType

from edgeprune.errors import EdgepruneError
from edgeprune.export.gguf import tables
from edgeprune.export.gguf.layout import LayerPlan, llama3_rope_factors, plan_layers


@dataclass(frozen=True)
class GGUFModelSpec:
    family: str  # transformers model_type the weights follow ("llama", "qwen2", ...)
    plan: LayerPlan
    n_layers: int
    hidden_size: int
    head_dim: int
    vocab_size: int
    context_length: int
    rope_theta: float
    rms_eps: float
    tied: bool
    permute_qk: bool
    rope_kvs: tuple = ()  # extra (key, value, type) pairs for RoPE scaling
    rope_freqs: np.ndarray | None = field(default=None, compare=False)

    @property
    def arch(self) -> str:
        return self.plan.arch

    @property
    def heads(self):
        return self.plan.heads

    @property
    def kv_heads(self):
        return self.plan.kv_heads

    @property
    def ff(self):
        return self.plan.ff

    def kvs(self) -> list[tuple[str, object, GGUFValueType, GGUFValueType | None]]:
        """Architecture metadata as (key, value, type, array element type), in writing order."""
        out = []
        for key, vtype, attr in tables.ARCH_KEYS:
            value = getattr(self, attr)
            key = key.format(arch=self.arch)
            if attr in tables.PER_LAYER_FIELDS:
                if self.plan.per_layer:
                    out.append((key, [int(v) for v in value], GGUFValueType.ARRAY, GGUFValueType.INT32))
                    continue
                value = value[0]
            out.append((key, value, vtype, None))
        out.extend((k.format(arch=self.arch), v, t, None) for k, v, t in self.rope_kvs)
        return out


def _family_of(config) -> str:
    mt = getattr(config, "model_type", None)
    if mt == "edgeprune_llama":
        mt = config.source_model_type or "llama"
    if mt not in tables.FAMILIES:
        known = ", ".join([*tables.FAMILIES, "edgeprune_llama"])
        raise EdgepruneError(f"cannot export {mt!r} models to GGUF: supported are {known}")
    return mt


def _widths(config) -> tuple[list[int], list[int], list[int], int]:
    n = config.num_hidden_layers
    if config.model_type == "edgeprune_llama":
        return config.heads_per_layer(), config.kv_heads_per_layer(), config.intermediate_per_layer(), config.head_dim
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return [heads] * n, [kv] * n, [config.intermediate_size] * n, head_dim


def _rope(config, head_dim: int) -> tuple[float, tuple, np.ndarray | None]:
    params = dict(getattr(config, "rope_parameters", None) or {})
    legacy = getattr(config, "rope_scaling", None)  # transformers < 5 configs
    if isinstance(legacy, dict):
        params = {**legacy, **params}
    theta = float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))
    rope_type = params.get("rope_type", params.get("type", "default")) or "default"
    how = tables.ROPE_TYPES.get(rope_type)
    if how is None:
        raise EdgepruneError(
            f"RoPE scaling {rope_type!r} has no GGUF mapping in edgeprune yet: supported are {', '.join(tables.ROPE_TYPES)}"
        )
    if how == "linear":
        kvs = (
            ("{arch}.rope.scaling.type", RopeScalingType.LINEAR.value, GGUFValueType.STRING),
            ("{arch}.rope.scaling.factor", float(params["factor"]), GGUFValueType.FLOAT32),
        )
        return theta, kvs, None
    if how == "rope_freqs":
        return theta, (), llama3_rope_factors(theta, head_dim, params)
    return theta, (), None


def model_spec(model) -> GGUFModelSpec:
    """Read the model's config into a GGUFModelSpec; unsupported configs raise a one-line error."""
    config = model.config
    family = _family_of(config)
    if getattr(config, "hidden_act", "silu") != "silu":
        raise EdgepruneError(f"cannot export a {family} model with activation {config.hidden_act!r}: llama.cpp's graph is SwiGLU (silu)")
    heads, kv, ff, head_dim = _widths(config)
    plan = plan_layers(heads, kv, ff, tables.FAMILIES[family].uniform_arch)
    permute = tables.PER_LAYER_PERMUTE_QK if plan.per_layer else tables.FAMILIES[family].permute_qk
    theta, rope_kvs, rope_freqs = _rope(config, head_dim)
    embed = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    # Trust the weights over the config: omit output.weight only if it really is the embedding.
    tied = bool(getattr(config, "tie_word_embeddings", False)) and (
        out is None or out.weight is embed or (out.weight.shape == embed.shape and bool((out.weight == embed).all()))
    )
    return GGUFModelSpec(
        family=family,
        plan=plan,
        n_layers=config.num_hidden_layers,
        hidden_size=config.hidden_size,
        head_dim=head_dim,
        vocab_size=int(embed.shape[0]),
        context_length=int(getattr(config, "max_position_embeddings", 2048)),
        rope_theta=theta,
        rms_eps=float(config.rms_norm_eps),
        tied=tied,
        permute_qk=permute,
        rope_kvs=rope_kvs,
        rope_freqs=rope_freqs,
    )

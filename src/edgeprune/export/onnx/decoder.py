"""An export-friendly view of a per-layer-width Llama: flat tensors in, flat tensors out.

``torch.onnx.export`` cannot trace transformers' ``DynamicCache`` object into graph inputs, and
optimum's dummy-input generator assumes one KV-head count for all layers. So this module re-states
the decoder with one explicit ``past_key_values.{i}.key/value`` tensor pair per layer, concatenates
the new keys/values onto them and returns them as ``present.{i}.key/value``. It shares (does not
copy) the weights of the ``EdgepruneLlamaForCausalLM`` it wraps, and reuses its Linear and RMSNorm
modules; only attention, RoPE and the mask are written out here, as plain tensor maths that both
exporters turn into standard ONNX ops.

Layers without attention (0 heads) keep a 0-head KV pair ``[batch, 0, past, head_dim]``: graph
names then stay ``0..n_layers-1`` without gaps (what onnxruntime-genai's ``past_key_values.%d.key``
templates and ``edgeprune inspect`` assume), and the present length stays right for every layer.
"""

from __future__ import annotations

import torch
from torch import nn

# RoPE variants whose inverse frequencies do not depend on the sequence length, so a constant
# `inv_freq` in the graph is exact. "dynamic" and "longrope" rescale with the length: not exported.
STATIC_ROPE_TYPES = ("default", "linear", "llama3", "yarn")


class FlatKVDecoder(nn.Module):
    """``forward(input_ids, attention_mask, position_ids, *past) -> (logits, *present)``.

    ``past`` is flat: key 0, value 0, key 1, value 1, ...; each ``[batch, kv_heads_i, past, head_dim]``.
    ``attention_mask`` is ``[batch, past + seq]`` (1 = attend, 0 = padding), ``position_ids`` is
    ``[batch, seq]``. Prefill is simply ``past = 0``.
    """

    def __init__(self, model):
        super().__init__()
        cfg = model.config
        self.cfg = cfg
        self.lm = model  # registered as a submodule so parameters are found by the exporters
        self.heads = cfg.heads_per_layer()
        self.kv_heads = cfg.kv_heads_per_layer()
        self.head_dim = cfg.head_dim
        self.scaling = cfg.head_dim**-0.5
        rotary = model.model.rotary_emb
        self.register_buffer("inv_freq", rotary.inv_freq.detach().clone().float(), persistent=False)
        self.rope_scaling = float(rotary.attention_scaling)

    def forward(self, input_ids, attention_mask, position_ids, *past):
        lm = self.lm.model
        h = lm.embed_tokens(input_ids)  # (batch, seq, hidden)
        seq = input_ids.shape[1]
        total = attention_mask.shape[1]  # past + seq

        # RoPE, as LlamaRotaryEmbedding: (batch, seq, head_dim/2) -> (batch, 1, seq, head_dim)
        freqs = position_ids[..., None].float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = (emb.cos() * self.rope_scaling).to(h.dtype)[:, None]
        sin = (emb.sin() * self.rope_scaling).to(h.dtype)[:, None]

        # Additive mask shared by all layers, (batch, 1, 1, seq, total): query i (absolute position
        # total-seq+i) sees key j <= it, and only unpadded keys. Combined as booleans first, since
        # adding two finfo.min terms would overflow to -inf and turn padded rows into NaN.
        q_pos = torch.arange(seq, device=h.device) + (total - seq)
        k_pos = torch.arange(total, device=h.device)
        allowed = (k_pos[None, :] <= q_pos[:, None])[None] & (attention_mask[:, None, :] > 0)
        bias = torch.where(allowed, 0.0, torch.finfo(h.dtype).min).to(h.dtype)[:, None, None]

        present = []
        for i, layer in enumerate(lm.layers):
            past_k, past_v = past[2 * i], past[2 * i + 1]
            if layer.self_attn is None:
                # (batch, 0, past, d) ++ (batch, 0, seq, d): keeps this layer's cache length in step
                empty = past_k.new_zeros(past_k.shape[0], 0, seq, self.head_dim)
                present += [torch.cat((past_k, empty), dim=2), torch.cat((past_v, empty), dim=2)]
            else:
                attn_out, k, v = self._attention(layer.self_attn, layer.input_layernorm(h), cos, sin, bias, past_k, past_v, i)
                h = h + attn_out
                present += [k, v]
            if layer.mlp is not None:
                h = h + layer.mlp(layer.post_attention_layernorm(h))
        logits = self.lm.lm_head(lm.norm(h))
        return (logits, *present)

    def _attention(self, attn, x, cos, sin, bias, past_k, past_v, i):
        b, s, _ = x.shape
        nh, nkv, d = self.heads[i], self.kv_heads[i], self.head_dim
        groups = nh // nkv
        # (batch, seq, heads*d) -> (batch, heads, seq, d)
        q = attn.q_proj(x).view(b, s, nh, d).transpose(1, 2)
        k = attn.k_proj(x).view(b, s, nkv, d).transpose(1, 2)
        v = attn.v_proj(x).view(b, s, nkv, d).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        k = torch.cat((past_k, k), dim=2)  # (batch, kv, total, d)
        v = torch.cat((past_v, v), dim=2)
        # GQA without repeating K/V: query head j uses KV head j // groups (transformers' repeat_kv),
        # so (batch, heads, seq, d) -> (batch, kv, groups, seq, d) and K/V broadcast over groups.
        q5 = q.reshape(b, nkv, groups, s, d)
        scores = torch.matmul(q5, k[:, :, None].transpose(-1, -2)) * self.scaling + bias  # (b, kv, g, s, total)
        probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        out = torch.matmul(probs, v[:, :, None])  # (b, kv, g, s, d)
        # (b, kv, g, s, d) -> (b, heads, s, d) -> (b, s, heads*d)
        out = out.reshape(b, nh, s, d).transpose(1, 2).reshape(b, s, nh * d)
        return attn.o_proj(out), k, v


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def example_inputs(config, *, batch: int = 2, seq: int = 3, past: int = 4, dtype=torch.float32):
    """Tracing inputs. Sizes are >= 2 so torch.export does not specialise any dynamic dim to 0 or 1."""
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, config.vocab_size, (batch, seq), generator=g)
    attention_mask = torch.ones(batch, past + seq, dtype=torch.int64)
    position_ids = torch.arange(past, past + seq).expand(batch, seq).contiguous()
    flat = []
    for kv in config.kv_heads_per_layer():
        flat += [torch.randn(batch, kv, past, config.head_dim, generator=g, dtype=dtype) for _ in range(2)]
    return (input_ids, attention_mask, position_ids, *flat)

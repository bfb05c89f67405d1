"""Pure pieces of the GGUF exporter: Q/K permutation, llama.cpp's width limits, types, tables, config."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as T

from edgeprune.errors import EdgepruneError
from edgeprune.export.gguf import tables
from edgeprune.export.gguf.api import GGUFExportConfig, report_path
from edgeprune.export.gguf.kquant import parse_fallbacks
from edgeprune.export.gguf.layout import llama3_rope_factors, permute_qk, plan_layers, tensor_type, unpermute_qk
from edgeprune.export.gguf.vocab import pre_tokenizer_signature
from edgeprune.export.gguf.writer import gguf_name

# -- Q/K permutation against reference RoPE implementations ------------------------------------------


def _rope_rotate_half(x, pos, theta=10000.0):
    """transformers' Llama RoPE on one head vector: dimension i pairs with i + d/2."""
    d = x.shape[-1]
    inv = 1.0 / theta ** (np.arange(0, d, 2) / d)
    ang = np.concatenate([pos * inv, pos * inv])
    rot = np.concatenate([-x[d // 2 :], x[: d // 2]])
    return x * np.cos(ang) + rot * np.sin(ang)


def _rope_interleaved(x, pos, theta=10000.0):
    """ggml's "normal" RoPE (llama, deci): dimension 2i pairs with 2i+1."""
    d = x.shape[-1]
    inv = 1.0 / theta ** (np.arange(0, d, 2) / d)
    c, s = np.cos(pos * inv), np.sin(pos * inv)
    out = x.copy()
    out[0::2] = x[0::2] * c - x[1::2] * s
    out[1::2] = x[0::2] * s + x[1::2] * c
    return out


@pytest.mark.parametrize("n_head,head_dim", [(1, 8), (3, 16), (4, 64)])
def test_permuted_weights_under_interleaved_rope_match_hf_rope(n_head, head_dim):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((n_head * head_dim, 32))
    x = rng.standard_normal(32)
    pos = 7
    hf = np.concatenate([_rope_rotate_half(h, pos) for h in (w @ x).reshape(n_head, head_dim)])
    cpp = np.concatenate([_rope_interleaved(h, pos) for h in (permute_qk(w, n_head) @ x).reshape(n_head, head_dim)])
    # the same rotated vector, its rows in llama.cpp's order: q.k dot products are unchanged
    np.testing.assert_allclose(cpp, permute_qk(hf[:, None], n_head)[:, 0], atol=1e-12)
    q2 = np.concatenate([_rope_rotate_half(h, pos) for h in (w @ x[::-1]).reshape(n_head, head_dim)])
    k2 = np.concatenate([_rope_interleaved(h, pos) for h in (permute_qk(w, n_head) @ x[::-1]).reshape(n_head, head_dim)])
    assert np.dot(hf, q2) == pytest.approx(np.dot(cpp, k2))


def test_permute_index_formula_and_inverse():
    n_head, d = 3, 8
    w = np.arange(n_head * d * 2, dtype=np.float32).reshape(n_head * d, 2)
    p = permute_qk(w, n_head)
    for h in range(n_head):
        for i in range(d // 2):
            np.testing.assert_array_equal(p[h * d + 2 * i], w[h * d + i])
            np.testing.assert_array_equal(p[h * d + 2 * i + 1], w[h * d + d // 2 + i])
    np.testing.assert_array_equal(unpermute_qk(p, n_head), w)
    bias = np.arange(n_head * d, dtype=np.float32)
    np.testing.assert_array_equal(unpermute_qk(permute_qk(bias, n_head), n_head), bias)
    assert permute_qk(w[:0], 0).shape == (0, 2)


def test_llama3_rope_factors_match_transformers():
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}  # fmt: skip
    cfg = LlamaConfig(hidden_size=64, num_attention_heads=2, rope_parameters=rope, max_position_embeddings=512)
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](cfg, "cpu")
    plain = 1.0 / 500000.0 ** (torch.arange(0, 32, 2, dtype=torch.float64) / 32)
    factors = llama3_rope_factors(500000.0, 32, rope)
    np.testing.assert_allclose(plain.numpy() / factors, scaled.double().numpy(), rtol=1e-5)
    assert factors.min() == 1.0 and factors.max() == 8.0  # both ends of the band are present


# -- llama.cpp's width limits ------------------------------------------------------------------------


def test_uniform_widths_keep_the_family_arch():
    plan = plan_layers([4] * 3, [2] * 3, [128] * 3, "llama")
    assert plan.arch == "llama" and not plan.per_layer and plan.zero_mlp_layers == ()


def test_per_layer_widths_become_deci_with_zero_mlp_padding():
    plan = plan_layers([4, 0, 2, 4], [2, 0, 1, 2], [128, 64, 0, 96], "llama")
    assert plan.arch == "deci"
    assert plan.zero_mlp_layers == (2,)  # attention kept, MLP gone
    assert plan.ff == (128, 64, tables.ZERO_MLP_CHANNELS, 96)
    # a layer with neither attention nor MLP is left empty: deci skips it correctly
    assert plan_layers([4, 0], [2, 0], [64, 0], "llama").zero_mlp_layers == ()


@pytest.mark.parametrize(
    "heads,kv,ff,match",
    [
        ([0, 4], [0, 2], [64, 64], "layer 0 has no attention heads"),
        ([4, 3], [2, 2], [64, 64], "layer 1 has 3 heads, not a multiple of its 2 KV heads"),
        ([4, 2], [2, 0], [64, 64], "layer 1 has 2 heads and 0 KV heads"),
        ([4, 2], [2, 1], [64], "per-layer widths disagree"),
    ],
)
def test_width_rules_are_one_line_errors(heads, kv, ff, match):
    with pytest.raises(EdgepruneError, match=match) as err:
        plan_layers(heads, kv, ff, "llama")
    assert "\n" not in str(err.value)


# -- tensor types --------------------------------------------------------------------------------------


def test_norms_and_vectors_stay_f32_and_output_gets_q8_0():
    q4 = tables.QTYPES["q4_0"]
    assert tensor_type("blk.0.attn_norm.weight", (64,), q4, tied=False).ggml == T.F32
    assert tensor_type("blk.0.attn_q.bias", (64,), q4, tied=False).ggml == T.F32
    assert tensor_type("blk.0.attn_q.weight", (64, 64), q4, tied=False).ggml == T.Q4_0
    assert tensor_type("output.weight", (260, 64), q4, tied=False).ggml == T.Q8_0
    assert tensor_type("token_embd.weight", (260, 64), q4, tied=True).ggml == T.Q8_0  # plays the output role
    assert tensor_type("token_embd.weight", (260, 64), q4, tied=False).ggml == T.Q4_0
    assert tensor_type("blk.0.ffn_up.weight", (64, 64), tables.QTYPES["f16"], tied=False).ggml == T.F16


def test_rows_that_do_not_fit_the_block_fall_back_to_f16():
    choice = tensor_type("blk.0.ffn_down.weight", (64, 48), tables.QTYPES["q8_0"], tied=False)
    assert choice.ggml == T.F16 and choice.wanted == T.Q8_0 and choice.is_fallback
    assert "row length 48" in choice.reason
    assert not tensor_type("blk.0.ffn_down.weight", (64, 48), tables.QTYPES["f16"], tied=False).is_fallback


def test_llama_quantize_fallbacks_are_parsed_from_its_log():
    new = (
        "warning: blk.0.ffn_down.weight                - ncols    160 not divisible by 256 (required for type    q4_K)"
        " -> falling back to    q5_0\n[   4/  30] blk.0.attn_k.weight - [64, 32, 1, 1], type = f32, converting to q5_0\n"
    )
    assert parse_fallbacks(new) == [
        {"tensor": "blk.0.ffn_down.weight", "wanted": "Q4_K", "used": "Q5_0", "reason": "row length 160 is not a multiple of 256"}
    ]
    old = (
        "[  12/ 272] blk.0.ffn_down.weight - [ 1536, 576, 1, 1], type = f32, tensor_type_fallback: tensor cols 1536 "
        "x 576 are not divisible by 256, required for q6_K - using fallback quantization q8_0\nconverting to q8_0 .. "
        "[  13/ 272] blk.0.ffn_up.weight - [576, 1536, 1, 1], type = f32, converting to q4_K .."
    )
    assert [f["tensor"] for f in parse_fallbacks(old)] == ["blk.0.ffn_down.weight"]
    assert parse_fallbacks("nothing to see") == []


# -- tables --------------------------------------------------------------------------------------------


def test_tensor_names_are_gguf_py_names_for_llama_and_deci():
    import gguf

    for arch in (gguf.MODEL_ARCH.LLAMA, gguf.MODEL_ARCH.DECI):
        known = {gguf.TENSOR_NAMES[t] for t in gguf.MODEL_TENSORS[arch]}
        for name in [*tables.GLOBAL_TENSORS.values(), *tables.LAYER_TENSORS.values()]:
            assert name.rsplit(".", 1)[0] in known, (arch, name)


def test_hf_names_map_and_unknown_names_fail():
    assert gguf_name("model.layers.12.self_attn.k_proj.bias") == ("blk.12.attn_k.bias", 12)
    assert gguf_name("lm_head.weight") == ("output.weight", None)
    with pytest.raises(EdgepruneError, match="no GGUF name for tensor 'model.layers.0.self_attn.q_norm.weight'"):
        gguf_name("model.layers.0.self_attn.q_norm.weight")


def test_pre_tokenizer_signatures():
    smollm = {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True},
              {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}  # fmt: skip
    assert tables.PRE_TOKENIZERS[pre_tokenizer_signature(smollm)] == "smollm"
    gpt2 = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    assert tables.PRE_TOKENIZERS[pre_tokenizer_signature(gpt2)] == "gpt-2"
    assert pre_tokenizer_signature({"type": "Whitespace"}) not in tables.PRE_TOKENIZERS


# -- config ----------------------------------------------------------------------------------------------


def test_config_is_strict_and_round_trips():
    cfg = GGUFExportConfig(qtype="Q8_0")
    assert cfg.qtype == "q8_0"
    assert GGUFExportConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(EdgepruneError, match=r"unknown key 'qtpye' \(did you mean 'qtype'\?\) for step GGUF export"):
        GGUFExportConfig.from_dict({"qtpye": "q8_0"})
    with pytest.raises(EdgepruneError, match="did you mean 'q4_0'"):
        GGUFExportConfig(qtype="q4_00")
    with pytest.raises(EdgepruneError, match="verify must be"):
        GGUFExportConfig(verify="yes")
    with pytest.raises(AttributeError):
        cfg.qtype = "f32"  # frozen


def test_report_path_sits_beside_the_file(tmp_path):
    assert report_path(tmp_path / "m.gguf") == tmp_path / "m.report.json"
    odd = tmp_path / "m.report.json"
    assert report_path(odd) != odd and report_path(odd).parent == tmp_path  # never the model file itself

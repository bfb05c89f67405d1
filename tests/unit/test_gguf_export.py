"""GGUF export of tiny models, run by llama.cpp itself: uniform (llama), per-layer (deci), families,
RoPE scaling, tokenizers and K-quants. Files without a tokenizer use ``no_vocab`` (llama.cpp runs on ids)."""

from __future__ import annotations

import json

import pytest

from edgeprune.export.gguf import export_gguf
from tests.tiny import VOCAB, _init_, tiny_llama, tiny_mistral, tiny_per_layer, tiny_qwen2
from tests.unit.gguf_helpers import (
    bpe_tokenizer,
    gguf_values,
    llama_cpp_vs_torch,
    llama_quantize_stand_in,
    spm_tokenizer,
    tensor_names,
)

IDS = [3, 17, 200, 45, 99, 12, 250, 7, 64, 128, 5, 33]


@pytest.mark.parametrize("qtype", ["f32", "f16", "q8_0", "q4_0"])
def test_uniform_llama_is_written_as_llama_and_verified(tmp_path, qtype):
    model = tiny_llama()
    out = tmp_path / "m.gguf"
    report = export_gguf(model, None, out, qtype=qtype, progress=False)
    assert out.is_file() and report.arch == "llama" and report.verified
    assert report.bytes == out.stat().st_size
    assert json.loads(report.report_path.read_text()) == json.loads(report.to_json())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf", "m.report.json"]  # no temporary left
    v = report.verify
    assert v["layout"]["rel_diff"] < 1e-4 and v["layout"]["top1_agreement"] == 1.0
    if qtype == "f32":
        assert v["logits_vs_model"]["top1_agreement"] == 1.0
        assert v["weight_rel_rms_error"]["F32"] == 0.0
        assert llama_cpp_vs_torch(out, model, IDS) < 0.02  # logits are O(5)
    if qtype == "q4_0":
        assert report.tensor_types["Q8_0"] == 1  # output.weight, as llama-quantize would
        assert 0.0 < v["weight_rel_rms_error"]["Q4_0"] < 0.2


def test_per_layer_model_is_written_as_deci(tmp_path):
    model = tiny_per_layer()  # layer 1: no attention; layer 2: attention but no MLP
    out = tmp_path / "p.gguf"
    report = export_gguf(model, None, out, qtype="f32", progress=False)
    assert report.arch == "deci" and report.verified
    heads, kv, ff, key_len = gguf_values(
        out, "deci.attention.head_count", "deci.attention.head_count_kv", "deci.feed_forward_length", "deci.attention.key_length"
    )
    assert (heads, kv, ff, key_len) == ([4, 0, 2, 4], [2, 0, 1, 2], [128, 64, 32, 96], 16)
    assert report.zero_mlp_layers == [2] and "zero weights" in report.notes[0]
    names = tensor_names(out)
    assert "blk.1.attn_q.weight" not in names and "blk.1.attn_norm.weight" not in names
    assert "blk.2.ffn_down.weight" in names
    # exact identity of the zero MLP: llama.cpp agrees with torch, whose layer 2 has no MLP at all
    assert llama_cpp_vs_torch(out, model, IDS) < 0.02


def test_per_layer_quantized_and_uniform_per_layer_model(tmp_path):
    from edgeprune.models import to_per_layer

    report = export_gguf(tiny_per_layer(seed=1), None, tmp_path / "q.gguf", qtype="q8_0", progress=False)
    assert report.arch == "deci" and report.verified
    # a per-layer model whose layers happen to be equal is plain llama (widest compatibility)
    uniform = export_gguf(to_per_layer(tiny_llama()), None, tmp_path / "u.gguf", qtype="f16", progress=False)
    assert uniform.arch == "llama" and uniform.verified


@pytest.mark.parametrize(
    "build,arch",
    [(tiny_qwen2, "qwen2"), (tiny_mistral, "llama"), (lambda: tiny_llama(attention_bias=True, mlp_bias=True), "llama")],
)
def test_families_and_biases(tmp_path, build, arch):
    model = build()
    report = export_gguf(model, None, tmp_path / "f.gguf", qtype="f32", progress=False)
    assert report.arch == arch and report.verified
    assert llama_cpp_vs_torch(tmp_path / "f.gguf", model, IDS) < 0.02


def test_per_layer_qwen2_keeps_biases_in_deci(tmp_path):
    from edgeprune.models import EdgepruneLlamaConfig, EdgepruneLlamaForCausalLM

    cfg = EdgepruneLlamaConfig(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=3, num_attention_heads=[4, 2, 4],
        num_key_value_heads=[2, 1, 2], intermediate_size=[128, 64, 96], head_dim=16, rms_norm_eps=1e-5,
        attention_bias=True, o_proj_bias=False, source_model_type="qwen2", tie_word_embeddings=True,
    )  # fmt: skip
    model = _init_(EdgepruneLlamaForCausalLM(cfg), 0)
    report = export_gguf(model, None, tmp_path / "q.gguf", qtype="f32", progress=False)
    assert report.arch == "deci" and report.tied_embeddings and report.verified
    assert "blk.0.attn_q.bias" in tensor_names(tmp_path / "q.gguf")
    assert "output.weight" not in tensor_names(tmp_path / "q.gguf")


@pytest.mark.parametrize(
    "rope",
    [
        {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
         "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
        {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0},
    ],
)  # fmt: skip
def test_rope_scaling(tmp_path, rope):
    model = tiny_llama(rope_parameters=rope)
    out = tmp_path / "r.gguf"
    report = export_gguf(model, None, out, qtype="f32", progress=False)
    assert report.verified
    assert ("rope_freqs.weight" in tensor_names(out)) == (rope["rope_type"] == "llama3")
    assert llama_cpp_vs_torch(out, model, list(range(1, 40))) < 0.02  # positions beyond the old context


def test_tied_embeddings_omit_output(tmp_path):
    model = tiny_llama(tie_word_embeddings=True)
    report = export_gguf(model, None, tmp_path / "t.gguf", qtype="q4_0", progress=False)
    assert report.tied_embeddings and report.verified
    names = tensor_names(tmp_path / "t.gguf")
    assert "output.weight" not in names and "token_embd.weight" in names


def test_bpe_tokenizer_is_carried_and_tokenizes_like_transformers(tmp_path):
    tok = bpe_tokenizer()
    model = tiny_llama(vocab_size=len(tok), bos_token_id=0, eos_token_id=1, pad_token_id=2)
    report = export_gguf(model, tok, tmp_path / "b.gguf", qtype="f16", progress=False)
    assert report.tokenizer == "hf:gpt2/gpt-2"
    t = report.verify["tokenization"]
    assert t["identical"] == t["lines"] >= 8 and t["with_special_tokens"] is True

    # a file made from that GGUF copies its tokenizer keys verbatim
    copy = export_gguf(model, tok, tmp_path / "c.gguf", qtype="f32", source_gguf=tmp_path / "b.gguf", progress=False)
    assert copy.tokenizer == "source-gguf" and copy.verify["tokenization"]["identical"] == t["lines"]
    keys = ["tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.pre", "tokenizer.ggml.bos_token_id"]
    assert gguf_values(tmp_path / "b.gguf", *keys) == gguf_values(tmp_path / "c.gguf", *keys)


def test_sentencepiece_tokenizer_is_carried(tmp_path):
    tok = spm_tokenizer(tmp_path)
    model = tiny_llama(vocab_size=len(tok), bos_token_id=1, eos_token_id=2, pad_token_id=None)
    report = export_gguf(model, tok, tmp_path / "s.gguf", qtype="f32", progress=False)
    assert report.tokenizer == "hf:llama/default" and report.verified
    t = report.verify["tokenization"]
    assert t["identical"] == t["lines"] >= 5
    assert any("space prefix" in n for n in report.notes)  # the lines it cannot match are named


def test_k_quant_through_llama_quantize(tmp_path):
    binary = llama_quantize_stand_in(tmp_path)
    model = tiny_per_layer(ff=(128, 64, 0, 96))
    report = export_gguf(model, None, tmp_path / "k.gguf", qtype="q4_k_m", llama_quantize=binary, progress=False)
    assert report.verified and report.route.startswith("llama-quantize")
    # hidden size 64 is no multiple of 256: llama.cpp falls back, and the report lists each tensor
    assert report.fallbacks and all(f["wanted"] in ("Q4_K", "Q6_K") for f in report.fallbacks)
    assert {"Q5_0", "Q8_0"} <= set(report.tensor_types)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.gguf", "k.report.json", "llama-quantize"]


def test_k_quant_with_no_binary_uses_llama_cpp_pythons_quantizer(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no llama-quantize anywhere
    model = tiny_per_layer(ff=(128, 64, 0, 96))
    report = export_gguf(model, None, tmp_path / "k.gguf", qtype="q4_k_m", progress=False)
    assert report.verified and "llama-cpp-python" in report.route
    # the same quantizer as the binary: the same fallbacks, read from its log
    assert report.fallbacks and all(f["wanted"] in ("Q4_K", "Q6_K") for f in report.fallbacks)
    assert {"Q5_0", "Q8_0"} <= set(report.tensor_types)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.gguf", "k.report.json"]


def test_no_verify_skips_llama_cpp(tmp_path):
    report = export_gguf(tiny_llama(), None, tmp_path / "n.gguf", qtype="q5_1", verify=False, progress=False)
    assert report.verify is None and not report.verified
    assert report.tensor_types == {"F32": 7, "Q5_1": 22, "Q8_0": 1}
    assert report.bytes == (tmp_path / "n.gguf").stat().st_size


def test_bfloat16_model_is_checked_against_float32_arithmetic(tmp_path):
    import torch

    report = export_gguf(tiny_llama().to(torch.bfloat16), None, tmp_path / "b.gguf", qtype="bf16", progress=False)
    assert report.verified and report.verify["weight_rel_rms_error"]["BF16"] == 0.0  # bf16 weights stored as they are
    assert report.verify["layout"]["rel_diff"] < 1e-4

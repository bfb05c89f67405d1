"""The per-layer-width model: validation, exact equivalence to Llama/Qwen2/Mistral, KV cache."""

from __future__ import annotations

import pytest
import torch

from edgeprune.models import EdgepruneLlamaConfig, to_per_layer
from tests.tiny import VOCAB, tiny_llama, tiny_mistral, tiny_per_layer, tiny_qwen2

IDS = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(1))


def _cfg(**kw):
    base = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, head_dim=16)
    base.update(kw)
    return EdgepruneLlamaConfig(**base)


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(num_attention_heads=[4, 4, 4], num_key_value_heads=2, intermediate_size=64), "3 entries"),
        (dict(num_attention_heads=[4, 3], num_key_value_heads=[2, 2], intermediate_size=64), "not a multiple"),
        (dict(num_attention_heads=[4, 4], num_key_value_heads=[2, 2], intermediate_size=[64, -1]), "non-negative"),
        (dict(num_attention_heads=[4, 0], num_key_value_heads=[2, 1], intermediate_size=64), "both must be 0"),
        (dict(num_attention_heads=[4, 4], num_key_value_heads=[2, 2], intermediate_size="64"), "int or a list"),
    ],
)
def test_per_layer_lists_are_validated(kw, message):
    with pytest.raises(ValueError, match=message):
        _cfg(**kw)


def test_config_broadcasts_ints_and_reports_uniformity():
    cfg = _cfg(num_attention_heads=4, num_key_value_heads=2, intermediate_size=[64, 32])
    assert cfg.heads_per_layer() == [4, 4]
    assert cfg.kv_heads_per_layer() == [2, 2]
    assert not cfg.is_uniform


@pytest.mark.parametrize(
    "make",
    [tiny_llama, lambda: tiny_llama(tie_word_embeddings=True, attention_bias=True), tiny_qwen2, tiny_mistral],
    ids=["llama", "llama-tied-bias", "qwen2", "mistral"],
)
def test_conversion_keeps_logits(make):
    src = make()
    dst = to_per_layer(src)
    assert dst.config.model_type == "edgeprune_llama"
    with torch.no_grad():
        ref, out = src(IDS).logits, dst(IDS).logits
    assert ref.abs().max() > 1.0  # the tiny model produces non-trivial logits
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_conversion_keeps_greedy_generation():
    src = tiny_llama()
    dst = to_per_layer(src)
    kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=258)
    with torch.no_grad():
        a = src.generate(IDS[:1], attention_mask=torch.ones_like(IDS[:1]), **kw)
        b = dst.generate(IDS[:1], attention_mask=torch.ones_like(IDS[:1]), **kw)
    assert torch.equal(a, b)


def test_layers_without_attention_or_mlp_are_skipped():
    model = tiny_per_layer()
    layers = model.model.layers
    assert layers[1].self_attn is None and layers[1].input_layernorm is None
    assert layers[2].mlp is None and layers[2].post_attention_layernorm is None
    assert layers[0].self_attn.q_proj.out_features == 4 * 16
    assert layers[3].mlp.down_proj.in_features == 96


def test_kv_cache_decode_matches_full_forward():
    model = tiny_per_layer()
    with torch.no_grad():
        full = model(IDS).logits
        out = model(IDS[:, :8], use_cache=True)
        cache, steps = out.cache, [out.logits]
        for t in range(8, IDS.shape[1]):
            out = model(IDS[:, t : t + 1], cache=cache, use_cache=True)
            cache = out.cache
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.get_seq_length() == IDS.shape[1]


def test_kv_cache_under_its_pre_5_24_name():
    # an app's older transformers passes the cache as past_key_values: the saved model takes it
    model = tiny_per_layer()
    with torch.no_grad():
        full = model(IDS).logits
        cache = model(IDS[:, :8], use_cache=True).cache
        out = model(IDS[:, 8:9], past_key_values=cache, use_cache=True)
    torch.testing.assert_close(out.logits, full[:, 8:9], atol=1e-5, rtol=1e-5)
    assert out.cache is cache and cache.get_seq_length() == 9


def test_generate_with_cache_equals_without():
    model = tiny_per_layer()
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=258)
    with torch.no_grad():
        a = model.generate(IDS[:1], attention_mask=torch.ones_like(IDS[:1]), use_cache=True, **kw)
        b = model.generate(IDS[:1], attention_mask=torch.ones_like(IDS[:1]), use_cache=False, **kw)
    assert a.shape[1] == IDS.shape[1] + 6
    assert torch.equal(a, b)


def test_padded_batch_matches_unpadded_rows():
    model = tiny_per_layer()
    short = IDS[1:, :7]
    mask = torch.ones(2, 12, dtype=torch.long)
    padded = IDS.clone()
    padded[1, :5] = 258  # left padding
    padded[1, 5:] = short
    mask[1, :5] = 0
    with torch.no_grad():
        batched = model(padded, attention_mask=mask).logits
        alone = model(short).logits
    torch.testing.assert_close(batched[1, 5:], alone[0], atol=1e-5, rtol=1e-5)

"""The onnxruntime generation loop: greedy equals torch's generate, seeded sampling repeats, EOS stops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeprune.errors import EdgepruneError
from edgeprune.export.onnx import export_onnx
from edgeprune.runtime.ort_generate import OrtDecoder, generate
from edgeprune.runtime.sampling import next_tokens
from tests.tiny import tiny_per_layer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = tiny_per_layer(seed=2)
    out = tmp_path_factory.mktemp("gen") / "onnx"
    export_onnx(model, out, exporter="torchscript", verify=False)
    return model, OrtDecoder(out, threads=1)


def test_decoder_reads_per_layer_kv_heads(exported):
    model, dec = exported
    assert dec.kv_heads == [2, 0, 1, 2] and dec.head_dim == 16 and dec.n_layers == 4
    assert dec.metadata["edgeprune.kv_heads"] == "2,0,1,2"


@pytest.mark.parametrize("io_binding", [True, False])
def test_greedy_equals_torch_generate(exported, io_binding):
    model, dec = exported
    ids = torch.randint(0, 256, (2, 6), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                             pad_token_id=258, eos_token_id=None)[:, 6:]  # fmt: skip
    result = generate(dec, ids.numpy(), max_new_tokens=12, io_binding=io_binding)
    assert result.tokens.shape == (2, 12) and result.new_tokens == 12
    np.testing.assert_array_equal(result.tokens, ref.numpy())
    assert result.prefill_tps > 0 and result.decode_tps > 0


def test_left_padded_batch_generates_like_single_prompts(exported):
    _, dec = exported
    a, b = [1, 2, 3, 4, 5, 6, 7], [9, 8, 7]
    both = generate(dec, [a, b], max_new_tokens=6, pad_token_id=258)
    np.testing.assert_array_equal(both.tokens[0], generate(dec, [a], max_new_tokens=6).tokens[0])
    np.testing.assert_array_equal(both.tokens[1], generate(dec, [b], max_new_tokens=6).tokens[0])


def test_seeded_sampling_repeats_and_differs_across_seeds(exported):
    _, dec = exported
    kw = dict(max_new_tokens=10, do_sample=True, temperature=1.5, top_k=100, top_p=0.95)
    first = generate(dec, [[1, 2, 3]], seed=11, **kw).tokens
    assert np.array_equal(first, generate(dec, [[1, 2, 3]], seed=11, **kw).tokens)
    others = [generate(dec, [[1, 2, 3]], seed=s, **kw).tokens for s in (12, 13, 14)]
    assert any(not np.array_equal(first, o) for o in others)


def test_eos_stops_a_row_and_pads_it(exported):
    _, dec = exported
    greedy = generate(dec, [[1, 2, 3]], max_new_tokens=8).tokens[0]
    eos = int(greedy[2])
    stopped = generate(dec, [[1, 2, 3]], max_new_tokens=8, eos_token_id=eos, pad_token_id=258)
    first_eos = int(np.argmax(greedy == eos))
    assert stopped.new_tokens == first_eos + 1 and stopped.tokens[0, -1] == eos


def test_bad_generation_arguments(exported):
    _, dec = exported
    with pytest.raises(EdgepruneError, match="needs a seed"):
        generate(dec, [[1, 2]], do_sample=True)
    with pytest.raises(EdgepruneError, match="max_new_tokens must be >= 1"):
        generate(dec, [[1, 2]], max_new_tokens=0)
    with pytest.raises(EdgepruneError, match="at least one token"):
        generate(dec, [[]])


def test_missing_model_is_one_line(tmp_path):
    with pytest.raises(EdgepruneError, match="no ONNX model at"):
        OrtDecoder(tmp_path)


# -- sampling maths -------------------------------------------------------------------------------


def test_top_k_1_and_tiny_top_p_are_greedy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 50)).astype(np.float32)
    greedy = next_tokens(logits)
    np.testing.assert_array_equal(next_tokens(logits, do_sample=True, top_k=1, rng=rng), greedy)
    np.testing.assert_array_equal(next_tokens(logits, do_sample=True, top_p=1e-6, rng=rng), greedy)


def test_sampling_follows_the_distribution():
    logits = np.log(np.array([[0.7, 0.2, 0.1, 1e-9]], dtype=np.float32)).repeat(4000, 0)
    draws = next_tokens(logits, do_sample=True, rng=np.random.default_rng(1))
    freq = np.bincount(draws, minlength=4) / len(draws)
    np.testing.assert_allclose(freq[:3], [0.7, 0.2, 0.1], atol=0.03)
    assert freq[3] == 0
    top2 = next_tokens(logits, do_sample=True, top_k=2, rng=np.random.default_rng(1))
    assert set(np.unique(top2)) == {0, 1}


def test_onnxruntime_genai_runs_the_export_like_our_loop(tmp_path):
    import onnxruntime_genai as og  # a dependency: its absence is a failure, not a skip
    from tests.tiny import tiny_per_layer, tiny_tokenizer

    # per-layer KV heads (no attention-free layer: genai cannot feed 0-head inputs)
    model = tiny_per_layer(seed=4, heads=(4, 2, 2, 4), kv=(2, 1, 1, 2), ff=(128, 64, 32, 96))
    out = tmp_path / "onnx"
    export_onnx(model, out, tokenizer=tiny_tokenizer(), exporter="torchscript", verify=False)
    prompt = [1, 2, 3, 4, 5, 6]
    genai_model = og.Model(str(out))
    params = og.GeneratorParams(genai_model)
    params.set_search_options(max_length=len(prompt) + 10, do_sample=False)
    gen = og.Generator(genai_model, params)
    gen.append_tokens(prompt)
    while not gen.is_done():
        gen.generate_next_token()
    theirs = [int(t) for t in gen.get_sequence(0)][len(prompt):]
    ours = generate(OrtDecoder(out, threads=1), [prompt], max_new_tokens=10).tokens[0].tolist()
    assert theirs == ours

"""The default model (SmolLM2-135M) exported to ONNX: onnxruntime matches torch on real text.

The TorchScript exporter is used here because it exports this model in ~10 s against ~60 s for
dynamo (the default, covered on tiny models in the unit tests and run on this model by
bench/onnx_roundtrip.py); the graph's maths is the same module either way.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import DynamicCache

from edgeprune.export.onnx import export_onnx, names
from edgeprune.runtime.ort_generate import OrtDecoder, generate

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
TEXT = (
    "The tower is 324 metres tall, about the same height as an 81-storey building, and the tallest "
    "structure in Paris. Its base is square, measuring 125 metres on each side."
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from edgeprune.models import load

    model, tok = load("smollm2-135m")
    out = tmp_path_factory.mktemp("onnx") / "smollm2"
    report = export_onnx(model, out, tokenizer=tok, exporter="torchscript", threads=1)
    return model, tok, out, report


def _rel(a, b) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_export_is_verified_within_1e4(exported):
    _, _, out, report = exported
    assert report.num_layers == 30 and report.kv_heads == [3] * 30 and report.head_dim == 64
    assert report.verify.prefill_max_rel_diff <= 1e-4 and report.verify.decode_max_rel_diff <= 1e-4
    assert (out / names.GENAI_CONFIG_FILE).is_file() and (out / "tokenizer.json").is_file()


def test_real_text_prefill_and_decode_match_torch(exported):
    model, tok, out, _ = exported
    ids = tok(TEXT, return_tensors="pt", add_special_tokens=False)["input_ids"]  # (1, seq)
    dec = OrtDecoder(out, threads=1)
    seq = ids.shape[1]
    logits, present = dec.forward(ids.numpy(), np.ones((1, seq), np.int64), np.arange(seq)[None])
    with torch.no_grad():
        ref = model(ids, cache=DynamicCache(config=model.config), use_cache=True)
    assert _rel(logits, ref.logits.numpy()) <= 1e-4
    past = seq
    for _ in range(8):
        nxt = ref.logits[:, -1:].argmax(-1)
        logits, present = dec.forward(nxt.numpy(), np.ones((1, past + 1), np.int64), [[past]], present)
        past += 1
        with torch.no_grad():
            ref = model(nxt, cache=ref.cache, use_cache=True)
        assert _rel(logits, ref.logits.numpy()) <= 1e-4


def test_greedy_generation_equals_torch(exported):
    model, tok, out, _ = exported
    ids = tok(TEXT[:80], return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False,
                             eos_token_id=None, pad_token_id=tok.eos_token_id)[0, ids.shape[1]:]  # fmt: skip
    result = generate(OrtDecoder(out, threads=1), ids.numpy(), max_new_tokens=16)
    assert result.tokens[0].tolist() == ref.tolist()


def _nll(logits: np.ndarray, ids: np.ndarray) -> float:
    """Mean -log p(ids[i+1] | ids[:i+1]) from (seq, vocab) logits."""
    lg = logits[:-1].astype(np.float64)
    lg -= lg.max(-1, keepdims=True)
    logp = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
    return float(-logp[np.arange(len(ids) - 1), ids[1:]].mean())


def test_int4_default_mix_stays_close_to_torch(exported, tmp_path):
    model, tok, _, _ = exported
    report = export_onnx(model, tmp_path / "int4", quant="int4", exporter="torchscript", threads=1)
    # 30 layers: the outer 5 on each side (ceil(30 / 6)) and the 20 middle down_proj at 8 bits, lm_head 8 bits
    assert report.quantization["matmuls"] == {"int4": 20 * 6, "int8": 10 * 7 + 20 + 1, "fp32": 0}
    assert report.quantization["embedding"] == "int8"
    ids = tok(TEXT, return_tensors="np", add_special_tokens=False)["input_ids"]  # (1, seq)
    seq = ids.shape[1]
    logits, _ = OrtDecoder(tmp_path / "int4", threads=1).forward(ids, np.ones((1, seq), np.int64), np.arange(seq)[None])
    with torch.no_grad():
        ref = model(torch.from_numpy(ids)).logits[0].numpy()
    assert _nll(logits[0], ids[0]) <= 1.10 * _nll(ref, ids[0])
    assert (logits[0].argmax(-1) == ref.argmax(-1)).mean() >= 0.75

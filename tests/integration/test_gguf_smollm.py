"""The real default model (SmolLM2-135M) exported to GGUF and run by llama.cpp."""

from __future__ import annotations

import pytest

from edgeprune.data.paths import EMBEDDED_DIR
from edgeprune.export.gguf import export_gguf

WIKI = EMBEDDED_DIR / "wikitext-2-raw" / "wiki.test.raw"  # the copy edgeprune ships


def wiki_lines(n: int) -> list[str]:
    lines = [ln for ln in WIKI.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return lines[:n]


@pytest.fixture(scope="module")
def f16_export(default_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf") / "smollm2-f16.gguf"
    report = export_gguf(default_model.model, default_model.tokenizer, out, qtype="f16", source_gguf=default_model.path, progress=False)
    return out, report


def test_f16_export_runs_in_llama_cpp_like_torch(f16_export):
    out, report = f16_export
    assert report.arch == "llama" and report.verified and report.tokenizer == "source-gguf"
    assert report.tied_embeddings and report.n_layers == 30 and report.heads == [9] * 30
    lm = report.verify["logits_vs_model"]
    assert lm["top1_agreement"] == 1.0 and lm["rel_diff"] < 0.005  # logits reach ~40; F16 rounding
    assert 250e6 < report.bytes < 290e6


def test_tokenization_matches_transformers_on_wikitext(f16_export, default_model):
    from edgeprune.export.gguf.llamacpp import llama_model

    out, _ = f16_export
    tok = default_model.tokenizer
    lines = wiki_lines(300)
    with llama_model(out, vocab_only=True, n_ctx=64) as llm:
        cpp = [llm.tokenize(ln.encode("utf-8"), add_bos=False, special=True) for ln in lines]
    mismatched = [i for i, (ln, ids) in enumerate(zip(lines, cpp)) if tok.encode(ln, add_special_tokens=False) != ids]
    assert mismatched == []


def test_q8_0_export(default_model, tmp_path):
    report = export_gguf(
        default_model.model, default_model.tokenizer, tmp_path / "q8.gguf", qtype="q8_0", source_gguf=default_model.path,
        progress=False,
    )  # fmt: skip
    assert report.verified and report.fallbacks == []
    assert report.verify["logits_vs_model"]["top1_agreement"] >= 0.95
    assert report.tensor_types == {"Q8_0": 211, "F32": 61}

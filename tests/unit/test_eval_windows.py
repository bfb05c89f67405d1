"""Perplexity window arithmetic and the perplexity definition, on hand-checkable numbers."""

from __future__ import annotations

import math

import pytest

from edgeprune.errors import EdgepruneError
from edgeprune.eval.perplexity import PerplexityConfig, evaluate_perplexity
from edgeprune.eval.windows import plan_batches, predicted_tokens, window_spans
from tests.unit.eval_helpers import ConstantBackend


def test_windows_drop_the_partial_last_window_by_default():
    spans = window_spans(10, 4)
    assert spans == [(0, 4), (4, 8)]  # tokens 8 and 9 are in no window
    assert predicted_tokens(spans) == 2 * 3  # the first token of each window has no context


def test_windows_keep_partial_scores_the_rest_as_a_shorter_window():
    spans = window_spans(10, 4, keep_partial=True)
    assert spans == [(0, 4), (4, 8), (8, 10)]
    assert predicted_tokens(spans) == 3 + 3 + 1
    # a 1-token remainder predicts nothing, so it is not a window even when kept
    assert window_spans(9, 4, keep_partial=True) == [(0, 4), (4, 8)]
    assert window_spans(8, 4, keep_partial=True) == window_spans(8, 4) == [(0, 4), (4, 8)]
    assert window_spans(3, 4) == []


def test_window_errors():
    with pytest.raises(ValueError):
        window_spans(10, 1)
    with pytest.raises(ValueError):
        window_spans(-1, 4)


def test_plan_batches_respects_the_budget_and_covers_every_item_once():
    lengths = [5, 1, 9, 3, 9, 2, 30]
    batches = plan_batches(lengths, 18)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert batches[0] == [6]  # longer than the budget: alone
    for b in batches[1:]:
        assert len(b) * max(lengths[i] for i in b) <= 18
    assert batches[1] == [2, 4]  # longest first, ties in index order
    assert plan_batches([4] * 10, 100, max_rows=3)[0] == [0, 1, 2]


def _corpus(tmp_path, n_chars: int):
    path = tmp_path / "corpus.txt"
    path.write_text("abcdefghij"[:10] * (n_chars // 10) + "abcdefghij"[: n_chars % 10], encoding="utf-8")
    return path


def test_perplexity_counts_windows_tokens_and_the_dropped_rest(tmp_path):
    backend = ConstantBackend(per_token=-math.log(7.0))  # uniform over 7 outcomes -> ppl 7
    r = evaluate_perplexity(backend, PerplexityConfig(data=str(_corpus(tmp_path, 23)), seq_len=5), progress=False)
    assert (r.windows, r.tokens, r.corpus_tokens, r.dropped_tokens, r.last_window) == (4, 16, 23, 3, "dropped")
    assert r.ppl == pytest.approx(7.0)
    assert r.nll == pytest.approx(math.log(7.0))
    assert r.tokenizer == "chars" and r.seq_len == 5 and len(r.data_sha256) == 64
    # batches follow the backend's token budget: 100 tokens -> 20 windows of 5 per call at most
    assert backend.calls == [[5, 5, 5, 5]]


def test_perplexity_keep_partial_and_limit_tokens(tmp_path):
    corpus = str(_corpus(tmp_path, 23))
    r = evaluate_perplexity(ConstantBackend(), PerplexityConfig(data=corpus, seq_len=5, keep_partial=True), progress=False)
    assert (r.windows, r.tokens, r.dropped_tokens, r.last_window) == (5, 16 + 2, 0, "kept")
    r = evaluate_perplexity(ConstantBackend(), PerplexityConfig(data=corpus, seq_len=5, limit_tokens=12), progress=False)
    assert (r.windows, r.tokens, r.dropped_tokens, r.limit_tokens) == (2, 8, 23 - 10, 12)
    r = evaluate_perplexity(ConstantBackend(), PerplexityConfig(data=corpus, seq_len=5, limit_tokens=10), progress=False)
    assert r.last_window == "none" and r.dropped_tokens == 13


def test_perplexity_weights_windows_by_tokens(tmp_path):
    """A kept short window counts per token, not per window."""

    class TwoLevel(ConstantBackend):
        def token_logprobs(self, seqs):
            import numpy as np

            return [np.full(len(s) - 1, -1.0 if len(s) == 5 else -3.0) for s in seqs]

    r = evaluate_perplexity(TwoLevel(), PerplexityConfig(data=str(_corpus(tmp_path, 13)), seq_len=5, keep_partial=True),
                            progress=False)  # fmt: skip
    # windows of 5, 5 and 3 tokens -> 4 + 4 tokens at nll 1 and 2 tokens at nll 3
    assert r.ppl == pytest.approx(math.exp((8 * 1.0 + 2 * 3.0) / 10))


def test_perplexity_bad_input(tmp_path):
    corpus = str(_corpus(tmp_path, 23))
    with pytest.raises(EdgepruneError, match="longer than the model's context"):
        evaluate_perplexity(ConstantBackend(), PerplexityConfig(data=corpus, seq_len=65), progress=False)
    with pytest.raises(EdgepruneError, match="no such text file"):
        evaluate_perplexity(ConstantBackend(), PerplexityConfig(data=str(tmp_path / "none.txt"), seq_len=4), progress=False)
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(EdgepruneError, match="empty"):
        evaluate_perplexity(ConstantBackend(), PerplexityConfig(data=str(empty), seq_len=4), progress=False)
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00abc")
    with pytest.raises(EdgepruneError, match="not UTF-8"):
        evaluate_perplexity(ConstantBackend(), PerplexityConfig(data=str(binary), seq_len=4), progress=False)
    with pytest.raises(EdgepruneError, match="fewer than one window"):
        evaluate_perplexity(ConstantBackend(), PerplexityConfig(data=str(_corpus(tmp_path, 23)), seq_len=30), progress=False)
    with pytest.raises(EdgepruneError, match="seq_len"):
        PerplexityConfig(seq_len=1)
    with pytest.raises(EdgepruneError, match="limit_tokens"):
        PerplexityConfig(limit_tokens=0)


def test_length_buckets_bound_the_padding():
    from edgeprune.eval.windows import length_buckets

    lengths = [40, 10, 38, 12, 39, 11, 9, 41, 0]
    buckets = length_buckets(lengths, max_pad_ratio=1.1, min_rows=2)
    assert sorted(i for b in buckets for i in b) == list(range(len(lengths)))
    assert buckets == [[7, 0, 4, 2], [3, 5, 1], [6, 8]]  # the ~40-token rows together, longest first
    for b in buckets:
        if len(b) > 2:
            assert len(b) * max(lengths[i] for i in b) <= 1.1 * sum(lengths[i] for i in b)
    assert length_buckets([5, 50], min_rows=4) == [[1, 0]]  # few rows: one forward beats less padding


def test_named_corpus_without_local_data_falls_back_to_the_hub_cache_or_says_what_to_do(tmp_path, monkeypatch):
    from edgeprune.data import corpus_path
    from edgeprune.data.text import CORPORA
    from edgeprune.errors import EdgepruneError

    monkeypatch.setenv("EDGEPRUNE_DATA", str(tmp_path / "nowhere"))  # no local copy
    monkeypatch.setenv("EDGEPRUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EdgepruneError, match="EDGEPRUNE_DATA.*cannot be fetched from the hub while HF_HUB_OFFLINE"):
        corpus_path("wikitext2")
    cached = tmp_path / "cache" / "data" / CORPORA["wikitext2"]  # what an online run leaves behind
    cached.parent.mkdir(parents=True)
    cached.write_text(" = Title = \n")
    assert corpus_path("wikitext2") == cached

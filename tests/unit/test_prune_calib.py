"""Calibration windows: from text, from the model itself (seeded, cached), never from the evaluation set."""

from __future__ import annotations

import shutil

import pytest
import torch

from edgeprune.data.calib import TokenWindows, calibration_windows, text_windows
from edgeprune.errors import EdgepruneError
from edgeprune.models import to_per_layer
from tests.prune_helpers import one_thread  # noqa: F401  (autouse fixture)
from tests.tiny import tiny_llama, tiny_tokenizer

TEXT = "To be, or not to be, that is the question. " * 20


def test_text_windows_are_seeded_non_overlapping_cuts():
    tok = tiny_tokenizer()
    a = text_windows(TEXT, tok, seq_len=16, n_windows=5, seed=1)
    b = text_windows(TEXT, tok, seq_len=16, n_windows=5, seed=1)
    assert a.ids.shape == (5, 16) and torch.equal(a.ids, b.ids)
    stream = tok(TEXT, add_special_tokens=False)["input_ids"]
    cuts = {tuple(stream[i : i + 16]) for i in range(0, len(stream) - 15, 16)}
    assert all(tuple(row) in cuts for row in a.ids.tolist())
    with pytest.raises(EdgepruneError, match="fewer than one window"):
        text_windows("hi", tok, seq_len=16, n_windows=1)


def test_file_sources_and_the_evaluation_set_is_refused(tmp_path):
    tok = tiny_tokenizer()
    f = tmp_path / "calib.txt"
    f.write_text(TEXT)
    w = calibration_windows(tok, str(f), n_windows=3, seq_len=32)
    assert len(w) == 3 and w.seq_len == 32 and str(f) in w.source
    with pytest.raises(EdgepruneError, match="evaluation set"):
        calibration_windows(tok, "wikitext2", n_windows=3, seq_len=32)
    from edgeprune.data import resolve_data_file

    test_file = resolve_data_file("wikitext-2-raw/wiki.test.raw")  # shipped with the package: always there
    copy = tmp_path / "renamed.txt"  # a renamed copy is caught by its content hash
    shutil.copy(test_file, copy)
    with pytest.raises(EdgepruneError, match="WikiText-2 test file"):
        calibration_windows(tok, str(copy), n_windows=3, seq_len=32)


def test_empty_or_missing_calibration_is_an_error(tmp_path):
    tok = tiny_tokenizer()
    with pytest.raises(EdgepruneError, match="empty"):
        calibration_windows(tok, "shakespeare", n_windows=0, seq_len=32)
    (tmp_path / "empty.txt").write_text("   \n")
    with pytest.raises(EdgepruneError, match="empty"):
        calibration_windows(tok, str(tmp_path / "empty.txt"), n_windows=2, seq_len=32)
    with pytest.raises(EdgepruneError, match="no calibration text"):
        calibration_windows(tok, str(tmp_path / "missing.txt"), n_windows=2, seq_len=32)


def test_self_generated_text_is_seeded_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPRUNE_CACHE", str(tmp_path))
    model, tok = to_per_layer(tiny_llama()), tiny_tokenizer()
    state = torch.random.get_rng_state()
    a = calibration_windows(tok, "self", model=model, n_windows=3, seq_len=12, seed=5, progress=False)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is not used
    assert a.ids.shape == (3, 12) and int(a.ids.max()) < model.config.vocab_size
    assert list((tmp_path / "calib").glob("selfgen-*.pt"))
    b = calibration_windows(tok, "self", model=model, n_windows=3, seq_len=12, seed=5, use_cache=False, progress=False)
    assert torch.equal(a.ids, b.ids)
    c = calibration_windows(tok, "self", model=model, n_windows=3, seq_len=12, seed=6, use_cache=False, progress=False)
    assert not torch.equal(a.ids, c.ids)
    with pytest.raises(EdgepruneError, match="pass model="):
        calibration_windows(tok, "self", n_windows=3, seq_len=12)


def test_token_windows_sample_and_validate():
    w = TokenWindows(torch.arange(20).view(5, 4), "x")
    g = torch.Generator().manual_seed(0)
    assert w.sample(3, g).shape == (3, 4) and w.sample(9, g).shape == (5, 4)
    assert w.describe() == {"source": "x", "windows": 5, "seq_len": 4, "tokens": 20}
    with pytest.raises(ValueError):
        TokenWindows(torch.zeros(4), "bad")

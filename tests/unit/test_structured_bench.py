"""bench/structured.py bookkeeping: seeds, row keys by calibration / training data, mixed training text."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.tiny import tiny_tokenizer

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        import structured

        yield structured
    finally:
        sys.path.remove(str(BENCH))


def test_every_seed_gets_its_rows(bench):
    args = bench.parse_args(["--methods", "taylor-uniform,adapt", "--targets", "0.2", "--seeds", "0,1,2"])
    rows = bench.plan(args)
    assert sorted((r["method"], r.get("seed", 0)) for r in rows) == [
        ("adapt", 0), ("adapt", 1), ("adapt", 2), ("taylor-uniform", 0), ("taylor-uniform", 1), ("taylor-uniform", 2)
    ]  # fmt: skip
    assert all(r["method"] != "dense" for r in rows)


def test_rows_with_other_calibration_or_training_data_do_not_replace_each_other(bench):
    self_args = bench.parse_args([])
    real_args = bench.parse_args(["--calib", "wikitext2-valid", "--calib-pool", "512"])
    spec = {"method": "adapt", "target": 0.2, "train_tokens": 0}
    assert bench._spec_key(spec, 0.2, self_args) != bench._spec_key(spec, 0.2, real_args)
    mag = {"method": "magnitude-uniform", "target": 0.2, "train_tokens": 0}  # uses no data: one row whatever --calib
    assert bench._spec_key(mag, 0.2, self_args) == bench._spec_key(mag, 0.2, real_args)
    trained = {"method": "adapt", "target": 0.25, "train_tokens": 1000, "stages": 5}
    other = bench.parse_args(["--train-data", "shakespeare"])
    assert bench._spec_key(trained, 0.25, self_args) != bench._spec_key(trained, 0.25, other)
    # the key a finished row carries is the one the driver looks for
    row = dict(trained, calib=bench._calib_label(other), train_data=other.train_data)
    assert bench._key(row) == bench._spec_key(trained, 0.25, other)


def test_training_windows_split_evenly_over_sources(bench, tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("a" * 4000)
    b.write_text("b" * 4000)
    args = bench.parse_args(["--train-data", f"{a},{b}", "--train-pool", "7", "--seq-len", "16"])
    windows = bench._train_windows(tiny_tokenizer(), None, args)
    assert windows.ids.shape == (7, 16)
    first = windows.ids[:, 0].tolist()
    assert first.count(first[0]) == 4 and len(set(first)) == 2  # 4 windows of a.txt, then 3 of b.txt
    assert str(a) in windows.source and str(b) in windows.source

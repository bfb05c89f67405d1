"""``edgeprune eval`` end to end on a tiny saved model, and its bad-input rules (one line, exit 2)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from edgeprune.cli.main import main
from edgeprune.eval import Evaluator, PerplexityConfig
from tests.tiny import save_tiny, tiny_llama, tiny_tokenizer
from tests.unit.eval_helpers import TEST_DATA


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny(tiny_llama(), tmp_path_factory.mktemp("tiny"))  # context 256 tokens


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("The quick brown fox jumps over the lazy dog. " * 8, encoding="utf-8")  # 360 bytes = tokens
    return path


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "edgeprune" in ln]  # progress bars aside
    assert len(lines) == 1 and lines[0].startswith("edgeprune: error: ")
    return lines[0]


def test_ppl_matches_the_reference_loss_and_writes_json(tiny_dir, corpus, tmp_path, capsys):
    out = tmp_path / "r.json"
    argv = ["eval", "--model", str(tiny_dir), "--ppl", "--data", str(corpus), "--seq-len", "64", "--json", str(out), "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "ppl" in printed and "tokens/s" in printed
    report = json.loads(out.read_text())["perplexity"]
    assert (report["windows"], report["tokens"], report["dropped_tokens"], report["last_window"]) == (5, 5 * 63, 40, "dropped")
    # Reference: transformers' own causal-LM loss per window (labels = inputs), windows equal -> plain mean
    model, ids = tiny_llama(), tiny_tokenizer()(corpus.read_text(), add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        losses = [model(torch.tensor([ids[i : i + 64]]), labels=torch.tensor([ids[i : i + 64]])).loss for i in range(0, 320, 64)]
    assert report["ppl"] == pytest.approx(math.exp(float(torch.stack(losses).mean())), rel=1e-5)


def test_evaluator_takes_a_model_object_and_batching_does_not_change_ppl(corpus):
    cfg = PerplexityConfig(data=str(corpus), seq_len=50, keep_partial=True)
    a = Evaluator(tiny_llama(), tokenizer=tiny_tokenizer(), batch_tokens=50, progress=False).perplexity(cfg)
    b = Evaluator(tiny_llama(), tokenizer=tiny_tokenizer(), batch_tokens=10_000, progress=False).perplexity(cfg)
    assert a.windows == 8 and a.last_window == "kept" and a.tokens == 7 * 49 + 9
    assert a.ppl == pytest.approx(b.ppl, rel=1e-6)


def test_zero_shot_on_the_cli_with_limit(tiny_dir, tmp_path, capsys):
    out = tmp_path / "z.json"
    argv = ["eval", "--model", str(tiny_dir), "--tasks", "boolq,winogrande", "--limit", "3", "--data-dir", str(TEST_DATA),
            "--json", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    rows = json.loads(out.read_text())["zeroshot"]
    assert [r["task"] for r in rows] == ["boolq", "winogrande"]
    assert all(r["n"] == 3 and r["acc_norm"] is None and 0 <= r["acc"] <= 1 for r in rows)
    assert rows[0]["n_total"] == 40 and rows[0]["seed"] == 1234


def test_unknown_task_names_the_closest(capsys):
    err = _error(capsys, ["eval", "--tasks", "arc_easy,piqaa"])
    assert "unknown task 'piqaa' (did you mean 'piqa'?)" in err


def test_missing_corpus(tiny_dir, tmp_path, capsys):
    err = _error(capsys, ["eval", "--model", str(tiny_dir), "--ppl", "--data", str(tmp_path / "nope.txt")])
    assert "no such text file" in err


def test_malformed_corpus(tiny_dir, tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\xfd")
    assert "is not UTF-8 text" in _error(capsys, ["eval", "--model", str(tiny_dir), "--ppl", "--data", str(bad), "--quiet"])


def test_malformed_task_file(tiny_dir, tmp_path, capsys):
    root = tmp_path / "data"
    (root / "zeroshot/boolq").mkdir(parents=True)
    (root / "zeroshot/boolq/val.jsonl").write_text('{"question": "q"\n')
    err = _error(capsys, ["eval", "--model", str(tiny_dir), "--tasks", "boolq", "--data-dir", str(root), "--quiet"])
    assert "malformed" in err and "line 1" in err


def test_missing_task_file(tiny_dir, tmp_path, capsys):
    (tmp_path / "zeroshot").mkdir()
    err = _error(capsys, ["eval", "--model", str(tiny_dir), "--tasks", "piqa", "--data-dir", str(tmp_path), "--quiet"])
    assert "missing data file" in err and "piqa/valid.jsonl" in err


def test_window_longer_than_the_context(tiny_dir, corpus, capsys):
    err = _error(capsys, ["eval", "--model", str(tiny_dir), "--ppl", "--data", str(corpus), "--seq-len", "512", "--quiet"])
    assert "longer than the model's context (256): pass --seq-len 256 or less" in err


def test_nothing_to_do_and_bad_numbers(capsys):
    assert "nothing to evaluate" in _error(capsys, ["eval"])
    assert "seq_len must be" in _error(capsys, ["eval", "--ppl", "--seq-len", "1"])
    assert "limit must be" in _error(capsys, ["eval", "--tasks", "piqa", "--limit", "0"])

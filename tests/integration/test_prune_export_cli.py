"""``edgeprune prune`` then ``edgeprune export gguf`` on the real SmolLM2-135M, from the command line
alone (issue 21, item 0): SmolLM2's Hugging Face tokenizer lacks 21 byte tokens, so the pruned
directory must carry the built-in GGUF's tokenizer (``tokenizer.gguf``) for the export to work."""

from __future__ import annotations

import json

import pytest

from edgeprune.cli.main import main
from edgeprune.models.builtin import builtin_path
from edgeprune.models.files import gguf_field, open_gguf
from tests.unit.eval_helpers import TEST_DATA

SHAKESPEARE = str(TEST_DATA / "calib" / "tiny_shakespeare.txt")


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    out = tmp_path_factory.mktemp("prune") / "adapt25"
    # taylor-uniform on a few short windows: the pruning is not what is tested here, the directory is
    code = main(["prune", "--model", "smollm2-135m", "--target", "0.25", "--method", "taylor-uniform", "--calib", SHAKESPEARE,
                 "--calib-pool", "8", "--calib-windows", "4", "--seq-len", "64", "--out", str(out), "--quiet",
                 "--threads", "2"])  # fmt: skip
    assert code == 0
    return out


def _export(capsys, model, out):
    capsys.readouterr()
    code = main(["export", "gguf", "--model", str(model), "--type", "f16", "--out", str(out), "--json"])
    stdout, err = capsys.readouterr()
    return code, stdout, err


def test_pruned_directory_exports_to_gguf_and_runs_in_llama_cpp(pruned, tmp_path, capsys):
    record = pruned / "tokenizer.gguf"
    assert record.is_file() and record.stat().st_size < 5e6  # the vocabulary only, no weights
    tokens = gguf_field(open_gguf(record), "tokenizer.ggml.tokens")
    assert tokens == gguf_field(open_gguf(builtin_path("smollm2-135m")), "tokenizer.ggml.tokens") and len(tokens) == 49152

    out = tmp_path / "a.gguf"
    code, stdout, err = _export(capsys, pruned, out)
    assert code == 0, err
    report = json.loads(stdout)
    assert out.is_file() and report["tokenizer"] == "source-gguf" and report["verify"]["passed"]
    assert report["n_layers"] == 30 and report["bytes"] < 0.85 * 270e6  # a quarter of the blocks gone
    layout, lm, tok = (report["verify"][k] for k in ("layout", "logits_vs_model", "tokenization"))
    assert layout["rel_diff"] < 1e-3 and layout["top1_agreement"] >= 0.98  # llama.cpp on the F32 rendering vs torch
    assert lm["top1_agreement"] >= 0.9  # the F16 file itself: rounding moves a few close calls
    assert tok["identical"] == tok["lines"] > 0


def test_without_the_record_the_error_names_the_flag(pruned, tmp_path, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in pruned.iterdir():
        if f.name != "tokenizer.gguf":
            (bare / f.name).symlink_to(f)
    code, _, err = _export(capsys, bare, tmp_path / "b.gguf")
    errors = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("edgeprune: error:")]
    assert code == 2 and len(errors) == 1
    assert "byte tokens" in errors[0] and "--source-gguf FILE" in errors[0]
    assert not (tmp_path / "b.gguf").exists()

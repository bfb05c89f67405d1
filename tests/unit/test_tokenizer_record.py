"""A model directory written from a GGUF-loaded model carries its tokenizer (``tokenizer.gguf``), so
``edgeprune prune`` (or reconstruct, or sparsify --save-dense) then ``edgeprune export gguf`` works
from the command line alone (issue 21, item 0). The source is a tiny .gguf whose vocabulary, like
SmolLM2's, lacks byte tokens: its Hugging Face tokenizer alone cannot be exported."""

from __future__ import annotations

import json
import shutil

import pytest

from edgeprune.cli.main import main
from edgeprune.models import load, tokenizer_record
from tests.prune_helpers import one_thread  # noqa: F401  (autouse fixture)
from tests.unit.gguf_helpers import gguf_source_with_partial_bytes, gguf_values, llama_cpp_vs_torch, tensor_names

TOKENIZER_KEYS = ["tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.merges",
                  "tokenizer.ggml.token_type", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"]  # fmt: skip
TEXT = "It was the best of times, it was the worst of times, it was the age of wisdom. " * 30
IDS = [1, 17, 200, 45, 99, 12, 250, 7, 64, 128, 5, 33]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("record")
    gguf_source_with_partial_bytes(root / "src.gguf", num_hidden_layers=4)
    (root / "calib.txt").write_text(TEXT)
    with pytest.MonkeyPatch.context() as mp:
        # loading a .gguf caches its dequantized copy: keep it out of the user's cache
        mp.setenv("EDGEPRUNE_CACHE", str(root / "cache"))
        yield root


def _prune(root, out) -> int:
    return main(["prune", "--model", str(root / "src.gguf"), "--out", str(out), "--target", "0.25",
                 "--method", "taylor-uniform", "--calib", str(root / "calib.txt"), "--seq-len", "16",
                 "--calib-pool", "8", "--calib-windows", "4", "--align", "16", "--quiet", "--threads", "1"])  # fmt: skip


def _export(capsys, model, out, *extra) -> tuple[int, dict | None, str]:
    capsys.readouterr()  # drop what earlier commands printed
    code = main(["export", "gguf", "--model", str(model), "--type", "f16", "--out", str(out), "--json", *extra])
    stdout, err = capsys.readouterr()
    return code, (json.loads(stdout) if code == 0 else None), err


def _error_line(err: str) -> str:
    errors = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("edgeprune: error:")]
    assert len(errors) == 1, err
    return errors[0]


@pytest.fixture(scope="module")
def pruned(root):
    out = root / "pruned"
    assert _prune(root, out) == 0
    return out


def test_the_record_holds_the_source_tokenizer_and_no_tensors(root, pruned):
    record = tokenizer_record.find(pruned)
    assert record == pruned / "tokenizer.gguf"
    assert gguf_values(record, *TOKENIZER_KEYS) == gguf_values(root / "src.gguf", *TOKENIZER_KEYS)
    assert tensor_names(record) == set() and record.stat().st_size < 50_000
    assert load(pruned).source_gguf == record  # the loading layer exposes it
    assert load(root / "src.gguf").source_gguf == root / "src.gguf"


def test_prune_then_export_through_the_cli(root, pruned, tmp_path, capsys):
    out = tmp_path / "a.gguf"
    code, report, err = _export(capsys, pruned, out)
    assert code == 0, err
    assert report["tokenizer"] == "source-gguf" and report["verify"]["passed"]
    v = report["verify"]
    assert v["logits_vs_model"]["top1_agreement"] >= 0.9
    assert v["tokenization"]["identical"] == v["tokenization"]["lines"] >= 8
    assert gguf_values(out, *TOKENIZER_KEYS) == gguf_values(root / "src.gguf", *TOKENIZER_KEYS)
    # and, independently of the exporter's own check, llama.cpp computes what torch does
    assert llama_cpp_vs_torch(out, load(pruned).model, IDS) < 0.05  # f16 weights; logits are O(5)


def test_chained_commands_keep_the_record(root, pruned, tmp_path, capsys):
    recon = tmp_path / "recon"
    code = main(["reconstruct", "--model", str(pruned), "--dense", str(root / "src.gguf"), "--out", str(recon),
                 "--calib", str(root / "calib.txt"), "--calib-windows", "2", "--calib-seq-len", "16", "--epochs", "1",
                 "--quiet", "--threads", "1"])  # fmt: skip
    assert code == 0
    sparse = tmp_path / "sparse"
    code = main(["sparsify", "--model", str(recon), "--method", "magnitude", "--out", str(sparse), "--save-dense",
                 "--quiet", "--threads", "1"])  # fmt: skip
    assert code == 0
    for d in (recon, sparse, sparse / "dense"):
        assert gguf_values(d / "tokenizer.gguf", *TOKENIZER_KEYS) == gguf_values(root / "src.gguf", *TOKENIZER_KEYS)
    code, report, err = _export(capsys, sparse / "dense", tmp_path / "s.gguf")
    assert code == 0, err
    assert report["tokenizer"] == "source-gguf" and report["verify"]["passed"]


def test_without_the_record_the_error_names_the_flag_and_the_flag_works(root, pruned, tmp_path, capsys):
    bare = tmp_path / "bare"
    shutil.copytree(pruned, bare)
    (bare / "tokenizer.gguf").unlink()
    out = tmp_path / "b.gguf"
    code, _, err = _export(capsys, bare, out)
    line = _error_line(err)
    assert code == 2 and "lacks 13 of its 256 byte tokens" in line and "--source-gguf FILE" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare"]  # nothing written
    code, report, err = _export(capsys, bare, out, "--source-gguf", str(root / "src.gguf"))
    assert code == 0, err
    assert report["tokenizer"] == "source-gguf" and report["verify"]["passed"]


def test_missing_source_gguf_fails_before_loading(tmp_path, capsys, monkeypatch):
    import edgeprune.models

    monkeypatch.setattr(edgeprune.models, "load", lambda *a, **k: pytest.fail("the model was loaded"))
    code, _, err = _export(capsys, "smollm2-135m", tmp_path / "m.gguf", "--source-gguf", str(tmp_path / "none.gguf"))
    assert code == 2 and "--source-gguf" in _error_line(err) and "no such file" in _error_line(err)
    assert list(tmp_path.iterdir()) == []


def test_write_nothing_without_a_source(tmp_path):
    assert tokenizer_record.write(tmp_path, None) is None and tokenizer_record.find(tmp_path) is None
    assert list(tmp_path.iterdir()) == []


def test_a_build_from_a_pruned_directory_exports_and_its_stage_models_keep_the_record(root, pruned, tmp_path):
    from edgeprune.pipeline.runner import build

    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps:\n  - step: prune\n    target: 0.1\n    method: taylor-uniform\n    align: 16\n"
                      "  - step: export\n    format: gguf\n    quant: f16\n")  # fmt: skip
    report = build("host", model=str(pruned), recipe=str(recipe), out=tmp_path / "out", calib=str(root / "calib.txt"),
                   log=lambda m: None)  # fmt: skip
    prune, export = report["stages"]
    stage_model = tmp_path / "out" / "stages" / "01-prune" / "model"
    assert tokenizer_record.find(stage_model) is not None  # the stage's model exports from the CLI too
    assert gguf_values(stage_model / "tokenizer.gguf", *TOKENIZER_KEYS) == gguf_values(root / "src.gguf", *TOKENIZER_KEYS)
    assert export["figures"]["bytes"] > 0 and (tmp_path / "out" / "model-f16.gguf").is_file()

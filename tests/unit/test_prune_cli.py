"""``edgeprune prune``: writes a loadable per-layer model + report; bad input is one line, exit 2, nothing written."""

from __future__ import annotations

import json

import pytest
import torch

from edgeprune.cli.main import main
from tests.prune_helpers import one_thread  # noqa: F401  (autouse fixture)
from tests.tiny import save_tiny, tiny_llama

TEXT = "It was the best of times, it was the worst of times, it was the age of wisdom. " * 30


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("prune_cli")
    save_tiny(tiny_llama(num_hidden_layers=4), root / "model")
    (root / "calib.txt").write_text(TEXT)
    return root


def _args(root, out, *extra):
    return ["prune", "--model", str(root / "model"), "--out", str(out), "--calib", str(root / "calib.txt"),
            "--seq-len", "16", "--calib-pool", "8", "--calib-windows", "4", "--align", "16", "--quiet",
            "--threads", "1", *extra]  # fmt: skip


def test_prune_writes_model_tokenizer_and_report(tiny_dir, tmp_path, capsys):
    out = tmp_path / "pruned"
    assert main(_args(tiny_dir, out, "--target", "0.3", "--method", "adapt")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert "embeddings excluded" in summary["block_params"]
    rep = json.loads((out / "prune_report.json").read_text())
    assert rep["removed_fraction"] >= 0.3 and rep["method"] == "adapt"
    assert len(rep["widths_after"]["intermediate"]) == 4 and len(rep["layer_importance"]) == 4
    assert rep["total_params_after"] < rep["total_params_before"] and rep["bytes_after"] > 0
    assert (out / "prune.yaml").is_file() and (out / "tokenizer.json").is_file()
    from edgeprune.models import load

    model, tok = load(str(out))
    assert model.config.intermediate_per_layer() == rep["widths_after"]["intermediate"]
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()
    assert torch.get_num_threads() == 1  # --threads was restored to the fixture's value


def test_prune_with_yaml_config_and_training(tiny_dir, tmp_path):
    cfg = tmp_path / "step.yaml"
    cfg.write_text("structured_prune:\n  target: 0.25\n  method: taylor-uniform\n  align: 16\n")
    out = tmp_path / "trained"
    assert main(_args(tiny_dir, out, "--config", str(cfg), "--train-tokens", "256", "--batch-size", "2")) == 0
    rep = json.loads((out / "prune_report.json").read_text())
    assert rep["method"] == "taylor-uniform" and rep["train"][0]["steps"] == 256 // (2 * 16)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--target", "0"], "target must be in (0, 1)"),
        (["--target", "1"], "target must be in (0, 1)"),
        (["--target", "-0.2"], "target must be in (0, 1)"),
        (["--target", "0.95", "--align", "128"], "unreachable"),
        (["--method", "adaptive"], "did you mean 'adapt'"),
        (["--target", "0.3", "--calib", "wikitext2"], "evaluation set"),
        (["--target", "0.3", "--calib-pool", "0"], "calibration set is empty"),
        (["--kd-alpha", "0.5"], "--train-tokens"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(tiny_dir, tmp_path, capsys, extra, message):
    out = tmp_path / "never"
    assert main(_args(tiny_dir, out, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # (transformers may draw a loading bar first)
    assert err.startswith("edgeprune: error:") and message in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_unsupported_architecture_and_bad_yaml_key(tmp_path, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    from tests.tiny import tiny_tokenizer

    gpt2 = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=260, n_positions=32)).save_pretrained(gpt2)
    tiny_tokenizer().save_pretrained(gpt2)
    (tmp_path / "c.txt").write_text(TEXT)
    out = tmp_path / "never"
    args = ["prune", "--model", str(gpt2), "--out", str(out), "--calib", str(tmp_path / "c.txt"), "--quiet"]
    assert main(args) == 2
    assert "unsupported architecture 'gpt2'" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("structured_prune:\n  target: 0.3\n  allign: 16\n")
    assert main(args + ["--config", str(tmp_path / "bad.yaml")]) == 2
    assert "'allign' (did you mean 'align'?)" in capsys.readouterr().err
    assert not out.exists()


def test_existing_output_needs_force(tiny_dir, tmp_path, capsys):
    out = tmp_path / "exists"
    out.mkdir()
    assert main(_args(tiny_dir, out, "--target", "0.2")) == 2
    assert "--force" in capsys.readouterr().err

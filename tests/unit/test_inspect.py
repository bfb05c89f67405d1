"""`edgeprune inspect` on HF directories (uniform and per-layer) without loading weights."""

from __future__ import annotations

import json

from edgeprune.cli.main import main
from edgeprune.describe import describe
from tests.tiny import save_tiny, tiny_llama, tiny_per_layer


def test_describe_per_layer_dir(tmp_path):
    model = tiny_per_layer()
    save_tiny(model, tmp_path)
    info = describe(tmp_path)
    assert info["architecture"] == "edgeprune_llama"
    assert info["layers"] == 4
    assert info["heads"] == [4, 0, 2, 4] and info["kv_heads"] == [2, 0, 1, 2]
    assert info["intermediate"] == [128, 64, 0, 96]
    assert info["params"] == sum(p.numel() for p in model.parameters())
    assert info["dtype"] == "f32"


def test_cli_inspect_text_and_json(tmp_path, capsys):
    save_tiny(tiny_llama(), tmp_path)
    assert main(["inspect", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "4/2 (query/KV, all layers)" in out and "mlp width    128 (all layers)" in out
    assert main(["inspect", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["layers"] == 3


def test_cli_help_lists_verbs(capsys):
    import pytest

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "inspect" in capsys.readouterr().out

"""Bad input to the ONNX exporter: one-line EdgepruneError (exit 2 on the CLI), nothing half-written."""

from __future__ import annotations

import pytest

from edgeprune.cli.main import main
from edgeprune.errors import EdgepruneError
from edgeprune.export.onnx import OnnxExportConfig, export_onnx
from edgeprune.export.onnx import api as onnx_api
from tests.tiny import save_tiny, tiny_llama, tiny_per_layer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


def _leftovers(parent):
    return sorted(p.name for p in parent.iterdir())


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(quant="in4"), "unknown ONNX quantization 'in4' \\(did you mean 'int4'\\?\\)"),
        (dict(quant="fp16"), "use one of fp32, int8, int8-dynamic, int4"),
        (dict(quant="int4", block_size=100), "block size must be one of"),
        (dict(exporter="jit"), "unknown ONNX exporter"),
    ],
)
def test_invalid_settings(kw, match, tmp_path):
    with pytest.raises(EdgepruneError, match=match) as exc:
        export_onnx(tiny_llama(), tmp_path / "out", **kw)
    _one_line(exc)
    assert _leftovers(tmp_path) == []


def test_config_rejects_unknown_keys():
    with pytest.raises(EdgepruneError, match="unknown key .qaunt. \\(did you mean .quant.\\?\\) for step ONNX export"):
        OnnxExportConfig.from_dict({"qaunt": "int8"})
    assert OnnxExportConfig.from_dict({"quant": "INT8"}).quant == "int8"
    cfg = OnnxExportConfig(quant="int4", int4_lm_head="fp32", block_size=128)
    assert OnnxExportConfig.from_yaml(cfg.to_yaml()) == cfg  # the project's strict config base
    # every problem at once, in one line
    with pytest.raises(EdgepruneError, match="block size must be one of .*; unknown ONNX exporter 'jit'") as exc:
        OnnxExportConfig(block_size=100, exporter="jit")
    _one_line(exc)


def test_existing_output_needs_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(EdgepruneError, match="already exists: pass overwrite=True") as exc:
        export_onnx(tiny_llama(), out)
    _one_line(exc)
    assert _leftovers(out) == ["keep.txt"]


def test_overwrite_replaces_the_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("x")
    export_onnx(tiny_llama(), out, exporter="torchscript", verify=False, overwrite=True)
    assert "old.txt" not in _leftovers(out) and "model.onnx" in _leftovers(out)
    assert _leftovers(tmp_path) == ["out"]


def test_output_under_a_file_is_unwritable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(EdgepruneError, match="is a file, not a folder") as exc:
        export_onnx(tiny_llama(), blocker / "sub" / "out")
    _one_line(exc)


def test_write_failure_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    from edgeprune.export.onnx import api

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(api, "set_metadata", full)  # fails mid-write, after the exporter ran
    with pytest.raises(EdgepruneError, match="cannot write the ONNX export to .*: No space left on device") as exc:
        export_onnx(tiny_llama(), tmp_path / "out", exporter="torchscript")
    _one_line(exc)
    assert _leftovers(tmp_path) == []


def test_output_folder_that_cannot_be_created(tmp_path, capsys):
    # A path under a regular file cannot become a folder for anyone, root included (unlike a
    # chmod-ed folder, which root writes into anyway): Python API and CLI both refuse it up front.
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(EdgepruneError, match=f"cannot create {blocker / 'out'}: {blocker} is a file") as exc:
        export_onnx(tiny_llama(), blocker / "out")
    _one_line(exc)
    model_dir = save_tiny(tiny_llama(), tmp_path / "tiny")
    capsys.readouterr()
    assert main(["export", "onnx", "--model", str(model_dir), "--out", str(blocker / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file, not a folder" in err[0]
    assert blocker.read_text() == "x" and _leftovers(tmp_path) == ["file", "tiny"]


def test_not_writable_parent_is_refused(tmp_path, monkeypatch):
    # the permission branch, without chmod (root ignores it): the folder reports no write access
    real_access = onnx_api.os.access
    monkeypatch.setattr(onnx_api.os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real_access(p, mode))
    with pytest.raises(EdgepruneError, match=f"folder {tmp_path} is not writable") as exc:
        export_onnx(tiny_llama(), tmp_path / "out")
    _one_line(exc)
    assert _leftovers(tmp_path) == []


def test_unsupported_architecture(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    with pytest.raises(EdgepruneError, match="unsupported architecture 'gpt2' for ONNX export") as exc:
        export_onnx(model, tmp_path / "out")
    _one_line(exc)
    assert _leftovers(tmp_path) == []


def test_non_float32_model(tmp_path):
    import torch

    with pytest.raises(EdgepruneError, match="float32 graphs but the model holds torch.bfloat16"):
        export_onnx(tiny_llama().to(torch.bfloat16), tmp_path / "out")


def test_exporter_failure_leaves_nothing(tmp_path, monkeypatch):
    from edgeprune.export.onnx.decoder import FlatKVDecoder

    def broken(self, input_ids, attention_mask, position_ids, *past):
        raise RuntimeError("aten::frobnicate is not supported\nmore detail")

    monkeypatch.setattr(FlatKVDecoder, "forward", broken)
    with pytest.raises(EdgepruneError, match="the ONNX exporter failed on this model \\(dynamo: .*frobnicate.*torchscript: .*frobnicate") as exc:
        export_onnx(tiny_per_layer(), tmp_path / "out")
    _one_line(exc)
    assert _leftovers(tmp_path) == []


def test_dynamo_failure_falls_back_to_torchscript(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("dynamo could not trace\ntraceback...")

    monkeypatch.setattr(onnx_api, "_export_dynamo", broken)
    report = export_onnx(tiny_per_layer(), tmp_path / "out", threads=1)
    assert report.exporter == "torchscript" and report.exporter_fallback == "dynamo could not trace"
    assert report.verified and any("dynamo exporter failed" in n for n in report.notes)


def test_failed_verification_leaves_nothing(tmp_path, monkeypatch):
    from edgeprune.export.onnx import verify

    monkeypatch.setattr(verify, "FP32_TOLERANCE", 0.0)  # nothing can pass
    with pytest.raises(EdgepruneError, match="does not match torch: max relative logit difference") as exc:
        export_onnx(tiny_llama(), tmp_path / "out", exporter="torchscript", threads=1)
    _one_line(exc)
    assert _leftovers(tmp_path) == []


def test_cli_errors_exit_2_with_one_line(tmp_path, capsys):
    model_dir = save_tiny(tiny_llama(), tmp_path / "tiny")
    assert main(["export", "onnx", "--model", str(model_dir), "--quant", "int5", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # (save_tiny's progress bars come first)
    assert err.startswith("edgeprune: error: unknown ONNX quantization 'int5'")
    (tmp_path / "exists").mkdir()
    assert main(["export", "onnx", "--model", str(model_dir), "--out", str(tmp_path / "exists")]) == 2
    assert "pass --overwrite" in capsys.readouterr().err


def test_cli_export_writes_a_verified_folder(tmp_path, capsys):
    model_dir = save_tiny(tiny_per_layer(), tmp_path / "tiny")
    out = tmp_path / "onnx"
    code = main(["export", "onnx", "--model", str(model_dir), "--out", str(out), "--exporter", "torchscript", "--quant", "int8"])
    assert code == 0
    text = capsys.readouterr().out
    assert "wrote" in text and "int8" in text and "verified in onnxruntime" in text
    assert (out / "model.onnx").is_file() and (out / "tokenizer.json").is_file()

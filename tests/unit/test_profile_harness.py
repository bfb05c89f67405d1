"""The profiling harness: one worker run in-process on a tiny model, runtime resolution, reports."""

from __future__ import annotations

import json

import pytest

from edgeprune.errors import EdgepruneError
from edgeprune.runtime import worker
from edgeprune.runtime.profile import ProfileResult, format_markdown, resolve_runtime, write_report
from tests.tiny import save_tiny, tiny_per_layer


def test_worker_measures_a_torch_run(tmp_path, capsys):
    save_tiny(tiny_per_layer(), tmp_path)
    assert worker.main(["--runtime", "torch", "--artifact", str(tmp_path), "--prompt-tokens", "16",
                        "--gen-tokens", "4", "--threads", "1"]) == 0  # fmt: skip
    run = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert run["prefill_s"] > 0 and run["decode_s"] > 0 and run["peak_rss_mb"] > 10
    assert run["prompt_tokens"] == 16 and run["gen_tokens"] == 4


def test_worker_reports_failures_as_one_json_line(tmp_path, capsys):
    assert worker.main(["--runtime", "llama.cpp", "--artifact", str(tmp_path / "missing.gguf")]) == 1
    assert "error" in json.loads(capsys.readouterr().out.strip())


def test_runtime_follows_artifact_kind(tmp_path):
    save_tiny(tiny_per_layer(), tmp_path)
    assert resolve_runtime(str(tmp_path), None) == ("torch", str(tmp_path))
    assert resolve_runtime("smollm2-135m", None)[0] == "llama.cpp"
    assert resolve_runtime("smollm2-135m", "torch") == ("torch", "smollm2-135m")
    with pytest.raises(EdgepruneError, match="runtime llama.cpp cannot run a hf-dir artifact"):
        resolve_runtime(str(tmp_path), "llama.cpp")


def test_report_files(tmp_path):
    runs = [{"load_s": 1.0, "prefill_tps": 100.0 + i, "decode_tps": 10.0 + i, "ttft_ms": 50.0, "peak_rss_mb": 200.0} for i in range(3)]
    res = ProfileResult("m.gguf", "llama.cpp", 512, 128, 3, 2, runs=runs,
                        summary={k: {"median": runs[1][k], "min": runs[0][k], "max": runs[2][k]} for k in runs[0]})  # fmt: skip
    paths = write_report(res, tmp_path / "out")
    assert json.loads(paths["json"].read_text())["summary"]["decode_tps"]["median"] == 11.0
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    assert "| decode tok/s | 11.00 | 10.00 | 12.00 |" in format_markdown(res)


def test_peak_rss_ignores_the_parent_that_forked_the_worker():
    import subprocess
    import sys

    ballast = bytearray(400 * 2**20)  # a big parent, like a build process holding a model
    ballast[::4096] = b"x" * len(ballast[::4096])  # touch the pages so they are resident
    code = "from edgeprune.runtime.worker import peak_rss_mb; print(peak_rss_mb())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert float(out.stdout) < 200, out.stderr
    del ballast


def test_worker_measures_an_onnxruntime_run(tmp_path, capsys):
    from edgeprune.export.onnx import export_onnx

    export_onnx(tiny_per_layer(), tmp_path / "onnx", exporter="torchscript", verify=False)
    assert worker.main(["--runtime", "onnxruntime", "--artifact", str(tmp_path / "onnx"), "--prompt-tokens", "16",
                        "--gen-tokens", "4", "--threads", "1"]) == 0  # fmt: skip
    run = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert run["prefill_s"] > 0 and run["decode_s"] > 0

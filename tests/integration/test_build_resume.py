"""`edgeprune build` end to end on a tiny model: stages, report, and kill -9 + --resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from edgeprune.pipeline.runner import build
from tests.tiny import tiny_llama
from tests.unit.gguf_helpers import bpe_tokenizer

RECIPE = """
description: tiny end-to-end recipe
steps:
  - step: evaluate
    seq_len: 128
    limit_tokens: 1024
  - step: prune
    target: 0.3
    method: taylor-uniform
    align: 8
  - step: export
    format: gguf
    quant: q8_0
  - step: evaluate
    seq_len: 128
    limit_tokens: 1024
  - step: profile
    prompt_tokens: 32
    gen_tokens: 8
    reps: 1
"""


def _checksums(out: Path) -> dict:
    report = json.loads((out / "report.json").read_text())
    stages = {p.name: json.loads((p / "manifest.json").read_text()) for p in sorted((out / "stages").iterdir())}
    outputs = {f"{s}/{k}": v["sha256"] for s, m in stages.items() for k, v in m["outputs"].items()}
    return {"outputs": outputs, "artifacts": [a["sha256"] for a in report["artifacts"]]}


def test_build_runs_and_resumes_after_kill(tmp_path):
    tok = bpe_tokenizer()  # llama.cpp needs a BPE vocabulary with merges
    model = tiny_llama(vocab_size=len(tok), bos_token_id=0, eos_token_id=1, pad_token_id=2, max_position_embeddings=512,
                       num_hidden_layers=4)  # fmt: skip
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE)

    ref = build("host", model=str(model_dir), recipe=str(recipe), out=tmp_path / "ref", log=lambda m: None)
    assert [s["step"] for s in ref["stages"]] == ["evaluate", "prune", "export", "evaluate", "profile"]
    assert ref["stages"][0]["figures"]["ppl"] > 1 and ref["stages"][3]["figures"]["ppl"] > 1
    assert ref["stages"][0]["figures"]["what"] == "torch fp32"  # a float checkpoint: no GGUF grid to name
    assert ref["stages"][1]["figures"]["params"] < sum(p.numel() for p in model.parameters())  # the GGUF is pruned
    assert ref["measured_host"]["decode_tps"] > 0 and "raspberry-pi-5-8gb" in ref["predicted"]
    assert {p.name for p in (tmp_path / "ref").iterdir()} >= {"report.md", "report.json", "model-q8_0.gguf",
                                                               "quality_vs_size.png", "predicted_tps.png"}  # fmt: skip

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "edgeprune.cli.main", "build", "--model", str(model_dir), "--recipe", str(recipe),
           "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = out / "stages" / "01-evaluate" / "manifest.json"
    deadline = time.time() + 300
    while not first.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)  # during stage 2 (pruning) or later: no cleanup code runs
    proc.wait()
    assert not (out / "report.json").exists()

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 2 and "pass --resume" in again.stderr  # never silently overwrites
    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "01-evaluate] done earlier" in resumed.stdout
    assert not list((out / "stages").glob(".*.tmp"))
    a, b = _checksums(tmp_path / "ref"), _checksums(out)
    assert a["artifacts"] == b["artifacts"] and a["outputs"] == b["outputs"]


def test_a_build_names_the_grid_its_fp32_weights_came_from(tmp_path):
    # the packaged model is a dequantized Q4_1: "fp32" alone would overstate its precision
    from edgeprune.models import tokenizer_record
    from edgeprune.models.builtin import builtin_path
    from edgeprune.pipeline.build_steps import _gguf_weights_type

    gguf = str(builtin_path("smollm2-135m"))
    assert _gguf_weights_type(gguf) == "q4_1"
    tokenizer_record.write(tmp_path, gguf)  # a pruned directory's record holds no weights
    assert _gguf_weights_type(str(tokenizer_record.find(tmp_path))) is None

"""`import edgeprune` stays light, and still registers edgeprune_llama once transformers loads."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "transformers", "onnxruntime", "llama_cpp", "onnx", "gguf")


def _run(code: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_is_light():
    # what is imported, not how long it took: a timing depends on the machine's load
    out = _run(
        "import sys, json; import edgeprune;"
        f"print(json.dumps({{'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))"
    )
    assert out["heavy"] == []


def test_registration_happens_when_transformers_is_imported():
    out = _run(
        "import json, edgeprune; from transformers import AutoConfig;"
        "c = AutoConfig.for_model('edgeprune_llama', num_attention_heads=[2, 2], num_key_value_heads=[1, 1],"
        " intermediate_size=[8, 0], num_hidden_layers=2, hidden_size=16, head_dim=8);"
        "print(json.dumps({'cls': type(c).__name__}))"
    )
    assert out["cls"] == "EdgepruneLlamaConfig"

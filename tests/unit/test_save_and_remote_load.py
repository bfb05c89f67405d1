"""A per-layer model saved by edgeprune must load in plain transformers, without edgeprune."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from edgeprune.models import load
from tests.tiny import save_tiny, tiny_per_layer

PROMPT = torch.tensor([[72, 101, 108, 108, 111, 32, 119]])

# Run in a fresh interpreter where `import edgeprune` fails, as on a machine without it.
REMOTE_SCRIPT = r"""
import sys, json
sys.modules["edgeprune"] = None  # any `import edgeprune` now raises ImportError
import torch
from transformers import AutoModelForCausalLM
m = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True)
ids = torch.tensor(json.loads(sys.argv[2]))
out = m.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False, pad_token_id=258)
print(json.dumps({"tokens": out[0].tolist(), "cls": type(m).__name__,
                  "edgeprune_loaded": any(k.startswith("edgeprune") and sys.modules[k] for k in sys.modules)}))
"""


def test_save_writes_safetensors_config_and_code(tmp_path):
    save_tiny(tiny_per_layer(), tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" in names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    assert {"configuration_edgeprune_llama.py", "modeling_edgeprune_llama.py"} <= names
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "edgeprune_llama"
    assert cfg["num_attention_heads"] == [4, 0, 2, 4]
    assert cfg["intermediate_size"] == [128, 64, 0, 96]
    assert cfg["auto_map"]["AutoModelForCausalLM"] == "modeling_edgeprune_llama.EdgepruneLlamaForCausalLM"


def test_plain_transformers_loads_and_generates_same_tokens(tmp_path):
    model = tiny_per_layer()
    save_tiny(model, tmp_path)
    with torch.no_grad():
        ref = model.generate(PROMPT, attention_mask=torch.ones_like(PROMPT), max_new_tokens=8, do_sample=False, pad_token_id=258)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, str(tmp_path), json.dumps(PROMPT.tolist())],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["edgeprune_loaded"] is False
    assert result["cls"] == "EdgepruneLlamaForCausalLM"
    assert result["tokens"] == ref[0].tolist()


def test_edgeprune_load_roundtrip(tmp_path):
    model = tiny_per_layer()
    save_tiny(model, tmp_path)
    loaded = load(tmp_path)
    assert loaded.kind == "hf-dir"
    assert loaded.model.config.heads_per_layer() == [4, 0, 2, 4]
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(PROMPT).logits, model(PROMPT).logits)
    m, tok = loaded  # unpacks as (model, tokenizer)
    assert tok.decode(tok("edge")["input_ids"]) == "edge"

"""The embedded default model: inspect, load (cached), generate, per-layer conversion, remote code."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from edgeprune.compress.structured.cut import cut_widths, random_keep
from edgeprune.describe import describe
from edgeprune.models import load, to_per_layer
from edgeprune.runtime.generate import generate_text


def test_inspect_default_without_loading_weights():
    info = describe("smollm2-135m")
    assert info["architecture"] == "llama" and info["layers"] == 30
    assert set(info["heads"]) == {9} and set(info["kv_heads"]) == {3}
    assert set(info["intermediate"]) == {1536}
    assert abs(info["params"] - 134.5e6) < 0.1e6


def test_cli_inspect_prints_the_figures():
    proc = subprocess.run([sys.executable, "-m", "edgeprune.cli.main", "inspect", "smollm2-135m"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "layers       30" in proc.stdout
    assert "9/3 (query/KV, all layers)" in proc.stdout
    assert "1536 (all layers)" in proc.stdout and "(134.5M)" in proc.stdout


def test_default_loads_from_cache_and_answers(default_model):
    again = load(None)  # None means the embedded default
    assert again.timings["cached"] is True
    assert again.model.config.num_hidden_layers == 30
    text, n = generate_text(again.model, again.tokenizer, "What is the capital of France?", max_new_tokens=12, chat=True)
    assert "Paris" in text and n >= 1


def test_per_layer_conversion_matches_real_model(default_model):
    model, tok = default_model
    ids = tok("The tower is 324 metres tall, about the same height as", return_tensors="pt")["input_ids"]
    converted = to_per_layer(model)
    with torch.no_grad():
        ref, out = model(ids).logits, converted(ids).logits
    assert (out - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())


def test_pruned_real_model_loads_in_plain_transformers(default_model, tmp_path):
    model, tok = default_model
    pruned = cut_widths(model, random_keep(to_per_layer(model).config, attn_keep=0.7, mlp_keep=0.7, seed=0))
    assert len(set(pruned.config.intermediate_per_layer())) > 1  # widths really differ by layer
    pruned.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    ids = tok("Edge devices are", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ref = pruned.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False)
    script = (
        "import sys, json; sys.modules['edgeprune'] = None\n"
        "import torch; from transformers import AutoModelForCausalLM\n"
        "m = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
        "ids = torch.tensor(json.loads(sys.argv[2]))\n"
        "out = m.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False)\n"
        "print(json.dumps(out[0].tolist()))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path), json.dumps(ids.tolist())],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == ref[0].tolist()

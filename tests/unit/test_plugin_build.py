"""A new step and a new export format are one module and one row each: both, registered from a
test, run through a whole tiny build (recipe -> plan -> stages -> report) with no other edit."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch

from edgeprune.config import StepConfig
from edgeprune.export import registry
from edgeprune.steps import Step, register, unregister
from tests.tiny import save_tiny, tiny_llama
from tests.unit.test_export_registry import FAKE


@dataclass(frozen=True)
class Scale(StepConfig):
    """Scale the output head (a toy step that changes weights, not shapes)."""

    STEP = "_scale"
    factor: float = 0.5


def scale(model, cfg: Scale, ctx):
    with torch.no_grad():
        model.lm_head.weight.mul_(cfg.factor)
    return model, {"factor": cfg.factor, "tokenizer_given": ctx.tokenizer is not None}


@pytest.fixture
def plugins(monkeypatch):
    monkeypatch.setitem(registry.FORMATS, "fake", FAKE)  # one row: the format
    register(Step("_scale", Scale, scale))  # one row: the step
    yield
    unregister("_scale")


def test_a_registered_step_and_format_run_through_a_tiny_build(plugins, tmp_path):
    from edgeprune.models import load
    from edgeprune.pipeline.runner import build

    dense = tiny_llama(num_hidden_layers=2)
    src = save_tiny(dense, tmp_path / "tiny")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps:\n  - step: _scale\n    factor: 0.25\n  - step: export\n    format: fake\n    quant: 8bit\n"
                      "  - step: evaluate\n    seq_len: 16\n    limit_tokens: 64\n    batch_tokens: 64\n")  # fmt: skip
    report = build("host", model=str(src), recipe=str(recipe), out=tmp_path / "out", log=lambda m: None)
    scaled, exported, evaluated = report["stages"]
    assert scaled["figures"]["factor"] == 0.25 and scaled["figures"]["tokenizer_given"] is True
    model = load(str(tmp_path / "out" / "stages" / "01-_scale" / "model")).model  # the next stage's input
    assert torch.allclose(model.lm_head.weight, dense.lm_head.weight * 0.25)
    assert exported["figures"]["format"] == "fake" and exported["figures"]["quant"] == "int8"
    artifact = tmp_path / "out" / "stages" / "02-export" / "m-int8.fake"
    assert json.loads(artifact.read_text()) == {"quant": "int8"}
    shipped = tmp_path / "out" / "m-int8.fake"  # the final copy is the stage's bytes, not a second copy
    assert shipped.read_bytes() == artifact.read_bytes() and shipped.stat().st_ino == artifact.stat().st_ino
    assert evaluated["figures"]["what"] == "fake int8" and evaluated["figures"]["ppl"] > 1  # the format's own backend

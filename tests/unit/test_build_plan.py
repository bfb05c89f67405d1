"""Build recipes and plans: strict validation (every problem at once), choices with reasons, budgets."""

from __future__ import annotations

import dataclasses

import pytest

from edgeprune.pipeline.plan import make_plan
from edgeprune.pipeline.recipes import BUILTIN_RECIPES, parse_recipe
from edgeprune.pipeline.runner import prepare
from edgeprune.cli.main import main
from edgeprune.devices.cost import ArtifactCost
from edgeprune.devices.profiles import get_device
from edgeprune.errors import EdgepruneError

COST = ArtifactCost(name="m", n_layers=30, params=135_000_000, weight_bytes=98_000_000,
                    kv_bytes_per_position=23040, linear_flops_per_token=212_000_000,
                    attn_flops_per_position=69120, quant="q4_1")  # fmt: skip


def _recipe(tmp_path, text):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return str(p)


def test_builtin_recipes_parse_when_their_steps_exist():
    from edgeprune.pipeline.recipes import registered_recipes

    assert {"default", "q4-only"} <= set(registered_recipes())
    for name in registered_recipes():
        assert parse_recipe(name).steps


def test_recipe_reports_every_problem_at_once(tmp_path):
    path = _recipe(tmp_path, """
steps:
  - step: evaluate
    seq_lenn: 512
  - step: profile
  - step: export
    quant: q3_x
  - step: expor
""")
    with pytest.raises(EdgepruneError) as exc:
        parse_recipe(path)
    msg = str(exc.value)
    assert "4 problem(s)" in msg
    assert "'seq_lenn' (did you mean 'seq_len'?)" in msg
    assert "quant 'q3_x' is not one of" in msg
    assert "unknown step 'expor' (did you mean 'export'?)" in msg
    assert "profile step needs an export step before it" in msg


def test_unknown_recipe_suggests(tmp_path):
    with pytest.raises(EdgepruneError, match=r"unknown recipe 'q4only' \(did you mean 'q4-only'\?\)"):
        parse_recipe("q4only")


def test_plan_choices_carry_reasons():
    plan = make_plan(get_device("raspberry-pi-5-8gb"), COST)
    assert plan.format.value == "gguf" and plan.runtime.value == "llama.cpp" and plan.quant.value == "q4_0"
    assert plan.sparse_24.value is False and "storage only" in plan.sparse_24.why
    assert make_plan(get_device("jetson-orin-nano"), COST).sparse_24.value is True
    assert make_plan(get_device("raspberry-pi-5-8gb"), COST, format="onnx", quant="4bit").quant.value == "int4"


def test_budget_error_says_by_how_much_and_what_would_fit():
    with pytest.raises(EdgepruneError, match=r"budget cannot be met on raspberry-pi-5-8gb: .* MiB over; use --quant q4_0"):
        make_plan(get_device("raspberry-pi-5-8gb"), COST, quant="f32", max_memory_bytes=300 * 2**20)
    huge = dataclasses.replace(COST, params=20_000_000_000)
    with pytest.raises(EdgepruneError, match="prune the model"):
        make_plan(get_device("raspberry-pi-5-8gb"), huge)
    with pytest.raises(EdgepruneError, match=r"--min-decode-tps 1000 cannot be met .* fewer bytes per token"):
        make_plan(get_device("raspberry-pi-5-8gb"), COST, min_decode_tps=1000)


def test_prepare_collects_target_recipe_and_model_problems(tmp_path):
    with pytest.raises(EdgepruneError) as exc:
        prepare("jetson-nano", model="no-such-model", recipe="q4only", out=tmp_path / "o")
    msg = str(exc.value)
    assert "unknown device 'jetson-nano'" in msg and "unknown recipe 'q4only'" in msg and "no-such-model" in msg


def test_cli_dry_run_prints_plan_and_loads_nothing(capsys):
    assert main(["build", "--dry-run", "--target", "raspberry-pi-5-8gb"]) == 0
    out = capsys.readouterr().out
    assert "plan for target raspberry-pi-5-8gb" in out and "no weights were loaded" in out
    assert main(["build", "--dry-run", "--target", "raspberry-pi-5-8gb", "--max-memory", "50"]) == 2
    assert "budget cannot be met" in capsys.readouterr().err


def test_prepare_rejects_a_bad_remote_before_loading_anything(tmp_path):
    with pytest.raises(EdgepruneError, match=r"bad remote 'ftp://board'.*ssh://user@host"):
        prepare("host", model=None, recipe="default", out=tmp_path / "o", remote="ftp://board")

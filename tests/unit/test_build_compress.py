"""Compression steps inside a build: recipes name them (prune, sparsify, ...), the runner applies
them with calibration from the build's --calib source, and the next stage sees the result."""

from __future__ import annotations

import json

import pytest
import torch

from edgeprune.errors import EdgepruneError
from edgeprune.pipeline.recipes import parse_recipe, registered_recipes
from tests.tiny import save_tiny, tiny_llama
from tests.unit.eval_helpers import TEST_DATA

SHAKESPEARE = TEST_DATA / "calib" / "tiny_shakespeare.txt"  # an excerpt: the tests need no data directory


@pytest.fixture(autouse=True)
def no_general_text(monkeypatch, tmp_path_factory):
    """A data directory without ``general/``: a build with no --calib calibrates on ``self`` here,
    whether or not the machine has ../shared/data (test_general_data.py covers the general default)."""
    monkeypatch.setenv("EDGEPRUNE_DATA", str(tmp_path_factory.mktemp("data")))


def test_every_builtin_recipe_is_runnable_here():
    from edgeprune.pipeline.recipes import BUILTIN_RECIPES

    assert set(registered_recipes()) == set(BUILTIN_RECIPES)
    steps = [s.STEP for s in parse_recipe("adapt-25").steps]
    assert "prune" in steps and [s.STEP for s in parse_recipe("sparse24-int4").steps].count("sparsify") == 1
    best = {s.STEP: s for s in parse_recipe("sparse24-recon-ast").steps}
    assert best["reconstruct"].prune == "sparsegpt" and best["sparse_train"].init == "none"
    rec = {s.STEP: s for s in parse_recipe("sparse24-recover").steps}["recover"]
    assert rec.recon_prune == "sparsegpt" and rec.keep_zeros and rec.tokens == 400_000
    assert [s.STEP for s in parse_recipe("adapt-25-recover").steps][1:3] == ["prune", "recover"]


def test_a_bad_compression_key_is_reported_with_the_others(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("steps:\n  - step: prune\n    taget: 0.3\n  - step: sparsify\n    pattern: '4:2'\n")
    with pytest.raises(EdgepruneError) as e:
        parse_recipe(str(path))
    msg = str(e.value)
    assert "2 problem(s)" in msg and "did you mean 'target'" in msg and "4:2" in msg and "\n" not in msg


def _build_tiny(tmp_path, layers: int, recipe_yaml: str, **kwargs) -> dict:
    """Build a tiny random model of ``layers`` layers on the host with ``recipe_yaml``; the build report."""
    from edgeprune.pipeline.runner import build

    src = save_tiny(tiny_llama(num_hidden_layers=layers), tmp_path / "tiny")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_yaml)
    return build("host", model=str(src), recipe=str(recipe), out=tmp_path / "out", log=lambda m: None, **kwargs)


def test_build_prunes_then_sparsifies_a_tiny_model(tmp_path):
    report = _build_tiny(tmp_path, 4, """
steps:
  - step: prune
    target: 0.3
    method: taylor-uniform
    align: 8
  - step: train
    tokens: 1024
    kd_alpha: 0.5
  - step: sparsify
    pattern: "2:4"
    method: wanda
""")
    prune, train, sparsify = report["stages"]
    assert train["figures"]["steps"] == 2 and train["figures"]["kd_alpha"] == 0.5  # 1024 tokens / (4 x 128)
    assert prune["figures"]["params"] < sum(p.numel() for p in tiny_llama(num_hidden_layers=4).parameters())
    assert sparsify["figures"]["params"] == prune["figures"]["params"]  # 2:4 keeps shapes, zeroes half
    assert sparsify["figures"]["nonzero_params"] < prune["figures"]["nonzero_params"]
    # the last stage's model is a saved, loadable, 2:4-sparse model
    from edgeprune.compress.sparse import masks as mk
    from edgeprune.models import load

    model = load(str(tmp_path / "out" / "stages" / "03-sparsify" / "model")).model
    assert mk.satisfies_nm(model.model.layers[0].mlp.up_proj.weight.detach(), 2, 4)
    manifest = json.loads((tmp_path / "out" / "stages" / "01-prune" / "manifest.json").read_text())
    assert manifest["config"]["step"] == "prune" and manifest["config"]["target"] == 0.3
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()


def _cfg(kind: str):
    """A default config of a built-in step ``kind``, or a plugin's bare config."""
    from edgeprune.compress.reconstruct.local import Reconstruct
    from edgeprune.compress.quant.weights import WeightQuant
    from edgeprune.compress.sparse.oneshot import NMPrune
    from edgeprune.compress.structured.config import StructuredPrune

    types = {"reconstruct": Reconstruct, "nm_prune": NMPrune, "weight_quant": WeightQuant, "structured_prune": StructuredPrune}
    return types[kind]() if kind in types else type("Cfg", (), {"kind": kind})()


def _build_ctx(tmp_path, dense):
    """The StepContext a build gives a stage (pipeline.stages.step_context) with ``--calib`` unset."""
    from types import SimpleNamespace

    from edgeprune.pipeline import stages

    build = SimpleNamespace(calib=None, dense_model=lambda: dense, log=print, target="host", artifacts=[],
                            source_gguf=None, eval_data="wikitext2", remote=None, remote_options={})  # fmt: skip
    return stages.step_context(build, tmp_path, tokenizer="tok")


@pytest.mark.parametrize("kind, shape", [("reconstruct", (64, 512)), ("nm_prune", (32, 512)), ("weight_quant", (32, 512)),
                                         ("structured_prune", (64, 128)), ("some_plugin_step", (64, 128))])  # fmt: skip
def test_a_step_in_a_build_draws_its_own_cli_calibration_shape(kind, shape, monkeypatch, tmp_path):
    # a step inside a build sees as much calibration text as the same step run from its CLI
    import edgeprune.data.calib as calib
    from edgeprune.cli.main import build_parser
    from edgeprune.data.calib_policy import policy

    seen = {}

    def record(tokenizer, source, *, n_windows, seq_len, **kwargs):
        seen["shape"] = (n_windows, seq_len, source)
        return "windows"

    monkeypatch.setattr(calib, "calibration_windows", record)
    assert _build_ctx(tmp_path, "dense").calibration(_cfg(kind), object()) == "windows"
    p = policy(kind)
    assert seen["shape"] == (*shape, "self") == (p.n_windows, p.seq_len, "self")
    verbs = {"reconstruct": "reconstruct", "nm_prune": "sparsify"}
    if kind in verbs:  # the CLI's defaults come from the same table
        required = ["--dense", "d"] if kind == "reconstruct" else []
        args = build_parser().parse_args([verbs[kind], "--model", "m", "--out", "o", *required])
        assert (args.calib_windows, args.calib_seq_len) == shape


def test_a_distilling_step_in_a_build_learns_from_the_builds_input_model(monkeypatch, tmp_path):
    # after an earlier step pruned the model, a copy of the current model would teach the pruned model itself
    import edgeprune.compress.sparse.ast as st
    import edgeprune.data.calib as calib
    from edgeprune.steps import apply

    writers = []
    monkeypatch.setattr(calib, "calibration_windows", lambda *a, model=None, **k: writers.append(model) or "windows")
    got = {}

    def step(model, cfg, windows, *, train_data=None, teacher=None, progress=False):
        got["teacher"] = teacher
        return model, None

    monkeypatch.setattr(st, "sparse_train", step)
    dense = object()
    apply("pruned", st.SparseTrain(), _build_ctx(tmp_path, dense))
    assert got["teacher"] is dense and writers == [dense, dense]  # it writes the `self` text too


@pytest.mark.parametrize("init, calibrated", [("sparsegpt", True), ("none", False)])
def test_ast_in_a_build_draws_its_training_text_apart_and_learns_from_the_input_model(init, calibrated, monkeypatch, tmp_path):
    import edgeprune.compress.sparse.ast as st
    import edgeprune.data.calib as calib
    from edgeprune.data.calib_policy import policy
    from edgeprune.steps import apply

    drawn, got = [], {}
    def draw(tok, src, *, n_windows, seq_len, seed, **kw):
        drawn.append((n_windows, seq_len, seed))
        return n_windows, seq_len

    def train(model, cfg, calib=None, *, train_data=None, progress=True, teacher=None):
        got.update(windows=calib, train=train_data, teacher=teacher)
        return model, None

    monkeypatch.setattr(calib, "calibration_windows", draw)
    monkeypatch.setattr(st, "sparse_train", train)
    cfg = st.SparseTrain(init=init, tokens=300_000, seed=3)
    dense = object()
    apply("pruned", cfg, _build_ctx(tmp_path, dense))
    p = policy("sparse_train")
    train_shape = (p.training.n_windows(300_000), p.training.seq_len)
    assert train_shape == (512, 256) and got["train"] == train_shape and got["teacher"] is dense
    assert got["windows"] == ((p.n_windows, p.seq_len) if calibrated else None)
    assert drawn == ([(p.n_windows, p.seq_len, 3)] if calibrated else []) + [(*train_shape, 4)]  # seed + 1: other windows


def test_build_reconstructs_with_in_loop_masks_then_runs_ast_from_them(tmp_path):
    # the measured best 2:4 recipe (sparse24-recon-ast) in small: masks chosen inside reconstruction, AST keeps them
    from edgeprune.compress.sparse import masks as mk
    from edgeprune.models import load

    report = _build_tiny(tmp_path, 2, """
steps:
  - step: reconstruct
    prune: sparsegpt
    epochs: 1
    calib_windows: 4
  - step: sparse_train
    init: none
    slorb: false
    tokens: 1024
    batch_size: 2
    mask_every: 100
    train_dtype: float32
""", calib=str(SHAKESPEARE))
    recon, ast = report["stages"]
    assert ast["figures"]["steps"] == 2  # 1024 tokens / (2 x 256)
    before = load(str(tmp_path / "out" / "stages" / "01-reconstruct" / "model")).model
    after = load(str(tmp_path / "out" / "stages" / "02-sparse_train" / "model")).model
    w0, w1 = before.model.layers[1].mlp.down_proj.weight, after.model.layers[1].mlp.down_proj.weight
    assert mk.satisfies_nm(w0.detach(), 2, 4) and torch.equal(w0 != 0, w1 != 0) and not torch.equal(w0, w1)


def test_the_targets_width_alignment_reaches_a_prune_step_that_leaves_it_open(tmp_path):
    # the plan's width_align is applied, not only reported; a recipe that sets align keeps its own
    from edgeprune.pipeline.runner import prepare

    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps:\n  - step: prune\n    target: 0.2\n  - structured_prune: {target: 0.2, align: 8}\n"
                      "  - step: export\n")  # fmt: skip
    steps, plan, _ = prepare("h100", model=None, recipe=str(recipe), out=tmp_path / "o")
    assert plan.width_align.value == 64
    assert [s.align for s in steps.steps[:2]] == [64, 8]
    steps, plan, _ = prepare("raspberry-pi-5-8gb", model=None, recipe=str(recipe), out=tmp_path / "o")
    assert [s.align for s in steps.steps[:2]] == [plan.width_align.value, 8]


def test_build_prunes_then_recovers_on_a_budget(tmp_path):
    # recover: reconstruction of the pruned blocks on its share of the budget, then distillation from the build's input
    report = _build_tiny(tmp_path, 4, """
steps:
  - step: prune
    target: 0.3
    method: taylor-uniform
    align: 8
  - step: recover
    tokens: 12288
    recon_share: 0.5
    kd_topk: 8
""")
    prune, rec = report["stages"]
    fig = rec["figures"]
    # 6144 tokens for reconstruction = 12 windows x 256 tokens x 2 epochs; the rest in steps of 4 x 256
    assert fig["recon_windows"] == 12 and fig["recon_tokens"] == 6144 and fig["train_tokens"] == 6144
    assert fig["spent_tokens"] == 12288 and fig["recon_rel_mse_after"] < fig["recon_rel_mse_before"]
    assert rec["figures"]["params"] == prune["figures"]["params"]  # recovery changes weights, not shapes

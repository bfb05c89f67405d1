"""data.calib_policy: what a step draws, and the proof that a step's CLI (with its defaults) and
a build of the same step config draw the same windows from the same source."""

from __future__ import annotations


import pytest
import torch

from edgeprune.data.calib import TokenWindows
from edgeprune.data.calib_policy import TrainingDraw, policy, reads_calibration, training_tokens
from tests.unit.eval_helpers import TEST_DATA

SHAKESPEARE = str(TEST_DATA / "calib" / "tiny_shakespeare.txt")


def test_training_windows_are_one_epoch_capped_and_split_over_sources():
    draw = TrainingDraw(seq_len=100, max_windows=10)
    assert draw.n_windows(250) == 3  # one epoch: ceil(250 / 100)
    assert draw.n_windows(250, seq_len=50) == 5
    assert draw.n_windows(10_000) == 10  # capped: a larger budget reuses the windows as epochs
    assert draw.n_windows(10_000, sources=3) == 3 and draw.n_windows(1, sources=3) == 1


def test_which_steps_read_calibration_and_train():
    from edgeprune.compress.sparse.ast import SparseTrain
    from edgeprune.compress.quant.weights import WeightQuant
    from edgeprune.compress.sparse.oneshot import NMPrune
    from edgeprune.compress.structured.config import StructuredPrune
    from edgeprune.compress.structured.recovery import TrainConfig

    assert not reads_calibration(NMPrune(method="magnitude")) and reads_calibration(NMPrune(method="wanda"))
    assert reads_calibration(NMPrune(method="magnitude", quant=WeightQuant(method="gptq")))  # GPTQ needs a Hessian
    assert not reads_calibration(NMPrune(method="magnitude", quant=WeightQuant(method="rtn")))
    assert not reads_calibration(SparseTrain(init="none")) and reads_calibration(SparseTrain(init="wanda"))
    assert not reads_calibration(TrainConfig()) and reads_calibration(StructuredPrune())
    assert training_tokens(StructuredPrune()) is None and training_tokens(StructuredPrune(train=TrainConfig(tokens=7))) == 7
    assert training_tokens(SparseTrain(tokens=9)) == 9 and training_tokens(NMPrune()) is None


def test_self_text_is_written_by_the_dense_original_where_a_step_has_one():
    assert policy("reconstruct").writer("pruned", "dense") == "dense"
    assert policy("sparse_train").writer("pruned", None) == "pruned"  # no teacher given: the input model is it
    assert policy("structured_prune").writer("model", "dense") == "model"
    assert policy("some_plugin_step") == policy("another_one")  # one default for every other step


# -- the CLI and a build draw the same windows ----------------------------------------------------------


class _Stop(Exception):
    """Raised where the step itself would start: everything drawn by then is what the step gets."""


class _Model:
    def __init__(self, name: str):
        self.name, self.config, self.layers = name, None, [0, 1]  # layers: reconstruct's granularity check


MODEL, DENSE, TOKENIZER = _Model("model"), _Model("dense"), object()


@pytest.fixture(autouse=True)
def data_dir(monkeypatch, tmp_path):
    """A data directory without general/: the default source is self, whatever sits beside the checkout."""
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("EDGEPRUNE_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.fixture
def drawn(monkeypatch):
    """Every calibration_windows call as (source, n_windows, seq_len, seed, writer of `self` text)."""
    import edgeprune.data.calib as calib

    calls = []

    def record(tokenizer, source, *, n_windows, seq_len, seed, model=None, **kwargs):
        assert tokenizer is TOKENIZER
        calls.append((source, n_windows, seq_len, seed, model.name if source == "self" else None))
        return TokenWindows(torch.zeros(n_windows, seq_len, dtype=torch.long), source)

    monkeypatch.setattr(calib, "calibration_windows", record)
    return calls


def _run_cli(argv: list[str], monkeypatch, tmp_path, stop_at: list[tuple[str, str]]):
    """Run a CLI verb on stub models until the step starts; the step config it built."""
    import importlib

    import edgeprune.models as models
    from edgeprune.cli.main import build_parser
    from edgeprune.models.loading import LoadedModel

    def load(source=None, **kwargs):  # the dense original by --dense / --teacher, the model otherwise
        model = DENSE if source in ("d", "t") else MODEL
        return LoadedModel(model=model, tokenizer=TOKENIZER, source=str(source), kind="hf-dir")

    monkeypatch.setattr(models, "load", load)
    monkeypatch.setattr(models, "to_per_layer", lambda model: model)
    for module, name in [("edgeprune.compress.structured.budget", "check_reachable"), ("edgeprune.compress.sparse.oneshot", "check_model"),
                         ("edgeprune.compress.reconstruct.local", "check_pair")]:  # fmt: skip
        monkeypatch.setattr(importlib.import_module(module), name, lambda *a, **k: None)
    seen = {}

    def stop(model, cfg, *args, **kwargs):
        seen["cfg"] = cfg
        raise _Stop

    for module, name in stop_at:
        monkeypatch.setattr(importlib.import_module(module), name, stop)
    args = build_parser().parse_args([*argv, "--out", str(tmp_path / "out"), "--quiet"])
    with pytest.raises(_Stop):
        args.run(args)
    return seen["cfg"]


def _run_build(cfg, source: str | None, monkeypatch, tmp_path, stop_at):
    """Apply ``cfg`` in the context a build gives a stage, on the same stub models, until the step starts."""
    import importlib
    from types import SimpleNamespace

    from edgeprune.pipeline import stages
    from edgeprune.steps import apply

    def stop(*args, **kwargs):
        raise _Stop

    for module, name in stop_at:
        monkeypatch.setattr(importlib.import_module(module), name, stop)
    build = SimpleNamespace(calib=source, dense_model=lambda: DENSE, log=print, target="host", artifacts=[],
                            source_gguf=None, eval_data="wikitext2", remote=None, remote_options={})  # fmt: skip
    with pytest.raises(_Stop):
        apply(MODEL, cfg, stages.step_context(build, tmp_path, tokenizer=TOKENIZER))


# where each step starts, once its windows are drawn
PRUNE, NM = [("edgeprune.compress.structured.prune", "structured_prune")], [("edgeprune.compress.sparse.oneshot", "nm_prune")]
AST, RECONSTRUCT = [("edgeprune.compress.sparse.ast", "sparse_train")], [("edgeprune.compress.reconstruct.local", "reconstruct")]
CASES = {
    # verb and its defaults, with --train-tokens so recovery training draws its windows too
    "prune": (["prune", "--train-tokens", "1000"], None, PRUNE,
              [("self", 64, 128, 0, "model"), ("self", 8, 128, 1, "model")]),
    "sparsify": (["sparsify", "--calib", "self"], None, NM, [("self", 32, 512, 0, "model")]),
    "sparsify-ast": (["sparsify", "--train", "ast", "--tokens", "5000", "--calib", SHAKESPEARE, "--train-data", SHAKESPEARE],
                     SHAKESPEARE, AST, [(SHAKESPEARE, 32, 512, 0, None), (SHAKESPEARE, 20, 256, 1, None)]),
    "sparsify-ast-teacher": (["sparsify", "--train", "ast", "--method", "none", "--teacher", "t", "--tokens", "5000"], None,
                             AST, [("self", 20, 256, 1, "dense")]),
    "reconstruct": (["reconstruct", "--model", "p", "--dense", "d", "--calib", "self"], None,
                    RECONSTRUCT, [("self", 64, 512, 0, "dense")]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_a_cli_and_a_build_of_the_same_step_draw_the_same_windows(case, drawn, monkeypatch, tmp_path):
    argv, build_source, stop_at, expected = CASES[case]
    cfg = _run_cli(argv, monkeypatch, tmp_path, stop_at)
    from_cli = list(drawn)
    drawn.clear()
    _run_build(cfg, build_source, monkeypatch, tmp_path, stop_at)
    assert from_cli == drawn == expected


@pytest.mark.parametrize("case, expected", [
    ("prune", [("general", 64, 128, 0, None), ("general", 8, 128, 1, None)]),  # training follows --calib
    ("sparsify-ast-teacher", [("general", 20, 256, 1, None)]),  # --train-data's default too
])  # fmt: skip
def test_where_the_data_directory_has_general_it_is_the_default_of_a_cli_and_a_build(case, expected, drawn, monkeypatch,
                                                                                       tmp_path, capsys):  # fmt: skip
    monkeypatch.setenv("EDGEPRUNE_DATA", str(TEST_DATA))  # holds general/ (excerpts)
    argv, build_source, stop_at, _ = CASES[case]
    cfg = _run_cli(argv, monkeypatch, tmp_path, stop_at)
    assert "given: using general" in capsys.readouterr().err  # the one line that says which
    from_cli = list(drawn)
    drawn.clear()
    _run_build(cfg, build_source, monkeypatch, tmp_path, stop_at)
    assert from_cli == drawn == expected

"""Strict step configs of the sparsity steps, and the `edgeprune sparsify` command (tiny models)."""

from __future__ import annotations

import json

import pytest
import torch

from edgeprune.cli.main import main
from edgeprune.compress.sparse import masks as mk
from edgeprune.compress.sparse.packed import WEIGHTS_FILE, load_packed
from edgeprune.steps import step_for
from edgeprune.compress.sparse.ast import SparseTrain
from edgeprune.compress.quant.weights import WeightQuant
from edgeprune.compress.sparse.oneshot import NMPrune
from edgeprune.errors import EdgepruneError
from tests.tiny import save_tiny, tiny_llama
from tests.unit.eval_helpers import TEST_DATA
from tests.unit.sparse_helpers import one_thread  # noqa: F401  (autouse fixture)

SHAKESPEARE = TEST_DATA / "calib" / "tiny_shakespeare.txt"  # an excerpt: the tests need no data directory

CONFIGS = [NMPrune(), NMPrune(pattern="4:8", method="sparsegpt", quant=WeightQuant(bits=8, symmetric=False)),
           WeightQuant(), SparseTrain(), SparseTrain(init="magnitude", slorb=False, tokens=1234)]  # fmt: skip


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.kind)
def test_configs_round_trip_to_yaml_and_are_registered(cfg):
    again = type(cfg).from_yaml(cfg.to_yaml())
    assert again == cfg and again.version == 1
    assert callable(step_for(cfg).apply_fn())


@pytest.mark.parametrize(
    "cls,data,match",
    [(NMPrune, {"patern": "2:4"}, "did you mean 'pattern'"), (NMPrune, {"pattern": "4:4"}, "N must be at least 1 and less than M"),
     (NMPrune, {"method": "wandda"}, "did you mean 'wanda'"), (WeightQuant, {"bits": 3}, "bits 3 is not one of 4, 8"),
     (SparseTrain, {"pattern": "unstructured"}, "needs an N:M pattern"), (SparseTrain, {"version": 2}, "version 2 is not supported"),
     (NMPrune, {"quant": {"group": 64}}, "did you mean 'group_size'")],
)  # fmt: skip
def test_bad_config_values_are_one_line_errors(cls, data, match):
    with pytest.raises(EdgepruneError, match=match) as exc:
        cls.from_dict(data)
    assert "\n" not in str(exc.value)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny(tiny_llama(num_hidden_layers=2), tmp_path_factory.mktemp("tiny") / "m")


def _run(capsys, *argv):
    code = main(["sparsify", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_writes_a_packed_2_4_int4_artifact(tiny_dir, tmp_path, capsys):
    code, out, err = _run(capsys, "--model", tiny_dir, "--method", "magnitude", "--quant", "int4", "--group", "32",
                          "--quant-method", "rtn", "--out", tmp_path / "o", "--quiet", "--target", "raspberry-pi-5-8gb")  # fmt: skip
    assert code == 0, err
    assert "saves storage only" in out and "raspberry-pi-5-8gb: no 2:4 kernels" in out
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["packed"]["ratio_linear_fp32"] > 9 and report["quant"] == "int4-g32-sym"
    model, _ = load_packed(tmp_path / "o")
    assert mk.satisfies_nm(model.model.layers[1].mlp.down_proj.weight, 2, 4)


@pytest.mark.parametrize(
    "argv,match",
    [(["--pattern", "4:4"], "N must be at least 1 and less than M"),
     (["--pattern", "2:3"], "group size 3 does not divide the input width 64"),
     (["--pattern", "2:4", "--quant", "int4", "--group", "48"], "group size 48 does not divide the input width 64"),
     (["--method", "sparsegpt", "--calib", "wikitext2"], "is the evaluation set"),
     (["--tokens", "100"], "add --train ast"),
     (["--method", "none"], "is for AST training: add --train ast"),
     (["--method", "none", "--train", "ast"], "pass its dense original as --teacher"),
     (["--target", "rasberry-pi-5"], "did you mean")],
)  # fmt: skip
def test_cli_bad_input_is_one_line_and_exit_2(tiny_dir, tmp_path, capsys, argv, match):
    code, out, err = _run(capsys, "--model", tiny_dir, "--out", tmp_path / "bad", "--quiet", *argv)
    errors = [line for line in err.splitlines() if "error" in line]  # (transformers may draw a loading bar)
    assert code == 2 and len(errors) == 1 and errors[0].startswith("edgeprune: error: ") and match in errors[0], err
    assert not (tmp_path / "bad").exists()


def test_cli_corrupt_compressed_input_is_one_line_and_exit_2(tiny_dir, tmp_path, capsys):
    assert _run(capsys, "--model", tiny_dir, "--method", "magnitude", "--out", tmp_path / "p", "--quiet")[0] == 0
    f = tmp_path / "p" / WEIGHTS_FILE
    data = bytearray(f.read_bytes())
    data[-50] ^= 0x55
    f.write_bytes(bytes(data))
    code, out, err = _run(capsys, "--model", tmp_path / "p", "--method", "magnitude", "--quant", "int8", "--group", "32",
                          "--quant-method", "rtn", "--out", tmp_path / "q", "--quiet")  # fmt: skip
    errors = [line for line in err.splitlines() if "error" in line]
    assert code == 2 and len(errors) == 1 and "corrupt compressed file" in errors[0], err


def test_cli_ast_with_slorb_saves_a_merged_dense_checkpoint(tiny_dir, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    code, out, err = _run(capsys, "--model", tiny_dir, "--method", "magnitude", "--train", "ast", "--tokens", 256,
                          "--batch-size", 2, "--train-data", SHAKESPEARE, "--train-seq-len", 32, "--out", tmp_path / "a",
                          "--save-dense", "--quiet")  # fmt: skip
    assert code == 0, err
    packed, _ = load_packed(tmp_path / "a")
    dense = AutoModelForCausalLM.from_pretrained(tmp_path / "a" / "dense")  # SLoRB merged: a stock Llama
    ids = torch.randint(0, 256, (1, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(dense(ids).logits, packed(ids).logits, rtol=1e-4, atol=1e-4)
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["steps"]["sparse_train"]["slorb_params"] > 0 and "merged" in report["dense_dir"]


def test_cli_ast_from_an_already_sparse_model_keeps_its_mask_and_distils_from_the_teacher(tiny_dir, tmp_path, capsys):
    # the path of the best 2:4 recipe: a pruned (e.g. reconstructed) model in, its own mask kept, the dense model teaching
    assert _run(capsys, "--model", tiny_dir, "--method", "magnitude", "--out", tmp_path / "p", "--quiet")[0] == 0
    code, out, err = _run(capsys, "--model", tmp_path / "p", "--method", "none", "--train", "ast", "--teacher", tiny_dir,
                          "--tokens", 128, "--batch-size", 2, "--no-slorb", "--train-data", SHAKESPEARE,
                          "--train-seq-len", 32, "--out", tmp_path / "a", "--quiet")  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    st = report["steps"]["sparse_train"]
    assert report["method"] == "ast (init none)" and st["init"] is None and st["losses"][0]["kl"] > 0
    before, _ = load_packed(tmp_path / "p")
    after, _ = load_packed(tmp_path / "a")
    for (name, a), (_, b) in zip(before.named_modules(), after.named_modules()):
        if name.endswith("_proj"):  # 2 steps (< mask_every): the given mask is kept, the kept weights trained
            assert torch.equal(a.weight != 0, b.weight != 0)
    assert not torch.equal(before.model.layers[0].mlp.up_proj.weight, after.model.layers[0].mlp.up_proj.weight)

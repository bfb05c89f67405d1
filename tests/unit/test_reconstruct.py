"""Local reconstruction (compress/reconstruct/local.py) on tiny random models: masks stay exact zeros,
block outputs move towards the dense model's, every granularity and input mode runs, masked LoRA
keeps the sparsity, bad input is one line (exit 2 from the CLI, nothing written)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from edgeprune.cli.main import main
from edgeprune.compress.sparse import masks as mk
from edgeprune.compress.reconstruct import maths as rm
from edgeprune.data.calib import TokenWindows
from edgeprune.compress.reconstruct.local import Reconstruct, reconstruct
from edgeprune.steps import step_for
from edgeprune.compress.sparse.oneshot import NMPrune, nm_prune
from edgeprune.errors import EdgepruneError
from tests.tiny import save_tiny, tiny_llama, tiny_per_layer
from tests.unit.sparse_helpers import one_thread  # noqa: F401  (autouse fixture)

ROOT = Path(__file__).resolve().parents[2]


def _calib(n=8, seq=32, seed=1) -> TokenWindows:
    return TokenWindows(torch.randint(0, 256, (n, seq), generator=torch.Generator().manual_seed(seed)), "random")


@pytest.fixture(scope="module")
def dense():
    return tiny_llama(num_hidden_layers=4)


def _wanda(dense, calib):
    model, _ = nm_prune(copy.deepcopy(dense), NMPrune(method="wanda"), calib, progress=False)
    return model


def _linears(model):
    return {f"{i}.{n}": lin for i, layer in enumerate(model.model.layers) for n, lin in layer.named_modules() if isinstance(lin, nn.Linear)}


@torch.no_grad()
def _final_error(model, dense, ids) -> float:
    """Relative error of the last decoder layer's output (before the final norm) vs the dense model's."""
    h = model(ids, output_hidden_states=True).hidden_states[-2]
    hd = dense(ids, output_hidden_states=True).hidden_states[-2]
    return rm.relative_mse(h, hd)


# -- pure maths ---------------------------------------------------------------------------------------


def test_losses():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert float(rm.recon_loss(a, a)) == 0.0
    assert float(rm.recon_loss(a, torch.zeros(2, 2))) == pytest.approx(5 / 4)
    assert float(rm.recon_loss(a, 3 * a, "cosine")) == pytest.approx(0.0, abs=1e-6)  # scale-free
    assert float(rm.recon_loss(a, -a, "cosine")) == pytest.approx(2.0)
    assert rm.relative_mse(a, 2 * a) == pytest.approx(0.25)
    big = torch.tensor([[100.0, 0.0], [0.0, 1.0]])  # token 0 carries a massive activation
    off = big + torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # the same absolute error ...
    off2 = big + torch.tensor([[0.0, 0.0], [1.0, 0.0]])  # ... on the small token
    assert float(rm.recon_loss(off, big)) == float(rm.recon_loss(off2, big))  # MSE cannot tell them apart
    assert float(rm.recon_loss(off2, big, "nmse")) == pytest.approx(0.5) and float(rm.recon_loss(off, big, "nmse")) == pytest.approx(0.5e-4)


def test_block_windows_must_divide_the_depth():
    assert rm.block_windows(6, 3) == [(0, 3), (3, 6)] and rm.block_windows(4, 1)[-1] == (3, 4)
    with pytest.raises(EdgepruneError, match="blocks 4 does not divide the 6 decoder layers.*pick one of 1, 2, 3, 6"):
        rm.block_windows(6, 4)
    with pytest.raises(EdgepruneError, match="does not divide"):
        rm.block_windows(2, 3)


def test_linear_lr_warms_up_then_decays_to_the_floor():
    lrs = [rm.linear_lr(s, 10, peak=1.0, warmup=0.2) for s in range(10)]
    assert lrs[0] == 0.5 and lrs[1] == 1.0 and lrs[-1] == pytest.approx(0.0) and lrs == sorted(lrs[:2]) + sorted(lrs[2:], reverse=True)


def test_cosine_schedule_warms_up_then_decays_to_the_floor():
    cos = [rm.schedule_lr(s, 20, peak=1.0, warmup=0.1, min_ratio=0.1, kind="cosine") for s in range(20)]
    lin = [rm.schedule_lr(s, 20, peak=1.0, warmup=0.1, min_ratio=0.1) for s in range(20)]
    assert lin == [rm.linear_lr(s, 20, peak=1.0, warmup=0.1, min_ratio=0.1) for s in range(20)]
    assert cos[:2] == [0.5, 1.0] and cos[-1] == pytest.approx(0.1) and cos[2:] == sorted(cos[2:], reverse=True)
    assert cos[5] > lin[5] + 0.1 and cos[16] < lin[16] - 0.05  # higher than linear early, lower late
    with pytest.raises(ValueError, match="schedule 'step' is not one of linear, cosine"):
        rm.schedule_lr(0, 10, peak=1.0, warmup=0.1, kind="step")


def test_masked_lora_starts_equal_and_merges_without_filling_pruned_weights():
    lin = nn.Linear(8, 4)
    with torch.no_grad():
        lin.weight.mul_(mk.nm_mask(lin.weight.abs(), 2, 4))
    x = torch.randn(3, 8)
    wrap = rm.MaskedLoRALinear(lin, rank=2, alpha=4.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(wrap(x), lin(x))  # B = 0
    with torch.no_grad():
        wrap.lora_B.normal_()
    y = wrap(x)
    zeros = lin.weight == 0
    merged = wrap.merged()
    assert (merged.weight[zeros] == 0).all() and mk.satisfies_nm(merged.weight, 2, 4)
    torch.testing.assert_close(merged(x), y, rtol=1e-5, atol=1e-5)


# -- the step -----------------------------------------------------------------------------------------


def test_masks_stay_exact_zeros_and_every_block_output_gets_closer_to_dense(dense):
    calib = _calib()
    model = _wanda(dense, calib)
    zeros = {k: lin.weight == 0 for k, lin in _linears(model).items()}
    before = {k: lin.weight.clone() for k, lin in _linears(model).items()}
    e0 = _final_error(model, dense, calib.ids)
    model, rep = reconstruct(model, Reconstruct(lr=3e-3, epochs=6, batch_size=2), calib, dense=dense, progress=False)
    for k, lin in _linears(model).items():
        assert (lin.weight[zeros[k]] == 0).all(), k  # exactly zero, not merely small
        assert not torch.equal(lin.weight, before[k]), f"{k} did not train"
    assert rep.zeros_after == rep.zeros_before == sum(int(z.sum()) for z in zeros.values())
    assert rep.submodels == 4 and all(r["rel_mse_after"] < r["rel_mse_before"] for r in rep.per_submodel)
    assert _final_error(model, dense, calib.ids) < 0.9 * e0
    # a held-out draw improves too (the fit is not only memorising the calibration windows)
    held_out = _calib(seed=7).ids
    assert _final_error(model, dense, held_out) < _final_error(_wanda(dense, calib), dense, held_out)


CASES = [dict(granularity=g, inputs=i) for g in ("block", "attn_mlp", "linear") for i in ("dense", "pruned", "pruned_true")]
CASES += [dict(blocks=2), dict(blocks=4, inputs="pruned"), dict(trainable="lora"), dict(trainable="lora", granularity="linear"),
          dict(loss="cosine"), dict(loss="nmse"), dict(autocast="float32"), dict(schedule="cosine")]  # fmt: skip


@pytest.mark.parametrize("kw", CASES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_every_granularity_input_mode_and_trainable_runs_and_keeps_2_4(dense, kw):
    calib = _calib(n=4, seq=16)
    model = _wanda(dense, calib)
    model, rep = reconstruct(model, Reconstruct(lr=1e-3, epochs=2, batch_size=2, **kw), calib, dense=dense, progress=False)
    assert all(mk.satisfies_nm(lin.weight, 2, 4) for lin in _linears(model).values())
    assert rep.zeros_after == rep.zeros_before and rep.steps > 0
    n_sub = {"block": 4 // kw.get("blocks", 1), "attn_mlp": 8, "linear": 28}[kw.get("granularity", "block")]
    assert rep.submodels == n_sub == len(rep.per_submodel)
    assert not any(isinstance(m, rm.MaskedLoRALinear) for m in model.modules())  # LoRA merged back
    mean_after = sum(r["rel_mse_after"] for r in rep.per_submodel) / n_sub
    assert mean_after < sum(r["rel_mse_before"] for r in rep.per_submodel) / n_sub


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_in_loop_pruning_chooses_2_4_masks_from_the_pruned_stream(dense, method):
    calib = _calib(n=4, seq=16)
    model = copy.deepcopy(dense)
    cfg = Reconstruct(prune=method, lr=1e-3, epochs=1, batch_size=2)
    model, rep = reconstruct(model, cfg, calib, dense=dense, progress=False)
    total = sum(lin.weight.numel() for lin in _linears(model).values())
    assert rep.zeros_before == 0 and rep.zeros_after == rep.params_pruned_in_loop == total // 2
    assert all(mk.satisfies_nm(lin.weight, 2, 4) for lin in _linears(model).values())


def test_lora_trains_far_fewer_parameters_than_all(dense):
    calib = _calib(n=4, seq=16)
    reps = {t: reconstruct(_wanda(dense, calib), Reconstruct(trainable=t, lora_rank=2, epochs=1, batch_size=2), calib,
                           dense=dense, progress=False)[1] for t in ("all", "lora")}  # fmt: skip
    assert reps["lora"].trainable_params < reps["all"].trainable_params / 3


def test_structured_model_keeps_its_widths_and_missing_parts():
    dense = tiny_llama(num_hidden_layers=4)
    model = tiny_per_layer()  # layer 1 has no attention, layer 2 no MLP: the shapes of a structured-pruned model
    shapes = {k: tuple(p.shape) for k, p in model.state_dict().items()}
    calib = _calib(n=4, seq=16)
    for g in ("block", "attn_mlp"):
        model, rep = reconstruct(model, Reconstruct(granularity=g, lr=1e-3, epochs=2, batch_size=2), calib, dense=dense, progress=False)
        assert {k: tuple(p.shape) for k, p in model.state_dict().items()} == shapes
        assert model.model.layers[1].self_attn is None and model.model.layers[2].mlp is None
        trained = [r for r in rep.per_submodel if r["trainable"]]
        assert all(r["rel_mse_after"] < r["rel_mse_before"] for r in trained)
    with pytest.raises(EdgepruneError, match="granularity 'linear' needs each pruned Linear to keep its dense shape"):
        reconstruct(model, Reconstruct(granularity="linear"), calib, dense=dense, progress=False)


# -- bad input ------------------------------------------------------------------------------------------


def test_models_that_do_not_correspond_and_empty_calibration_are_one_line_errors(dense):
    calib = _calib(n=2, seq=8)
    cases = [(tiny_llama(num_hidden_layers=3), "3 decoder layers and the dense model 4"),
             (tiny_llama(num_hidden_layers=4, hidden_size=32, num_attention_heads=2, num_key_value_heads=1), "hidden_size is 32"),
             (copy.deepcopy(dense), "blocks 3 does not divide the 4 decoder layers")]  # fmt: skip
    for model, match in cases:
        cfg = Reconstruct(blocks=3) if "blocks" in match else Reconstruct()
        with pytest.raises(EdgepruneError, match=match) as exc:
            reconstruct(model, cfg, calib, dense=dense, progress=False)
        assert "\n" not in str(exc.value)
    with pytest.raises(EdgepruneError, match="calibration set is empty"):
        reconstruct(copy.deepcopy(dense), Reconstruct(), TokenWindows(torch.zeros(0, 8, dtype=torch.long), "none"), dense=dense)
    with pytest.raises(EdgepruneError, match="needs the dense model"):
        reconstruct(copy.deepcopy(dense), Reconstruct(), calib)


@pytest.mark.parametrize("data,match", [({"granularity": "blocks"}, "did you mean 'block'"), ({"inputs": "sparse"}, "inputs 'sparse' is not one of"),
                                        ({"blocks": 0}, "blocks must be >= 1"), ({"granularity": "linear", "blocks": 2}, "blocks is a setting of granularity 'block'"),
                                        ({"epoch": 2}, "did you mean 'epochs'"), ({"prune": "wandaa"}, "did you mean 'wanda'"),
                                        ({"schedule": "cosin"}, "did you mean 'cosine'")])  # fmt: skip
def test_bad_config_values(data, match):
    with pytest.raises(EdgepruneError, match=match):
        Reconstruct.from_dict(data)


def test_config_round_trips_and_is_registered():
    cfg = Reconstruct(granularity="attn_mlp", inputs="pruned", trainable="lora", prune="sparsegpt", lr=3e-4)
    assert Reconstruct.from_yaml(cfg.to_yaml()) == cfg
    assert step_for(cfg).name == "reconstruct" and step_for("reconstruct").config_class() is Reconstruct


# -- CLI -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("recon")
    dense = tiny_llama(num_hidden_layers=2)
    pruned, _ = nm_prune(copy.deepcopy(dense), NMPrune(method="magnitude"), None, progress=False)
    return {"dense": save_tiny(dense, root / "dense"), "pruned": save_tiny(pruned, root / "pruned"),
            "deeper": save_tiny(tiny_llama(num_hidden_layers=3), root / "deeper"), "text": _text(root)}  # fmt: skip


def _text(root):
    path = root / "calib.txt"
    path.write_text("The quick brown fox jumps over the lazy dog. " * 200)
    return path


def _cli(capsys, *argv):
    code = main(["reconstruct", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_reconstructs_and_writes_a_loadable_sparse_model(dirs, tmp_path, capsys):
    out = tmp_path / "o"
    code, stdout, err = _cli(capsys, "--model", dirs["pruned"], "--dense", dirs["dense"], "--out", out, "--calib", dirs["text"],
                             "--calib-windows", 4, "--calib-seq-len", 32, "--epochs", 2, "--batch-size", 2, "--lr", 1e-3, "--quiet")  # fmt: skip
    assert code == 0, err
    assert "reconstructed 2 submodels" in stdout
    rep = json.loads((out / "reconstruct_report.json").read_text())["reconstruct"]
    assert rep["rel_mse_after"] < rep["rel_mse_before"] and rep["zeros_after"] == rep["zeros_before"] > 0
    from edgeprune.models import load

    model, _ = load(str(out))
    assert all(mk.satisfies_nm(lin.weight, 2, 4) for lin in _linears(model).values())
    assert Reconstruct.from_yaml((out / "reconstruct.yaml").read_text()).epochs == 2


@pytest.mark.parametrize("extra,match", [(["--dense", "deeper"], "2 decoder layers and the dense model 3"),
                                         (["--calib-windows", "0"], "calibration set is empty"),
                                         (["--blocks", "3"], "blocks 3 does not divide the 2 decoder layers"),
                                         (["--granularity", "layer"], "granularity 'layer' is not one of"),
                                         (["--calib", "wikitext2"], "evaluation set")])  # fmt: skip
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(dirs, tmp_path, capsys, extra, match):
    extra = [str(dirs[e]) if e in dirs else e for e in extra]
    argv = ["--model", dirs["pruned"], "--dense", dirs["dense"], "--out", tmp_path / "o", "--calib", dirs["text"],
            "--calib-windows", 2, "--calib-seq-len", 16, "--quiet"]  # fmt: skip
    for flag in ("--dense", "--calib-windows", "--calib"):
        if flag in extra:
            i = argv.index(flag)
            del argv[i : i + 2]
    code, _, err = _cli(capsys, *argv, *extra)
    errors = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("edgeprune: error:")]
    assert code == 2 and len(errors) == 1 and match in errors[0]
    assert not (tmp_path / "o").exists()


# -- memory does not grow with depth --------------------------------------------------------------------

_RSS_SCRIPT = """
import copy, json, sys, torch
torch.set_num_threads(1)
sys.path.insert(0, {root!r})
from tests.tiny import tiny_llama
from edgeprune.data.calib import TokenWindows
from edgeprune.compress.reconstruct.local import Reconstruct, reconstruct
depth = int(sys.argv[1])
dense = tiny_llama(num_hidden_layers=depth, hidden_size=256, intermediate_size=512, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=512)
model = copy.deepcopy(dense)
ids = torch.randint(0, 256, (32, 256), generator=torch.Generator().manual_seed(0))
_, rep = reconstruct(model, Reconstruct(prune="magnitude", epochs=1, batch_size=4), TokenWindows(ids, "r"), dense=dense,
                     progress=False, release_dense=True)
print(json.dumps({{"working_mb": rep.working_mb, "peak": rep.peak_rss_mb, "start": rep.rss_start_mb}}))
"""


def test_working_memory_does_not_grow_with_depth():
    """The activations of one stream are 32 x 256 x 256 float32 = 8 MB: keeping every layer's would add
    at least 8 MB per extra layer (64 MB from 2 to 10 layers); one submodel's worth stays flat. The
    bound is half that: RSS moves by up to ~20 MB from run to run on a busy machine (allocator
    caching), which a tighter bound turned into failures."""
    got = {}
    for depth in (2, 10):
        res = subprocess.run([sys.executable, "-c", _RSS_SCRIPT.format(root=str(ROOT)), str(depth)], capture_output=True,
                             text=True, timeout=300)  # fmt: skip
        assert res.returncode == 0, res.stderr[-2000:]
        got[depth] = json.loads(res.stdout.strip().splitlines()[-1])
    assert got[10]["working_mb"] - got[2]["working_mb"] < 32, got

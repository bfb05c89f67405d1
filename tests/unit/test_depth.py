"""Depth pruning (compress/depth) on tiny random models: scores are deterministic and in range, removing
layers equals running only the kept layers, the KV cache and generate() still work, the record of kept
layers survives a save and reload, GGUF (llama.cpp) and ONNX exports of a depth-pruned model match torch,
reconstruction across a removed gap lowers the block error, bad input is one line."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from edgeprune.cli.main import main
from edgeprune.compress import compress
from edgeprune.compress.depth import scores as sc
from edgeprune.compress.depth.config import Depth
from edgeprune.compress.depth.prune import depth_prune, layer_scores
from edgeprune.compress.depth.remove import KEPT_KEY, kept_layers, remove_layers
from edgeprune.compress.reconstruct import maths as rm
from edgeprune.compress.reconstruct.local import Reconstruct, reconstruct
from edgeprune.data.calib import TokenWindows
from edgeprune.errors import EdgepruneError
from edgeprune.steps import config_from_yaml, step_for
from tests.tiny import save_tiny, tiny_llama, tiny_per_layer, tiny_tokenizer
from tests.unit.sparse_helpers import one_thread  # noqa: F401  (autouse fixture)

IDS = [3, 17, 200, 45, 99, 12, 250, 7, 64, 128, 5, 33]


def _calib(n=8, seq=32, seed=1) -> TokenWindows:
    return TokenWindows(torch.randint(0, 256, (n, seq), generator=torch.Generator().manual_seed(seed)), "random")


def _skip_layers(model, drop):
    """Forward hooks that make layers ``drop`` pass their input through: the model "by hand" without them."""

    def identity(module, args, kwargs, output):
        return args[0] if args else kwargs["hidden_states"]

    layers = model.model.layers
    return [layers[i].register_forward_hook(identity, with_kwargs=True) for i in drop]


# -- pure maths -------------------------------------------------------------------------------------------


def test_scores_maths():
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))
    s, n = sc.angular_sum(x, 3 * x)  # same direction: angle 0
    assert n == 10 and s == pytest.approx(0.0, abs=1e-6)
    assert sc.angular_sum(x, -x)[0] == pytest.approx(10.0)  # opposite: angle pi -> 1
    assert sc.block_influence(10.0, 10) == 0.0 and sc.block_influence(-10.0, 10) == 2.0
    assert sc.removable(5) == [1, 2, 3] and sc.removable(5, protect_first=False, protect_last=False) == [0, 1, 2, 3, 4]
    assert sc.lowest([0.5, 0.1, 0.3, 0.1, 0.9], 2, [1, 2, 3]) == [1, 3]  # a tie: both 0.1 go
    assert sc.best_window([0.0, 0.4, 0.2, 0.3], 2, 5) == [2, 3]  # start 0 is protected
    with pytest.raises(EdgepruneError, match="remove fewer"):
        sc.lowest([0.1, 0.2], 3, [0, 1])


def test_dense_spans_tile_the_dense_model_and_neighbours_flank_the_gaps():
    spans = rm.dense_spans([0, 1, 4, 5], 7)
    assert spans == [(0, 1), (1, 4), (4, 5), (5, 7)]
    assert rm.gap_neighbours(spans) == [False, True, True, True]
    assert rm.dense_spans([2, 3], 4) == [(0, 3), (3, 4)]  # the first kept block stands for the layers before it too
    with pytest.raises(EdgepruneError, match="not ascending"):
        rm.dense_spans([3, 1], 4)


def test_layer_scores_are_deterministic_and_in_range():
    model, ids = tiny_llama(num_hidden_layers=5), _calib().ids
    a = layer_scores(model, ids, span=2)
    b = layer_scores(model, ids, span=2)
    assert a == b
    assert len(a["influence"]) == 5 and len(a["angular"]) == 4
    assert all(0.0 <= v <= 2.0 for v in a["influence"]) and all(0.0 <= v <= 1.0 for v in a["angular"])
    # Adapt-Pruner's importance (-mean cos) is ShortGPT's block influence minus one: the same order
    assert a["importance"] == pytest.approx([v - 1.0 for v in a["influence"]])


# -- removing layers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: tiny_llama(num_hidden_layers=5), lambda: tiny_per_layer()], ids=["llama", "per-layer"])
def test_removal_equals_running_only_the_kept_layers(make):
    model = make()
    n = model.config.num_hidden_layers
    ref = copy.deepcopy(model)
    ids = torch.tensor([IDS])
    handles = _skip_layers(ref, [1, 2])
    with torch.no_grad():
        want = ref(ids, use_cache=False).logits
    for h in handles:
        h.remove()
    remove_layers(model, [1, 2])
    assert model.config.num_hidden_layers == n - 2 == len(model.model.layers)
    assert kept_layers(model.config) == [0, *range(3, n)] and model.config.edgeprune_source_layers == n
    assert [l.self_attn.layer_idx for l in model.model.layers if l.self_attn is not None] == [
        i for i, l in enumerate(model.model.layers) if l.self_attn is not None]  # fmt: skip
    with torch.no_grad():
        assert torch.equal(model(ids, use_cache=False).logits, want)
    if hasattr(model.config, "heads_per_layer"):  # per-layer widths follow the kept layers
        assert model.config.heads_per_layer() == [4, 4] and model.config.intermediate_per_layer() == [128, 96]


def test_removal_composes_and_keeps_the_original_indices():
    model = tiny_llama(num_hidden_layers=6)
    remove_layers(model, [2])
    remove_layers(model, [3])  # now-index 3 is original layer 4
    assert kept_layers(model.config) == [0, 1, 3, 5] and model.config.edgeprune_source_layers == 6


def test_generate_with_kv_cache_after_removal():
    model = tiny_llama(num_hidden_layers=5)
    remove_layers(model, [1, 3])
    prompt = torch.tensor([IDS[:4]])
    cached = model.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=True)
    plain = model.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=False)
    assert cached.shape == (1, 10) and torch.equal(cached, plain)


@pytest.mark.parametrize("score", ["angular", "adapt", "consecutive"])
def test_step_removes_the_requested_layers(score):
    model = tiny_llama(num_hidden_layers=6)
    out, rep = compress(model, Depth(layers=2, score=score), _calib(), progress=False)
    assert out.config.num_hidden_layers == 4 and len(rep.removed) == 2
    assert 0 not in rep.removed and 5 not in rep.removed  # first and last are protected by default
    assert rep.kept == [i for i in range(6) if i not in rep.removed] == kept_layers(out.config)
    assert rep.params_after < rep.params_before
    if score == "consecutive":
        assert rep.removed[1] == rep.removed[0] + 1
    if score == "adapt":
        assert len(rep.rounds) == 2 and len(rep.rounds[1]["importance"]) == 5  # re-measured after the first cut
    again, rep2 = compress(tiny_llama(num_hidden_layers=6), Depth(layers=2, score=score), _calib(), progress=False)
    assert rep2.removed == rep.removed  # deterministic


def test_fraction_and_protection():
    assert Depth().n_remove(30) == 6 and Depth(fraction=0.3).n_remove(30) == 9
    _, rep = depth_prune(tiny_llama(num_hidden_layers=4), Depth(layers=1, protect_first=False, protect_last=False), _calib(),
                         progress=False)  # fmt: skip
    assert rep.layers_after == 3


def test_config_round_trips_and_rejects_unknown_keys():
    cfg = Depth(fraction=0.25, score="adapt", protect_last=False, calib_windows=16)
    assert Depth.from_yaml(cfg.to_yaml()) == cfg
    assert config_from_yaml(cfg.to_yaml()) == cfg and step_for(cfg).name == "depth"
    with pytest.raises(EdgepruneError, match="did you mean 'layers'"):
        Depth.from_dict({"layer": 3})
    recon = Reconstruct(depth_blocks="all")
    assert Reconstruct.from_yaml(recon.to_yaml()) == recon


@pytest.mark.parametrize("kw,n,match", [({"layers": 4}, 4, "cannot remove 4 of 4"), ({"layers": 3}, 4, "2 removable"),
                                        ({"fraction": 0.01}, 4, "removes none")])  # fmt: skip
def test_bad_counts_are_one_line(kw, n, match):
    with pytest.raises(EdgepruneError, match=match) as exc:
        depth_prune(tiny_llama(num_hidden_layers=n), Depth(**kw), _calib(), progress=False)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("kw,match", [({"score": "cosine"}, "score 'cosine' is not one of"),
                                      ({"layers": 2, "fraction": 0.2}, "not both"), ({"layers": 0}, "layers must be >= 1")])  # fmt: skip
def test_bad_config_is_one_line(kw, match):
    with pytest.raises(EdgepruneError, match=match) as exc:
        Depth(**kw)
    assert "\n" not in str(exc.value)


def test_remove_rejects_out_of_range_and_all_layers():
    with pytest.raises(EdgepruneError, match="out of range"):
        remove_layers(tiny_llama(num_hidden_layers=3), [3])
    with pytest.raises(EdgepruneError, match="leaves none"):
        remove_layers(tiny_llama(num_hidden_layers=3), [0, 1, 2])


# -- save, reload, export ---------------------------------------------------------------------------------


def test_saved_model_reloads_with_its_kept_layers(tmp_path):
    from edgeprune.models import load, save_model

    model = tiny_llama(num_hidden_layers=5)
    remove_layers(model, [2, 3])
    save_model(tmp_path / "m", model, tiny_tokenizer())
    loaded = load(str(tmp_path / "m")).model
    assert loaded.config.num_hidden_layers == 3 and getattr(loaded.config, KEPT_KEY) == [0, 1, 4]
    ids = torch.tensor([IDS])
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, model(ids).logits, atol=1e-5)


@pytest.mark.parametrize("make", [lambda: tiny_llama(num_hidden_layers=5), lambda: tiny_per_layer()], ids=["llama", "per-layer"])
def test_gguf_export_runs_in_llama_cpp_and_matches_torch(tmp_path, make):
    from edgeprune.export.gguf import export_gguf
    from tests.unit.gguf_helpers import gguf_values, llama_cpp_vs_torch

    model = make()
    remove_layers(model, [1, 2])
    out = tmp_path / "d.gguf"
    report = export_gguf(model, None, out, qtype="f32", progress=False)
    assert report.verified
    assert gguf_values(out, f"{report.arch}.block_count") == [model.config.num_hidden_layers]
    assert llama_cpp_vs_torch(out, model, IDS) < 0.02  # logits are O(5)


def test_onnx_export_matches_torch(tmp_path):
    from edgeprune.export.onnx import export_onnx

    model = tiny_llama(num_hidden_layers=4)
    remove_layers(model, [1])
    report = export_onnx(model, tmp_path / "o", exporter="torchscript", threads=1)
    assert report.verified and report.verify.max_rel_diff <= 1e-4


# -- reconstruction across the gap ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def depth_pair():
    dense = tiny_llama(num_hidden_layers=6)
    model = copy.deepcopy(dense)
    remove_layers(model, [2, 3])
    return dense, model


@pytest.mark.parametrize("inputs", ["pruned_true", "dense"])
def test_reconstruct_across_the_gap_reduces_the_block_error(depth_pair, inputs):
    dense, pruned = depth_pair
    model = copy.deepcopy(pruned)
    cfg = Reconstruct(inputs=inputs, epochs=4, lr=1e-3, batch_size=2, autocast="float32")
    _, rep = reconstruct(model, cfg, _calib(), dense=dense, progress=False)
    names = [r["name"] for r in rep.per_submodel]
    assert names == ["layers.0 (dense 0)", "layers.1 (dense 1-3)", "layers.2 (dense 4)", "layers.3 (dense 5)"]
    fitted = [r["trainable"] > 0 for r in rep.per_submodel]
    assert fitted == [False, True, True, False]  # neighbours of the gap only, by default
    gap = rep.per_submodel[1]
    assert gap["rel_mse_after"] < 0.95 * gap["rel_mse_before"]
    for r, f in zip(rep.per_submodel, fitted):
        if not f:
            assert r["rel_mse_after"] == r["rel_mse_before"]
    assert kept_layers(model.config) == [0, 1, 4, 5]  # the record survives
    # untouched blocks keep their weights bit for bit
    assert torch.equal(model.model.layers[0].mlp.up_proj.weight, pruned.model.layers[0].mlp.up_proj.weight)


def test_reconstruct_all_blocks_and_same_depth_models_unchanged(depth_pair):
    dense, pruned = depth_pair
    _, rep = reconstruct(copy.deepcopy(pruned), Reconstruct(depth_blocks="all", epochs=1, batch_size=4, autocast="float32"),
                         _calib(), dense=dense, progress=False)  # fmt: skip
    assert all(r["trainable"] > 0 for r in rep.per_submodel)
    # a model without kept layers still needs the dense model's depth
    with pytest.raises(EdgepruneError, match="4 decoder layers and the dense model 6"):
        reconstruct(tiny_llama(num_hidden_layers=4), Reconstruct(), _calib(), dense=dense, progress=False)


@pytest.mark.parametrize("kw,match", [({"granularity": "attn_mlp"}, "granularity 'block' with blocks 1"),
                                      ({"blocks": 2}, "granularity 'block' with blocks 1")])  # fmt: skip
def test_reconstruct_depth_bad_input_is_one_line(depth_pair, kw, match):
    dense, pruned = depth_pair
    with pytest.raises(EdgepruneError, match=match):
        reconstruct(copy.deepcopy(pruned), Reconstruct(**kw), _calib(), dense=dense, progress=False)
    with pytest.raises(EdgepruneError, match="depth-pruned from"):
        reconstruct(copy.deepcopy(pruned), Reconstruct(), _calib(), dense=tiny_llama(num_hidden_layers=5), progress=False)


# -- CLI ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("depth")
    text = root / "calib.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 200)
    return {"dense": save_tiny(tiny_llama(num_hidden_layers=5), root / "dense"), "text": text, "root": root}


def test_cli_depth_then_reconstruct(cli_dirs, capsys):
    from edgeprune.models import load

    out, rec = cli_dirs["root"] / "d", cli_dirs["root"] / "r"
    code = main(["depth", "--model", str(cli_dirs["dense"]), "--out", str(out), "--layers", "2", "--calib", str(cli_dirs["text"]),
                 "--calib-windows", "4", "--calib-seq-len", "32", "--quiet"])  # fmt: skip
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert "removed 2 of 5 decoder layers" in stdout
    rep = json.loads((out / "depth_report.json").read_text())["depth"]
    assert rep["layers_after"] == 3 and Depth.from_yaml((out / "depth.yaml").read_text()).layers == 2
    assert load(str(out)).model.config.num_hidden_layers == 3
    code = main(["reconstruct", "--model", str(out), "--dense", str(cli_dirs["dense"]), "--out", str(rec), "--calib",
                 str(cli_dirs["text"]), "--calib-windows", "4", "--calib-seq-len", "32", "--epochs", "1", "--quiet"])  # fmt: skip
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert kept_layers(load(str(rec)).model.config) == rep["kept"]


@pytest.mark.parametrize("extra,match", [(["--layers", "5"], "cannot remove 5 of 5"), (["--score", "angle"], "did you mean 'angular'"),
                                         (["--layers", "1", "--fraction", "0.2"], "not both")])  # fmt: skip
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(cli_dirs, tmp_path, capsys, extra, match):
    code = main(["depth", "--model", str(cli_dirs["dense"]), "--out", str(tmp_path / "o"), "--calib", str(cli_dirs["text"]),
                 "--calib-windows", "2", "--calib-seq-len", "16", "--quiet", *extra])  # fmt: skip
    _, err = capsys.readouterr()
    errors = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("edgeprune: error:")]
    assert code == 2 and len(errors) == 1 and match in errors[0]
    assert not (tmp_path / "o").exists()


def test_record_survives_conversion_to_per_layer_widths():
    from edgeprune.models import to_per_layer

    model = tiny_llama(num_hidden_layers=4)
    remove_layers(model, [2])
    per_layer = to_per_layer(model)
    assert kept_layers(per_layer.config) == [0, 1, 3] and per_layer.config.edgeprune_source_layers == 4
    assert per_layer.config.heads_per_layer() == [4, 4, 4]

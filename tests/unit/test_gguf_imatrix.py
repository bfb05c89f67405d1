"""Importance matrices for llama.cpp's quantizer (export/gguf/imatrix.py): the statistics, the file,
the names, a K-quant made with one, and one-line errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgeprune.errors import EdgepruneError
from edgeprune.export.gguf import export_gguf
from edgeprune.export.gguf.imatrix import Imatrix, collect_imatrix, imatrix_modules, read_imatrix, write_imatrix
from tests.tiny import tiny_llama, tiny_per_layer, tiny_qwen2
from tests.unit.gguf_helpers import tensor_names


def _ids(n=4, t=16, seed=0):
    return torch.randint(0, 256, (n, t), generator=torch.Generator().manual_seed(seed))


def _k_model():
    # rows of 256: llama.cpp's Q4_K/Q6_K need multiples of 256 (narrower models fall back to Q5_0/Q8_0)
    return tiny_llama(hidden_size=256, intermediate_size=256, num_hidden_layers=2)


def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


def test_statistics_are_mean_squared_inputs_of_each_matrix():
    model = tiny_llama()
    ids = _ids(5, 16)
    im = collect_imatrix(model, ids, batch_tokens=32, progress=False)  # 2 windows a batch: batches add up
    with torch.no_grad():
        h = model(ids, output_hidden_states=True).hidden_states
        attn_in = model.model.layers[0].input_layernorm(h[0])
    means = im.means()
    np.testing.assert_allclose(means["blk.0.attn_q.weight"], (attn_in.double() ** 2).mean((0, 1)).numpy(), rtol=1e-5)
    np.testing.assert_allclose(means["output.weight"], (h[-1].double() ** 2).mean((0, 1)).numpy(), rtol=1e-5)
    # q, k and v read the same input; every matrix saw every token
    assert np.array_equal(means["blk.1.attn_q.weight"], means["blk.1.attn_v.weight"])
    assert set(im.counts.values()) == {80} and im.chunk_count == 5 and im.chunk_size == 16
    assert means["blk.0.ffn_down.weight"].shape == (128,)


def test_names_are_the_gguf_files_matrix_names(tmp_path):
    model = tiny_llama()
    export_gguf(model, None, tmp_path / "m.gguf", qtype="f32", verify=False, progress=False)
    names = set(tensor_names(tmp_path / "m.gguf"))
    im = collect_imatrix(model, _ids(), progress=False)
    matrices = {n for n in names if n.startswith("blk.") and n.endswith(".weight") and "norm" not in n}
    assert set(im.sums) == matrices | {"output.weight"}
    # tied embeddings: token_embd is also the lookup table, and gets no entry (as llama-imatrix)
    assert "output.weight" not in imatrix_modules(tiny_qwen2()).values()
    assert "token_embd.weight" not in imatrix_modules(tiny_qwen2()).values()
    # per-layer widths: a layer without attention has no attention entries
    per_layer = set(imatrix_modules(tiny_per_layer()).values())
    assert "blk.1.attn_q.weight" not in per_layer and "blk.0.attn_q.weight" in per_layer


def test_file_round_trips_in_llama_cpps_layout(tmp_path):
    im = collect_imatrix(tiny_llama(), _ids(), progress=False)
    path = write_imatrix(tmp_path / "im.gguf", Imatrix(im.sums, im.counts, ("general",), im.chunk_count, im.chunk_size))
    back = read_imatrix(path)
    assert back.counts == im.counts and back.datasets == ("general",) and (back.chunk_count, back.chunk_size) == (4, 16)
    for name, s in im.sums.items():
        np.testing.assert_allclose(back.sums[name], s, rtol=1e-6)  # stored as F32, as llama-imatrix does
    from gguf import GGUFReader

    r = GGUFReader(str(path))
    t = {x.name: x for x in r.tensors}
    assert r.get_field("general.type").contents() == "imatrix"
    assert r.get_field("imatrix.datasets").contents() == ["general"]
    # ggml shapes (ne0, ne1): sums (ncols, 1), counts (1, 1)
    assert list(t["blk.0.ffn_down.weight.in_sum2"].shape) == [128, 1]
    assert list(t["blk.0.ffn_down.weight.counts"].shape) == [1, 1]
    assert float(t["blk.0.ffn_down.weight.counts"].data.reshape(-1)[0]) == 64.0


def _weighted_error(path, model_w: dict, means: dict, name: str) -> float:
    from gguf import GGUFReader
    from gguf.quants import dequantize

    t = next(x for x in GGUFReader(str(path)).tensors if x.name == name)
    q = dequantize(np.asarray(t.data), t.tensor_type).reshape(model_w[name].shape)
    return float((((q - model_w[name]) ** 2) * means[name]).sum())


def test_q4_k_m_with_an_imatrix_runs_in_llama_cpp_and_weights_the_rounding(tmp_path):
    model = _k_model()
    # an imatrix that makes a few columns matter far more than the rest: the quantizer must favour them
    im = collect_imatrix(model, _ids(), progress=False)
    rng = np.random.default_rng(0)
    skew = {n: s * np.where(rng.random(s.size) < 0.1, 1000.0, 1.0) for n, s in im.sums.items()}
    path = write_imatrix(tmp_path / "im.gguf", Imatrix(skew, im.counts, ("skewed",), im.chunk_count, im.chunk_size))
    plain = export_gguf(model, None, tmp_path / "plain.gguf", qtype="q4_k_m", progress=False)
    weighted = export_gguf(model, None, tmp_path / "w.gguf", qtype="q4_k_m", imatrix=path, progress=False)
    assert plain.verified and weighted.verified  # llama.cpp loads and runs both; logits close to torch
    assert plain.imatrix is None
    assert weighted.imatrix["datasets"] == ["skewed"] and weighted.imatrix["tokens"] == 64 and weighted.imatrix["entries"] == 15
    assert weighted.tensor_types == plain.tensor_types
    from gguf import GGUFReader

    meta = GGUFReader(str(tmp_path / "w.gguf"))
    assert meta.get_field("quantize.imatrix.entries_count").contents() == 15
    assert meta.get_field("quantize.imatrix.file").contents() == "im.gguf"
    # the weights differ, and the imatrix-weighted rounding error is lower with it on every matrix
    from edgeprune.export.gguf.layout import permute_qk

    means = Imatrix(skew, im.counts, (), 0, 0).means()
    w = {}
    for mod, gg in imatrix_modules(model).items():
        arr = dict(model.named_modules())[mod].weight.detach().numpy()
        heads = {"attn_q": 4, "attn_k": 2}.get(gg.split(".")[-2], 0)
        w[gg] = permute_qk(arr, heads) if heads else arr  # the file's row order; columns are the model's
    for name in ("blk.0.attn_q.weight", "blk.0.ffn_down.weight", "blk.1.ffn_up.weight", "output.weight"):
        assert _weighted_error(tmp_path / "w.gguf", w, means, name) < 0.8 * _weighted_error(tmp_path / "plain.gguf", w, means, name)


def test_legacy_type_with_an_imatrix_goes_through_llama_cpps_quantizer(tmp_path):
    model = tiny_llama()
    path = write_imatrix(tmp_path / "im.gguf", collect_imatrix(model, _ids(), progress=False))
    report = export_gguf(model, None, tmp_path / "q.gguf", qtype="q4_0", imatrix=path, progress=False)
    assert report.verified and "llama-cpp-python" in report.route and report.imatrix["entries"] == 22
    assert any("importance matrix" in n for n in report.notes)


def test_bad_imatrix_input_gives_one_line_errors(tmp_path):
    model = tiny_llama()
    with pytest.raises(EdgepruneError, match="does not exist") as err:
        export_gguf(model, None, tmp_path / "a.gguf", qtype="q4_k_m", imatrix=tmp_path / "nope.gguf", progress=False)
    _one_line(err)
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf at all")
    with pytest.raises(EdgepruneError, match="not a GGUF imatrix") as err:
        export_gguf(model, None, tmp_path / "a.gguf", qtype="q4_k_m", imatrix=tmp_path / "junk.gguf", progress=False)
    _one_line(err)
    other = write_imatrix(tmp_path / "other.gguf", collect_imatrix(tiny_llama(num_hidden_layers=4), _ids(), progress=False))
    with pytest.raises(EdgepruneError, match=r"tensors this model does not have \(blk\.3\.") as err:
        export_gguf(model, None, tmp_path / "a.gguf", qtype="q4_k_m", imatrix=other, progress=False)
    _one_line(err)
    wide = write_imatrix(tmp_path / "wide.gguf", collect_imatrix(tiny_llama(intermediate_size=96), _ids(), progress=False))
    with pytest.raises(EdgepruneError, match="blk.0.ffn_down.weight has 96 values but the matrix has 128 columns") as err:
        export_gguf(model, None, tmp_path / "a.gguf", qtype="q4_k_m", imatrix=wide, progress=False)
    _one_line(err)
    good = write_imatrix(tmp_path / "good.gguf", collect_imatrix(model, _ids(), progress=False))
    with pytest.raises(EdgepruneError, match="changes nothing in a q8_0 file") as err:
        export_gguf(model, None, tmp_path / "a.gguf", qtype="q8_0", imatrix=good, progress=False)
    _one_line(err)
    nan = read_imatrix(good)
    nan.sums["blk.0.attn_q.weight"][0] = np.nan
    bad = write_imatrix(tmp_path / "nan.gguf", nan)
    with pytest.raises(EdgepruneError, match="non-finite") as err:
        export_gguf(model, None, tmp_path / "a.gguf", qtype="q4_k_m", imatrix=bad, progress=False)
    _one_line(err)
    with pytest.raises(EdgepruneError, match="torch.long tensor"):
        collect_imatrix(model, torch.zeros(3, 4), progress=False)
    assert not (tmp_path / "a.gguf").exists()


def test_cli_computes_an_imatrix_and_refuses_bad_combinations(tmp_path, capsys):
    from edgeprune.cli.main import main

    assert main(["export", "gguf", "--type", "f16", "--imatrix-calib", "shakespeare", "--out", str(tmp_path / "m.gguf")]) == 2
    assert "changes nothing in a f16 file" in capsys.readouterr().err
    assert main(["export", "gguf", "--type", "q4_k_m", "--imatrix", str(tmp_path / "none.gguf"), "--out", str(tmp_path / "m.gguf")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_build_export_step_config_checks_imatrix():
    from edgeprune.pipeline.build_steps import Export

    assert Export(format="gguf", quant="q4_k_m", imatrix=True).imatrix
    with pytest.raises(EdgepruneError, match="applies to gguf files only"):
        Export(format="onnx", imatrix=True)
    with pytest.raises(EdgepruneError, match="changes nothing in a q8_0 file"):
        Export(format="gguf", quant="q8_0", imatrix=True)
    assert Export.from_dict(Export(format="gguf", imatrix=True).to_dict()).imatrix


def test_build_export_step_computes_the_imatrix_from_the_calibration_windows(tmp_path):
    from edgeprune.data.windows import TokenWindows
    from edgeprune.pipeline.build_steps import Export, export
    from edgeprune.steps import StepContext

    ctx = StepContext(calib=TokenWindows(_ids(), "test windows"), build_dir=tmp_path, progress=False)
    model, figures = export(tiny_llama(), Export(format="gguf", quant="q4_k_m", imatrix=True), ctx)
    assert ctx.outputs == {"imatrix": "imatrix.gguf", "artifact": "model-q4_k_m.gguf"}
    assert figures["imatrix"]["datasets"] == ["test windows"] and figures["imatrix"]["tokens"] == 64
    assert figures["verify"]["passed"]
    assert read_imatrix(tmp_path / "imatrix.gguf").tokens == 64


def test_cli_imatrix_calib_writes_the_imatrix_beside_the_output(tmp_path, capsys):
    from edgeprune.cli.main import main
    from tests.unit.gguf_helpers import bpe_tokenizer

    tok = bpe_tokenizer()  # with merges: llama.cpp needs them
    model_dir = tmp_path / "tiny"
    tiny_llama(vocab_size=len(tok), bos_token_id=0, eos_token_id=1, pad_token_id=2).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    out = tmp_path / "m.gguf"
    argv = ["export", "gguf", "--model", str(model_dir), "--type", "q4_k_m", "--imatrix-calib", "shakespeare",
            "--imatrix-windows", "4", "--imatrix-seq-len", "32", "--out", str(out), "--json"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out.split("\n", 1)[1])  # line 1: where the imatrix went
    im = read_imatrix(tmp_path / "m.imatrix.gguf")
    assert report["imatrix"]["tokens"] == im.tokens == 128 and report["imatrix"]["file"].endswith("m.imatrix.gguf")
    assert "tiny_shakespeare.txt" in report["imatrix"]["datasets"][0]
    assert report["verify"]["passed"]


def test_old_llama_cpp_python_names_the_version_it_needs(tmp_path, monkeypatch):
    import llama_cpp

    model = tiny_llama()
    path = write_imatrix(tmp_path / "im.gguf", collect_imatrix(model, _ids(), progress=False))
    monkeypatch.delattr(llama_cpp, "llama_model_imatrix_data")  # as in releases whose params.imatrix is a void*
    with pytest.raises(EdgepruneError, match=r"install llama-cpp-python>=0\.3\.36 or pass a llama-quantize binary") as err:
        export_gguf(model, None, tmp_path / "a.gguf", qtype="q4_k_m", imatrix=path, progress=False)
    _one_line(err)

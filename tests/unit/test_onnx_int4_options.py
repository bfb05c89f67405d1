"""int4 ONNX options on tiny models: the algorithms that choose the 4-bit codes (rtn, k_quant, hqq),
block sizes, the accuracy level, and the ``edgeprune export onnx`` flags that set them."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgeprune.cli.main import main
from edgeprune.errors import EdgepruneError
from edgeprune.export.onnx import OnnxExportConfig, export_onnx, names
from edgeprune.export.onnx.sparsity import unpack_uint4
from tests.tiny import save_tiny, tiny_llama, tiny_per_layer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _nbits_nodes(graph) -> list:
    return [n for n in graph.graph.node if n.op_type == "MatMulNBits"]


def _attrs(node) -> dict:
    return {a.name: a.i for a in node.attribute}


def _dequantize(node, inits: dict) -> np.ndarray:
    """A 4-bit MatMulNBits weight back to float ``[K, N]``: codes (low nibble first), per-block scales
    and zero points (none: 8; uint8: packed two a byte; float: as stored)."""
    a = _attrs(node)
    k, n, block = a["K"], a["N"], a["block_size"]
    codes = unpack_uint4(inits[node.input[1]]).reshape(n, -1).astype(np.float32)  # (N, blocks * block)
    scales = inits[node.input[2]].reshape(n, -1)  # (N, blocks)
    blocks = scales.shape[1]
    zp_name = node.input[3] if len(node.input) > 3 else ""
    if not zp_name:
        zp = np.full((n, blocks), 8.0, np.float32)
    elif inits[zp_name].dtype == np.uint8:
        zp = unpack_uint4(inits[zp_name].reshape(n, -1))[:, :blocks].astype(np.float32)
    else:
        zp = inits[zp_name].reshape(n, blocks).astype(np.float32)
    w = (codes.reshape(n, blocks, -1) - zp[..., None]) * scales[..., None]  # (N, blocks, block)
    return w.reshape(n, -1)[:, :k].T


def _weight_error(model, owners: dict, graph) -> float:
    """Mean squared error of every 4-bit weight of ``graph`` against the float weight it came from."""
    inits = {t.name: numpy_helper.to_array(t) for t in graph.graph.initializer}
    torch_w = {n: p.detach().numpy() for n, p in model.named_parameters() if p.ndim == 2}
    err, count = 0.0, 0
    for node in _nbits_nodes(graph):
        if _attrs(node)["bits"] != 4:
            continue
        w = torch_w[owners[node.name.removesuffix("_Q4")]].T  # (K, N)
        err += float(((_dequantize(node, inits) - w) ** 2).sum())
        count += w.size
    return err / count


@pytest.fixture(scope="module")
def tiny_and_owners(tmp_path_factory):
    """A tiny Llama and the MatMul node -> torch weight map of its float graph (from an fp32 export)."""
    from edgeprune.export.onnx.quantize import matmul_owners

    model = tiny_llama(num_hidden_layers=2)
    out = tmp_path_factory.mktemp("fp32") / "g"
    export_onnx(model, out, exporter="torchscript", verify=False)
    weights = {n: p.detach().numpy() for n, p in model.named_parameters() if p.ndim == 2}
    return model, matmul_owners(onnx.load(str(out / names.MODEL_FILE)), weights)


@pytest.mark.parametrize("algo", ["k_quant", "hqq"])
def test_int4_algorithms_write_4_bit_blocks_with_zero_points(algo, tiny_and_owners, tmp_path):
    model, _ = tiny_and_owners
    report = export_onnx(model, tmp_path / algo, quant="int4", int4_algo=algo, int4_mix="none", int4_lm_head="int4",
                         exporter="torchscript", threads=1)  # fmt: skip
    graph = onnx.load(str(tmp_path / algo / names.MODEL_FILE))
    nodes = _nbits_nodes(graph)
    assert len(nodes) == 2 * 7 + 1 and all(_attrs(n)["bits"] == 4 for n in nodes)
    assert all(len(n.input) > 3 and n.input[3] for n in nodes)  # a zero point per block
    assert all(_attrs(n)["accuracy_level"] == 4 for n in nodes)  # set even where the algorithm leaves it unset
    q = report.quantization
    assert (q["algo"], q["symmetric"], q["matmuls"]) == (algo, False, {"int4": 15, "int8": 0, "fp32": 0})
    assert report.weights.startswith(f"int4 {algo} b32") and report.verify.passed


def test_searched_codes_fit_the_weights_better_than_round_to_nearest(tiny_and_owners, tmp_path):
    """k_quant (scale and minimum search) and hqq (half-quadratic) reconstruct the float weights
    with less squared error than symmetric round to nearest, on the same blocks."""
    model, owners = tiny_and_owners
    errors = {}
    for algo in ("rtn", "k_quant", "hqq"):
        export_onnx(model, tmp_path / algo, quant="int4", int4_algo=algo, int4_mix="none", exporter="torchscript",
                    verify=False)  # fmt: skip
        errors[algo] = _weight_error(model, owners, onnx.load(str(tmp_path / algo / names.MODEL_FILE)))
    assert errors["rtn"] > 0
    assert errors["k_quant"] < 0.95 * errors["rtn"] and errors["hqq"] < 0.95 * errors["rtn"], errors


def test_dequantize_helper_matches_round_to_nearest(tiny_and_owners, tmp_path):
    # the helper the error test relies on: symmetric rtn is within one step of its block's float weights
    # (the largest magnitude maps to -8 exactly, the opposite sign clips at +7: up to a step there)
    model, owners = tiny_and_owners
    export_onnx(model, tmp_path / "q", quant="int4", int4_mix="none", exporter="torchscript", verify=False)
    graph = onnx.load(str(tmp_path / "q" / names.MODEL_FILE))
    inits = {t.name: numpy_helper.to_array(t) for t in graph.graph.initializer}
    torch_w = {n: p.detach().numpy() for n, p in model.named_parameters()}
    for node in (n for n in _nbits_nodes(graph) if _attrs(n)["bits"] == 4):
        w = torch_w[owners[node.name.removesuffix("_Q4")]].T  # (K, N)
        k, n, block = _attrs(node)["K"], _attrs(node)["N"], _attrs(node)["block_size"]
        step = np.repeat(np.abs(inits[node.input[2]]).reshape(n, -1), block, axis=1)[:, :k].T  # (K, N)
        err = np.abs(_dequantize(node, inits) - w)
        assert (err <= step * 1.0001).all() and np.median(err / step) < 0.3


def test_block_16_and_accuracy_level(tmp_path):
    report = export_onnx(tiny_per_layer(), tmp_path / "q", quant="int4", block_size=16, int4_algo="k_quant",
                         int4_accuracy_level=0, exporter="torchscript", threads=1)  # fmt: skip
    graph = onnx.load(str(tmp_path / "q" / names.MODEL_FILE))
    assert {_attrs(n)["block_size"] for n in _nbits_nodes(graph)} == {16}
    assert all("accuracy_level" not in _attrs(n) for n in _nbits_nodes(graph))  # 0: the attribute is left unset
    assert report.quantization["accuracy_level"] == 0 and report.verify.passed


def test_symmetric_applies_to_rtn_only():
    with pytest.raises(EdgepruneError, match="'hqq' always stores zero points: int4_symmetric applies to rtn only"):
        OnnxExportConfig(quant="int4", int4_algo="hqq", int4_symmetric=True)
    assert OnnxExportConfig(quant="int4", int4_algo="hqq", int4_symmetric=False).int4_symmetric is False
    with pytest.raises(EdgepruneError, match="unknown int4 algorithm 'gptq'.*use one of rtn, k_quant, hqq"):
        OnnxExportConfig(quant="int4", int4_algo="gptq")
    with pytest.raises(EdgepruneError, match="apply to quant int4, not 'int8'"):
        OnnxExportConfig(quant="int8", int4_algo="hqq")
    with pytest.raises(EdgepruneError, match="int4_accuracy_level must be one of 0, 1, 2, 3, 4"):
        OnnxExportConfig(quant="int4", int4_accuracy_level=5)
    assert OnnxExportConfig(quant="int4").int4_algo is None  # resolved at export: hqq, or rtn (see below)


def test_default_algo_is_hqq_and_rtn_for_symmetric_or_2_4(tmp_path):
    report = export_onnx(tiny_llama(), tmp_path / "a", quant="int4", exporter="torchscript", verify=False)
    assert report.quantization["algo"] == "hqq" and report.weights.startswith("int4 hqq b32")
    report = export_onnx(tiny_llama(), tmp_path / "b", quant="int4", int4_symmetric=True, exporter="torchscript",
                         verify=False)  # fmt: skip
    assert (report.quantization["algo"], report.quantization["symmetric"]) == ("rtn", True)
    report = export_onnx(_two_four(tiny_per_layer(seed=1)), tmp_path / "c", quant="int4", exporter="torchscript",
                         threads=1)  # fmt: skip
    assert report.quantization["algo"] == "rtn" and report.sparsity_2_4 == {"weights": 21, "kept": 21}
    assert any(n.startswith("int4 codes by rtn, not hqq") for n in report.notes)


# -- CLI ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny(tiny_llama(num_hidden_layers=4), tmp_path_factory.mktemp("tiny") / "m")


def test_cli_int4_flags_reach_the_export(model_dir, tmp_path, capsys):
    out = tmp_path / "o"
    code = main(["export", "onnx", "--model", str(model_dir), "--out", str(out), "--exporter", "torchscript",
                 "--quant", "int4", "--block-size", "16", "--int4-algo", "K_QUANT", "--int4-lm-head", "int4",
                 "--int4-mix", "edges", "--int4-edges", "1", "--int4-embedding", "fp32", "--int4-accuracy-level", "0",
                 "--threads", "1", "--json"])  # fmt: skip
    assert code == 0
    rep = json.loads(capsys.readouterr().out)
    q = rep["quantization"]
    assert (q["algo"], q["block_size"], q["lm_head"], q["mix"], q["eight_bit_layers"], q["embedding"]) == (
        "k_quant", 16, "int4", "edges", 1, "fp32")  # fmt: skip
    assert q["accuracy_level"] == 0
    # 4 layers, 1 on each side at 8 bits: 2 x 7 projections; the middle 2 x 7 and the lm_head at 4
    assert q["matmuls"] == {"int4": 15, "int8": 14, "fp32": 0}


def test_cli_rtn_asymmetric(model_dir, tmp_path, capsys):
    code = main(["export", "onnx", "--model", str(model_dir), "--out", str(tmp_path / "o"), "--exporter", "torchscript",
                 "--quant", "int4", "--int4-asymmetric", "--int4-mix", "none", "--threads", "1", "--json"])  # fmt: skip
    assert code == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["quantization"]["symmetric"] is False and rep["weights"].startswith("int4 asym b32")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--quant", "int4", "--int4-algo", "gptq"], "unknown int4 algorithm 'gptq'"),
        (["--quant", "int4", "--int4-edges", "two"], "--int4-edges must be a whole number of layers >= 0, got 'two'"),
        (["--quant", "int4", "--int4-edges", "-1"], "int4_edge_layers must be a whole number >= 0"),
        (["--quant", "int4", "--int4-accuracy-level", "x"], "--int4-accuracy-level must be one of 0, 1, 2, 3, 4"),
        (["--quant", "int4", "--int4-mix", "edge"], "unknown int4 mix 'edge' (did you mean 'edges'?)"),
        (["--quant", "int4", "--int4-lm-head", "int2"], "unknown int4 lm_head precision 'int2'"),
        (["--quant", "int4", "--int4-algo", "hqq", "--int4-symmetric"], "int4_symmetric applies to rtn only"),
        (["--quant", "int8", "--int4-lm-head", "int4"], "apply to quant int4, not 'int8'"),
        (["--quant", "int4", "--block-size", "48"], "block size must be one of 16, 32, 64, 128, 256"),
    ],
)
def test_cli_bad_int4_flags_exit_2_with_one_line(flags, message, model_dir, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["export", "onnx", "--model", str(model_dir), "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edgeprune: error: ") and message in err[0], err
    assert not out.exists()


def _two_four(model):
    import torch

    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear) and "lm_head" not in name:
                groups = mod.weight.view(mod.weight.shape[0], -1, 4)  # (out, in/4, 4)
                groups.scatter_(-1, groups.abs().argsort(-1)[..., :2], 0.0)
    return model


@pytest.mark.parametrize("algo, symmetric", [("k_quant", None), ("rtn", False)])
def test_whole_code_zero_points_keep_2_4_sparsity(algo, symmetric, tmp_path):
    # k_quant's and asymmetric rtn's zero points are whole codes: a 0 weight quantizes to exactly its zero point
    report = export_onnx(_two_four(tiny_per_layer(seed=1)), tmp_path / "q", quant="int4", int4_algo=algo,
                         int4_symmetric=symmetric, exporter="torchscript", threads=1)  # fmt: skip
    assert report.sparsity_2_4 == {"weights": 21, "kept": 21}


def test_hqq_float_zero_points_break_2_4_sparsity_with_one_line(tmp_path):
    with pytest.raises(EdgepruneError, match="int4 quantization broke the 2:4 pattern .*use int4_algo 'rtn' or 'k_quant'") as exc:
        export_onnx(_two_four(tiny_per_layer(seed=1)), tmp_path / "q", quant="int4", int4_algo="hqq",
                    exporter="torchscript", threads=1)  # fmt: skip
    assert "\n" not in str(exc.value) and not (tmp_path / "q").exists()

"""ONNX export of tiny models: graph I/O, per-layer KV shapes, onnxruntime vs torch, quantized graphs.

Most tests use the TorchScript exporter (about 1 s on a tiny model, against ~10 s for dynamo);
one test covers the dynamo exporter, the default.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from transformers import DynamicCache

from edgeprune.export.onnx import export_onnx, names
from edgeprune.export.onnx.verify import empty_past, open_session, run_step
from tests.tiny import tiny_llama, tiny_per_layer, tiny_tokenizer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
IDS = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(7))


def _rel(a, b) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def per_layer_export(tmp_path_factory):
    model = tiny_per_layer()
    out = tmp_path_factory.mktemp("onnx") / "per-layer"
    report = export_onnx(model, out, tokenizer=tiny_tokenizer(), exporter="torchscript", threads=1)
    return model, out, report


@pytest.fixture(scope="module")
def llama_export(tmp_path_factory):
    model = tiny_llama(tie_word_embeddings=True)
    out = tmp_path_factory.mktemp("onnx") / "llama"
    report = export_onnx(model, out, exporter="torchscript", threads=1)
    return model, out, report


def test_folder_layout_and_report(per_layer_export):
    _, out, report = per_layer_export
    files = {p.name for p in out.iterdir()}
    assert {names.MODEL_FILE, names.REPORT_FILE, "tokenizer.json"} <= files
    # layer 1 has no attention: onnxruntime-genai cannot run 0-head KV inputs, so no genai_config.json
    assert names.GENAI_CONFIG_FILE not in files and not report.genai_config
    assert any("no genai_config.json" in n for n in report.notes)
    assert not [f for f in files if f.startswith(".") and f != ".complete"]  # no scratch left behind
    data = json.loads((out / names.REPORT_FILE).read_text())
    assert data["quant"] == "fp32" and data["exporter"] == "torchscript"
    assert data["verify"]["passed"] and data["verify"]["max_rel_diff"] <= 1e-4
    assert data["bytes"] == (out / names.MODEL_FILE).stat().st_size
    assert report.verified


def test_genai_config_for_models_without_attention_free_layers(llama_export):
    _, out, report = llama_export
    cfg = json.loads((out / names.GENAI_CONFIG_FILE).read_text())["model"]
    assert report.genai_config and cfg["context_length"] == 256 and cfg["vocab_size"] == 260
    assert cfg["decoder"]["inputs"]["past_key_names"] == "past_key_values.%d.key"
    assert cfg["decoder"]["num_key_value_heads"] == 2 and cfg["decoder"]["head_size"] == 16


def test_tied_embedding_is_stored_once(llama_export):
    _, out, _ = llama_export  # exported with TorchScript, which writes a second, transposed copy
    graph = onnx.load(str(out / names.MODEL_FILE))
    vocab_tables = [t.name for t in graph.graph.initializer if 260 in t.dims]
    assert len(vocab_tables) == 1  # the lm_head reads the embedding through a Transpose


def test_graph_io_names_shapes_and_metadata(per_layer_export):
    model, out, _ = per_layer_export
    graph = onnx.load(str(out / names.MODEL_FILE))
    onnx.checker.check_model(graph)
    n = model.config.num_hidden_layers
    assert [i.name for i in graph.graph.input] == names.input_names(n)
    assert [o.name for o in graph.graph.output] == names.output_names(n)

    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    inputs = {i.name: dims(i) for i in graph.graph.input}
    # each layer its own KV-head count; the attention-free layer 1 keeps a 0-head pair
    for i, kv in enumerate(model.config.kv_heads_per_layer()):
        assert inputs[f"past_key_values.{i}.key"] == [names.BATCH, kv, names.PAST_SEQUENCE, 16]
    assert inputs["past_key_values.1.value"][1] == 0
    assert inputs[names.ATTENTION_MASK] == [names.BATCH, names.TOTAL_SEQUENCE]
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta[names.META_ARCHITECTURE] == "edgeprune_llama"
    assert meta[names.META_HEADS] == "4,0,2,4"
    assert meta[names.META_KV_HEADS] == "2,0,1,2"
    assert meta[names.META_INTERMEDIATE] == "128,64,0,96"
    assert meta[names.META_HEAD_DIM] == "16" and meta[names.META_NUM_LAYERS] == "4"


def test_inspect_reads_the_export(per_layer_export):
    from edgeprune.describe import describe

    _, out, _ = per_layer_export
    info = describe(out)
    assert info["kind"] == "onnx" and info["layers"] == 4
    assert info["kv_heads"] == [2, 0, 1, 2] and info["intermediate"] == [128, 64, 0, 96]
    assert (info["head_dim"], info["hidden_size"], info["vocab_size"]) == (16, 64, 260)
    from edgeprune.devices.cost import artifact_cost  # a build's profile step prices ONNX exports too

    cost = artifact_cost(info)
    assert cost.n_layers == 4 and cost.kv_bytes_per_position == sum(2 * k * 16 * 2 for k in (2, 0, 1, 2))


@pytest.mark.parametrize("which", ["per_layer_export", "llama_export"])
def test_prefill_then_decode_matches_torch(which, request):
    model, out, _ = request.getfixturevalue(which)
    cfg = model.config
    kv = cfg.kv_heads_per_layer() if hasattr(cfg, "kv_heads_per_layer") else [cfg.num_key_value_heads] * cfg.num_hidden_layers
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    session = open_session(out / names.MODEL_FILE, 1)
    ids = IDS.numpy()
    logits, present = run_step(session, ids, empty_past(kv, head_dim, 2), 0)  # prefill: batch 2, past 0
    cache = DynamicCache(config=cfg)
    with torch.no_grad():
        ref = model(IDS, cache=cache, use_cache=True)
    assert _rel(logits, ref.logits.numpy()) <= 1e-4
    # per-layer present shapes: (batch, kv_heads_i, past + seq, head_dim)
    assert [p.shape for p in present[::2]] == [(2, k, 9, head_dim) for k in kv]
    past_len = 9
    for _ in range(3):  # decode steps with the cache
        nxt = ref.logits[:, -1:].argmax(-1)
        logits, present = run_step(session, nxt.numpy(), present, past_len)
        past_len += 1
        with torch.no_grad():
            ref = model(nxt, cache=ref.cache, use_cache=True)
        assert _rel(logits, ref.logits.numpy()) <= 1e-4
    assert present[0].shape[2] == past_len


def test_left_padded_batch_matches_unpadded_rows(per_layer_export):
    from edgeprune.runtime.ort_generate import OrtDecoder, left_pad

    _, out, _ = per_layer_export
    dec = OrtDecoder(out, threads=1)
    a, b = [5, 6, 7, 8, 9, 10], [11, 12, 13]
    ids, mask = left_pad([a, b], pad_token_id=258)
    pos = np.clip(np.cumsum(mask, 1) - 1, 0, None)
    logits, _ = dec.forward(ids, mask, pos)
    alone, _ = dec.forward([b], [[1, 1, 1]], [[0, 1, 2]])
    assert _rel(logits[1, -3:], alone[0]) <= 1e-5  # padding changes nothing for the real tokens


def test_dynamo_exporter_matches_torch(tmp_path):
    model = tiny_per_layer(seed=3)
    report = export_onnx(model, tmp_path / "dyn", exporter="dynamo", threads=1)
    assert report.exporter == "dynamo" and report.exporter_fallback is None
    assert report.verify.max_rel_diff <= 1e-4
    graph = onnx.load(str(tmp_path / "dyn" / names.MODEL_FILE), load_external_data=False)
    dims = [d.dim_param for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [names.BATCH, names.SEQUENCE]  # the exporter's s0/s1 symbols were renamed


@pytest.mark.parametrize("quant, block", [("int8", 32), ("int8-dynamic", 32), ("int4", 32), ("int4", 128)])
def test_quantized_exports_run(quant, block, tmp_path):
    model = tiny_llama(tie_word_embeddings=True)
    report = export_onnx(model, tmp_path / quant, quant=quant, block_size=block, exporter="torchscript", threads=1)
    graph = onnx.load(str(tmp_path / quant / names.MODEL_FILE))
    nbits = {n.output[0]: {a.name: a.i for a in n.attribute} for n in graph.graph.node if n.op_type == "MatMulNBits"}
    if quant == "int8-dynamic":
        assert "MatMulInteger" in {n.op_type for n in graph.graph.node} and not nbits
    else:
        # 3 layers x 7 projections + the lm_head, all quantized (the tied lm_head was untied for it)
        assert len(nbits) == 22 and all(a["block_size"] == block for a in nbits.values())
        assert nbits[names.LOGITS]["bits"] == 8  # the lm_head keeps 8 bits in int4 too
        if quant == "int4":  # 3 layers: the outer ceil(3 / 6) = 1 on each side and the middle down_proj keep 8 bits
            assert report.quantization["matmuls"] == {"int4": 6, "int8": 16, "fp32": 0}
            assert _embedding_table(graph).dtype == np.int8
        else:
            assert {a["bits"] for o, a in nbits.items() if o != names.LOGITS} == {8}
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta[names.META_QUANT].startswith(quant) and meta[names.META_KV_HEADS] == "2,2,2"
    v = report.verify
    assert v.tolerance is None and np.isfinite(v.max_abs_diff)
    assert v.max_rel_diff < 1.0  # quantized, so not exact (random tiny weights suffer most), but finite
    assert report.bytes < 0.6 * _fp32_bytes(model)


@pytest.mark.parametrize("lm_head, symmetric", [("int8", False), ("fp32", False), ("int4", True)])
def test_int4_lm_head_and_zero_points(lm_head, symmetric, tmp_path):
    model = tiny_llama(tie_word_embeddings=True)
    report = export_onnx(model, tmp_path / "q", quant="int4", int4_lm_head=lm_head, int4_symmetric=symmetric,
                         int4_mix="none", int4_embedding="fp32", exporter="torchscript", threads=1)  # fmt: skip
    graph = onnx.load(str(tmp_path / "q" / names.MODEL_FILE))
    nbits = {n.output[0]: n for n in graph.graph.node if n.op_type == "MatMulNBits"}
    bits = {o: next(a.i for a in n.attribute if a.name == "bits") for o, n in nbits.items()}
    body = [o for o in nbits if o != names.LOGITS]
    assert len(body) == 21 and {bits[o] for o in body} == {4}
    # asymmetric blocks carry a zero-point input (the 4th); symmetric ones do not
    assert all((len(nbits[o].input) > 3 and nbits[o].input[3] != "") != symmetric for o in body)
    head = {"int8": 8, "int4": 4, "fp32": None}[lm_head]
    assert bits.get(names.LOGITS) == head
    if head is None:  # left float: the plain MatMul still writes the logits
        assert any(n.op_type == "MatMul" and names.LOGITS in n.output for n in graph.graph.node)
    q = report.quantization
    assert (q["bits"], q["lm_head"], q["symmetric"]) == (4, lm_head, symmetric)
    assert q["matmuls"] == {"int4": 21 + (head == 4), "int8": int(head == 8), "fp32": int(head is None)}
    assert report.weights == f"int4 {'sym' if symmetric else 'asym'} b32" + ("" if lm_head == "int4" else f", lm_head {lm_head}")
    assert _embedding_table(graph).dtype == np.float32  # int4_embedding="fp32": the table stays float
    assert any(n.startswith("int4 trade-off") for n in report.notes)
    saved = json.loads(report.report_path.read_text())
    assert saved["quantization"]["lm_head"] == lm_head and saved["weights"] == report.weights


@pytest.mark.parametrize("mix, int4, int8", [("edges", 42, 29), ("down", 60, 11), ("edges+down", 36, 35)])
def test_int4_mix_keeps_outer_layers_and_down_proj_at_8_bits(mix, int4, int8, tmp_path):
    # 10 layers: the outer ceil(10 / 6) = 2 on each side are "edges"; 70 projections + the lm_head
    model = tiny_llama(num_hidden_layers=10)
    report = export_onnx(model, tmp_path / "q", quant="int4", int4_mix=mix, exporter="torchscript", threads=1)
    assert report.quantization["matmuls"] == {"int4": int4, "int8": int8, "fp32": 0}
    assert report.quantization["eight_bit_layers"] == 2 and report.verify.passed


def test_int4_edge_layers_overrides_the_default_depth(tmp_path):
    report = export_onnx(tiny_llama(num_hidden_layers=10), tmp_path / "q", quant="int4", int4_mix="edges",
                         int4_edge_layers=1, exporter="torchscript", threads=1)  # fmt: skip
    assert report.quantization["matmuls"] == {"int4": 8 * 7, "int8": 2 * 7 + 1, "fp32": 0}
    assert report.quantization["eight_bit_layers"] == 1


def test_embedding_int8_is_exact_to_a_row_scale(tmp_path):
    from onnx import numpy_helper

    from edgeprune.export.onnx import quantize

    model = tiny_llama()
    report = export_onnx(model, tmp_path / "q", quant="int4", int4_mix="none", exporter="torchscript", threads=1)
    graph = onnx.load(str(tmp_path / "q" / names.MODEL_FILE))
    inits = {t.name: numpy_helper.to_array(t) for t in graph.graph.initializer}
    q = _embedding_table(graph)
    scale = next(v for k, v in inits.items() if k.endswith("_scale") and v.shape == (q.shape[0], 1))
    table = model.model.embed_tokens.weight.detach().numpy()
    assert q.shape == table.shape and np.abs(q * scale - table).max() <= scale.max() / 2 + 1e-7
    assert report.quantization["embedding"] == "int8" and "embedding int8" in report.weights
    assert not quantize.embedding_int8(graph)  # nothing float left to quantize


def test_int4_options_are_checked(tmp_path):
    from edgeprune.errors import EdgepruneError

    with pytest.raises(EdgepruneError, match="unknown int4 lm_head precision 'int2'"):
        export_onnx(tiny_llama(), tmp_path / "a", quant="int4", int4_lm_head="int2")
    with pytest.raises(EdgepruneError, match="apply to quant int4, not 'int8'"):
        export_onnx(tiny_llama(), tmp_path / "b", quant="int8", int4_lm_head="fp32")
    with pytest.raises(EdgepruneError, match="unknown int4 mix 'edge' \\(did you mean 'edges'\\?\\)"):
        export_onnx(tiny_llama(), tmp_path / "c", quant="int4", int4_mix="edge")
    assert not any(tmp_path.iterdir())


def _embedding_table(graph) -> np.ndarray:
    from onnx import numpy_helper

    inits = {t.name: t for t in graph.graph.initializer}
    gather = next(n for n in graph.graph.node if n.op_type == "Gather" and names.INPUT_IDS in n.input and n.input[0] in inits)
    return numpy_helper.to_array(inits[gather.input[0]])


def _fp32_bytes(model) -> int:
    return sum(p.numel() * 4 for p in model.parameters())


def test_two_four_sparse_weights_stay_sparse_through_quantization(tmp_path):
    model = tiny_per_layer(seed=1)
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear) and "lm_head" not in name:
                groups = mod.weight.view(mod.weight.shape[0], -1, 4)  # (out, in/4, 4)
                groups.scatter_(-1, groups.abs().argsort(-1)[..., :2], 0.0)
    for quant in ("fp32", "int8", "int4"):
        report = export_onnx(model, tmp_path / quant, quant=quant, block_size=32, exporter="torchscript", threads=1)
        # layers 0, 2, 3 have q/k/v/o; layers 0, 1, 3 have gate/up/down
        assert report.sparsity_2_4 == {"weights": 21, "kept": 21}
        assert any("trt_sparsity_enable" in n for n in report.notes)


@pytest.mark.parametrize("quant", ["fp32", "int4"])
def test_external_data_above_the_protobuf_limit(quant, tmp_path, monkeypatch):
    from edgeprune.describe import describe
    from edgeprune.export.onnx import api

    monkeypatch.setattr(api, "EXTERNAL_DATA_BYTES", 0)  # every model counts as "over 2 GB"
    out = tmp_path / quant
    report = export_onnx(tiny_per_layer(), out, quant=quant, exporter="torchscript", threads=1)
    assert report.external_data and report.verified
    data = out / (names.MODEL_FILE + ".data")
    assert data.is_file() and data.stat().st_size > (out / names.MODEL_FILE).stat().st_size
    assert report.bytes == data.stat().st_size + (out / names.MODEL_FILE).stat().st_size
    assert describe(out)["kv_heads"] == [2, 0, 1, 2]

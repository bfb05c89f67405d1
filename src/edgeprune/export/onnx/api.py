"""``export_onnx``: a torch Llama-family model (uniform or per-layer widths) to a verified ONNX folder.

Orchestration only: the graph's maths is in decoder.py, names in names.py, the quantizers in
quantize.py, the read-back in verify.py. Order of work: validate everything that can be validated
without writing (settings, output folder, architecture), export into a temporary folder beside the
output, tidy and quantize, check with ``onnx.checker``, run it in onnxruntime against torch, then
rename the folder into place. A failure at any step raises EdgepruneError and leaves nothing behind.
Tidying drops the exporters' records of the run (stack traces with absolute paths): the same model
and settings give byte-identical graphs from any checkout, folder or process.

The folder holds ``model.onnx`` (plus ``model.onnx.data`` above protobuf's 2 GB limit),
``export_report.json``, ``genai_config.json`` and, when a tokenizer is given, its files.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import os
import re
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from edgeprune.errors import EdgepruneError
from edgeprune.export.common import ExportConfig, unknown_choice, versions
from edgeprune.export.onnx import names
from edgeprune.export.onnx.report import OnnxExportReport
from edgeprune.fileio import check_output_dir
from edgeprune._version import __version__

QUANTS = ("fp32", "int8", "int8-dynamic", "int4")
EXPORTERS = ("dynamo", "torchscript")
BLOCK_SIZES = (16, 32, 64, 128, 256)  # MatMulNBits: a power of two >= 16
# the same as in quantize.py (that module imports numpy)
INT4_LM_HEAD = ("int8", "int4", "fp32")
INT4_MIXES = ("edges+down", "edges", "down", "none")
INT4_EMBEDDINGS = ("int8", "fp32")
INT4_ALGOS = ("rtn", "k_quant", "hqq")
# int4_algo=None: hqq (on SmolLM2-135M +0.1% ppl vs rtn's +7.5%, see quantize.py), but rtn where the graph
# has 2:4-sparse weights (hqq's float zero points do not keep zeros) or int4_symmetric is given (an rtn option)
DEFAULT_INT4_ALGO = "hqq"
ACCURACY_LEVELS = (0, 1, 2, 3, 4)  # MatMulNBits compute: 0 unset (fp32 on CPU), 1 fp32, 2 fp16, 3 bf16, 4 int8 activations
INT4_OPTIONS = ("int4_lm_head", "int4_symmetric", "int4_mix", "int4_embedding", "int4_edge_layers", "int4_algo",
                "int4_accuracy_level")  # fmt: skip
OPSET = 18
# Protobuf cannot serialise a message over 2 GiB; stay clear of it (the graph itself adds bytes).
EXTERNAL_DATA_BYTES = 1_800_000_000


@dataclass(frozen=True)
class OnnxExportConfig(ExportConfig):
    """The ONNX export settings a build recipe carries (strict: unknown keys are errors)."""

    quant: str = "fp32"
    # int8/int4: weights per scale. 32, not onnxruntime's 128: on SmolLM2-135M int4 with blocks of
    # 128 costs 52 ppl against 41 with 32 (fp32: 30.4), for 3% of the file size.
    block_size: int = 32
    exporter: str = "dynamo"  # "torchscript" is the fallback when dynamo fails, and ~10x faster
    # int4 only (see quantize.py and bench/results/onnx_roundtrip.md for what each costs):
    int4_lm_head: str = "int8"  # the lm_head of an int4 graph: int8 | int4 | fp32
    # rtn only: symmetric blocks map the largest-magnitude weight to -8 exactly; False adds a zero
    # point per block. None: the algorithm's own (rtn symmetric; k_quant and hqq always have zero points)
    int4_symmetric: bool | None = None
    int4_mix: str = "edges+down"  # which projections keep 8 bits in an int4 graph (quantize.INT4_MIXES)
    int4_embedding: str = "int8"  # the token embedding table of an int4 graph: int8 (per row) | fp32
    int4_edge_layers: int | None = None  # "edges" of int4_mix: this many layers on each side (None: ceil(layers / 6))
    # how 4-bit codes are chosen: rtn | k_quant | hqq (quantize.INT4_METHODS); None: see DEFAULT_INT4_ALGO
    int4_algo: str | None = None
    # MatMulNBits' accuracy_level: 4 quantizes activations to int8 per block of K on CPU (fastest);
    # 0 leaves it unset, which computes in float
    int4_accuracy_level: int = 4

    FORMAT: ClassVar[str] = "ONNX"
    LOWERCASE: ClassVar[tuple[str, ...]] = ("quant",)

    def __post_init__(self):
        if self.quant is None:
            object.__setattr__(self, "quant", "fp32")
        super().__post_init__()

    def check(self) -> list[str]:
        problems = unknown_choice("ONNX quantization", self.quant, QUANTS)
        if isinstance(self.block_size, bool) or self.block_size not in BLOCK_SIZES:
            problems.append(f"quantization block size must be one of {', '.join(map(str, BLOCK_SIZES))}, got {self.block_size!r}")
        problems += unknown_choice("ONNX exporter", self.exporter, EXPORTERS)
        problems += unknown_choice("int4 lm_head precision", self.int4_lm_head, INT4_LM_HEAD)
        problems += unknown_choice("int4 mix", self.int4_mix, INT4_MIXES)
        problems += unknown_choice("int4 embedding precision", self.int4_embedding, INT4_EMBEDDINGS)
        if self.int4_algo is not None:
            problems += unknown_choice("int4 algorithm", self.int4_algo, INT4_ALGOS)
        if isinstance(self.int4_accuracy_level, bool) or self.int4_accuracy_level not in ACCURACY_LEVELS:
            problems.append(f"int4_accuracy_level must be one of {', '.join(map(str, ACCURACY_LEVELS))}, got {self.int4_accuracy_level!r}")
        if self.int4_edge_layers is not None and (isinstance(self.int4_edge_layers, bool) or not isinstance(self.int4_edge_layers, int) or self.int4_edge_layers < 0):
            problems.append(f"int4_edge_layers must be a whole number >= 0 or None, got {self.int4_edge_layers!r}")
        if self.int4_symmetric is not None and not isinstance(self.int4_symmetric, bool):
            problems.append(f"int4_symmetric must be true or false, got {self.int4_symmetric!r}")
        elif self.int4_symmetric and self.int4_algo in ("k_quant", "hqq"):
            problems.append(f"int4 algorithm {self.int4_algo!r} always stores zero points: int4_symmetric applies to rtn only")
        int4 = {f: getattr(self, f) for f in INT4_OPTIONS}
        if self.quant != "int4" and int4 != {f: getattr(OnnxExportConfig, f) for f in INT4_OPTIONS}:
            problems.append(f"{', '.join(INT4_OPTIONS)} apply to quant int4, not {self.quant!r}: leave them out")
        return problems + super().check()


def export_onnx(
    model,
    out_dir: str | Path,
    *,
    tokenizer=None,
    quant: str | None = None,
    block_size: int = 32,
    int4_lm_head: str = "int8",
    int4_symmetric: bool | None = None,
    int4_mix: str = "edges+down",
    int4_embedding: str = "int8",
    int4_edge_layers: int | None = None,
    int4_algo: str | None = None,
    int4_accuracy_level: int = 4,
    exporter: str = "dynamo",
    verify: bool = True,
    overwrite: bool = False,
    threads: int | None = None,
) -> OnnxExportReport:
    """Export ``model`` (transformers Llama/Mistral/Qwen2 or edgeprune_llama, float32) to ``out_dir``.

    One graph serves prefill and decode: inputs ``input_ids``, ``attention_mask``,
    ``position_ids`` and ``past_key_values.{i}.key/value`` per layer, outputs ``logits`` and
    ``present.{i}.key/value``; batch, sequence and past lengths are dynamic. ``quant``: None or
    "fp32"; "int8" (weight-only, MatMulNBits); "int8-dynamic" (int8 weights and activations,
    MatMulInteger: standard ops, less accurate); "int4" (weight-only MatMulNBits; ``int4_lm_head``,
    ``int4_mix``, ``int4_edge_layers`` and ``int4_embedding`` set what keeps more bits,
    ``int4_algo`` and ``int4_symmetric`` how the 4-bit codes are chosen, ``int4_accuracy_level``
    how the kernel computes, see quantize.py) — ``block_size`` weights per scale. ``exporter``: "dynamo" (falls back to "torchscript" if it fails) or
    "torchscript". With ``verify`` the graph is run in onnxruntime (``threads`` threads) against
    the torch model before the folder is renamed into place. Returns the export report, also
    written as ``export_report.json`` in the folder.
    """
    cfg, out = preflight(out_dir, quant=quant, block_size=block_size, int4_lm_head=int4_lm_head, int4_symmetric=int4_symmetric,
                         int4_mix=int4_mix, int4_embedding=int4_embedding, int4_edge_layers=int4_edge_layers,
                         int4_algo=int4_algo, int4_accuracy_level=int4_accuracy_level, exporter=exporter, verify=verify,
                         overwrite=overwrite)  # fmt: skip
    lm = prepare_model(model)
    threads = threads or os.cpu_count() or 1
    try:
        return _export(model, lm, out, cfg, tokenizer=tokenizer, threads=threads)
    except OSError as exc:
        raise EdgepruneError(f"cannot write the ONNX export to {out}: {exc.strerror or exc}; check the disk and --out") from None


def preflight(
    out_dir: str | Path, *, quant=None, block_size: int = 32, int4_lm_head: str = "int8", int4_symmetric: bool | None = None,
    int4_mix: str = "edges+down", int4_embedding: str = "int8", int4_edge_layers: int | None = None,
    int4_algo: str | None = None, int4_accuracy_level: int = 4, exporter: str = "dynamo", verify: bool = True, overwrite: bool = False, option: str = "overwrite=True",
) -> tuple[OnnxExportConfig, Path]:
    """Every check that needs no model: the settings and the output folder. Returns (config, folder)."""
    cfg = OnnxExportConfig(quant=quant, block_size=block_size, int4_lm_head=int4_lm_head, int4_symmetric=int4_symmetric,
                           int4_mix=int4_mix, int4_embedding=int4_embedding, int4_edge_layers=int4_edge_layers,
                           int4_algo=int4_algo, int4_accuracy_level=int4_accuracy_level, exporter=exporter,
                           verify=verify)  # fmt: skip
    out = check_out_dir(out_dir, overwrite=overwrite, option=option)
    try:
        import onnx  # noqa: F401
        if cfg.verify or cfg.quant != "fp32":
            import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise EdgepruneError(f"ONNX export needs {exc.name}: pip install {exc.name}") from None
    return cfg, out


def check_out_dir(out_dir: str | Path, *, overwrite: bool, option: str = "overwrite=True") -> Path:
    """Fail before any expensive work if ``out_dir`` cannot be (re)written; return it resolved.
    The export creates missing parent folders."""
    return check_output_dir(out_dir, overwrite=overwrite, option=option, parents=True)


def prepare_model(model):
    """The per-layer-width view of ``model`` (shares weights when it already is one); checks it exports."""
    from edgeprune.export.onnx.decoder import STATIC_ROPE_TYPES
    from edgeprune.models import families

    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in families.SUPPORTED_MODEL_TYPES or not families.SUPPORTED_MODEL_TYPES[model_type]["per_layer"]:
        ok = [t for t, f in families.SUPPORTED_MODEL_TYPES.items() if f["per_layer"]]
        raise EdgepruneError(
            f"unsupported architecture {model_type!r} for ONNX export: edgeprune exports {', '.join(ok)}; "
            "convert the model to one of these families"
        )
    import torch

    dtypes = {p.dtype for p in model.parameters()}
    if dtypes != {torch.float32}:
        raise EdgepruneError(
            f"ONNX export writes float32 graphs but the model holds {', '.join(sorted(map(str, dtypes)))} weights: "
            "load it with dtype='float32' (quantize with --quant instead)"
        )
    from edgeprune.models import to_per_layer

    lm = to_per_layer(model).eval()
    rope = (lm.config.rope_parameters or {}).get("rope_type", "default")
    if rope not in STATIC_ROPE_TYPES:
        raise EdgepruneError(
            f"RoPE type {rope!r} depends on the sequence length and is not exported: "
            f"edgeprune exports {', '.join(STATIC_ROPE_TYPES)}"
        )
    return lm


def _export(model, lm, out: Path, cfg: OnnxExportConfig, *, tokenizer, threads: int) -> OnnxExportReport:
    from edgeprune.export.onnx import genai
    from edgeprune.fileio import atomic_dir

    config = lm.config
    n_layers = config.num_hidden_layers
    param_bytes = sum(p.numel() * p.element_size() for p in lm.parameters())
    external = param_bytes > EXTERNAL_DATA_BYTES
    timings: dict[str, float] = {}
    notes: list[str] = []

    with atomic_dir(out) as tmp:
        final = tmp / names.MODEL_FILE
        used, fallback, two_four, quantization = _write_graph(lm, final, cfg, external=external, timings=timings, notes=notes)
        t0 = time.perf_counter()
        _check(final)
        timings["check_s"] = time.perf_counter() - t0

        result = None
        if cfg.verify:
            t0 = time.perf_counter()
            result = _verify(final, model, lm, cfg.quant, threads)
            timings["verify_s"] = time.perf_counter() - t0

        write_genai = genai.supported(config)
        if write_genai:
            gen_cfg = getattr(model, "generation_config", None)
            (tmp / names.GENAI_CONFIG_FILE).write_text(json.dumps(genai.genai_config(config, generation_config=gen_cfg), indent=2) + "\n")
        else:
            notes.append(
                "no genai_config.json: onnxruntime-genai 0.18 rejects the 0-head KV inputs of attention-free layers "
                "(it feeds them the largest layer's head count); edgeprune.runtime.ort_generate runs this graph"
            )
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        if two_four:
            notes.append(
                f"{two_four['weights']} MatMul weights are 2:4 sparse and stay so; only NVIDIA Ampere-class GPUs "
                "turn that into speed, through onnxruntime's TensorRT EP with trt_sparsity_enable=1 (prefill mostly)"
            )
        report = OnnxExportReport(
            path=str(out / names.MODEL_FILE),
            bytes=_model_bytes(tmp),
            quant=cfg.quant,
            block_size=_block(cfg),
            exporter=used,
            exporter_fallback=fallback,
            opset=OPSET,
            external_data=external,
            architecture=architecture(config),
            source_model_type=config.source_model_type or model.config.model_type,
            num_layers=n_layers,
            heads=config.heads_per_layer(),
            kv_heads=config.kv_heads_per_layer(),
            intermediate=config.intermediate_per_layer(),
            head_dim=config.head_dim,
            inputs=names.input_names(n_layers),
            outputs=names.output_names(n_layers),
            sparsity_2_4=two_four,
            verify=result,
            genai_config=write_genai,
            quantization=quantization,
            notes=notes,
            timings={k: round(v, 3) for k, v in timings.items()},
            versions=versions(("edgeprune", "torch", "transformers", "onnx", "onnxruntime", "onnxscript")),
        )
        (tmp / names.REPORT_FILE).write_text(report.to_json())
    return report


def _write_graph(lm, final: Path, cfg: OnnxExportConfig, *, external: bool, timings: dict, notes: list) -> tuple:
    """Export, tidy and (maybe) quantize into ``final``, in a scratch folder beside it that is
    removed afterwards. Returns (exporter used, why dynamo failed, 2:4 summary, quantization settings)."""
    import onnx

    from edgeprune.export.onnx import passes, quantize

    raw = final.parent / ".raw"
    raw.mkdir()
    t0 = time.perf_counter()
    used, fallback = _run_exporter(lm, raw / names.MODEL_FILE, cfg.exporter)
    gc.collect()  # the exported program's copies of the weights: free them before the graph is loaded
    timings["export_s"] = time.perf_counter() - t0
    if fallback:
        notes.append(f"the dynamo exporter failed ({fallback}); the TorchScript exporter wrote this graph")

    t0 = time.perf_counter()
    graph = onnx.load(str(raw / names.MODEL_FILE))  # pulls in external data the exporter wrote
    passes.strip_metadata(graph)  # the exporter's stack traces: the same model, the same bytes anywhere
    passes.tidy_graph(graph, lm.config.num_hidden_layers)
    if lm.config.tie_word_embeddings:
        passes.share_tied_lm_head(graph)  # one copy of a tied embedding, whichever exporter ran
    set_metadata(graph, lm, cfg.quant)
    sparse = quantize.two_four_weights(graph)  # before saving: saving with external data empties the proto
    quantization = None
    if cfg.quant == "fp32":
        _save(graph, final, external)
        two_four = quantize.sparsity_summary(sparse)
    else:
        if passes.untie_transposed_initializers(graph):
            notes.append("the tied lm_head got its own weight matrix so that it is quantized too")
        eight_bit: list[str] = []
        if cfg.quant == "int4":
            if cfg.int4_mix != "none":
                weights = {n: p.detach().numpy() for n, p in lm.named_parameters() if p.ndim == 2}
                eight_bit = quantize.eight_bit_nodes(quantize.matmul_owners(graph, weights), lm.config.num_hidden_layers,
                                                     cfg.int4_mix, edge=_edge_layers(cfg, lm.config.num_hidden_layers))  # fmt: skip
            if cfg.int4_embedding == "int8" and not quantize.embedding_int8(graph):
                notes.append("no float embedding table found: the embedding is not quantized")
            algo = cfg.int4_algo or ("rtn" if sparse or cfg.int4_symmetric is not None else DEFAULT_INT4_ALGO)
            if sparse and cfg.int4_algo is None:
                notes.append(f"int4 codes by rtn, not {DEFAULT_INT4_ALGO}: this model has 2:4-sparse weights, and "
                             f"{DEFAULT_INT4_ALGO}'s float zero points would not keep their zeros")  # fmt: skip
        fp32 = raw / "fp32.onnx"
        # external data for this scratch copy even below 2 GB: serializing the weights inline would
        # hold a second full copy of them in memory (the quantizers read external data alike)
        _save(graph, fp32, True)
        del graph  # the float graph (a full copy of the weights) is on disk now; keep peak memory low
        gc.collect()
        if cfg.quant == "int8":
            quantization = quantize.quantize_int8(str(fp32), str(final), block_size=cfg.block_size, external_data=external)
        elif cfg.quant == "int8-dynamic":
            quantization = quantize.quantize_int8_dynamic(str(fp32), str(final), external_data=external)
        else:
            quantization = quantize.quantize_int4(str(fp32), str(final), block_size=cfg.block_size, external_data=external,
                                                  lm_head=cfg.int4_lm_head, symmetric=cfg.int4_symmetric is not False,
                                                  eight_bit=eight_bit, algo=algo,
                                                  accuracy_level=cfg.int4_accuracy_level)  # fmt: skip
            quantization.update(mix=cfg.int4_mix, eight_bit_layers=_edge_layers(cfg, lm.config.num_hidden_layers),
                                embedding=cfg.int4_embedding)  # fmt: skip
            notes.append(quantize.INT4_NOTE)
        qgraph = onnx.load(str(final), load_external_data=not external)
        quantization["matmuls"] = quantize.matmul_precisions(qgraph)
        # above 2 GB the quantized weights stay on disk: the 2:4 read-back is skipped there
        two_four = quantize.sparsity_summary(sparse, qgraph) if not external else None
        # the quantizers do not promise to carry metadata_props over (or to add none): write them again
        passes.strip_metadata(qgraph)
        set_metadata(qgraph, lm, cfg.quant, block_size=_block(cfg))
        _save_proto_only(qgraph, final)
    timings["write_s"] = time.perf_counter() - t0
    shutil.rmtree(raw)
    if two_four and two_four["kept"] < two_four["weights"]:
        raise EdgepruneError(
            f"{cfg.quant} quantization broke the 2:4 pattern of {two_four['weights'] - two_four['kept']} "
            f"of {two_four['weights']} sparse weights; "
            + ("use int4_algo 'rtn' or 'k_quant' (their zero points are whole codes, so 0 stays 0)"
               if cfg.quant == "int4" and (cfg.int4_algo or DEFAULT_INT4_ALGO) == "hqq" else "export this model as fp32")
        )  # fmt: skip
    return used, fallback, two_four, quantization


# -- steps ---------------------------------------------------------------------------------------


def _run_exporter(lm, path: Path, exporter: str) -> tuple[str, str | None]:
    """Export with ``exporter``; if dynamo fails, retry with TorchScript. Returns (used, why dynamo failed)."""
    from edgeprune.export.onnx.decoder import FlatKVDecoder, example_inputs

    wrapper = FlatKVDecoder(lm).eval()
    args = example_inputs(lm.config)
    fallback = None
    if exporter == "dynamo":
        try:
            with _quiet_exporters():
                _export_dynamo(wrapper, args, path, lm.config.num_hidden_layers)
            return "dynamo", None
        except Exception as exc:  # any exporter failure: fall back, and say why in the report
            fallback = _first_line(exc)
            shutil.rmtree(path.parent)  # whatever dynamo left half-written
            path.parent.mkdir()
    try:
        with _quiet_exporters():
            _export_torchscript(wrapper, args, path, lm.config.num_hidden_layers)
    except Exception as exc:
        why = f"dynamo: {fallback}; torchscript: {_first_line(exc)}" if fallback else _first_line(exc)
        raise EdgepruneError(f"the ONNX exporter failed on this model ({why}); nothing was written") from None
    return "torchscript", fallback


def _export_dynamo(wrapper, args, path: Path, n_layers: int) -> None:
    import torch

    # Every dim marked DYNAMIC: torch.export infers that the mask's length is past + seq (a named
    # Dim per axis would be rejected, since Dim + Dim is not expressible). tidy_graph names them.
    dyn = torch.export.Dim.DYNAMIC
    shapes = ({0: dyn, 1: dyn}, {0: dyn, 1: dyn}, {0: dyn, 1: dyn}, tuple({0: dyn, 2: dyn} for _ in range(2 * n_layers)))
    program = torch.onnx.export(
        wrapper,
        args,
        input_names=names.input_names(n_layers),
        output_names=names.output_names(n_layers),
        dynamic_shapes=shapes,
        opset_version=OPSET,
        dynamo=True,
        optimize=True,
        verbose=False,
    )
    program.save(str(path), external_data=True)


def _export_torchscript(wrapper, args, path: Path, n_layers: int) -> None:
    import torch

    axes = {
        names.INPUT_IDS: {0: names.BATCH, 1: names.SEQUENCE},
        names.ATTENTION_MASK: {0: names.BATCH, 1: names.TOTAL_SEQUENCE},
        names.POSITION_IDS: {0: names.BATCH, 1: names.SEQUENCE},
        names.LOGITS: {0: names.BATCH, 1: names.SEQUENCE},
    }
    axes.update({n: {0: names.BATCH, 2: names.PAST_SEQUENCE} for n in names.past_names(n_layers)})
    axes.update({n: {0: names.BATCH, 2: names.TOTAL_SEQUENCE} for n in names.present_names(n_layers)})
    with torch.no_grad():
        torch.onnx.export(
            wrapper,
            args,
            str(path),
            input_names=names.input_names(n_layers),
            output_names=names.output_names(n_layers),
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )


def architecture(config) -> str:
    """``edgeprune_llama`` for per-layer widths, else the family it came from (``llama``, ``qwen2`` ...)."""
    return (config.source_model_type or "llama") if config.is_uniform else "edgeprune_llama"


def set_metadata(graph, lm, quant: str, *, block_size: int | None = None) -> None:
    config = lm.config
    meta = {
        names.META_ARCHITECTURE: architecture(config),
        names.META_SOURCE_TYPE: config.source_model_type or "llama",
        names.META_HEADS: names.join_ints(config.heads_per_layer()),
        names.META_KV_HEADS: names.join_ints(config.kv_heads_per_layer()),
        names.META_INTERMEDIATE: names.join_ints(config.intermediate_per_layer()),
        names.META_HEAD_DIM: str(config.head_dim),
        names.META_NUM_LAYERS: str(config.num_hidden_layers),
        names.META_HIDDEN: str(config.hidden_size),
        names.META_VOCAB: str(config.vocab_size),
        names.META_QUANT: quant if block_size is None else f"{quant}-block{block_size}",
        names.META_VERSION: __version__,
    }
    del graph.metadata_props[:]
    for key, value in meta.items():
        prop = graph.metadata_props.add()
        prop.key, prop.value = key, value


def _save(graph, path: Path, external: bool) -> None:
    import onnx

    if external:
        onnx.save(graph, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=path.name + ".data", size_threshold=1024)  # fmt: skip
    else:
        onnx.save(graph, str(path))


def _save_proto_only(graph, path: Path) -> None:
    # `graph` was loaded without external data, so this rewrites the proto and keeps the data file.
    import onnx

    onnx.save(graph, str(path))


def _check(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path))  # by path: works above 2 GB too
    except onnx.checker.ValidationError as exc:
        raise EdgepruneError(f"the exported graph fails onnx.checker ({_first_line(exc)}); nothing was written") from None


def _verify(path: Path, model, lm, quant: str, threads: int):
    from edgeprune.export.onnx.verify import open_session, verify_session

    try:
        session = open_session(path, threads)
    except Exception as exc:
        raise EdgepruneError(f"onnxruntime cannot load the exported graph ({_first_line(exc)}); nothing was written") from None
    config = lm.config
    result = verify_session(
        session, model, kv_heads=config.kv_heads_per_layer(), head_dim=config.head_dim,
        vocab_size=config.vocab_size, quant=quant, threads=threads,
    )  # fmt: skip
    if not result.passed:
        raise EdgepruneError(
            f"the {quant} ONNX graph does not match torch: max relative logit difference "
            f"{result.max_rel_diff:.2e} (prefill {result.prefill_max_rel_diff:.2e}, decode "
            f"{result.decode_max_rel_diff:.2e}) exceeds {result.tolerance}; nothing was written"
            if result.tolerance is not None
            else f"the {quant} ONNX graph produces non-finite logits; nothing was written"
        )
    return result


def _edge_layers(cfg: OnnxExportConfig, n_layers: int) -> int:
    return math.ceil(n_layers / 6) if cfg.int4_edge_layers is None else cfg.int4_edge_layers


def _block(cfg: OnnxExportConfig) -> int | None:
    return cfg.block_size if cfg.quant in ("int8", "int4") else None


def _model_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob(names.MODEL_FILE + "*") if f.is_file())


def _first_line(exc: BaseException) -> str:
    """The first line of the innermost cause: the dynamo exporter wraps the real error in a
    multi-line "Failed to export the model with torch.export ... Next steps" message."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # ANSI colours of the exporter's messages
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]


@contextlib.contextmanager
def _quiet_exporters():
    """Silence the exporters' progress prints and deprecation chatter; restore everything after."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(open(os.devnull, "w")) as devnull:
            warnings.simplefilter("ignore")
            try:
                yield
            finally:
                devnull.close()
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)

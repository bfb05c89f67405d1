"""The ONNX graph's vocabulary: input/output names and metadata keys, as data.

Names follow optimum's decoder-with-past convention (``optimum/exporters/onnx/base.py``), which
onnxruntime-genai, transformers.js and ORT's own tooling expect, so a graph written by edgeprune
is recognised by them. The KV layout is the same too: ``[batch, kv_heads, seq, head_dim]``.
"""

from __future__ import annotations

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
POSITION_IDS = "position_ids"
LOGITS = "logits"

PAST_KEY = "past_key_values.{}.key"
PAST_VALUE = "past_key_values.{}.value"
PRESENT_KEY = "present.{}.key"
PRESENT_VALUE = "present.{}.value"

# Symbolic dimension names of the dynamic axes.
BATCH = "batch_size"
SEQUENCE = "sequence_length"
PAST_SEQUENCE = "past_sequence_length"
TOTAL_SEQUENCE = "past_sequence_length + sequence_length"  # the mask's length; optimum's name

MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"  # external weights, written only above the protobuf limit
REPORT_FILE = "export_report.json"
GENAI_CONFIG_FILE = "genai_config.json"

# metadata_props keys; `edgeprune inspect` (describe.py) reads the first four.
META_ARCHITECTURE = "edgeprune.architecture"
META_HEADS = "edgeprune.heads"
META_KV_HEADS = "edgeprune.kv_heads"
META_INTERMEDIATE = "edgeprune.intermediate"
META_HEAD_DIM = "edgeprune.head_dim"
META_NUM_LAYERS = "edgeprune.num_layers"
META_HIDDEN = "edgeprune.hidden_size"
META_VOCAB = "edgeprune.vocab_size"
META_SOURCE_TYPE = "edgeprune.source_model_type"
META_QUANT = "edgeprune.quant"
META_VERSION = "edgeprune.version"
META_PREFIX = "edgeprune."  # of every key above: the model metadata passes.strip_metadata keeps


def past_names(n_layers: int) -> list[str]:
    """Flat past-KV input names in graph order: key 0, value 0, key 1, value 1, ..."""
    return [name.format(i) for i in range(n_layers) for name in (PAST_KEY, PAST_VALUE)]


def present_names(n_layers: int) -> list[str]:
    return [name.format(i) for i in range(n_layers) for name in (PRESENT_KEY, PRESENT_VALUE)]


def input_names(n_layers: int) -> list[str]:
    return [INPUT_IDS, ATTENTION_MASK, POSITION_IDS, *past_names(n_layers)]


def output_names(n_layers: int) -> list[str]:
    return [LOGITS, *present_names(n_layers)]


def join_ints(values) -> str:
    return ",".join(str(int(v)) for v in values)


def split_ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")] if text else []

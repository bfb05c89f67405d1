"""The GGUF vocabulary edgeprune writes: tensor names, metadata keys, types, tokenizers. Data only.

A new model family or type is mostly new rows here. Facts about llama.cpp's loader come from
``shared/notes/export-runtime-devices.md`` section 1 (llama.cpp as vendored in llama-cpp-python
0.3.36) and were checked by this package's tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V
from gguf import LlamaFileType as F

# -- tensor names: Hugging Face (Llama layout) -> GGUF ------------------------------------------------

GLOBAL_TENSORS: dict[str, str] = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}

LAYER_TENSORS: dict[str, str] = {
    "model.layers.{bid}.input_layernorm.weight": "blk.{bid}.attn_norm.weight",
    "model.layers.{bid}.self_attn.q_proj.weight": "blk.{bid}.attn_q.weight",
    "model.layers.{bid}.self_attn.q_proj.bias": "blk.{bid}.attn_q.bias",
    "model.layers.{bid}.self_attn.k_proj.weight": "blk.{bid}.attn_k.weight",
    "model.layers.{bid}.self_attn.k_proj.bias": "blk.{bid}.attn_k.bias",
    "model.layers.{bid}.self_attn.v_proj.weight": "blk.{bid}.attn_v.weight",
    "model.layers.{bid}.self_attn.v_proj.bias": "blk.{bid}.attn_v.bias",
    "model.layers.{bid}.self_attn.o_proj.weight": "blk.{bid}.attn_output.weight",
    "model.layers.{bid}.self_attn.o_proj.bias": "blk.{bid}.attn_output.bias",
    "model.layers.{bid}.post_attention_layernorm.weight": "blk.{bid}.ffn_norm.weight",
    "model.layers.{bid}.mlp.gate_proj.weight": "blk.{bid}.ffn_gate.weight",
    "model.layers.{bid}.mlp.gate_proj.bias": "blk.{bid}.ffn_gate.bias",
    "model.layers.{bid}.mlp.up_proj.weight": "blk.{bid}.ffn_up.weight",
    "model.layers.{bid}.mlp.up_proj.bias": "blk.{bid}.ffn_up.bias",
    "model.layers.{bid}.mlp.down_proj.weight": "blk.{bid}.ffn_down.weight",
    "model.layers.{bid}.mlp.down_proj.bias": "blk.{bid}.ffn_down.bias",
}

# HF's rotate-half RoPE pairs dimension i with i + head_dim/2; llama.cpp's "normal" RoPE (llama,
# deci) pairs 2i with 2i+1. These rows are permuted per head, with the head count named here.
QK_PERMUTE: dict[str, str] = {
    "attn_q.weight": "heads",
    "attn_q.bias": "heads",
    "attn_k.weight": "kv_heads",
    "attn_k.bias": "kv_heads",
}

# Tensors llama.cpp treats as "the output matrix" when choosing a quantized type.
OUTPUT_TENSOR = "output.weight"
TIED_OUTPUT_TENSOR = "token_embd.weight"  # plays the output role when embeddings are tied

# -- architectures ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """How one Hugging Face model_type maps onto llama.cpp architectures."""

    uniform_arch: str  # llama.cpp architecture for models whose layers all have the same widths
    permute_qk: bool  # whether that architecture uses "normal" RoPE (see QK_PERMUTE)


FAMILIES: dict[str, Family] = {
    "llama": Family(uniform_arch="llama", permute_qk=True),
    # llama.cpp's own converter writes Mistral as `llama`; its sliding window is not modelled.
    "mistral": Family(uniform_arch="llama", permute_qk=True),
    # `qwen2` uses NEOX RoPE (the HF layout), so Q/K are written as they are.
    "qwen2": Family(uniform_arch="qwen2", permute_qk=False),
}

# Per-layer widths: `deci` is the llama.cpp architecture that honours per-layer
# feed_forward_length / head_count / head_count_kv arrays with llama tensor names (notes 1.1).
PER_LAYER_ARCH = "deci"
PER_LAYER_PERMUTE_QK = True

# A layer that keeps attention but has no MLP loses its attention output in `deci` (notes 1.1); it
# gets this many MLP channels with zero weights instead, which adds exactly nothing.
ZERO_MLP_CHANNELS = 32

# -- metadata keys ----------------------------------------------------------------------------------
# (key, GGUF value type, field of GGUFModelSpec). Written in this order and compared on read-back.
# Per-layer fields are written as INT32 arrays for `deci`, as one UINT32 otherwise.

ARCH_KEYS: tuple[tuple[str, V, str], ...] = (
    ("{arch}.vocab_size", V.UINT32, "vocab_size"),
    ("{arch}.context_length", V.UINT32, "context_length"),
    ("{arch}.embedding_length", V.UINT32, "hidden_size"),
    ("{arch}.block_count", V.UINT32, "n_layers"),
    ("{arch}.feed_forward_length", V.UINT32, "ff"),
    ("{arch}.attention.head_count", V.UINT32, "heads"),
    ("{arch}.attention.head_count_kv", V.UINT32, "kv_heads"),
    # Explicit, or llama.cpp derives head_dim from layer 0's head count (notes 1.1).
    ("{arch}.attention.key_length", V.UINT32, "head_dim"),
    ("{arch}.attention.value_length", V.UINT32, "head_dim"),
    ("{arch}.rope.dimension_count", V.UINT32, "head_dim"),
    ("{arch}.rope.freq_base", V.FLOAT32, "rope_theta"),
    ("{arch}.attention.layer_norm_rms_epsilon", V.FLOAT32, "rms_eps"),
)
PER_LAYER_FIELDS = ("ff", "heads", "kv_heads")

# Descriptive keys copied from a source GGUF (size_label and file_type describe the old file).
COPIED_GENERAL_KEYS = (
    "general.name", "general.organization", "general.basename", "general.finetune",
    "general.license", "general.languages", "general.tags",
)  # fmt: skip

# RoPE scaling (config.rope_parameters["rope_type"]) -> what llama.cpp needs. `llama3` becomes a
# `rope_freqs.weight` tensor of per-frequency divisors (llama.cpp's converter does the same).
ROPE_TYPES: dict[str, str] = {
    "default": "none",
    "linear": "linear",
    "llama3": "rope_freqs",
}

# -- types ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QType:
    name: str
    ftype: F  # general.file_type
    ggml: T | None  # the type of the big matrices; None: chosen by llama.cpp's quantizer
    route: str  # "gguf-py" (pure Python) or "llama-quantize" (llama.cpp's quantizer: kquant.py)


QTYPES: dict[str, QType] = {
    q.name: q
    for q in [
        QType("f32", F.ALL_F32, T.F32, "gguf-py"),
        QType("f16", F.MOSTLY_F16, T.F16, "gguf-py"),
        QType("bf16", F.MOSTLY_BF16, T.BF16, "gguf-py"),
        QType("q8_0", F.MOSTLY_Q8_0, T.Q8_0, "gguf-py"),
        QType("q5_1", F.MOSTLY_Q5_1, T.Q5_1, "gguf-py"),
        QType("q5_0", F.MOSTLY_Q5_0, T.Q5_0, "gguf-py"),
        QType("q4_1", F.MOSTLY_Q4_1, T.Q4_1, "gguf-py"),
        QType("q4_0", F.MOSTLY_Q4_0, T.Q4_0, "gguf-py"),
        QType("q6_k", F.MOSTLY_Q6_K, None, "llama-quantize"),
        QType("q5_k_m", F.MOSTLY_Q5_K_M, None, "llama-quantize"),
        QType("q5_k_s", F.MOSTLY_Q5_K_S, None, "llama-quantize"),
        QType("q4_k_m", F.MOSTLY_Q4_K_M, None, "llama-quantize"),
        QType("q4_k_s", F.MOSTLY_Q4_K_S, None, "llama-quantize"),
        QType("q3_k_l", F.MOSTLY_Q3_K_L, None, "llama-quantize"),
        QType("q3_k_m", F.MOSTLY_Q3_K_M, None, "llama-quantize"),
        QType("q3_k_s", F.MOSTLY_Q3_K_S, None, "llama-quantize"),
        QType("q2_k", F.MOSTLY_Q2_K, None, "llama-quantize"),
    ]
}

# Types whose quantizer reads an importance matrix (imatrix.py): ggml's K-quant and 4/5-bit legacy
# quantizers weight their rounding error by it; F16/BF16/F32 are not rounded to a grid and Q8_0's
# quantizer ignores it. The legacy types are then made by llama.cpp's quantizer, not gguf-py.
IMATRIX_QTYPES: tuple[str, ...] = tuple(n for n in QTYPES if n not in ("f32", "f16", "bf16", "q8_0"))

# -- read-back tolerances (verify.py) ------------------------------------------------------------------

# llama.cpp on an F32 rendering, F32 KV cache, vs torch in float32: max |dlogit| <= LAYOUT_RTOL *
# max |logit| and top-1 agreement >= LAYOUT_MIN_TOP1. Measured: ~1e-5 on SmolLM2 and tiny models;
# a wrong layout gives errors near 100% and chance-level agreement.
LAYOUT_RTOL = 1e-3
LAYOUT_MIN_TOP1 = 0.98

# Relative RMS error of a tensor read back from the file vs the model's weight, per GGML type:
# a few times the rounding error of the type on Gaussian-like weights (Q4_0 ~0.1).
WEIGHT_RTOL: dict[str, float] = {
    "F32": 1e-6, "F16": 2e-3, "BF16": 1e-2, "Q8_0": 2e-2, "Q6_K": 5e-2, "Q5_0": 0.1, "Q5_1": 0.1, "Q5_K": 0.1,
    "Q4_0": 0.25, "Q4_1": 0.25, "Q4_K": 0.25, "Q3_K": 0.4, "Q2_K": 0.7, "IQ4_NL": 0.25,
}  # fmt: skip

# K-quants start from a full-precision GGUF; F32 avoids rounding twice (4 bytes a weight of
# temporary disk, fine for edge-sized models).
KQUANT_INTERMEDIATE = "f32"

# llama.cpp's llama-quantize gives the output matrix Q6_K for every legacy type but Q8_0, falling
# back to Q8_0 when its row length is not a multiple of 256 (SmolLM2's 576 is not). gguf-py cannot
# write Q6_K, so edgeprune always uses Q8_0 there: the same as llama.cpp for such models, one step
# larger than Q6_K otherwise.
OUTPUT_TYPE_FOR_QUANTIZED = T.Q8_0

# A row length (ne0) that is not a multiple of a legacy type's block size (32) falls back to F16,
# as llama.cpp's converter and llama-quantize do.
ROW_FALLBACK_TYPE = T.F16

# -- tokenizers -------------------------------------------------------------------------------------

# A Hugging Face `tokenizer.json` pre-tokenizer, reduced to a signature (see vocab.py), ->
# llama.cpp's `tokenizer.ggml.pre`, whose regexes in llama-vocab.cpp split text the same way.
_GPT2_SPLIT = "ByteLevel(add_prefix_space=False,use_regex=True)"
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
    r"\s+(?!\S)|\s+"
)
_QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
    r"\s+(?!\S)|\s+"
)
_BYTES_ONLY = "ByteLevel(add_prefix_space=False,use_regex=False)"
PRE_TOKENIZERS: dict[str, str] = {
    _GPT2_SPLIT: "gpt-2",
    f"Sequence[Digits(individual_digits=True),{_GPT2_SPLIT}]": "smollm",
    f"Sequence[Split(regex={_LLAMA3_REGEX},behavior=Isolated,invert=False),{_BYTES_ONLY}]": "llama-bpe",
    f"Sequence[Split(regex={_QWEN2_REGEX},behavior=Isolated,invert=False),{_BYTES_ONLY}]": "qwen2",
}

# tokenizer.json model type (+ byte fallback) -> llama.cpp tokenizer model.
TOKENIZER_MODELS: dict[tuple[str, bool], str] = {
    ("BPE", False): "gpt2",  # byte-level BPE (GPT-2, Llama-3, SmolLM, Qwen2)
    ("BPE", True): "llama",  # SentencePiece-style BPE with byte fallback (Llama-2, Mistral)
}

# Lines whose tokenization llama.cpp must reproduce exactly (plus any the caller passes).
SAMPLE_LINES = (
    "Hello world! The quick brown fox jumps over the lazy dog.",
    " = Valkyria Chronicles III = ",
    "In 1998, 3.14159 people paid $12,345.67 — or 42% of   them.",
    "def f(x):\n    return x ** 2  # square\n\n\tdone",
    "naïve café, Größe, 東京, Ελληνικά, 🙂 emoji",
    "   leading spaces and trailing   ",
    "can't won't I'm they're we've you'll he'd",
)

# Prompts for the logit comparison when the model has a tokenizer.
VERIFY_PROMPTS = (
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "Once upon a time, in a small village by the sea, there lived",
    "1, 2, 3, 5, 8, 13, 21,",
)

"""Fixtures for the GGUF exporter tests: tokenizers with merges, a llama-quantize stand-in, llama.cpp logits."""

from __future__ import annotations

import functools
import io
import stat
import sys
from pathlib import Path

import numpy as np

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world! hello there, the world is quick.",
    "def f(x):\n    return x * 2",
    "In 1998, 3.14159 people paid $12,345.67 for naïve café food.",
] * 20


@functools.lru_cache(maxsize=1)
def bpe_tokenizer():
    """A byte-level BPE tokenizer with merges (llama.cpp needs them): 3 specials + 256 bytes + merges = 320."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<s>", "</s>", "<pad>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )  # fmt: skip
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


# Bytes that never occur in UTF-8 text: a BPE trained only on text need not have their tokens, and
# SmolLM2's vocabulary lacks them (and more), which the GGUF exporter refuses to rebuild from.
UNUSED_BYTES = (0xC0, 0xC1, *range(0xF5, 0x100))


def partial_bytes_tokenizer():
    """A byte-level BPE like SmolLM2's (same specials) whose vocabulary lacks the 13 UNUSED_BYTES: 320 tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = sorted(set(pre_tokenizers.ByteLevel.alphabet()) - {chr(b) for b in UNUSED_BYTES})  # byte b is chr(b) here
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], initial_alphabet=alphabet,
        show_progress=False,
    )  # fmt: skip
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|im_end|>", unk_token="<|endoftext|>")  # fmt: skip


def gguf_source_with_partial_bytes(path: Path, **model_overrides) -> Path:
    """Write a tiny Llama .gguf whose tokenizer lacks UNUSED_BYTES, as SmolLM2's GGUF does: llama.cpp
    runs it and transformers loads it, but the Hugging Face tokenizer it loads as cannot be rebuilt
    into GGUF keys; only a copy of the file's own keys exports."""
    from unittest import mock

    from edgeprune.export.gguf import export_gguf, vocab
    from tests.tiny import tiny_llama

    tok = partial_bytes_tokenizer()
    model = tiny_llama(vocab_size=len(tok), bos_token_id=1, eos_token_id=2, pad_token_id=2, **model_overrides)
    # The exporter refuses such a vocabulary (llama.cpp aborts on some missing bytes, not on these);
    # this fixture needs exactly one, so the check is lifted while it is written.
    with mock.patch.object(vocab, "_require_bytes", lambda *a: None):
        export_gguf(model, tok, path, qtype="f32", progress=False)
    return path


def spm_tokenizer(directory: Path):
    """A SentencePiece BPE tokenizer with byte fallback (Llama-2 style), loaded by transformers."""
    import sentencepiece as spm
    from transformers import LlamaTokenizer

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_writer=model, vocab_size=400, model_type="bpe", byte_fallback=True,
        character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2,
    )  # fmt: skip
    (directory / "tokenizer.model").write_bytes(model.getvalue())
    return LlamaTokenizer.from_pretrained(str(directory))


def llama_quantize_stand_in(directory: Path) -> Path:
    """An executable with llama-quantize's command line that calls the same llama.cpp function
    (``llama_model_quantize``) through llama-cpp-python: no llama.cpp build needed in tests."""
    path = directory / "llama-quantize"
    path.write_text(
        f"#!{sys.executable}\n"
        "import sys\nimport llama_cpp\n"
        "src, dst, ftype = sys.argv[1], sys.argv[2], sys.argv[3]\n"
        "params = llama_cpp.llama_model_quantize_default_params()\n"
        "params.ftype = getattr(llama_cpp, 'LLAMA_FTYPE_MOSTLY_' + ftype.upper())\n"
        "params.nthread = int(sys.argv[4]) if len(sys.argv) > 4 else 1\n"
        "sys.exit(1 if llama_cpp.llama_model_quantize(src.encode(), dst.encode(), params) else 0)\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def llama_cpp_vs_torch(path: Path, model, ids: list[int]) -> float:
    """Max |logit difference| between llama.cpp (in this process) and torch on one sequence.

    Independent of the exporter's own verification code, so a bug there cannot hide a bad file.
    """
    import torch

    from edgeprune.export.gguf.llamacpp import llama_logits, llama_model

    with llama_model(path, n_ctx=64, n_threads=1) as llm:
        got = llama_logits(llm, ids)
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].float().numpy()
    return float(np.abs(got - ref).max())


def gguf_values(path: Path, *keys: str) -> list:
    from edgeprune.models.files import gguf_field, open_gguf

    reader = open_gguf(path)
    return [gguf_field(reader, k) for k in keys]


def tensor_names(path: Path) -> set[str]:
    from edgeprune.models.files import open_gguf

    return {t.name for t in open_gguf(path).tensors}

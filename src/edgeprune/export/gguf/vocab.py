"""Tokenizer metadata for a GGUF file, so llama.cpp tokenizes exactly as transformers does.

Three sources, in order of preference:
1. a source GGUF (the model was loaded from one): every ``tokenizer.*`` key is copied verbatim;
2. a Hugging Face fast tokenizer: vocabulary, merges, token types, pre-tokenizer name, special
   tokens and chat template are built from its ``tokenizer.json`` (as llama.cpp's converter does);
3. no tokenizer: ``tokenizer.ggml.model = "no_vocab"``; llama.cpp then runs on token ids only.
Each returns a list of :class:`KV`; the writer adds them after the architecture keys.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgeprune.errors import EdgepruneError
from edgeprune.export.gguf import tables

# KV and gguf_fields live with the other GGUF readers in models/, so that a model directory can
# record a GGUF tokenizer (models/tokenizer_record.py) without importing the exporter.
from edgeprune.models.files import KV, gguf_fields


@dataclass(frozen=True)
class TokenizerKVs:
    kvs: tuple[KV, ...]
    source: str  # "source-gguf", "hf:<model>/<pre>" or "none"
    n_tokens: int | None
    # A known way llama.cpp's tokenizer cannot follow this one; lines it concerns are not compared.
    caveat: str | None = None
    prefix_caveat: bool = False


# -- 1. copy from a GGUF ----------------------------------------------------------------------------


def from_gguf(path: Path) -> TokenizerKVs:
    return from_fields(gguf_fields(path, ("tokenizer.",)), path)


def from_fields(fields: list[KV], path: Path) -> TokenizerKVs:
    """The tokenizer keys among fields already read from the GGUF at ``path``."""
    kvs = [kv for kv in fields if kv.key.startswith("tokenizer.")]
    if not any(kv.key == "tokenizer.ggml.model" for kv in kvs):
        raise EdgepruneError(f"source GGUF {path} has no tokenizer (no tokenizer.ggml.model): pass the Hugging Face tokenizer instead")
    tokens = next((kv.value for kv in kvs if kv.key == "tokenizer.ggml.tokens"), None)
    return TokenizerKVs(tuple(kvs), "source-gguf", len(tokens) if tokens is not None else None)


# -- 3. no tokenizer ---------------------------------------------------------------------------------


def no_vocab() -> TokenizerKVs:
    from gguf import GGUFValueType

    # llama.cpp creates <arch>.vocab_size dummy tokens for this model (notes 1.2).
    return TokenizerKVs((KV("tokenizer.ggml.model", "no_vocab", GGUFValueType.STRING),), "none", None)


# -- 2. build from a Hugging Face tokenizer ----------------------------------------------------------


def pre_tokenizer_signature(pre: dict | None) -> str:
    """A canonical one-line description of a tokenizer.json ``pre_tokenizer`` (see PRE_TOKENIZERS)."""
    if pre is None:
        return "None"
    kind = pre.get("type")
    if kind == "Sequence":
        return "Sequence[" + ",".join(pre_tokenizer_signature(p) for p in pre.get("pretokenizers", [])) + "]"
    if kind == "ByteLevel":
        return f"ByteLevel(add_prefix_space={bool(pre.get('add_prefix_space', False))},use_regex={bool(pre.get('use_regex', True))})"
    if kind == "Digits":
        return f"Digits(individual_digits={bool(pre.get('individual_digits', False))})"
    if kind == "Split":
        pattern = pre.get("pattern", {})
        regex = pattern.get("Regex", re.escape(pattern.get("String", "")))
        return f"Split(regex={regex},behavior={pre.get('behavior')},invert={bool(pre.get('invert', False))})"
    params = {k: v for k, v in sorted(pre.items()) if k != "type"}
    return f"{kind}({json.dumps(params, sort_keys=True)})"


def _looks_special(text: str) -> bool:
    # Added tokens some models forget to mark special (same heuristic as llama.cpp's converter).
    return text in ("<pad>", "<mask>") or (text.startswith("<|") and text.endswith("|>"))


def _add_special(tokenizer) -> tuple[bool, bool]:
    """Whether encode() adds BOS / EOS, found by asking the tokenizer rather than its config."""
    plain = tokenizer.encode("a", add_special_tokens=False)
    full = tokenizer.encode("a", add_special_tokens=True)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    add_bos = bos is not None and len(full) > len(plain) and full[0] == bos
    add_eos = eos is not None and len(full) > len(plain) and full[-1] == eos
    return add_bos, add_eos


def _bpe_tokens(tokenizer, n_vocab: int):
    """Token strings and types for byte-level BPE (mirrors llama.cpp's ``get_vocab_base``)."""
    from gguf import TokenType

    vocab = tokenizer.get_vocab()
    reverse = {i: t for t, i in vocab.items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(n_vocab):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")  # embedding rows beyond the tokenizer
            types.append(TokenType.UNUSED)
            continue
        text = reverse[i]
        if text in added:
            info = decoder.get(i)
            if info is not None and not info.normalized:
                # llama.cpp expects added tokens in pre-normalized (byte-level) form
                text = tokenizer.decode(tokenizer.encode(text, add_special_tokens=False))
            special = (info is not None and info.special) or _looks_special(text)
            types.append(TokenType.CONTROL if special else TokenType.USER_DEFINED)
        else:
            types.append(TokenType.NORMAL)
        tokens.append(text)
    return tokens, types


def _spm_tokens(tokenizer, tj: dict, n_vocab: int):
    """Tokens, scores and types for SentencePiece-style BPE with byte fallback (Llama-2, Mistral).

    llama.cpp's SPM tokenizer merges the adjacent pair whose result has the highest score; HF's BPE
    applies merges in list order. Scoring a token by minus the rank of the merge that makes it
    gives both the same order.
    """
    from gguf import TokenType

    vocab = tokenizer.get_vocab()
    reverse = {i: t for t, i in vocab.items()}
    merges = tj["model"].get("merges") or []
    rank = {}
    for r, m in enumerate(merges):
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        rank.setdefault(a + b, r)
    specials = set(tokenizer.all_special_ids)
    unk = tokenizer.unk_token_id
    tokens, scores, types = [], [], []
    for i in range(n_vocab):
        text = reverse.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            scores.append(-1000.0)
            types.append(TokenType.UNUSED)
            continue
        tokens.append(text)
        if re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", text):
            types.append(TokenType.BYTE)
        elif i == unk:
            types.append(TokenType.UNKNOWN)
        elif i in specials:
            types.append(TokenType.CONTROL)
        elif text in tokenizer.get_added_vocab():
            types.append(TokenType.USER_DEFINED)
        else:
            types.append(TokenType.NORMAL)
        scores.append(-float(rank[text]) if text in rank else (0.0 if len(text) == 1 else -1e6))
    return tokens, scores, types


def from_hf(tokenizer, n_vocab: int, arch: str) -> TokenizerKVs:
    """Tokenizer keys built from a Hugging Face fast tokenizer (via its saved tokenizer.json)."""
    from gguf import GGUFWriter, SpecialVocab

    if len(tokenizer) > n_vocab:
        raise EdgepruneError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's embedding has {n_vocab} rows: "
            "llama.cpp needs them equal; pass the tokenizer that belongs to this model"
        )
    if not getattr(tokenizer, "is_fast", False):
        raise EdgepruneError(
            "only fast (tokenizer.json) Hugging Face tokenizers can be carried into GGUF: load the model with a fast "
            "tokenizer, or copy a GGUF's tokenizer with --source-gguf FILE (source_gguf= in Python)"
        )
    with tempfile.TemporaryDirectory(prefix="edgeprune-tok-") as tmp:
        tokenizer.save_pretrained(tmp)
        tj = json.loads((Path(tmp) / "tokenizer.json").read_text(encoding="utf-8"))
        model = tj.get("model", {})
        key = (model.get("type"), bool(model.get("byte_fallback", False)))
        kind = tables.TOKENIZER_MODELS.get(key)
        if kind is None:
            raise EdgepruneError(
                f"cannot carry a {key[0]} tokenizer{' with byte fallback' if key[1] else ''} into GGUF yet: "
                "supported are byte-level BPE and SentencePiece-style BPE; copy a GGUF's with --source-gguf FILE "
                "(source_gguf= in Python)"
            )
        # A scratch writer collects the keys through gguf-py's own setters, so the value types
        # are exactly those llama.cpp's converter writes.
        w = GGUFWriter(None, arch)
        w.add_tokenizer_model(kind)
        if kind == "gpt2":
            sig = pre_tokenizer_signature(tj.get("pre_tokenizer"))
            pre = tables.PRE_TOKENIZERS.get(sig)
            if pre is None:
                raise EdgepruneError(
                    f"no llama.cpp pre-tokenizer is known for this tokenizer ({sig[:80]}): copy the tokenizer of a "
                    "GGUF of the base model with --source-gguf FILE (source_gguf= in Python), or add a row to PRE_TOKENIZERS"
                )
            tokens, types = _bpe_tokens(tokenizer, n_vocab)
            _require_bytes(tokens, _byte_level_chars(), "byte-level BPE")
            w.add_tokenizer_pre(pre)
            w.add_token_list(tokens)
            w.add_token_types(types)
            special = SpecialVocab(tmp, load_merges=True, n_vocab=n_vocab)
            if not special.merges:
                raise EdgepruneError("the BPE tokenizer has no merges: llama.cpp cannot load a gpt2 vocabulary without them")
        else:
            pre = "default"
            tokens, scores, types = _spm_tokens(tokenizer, tj, n_vocab)
            _require_bytes(tokens, [f"<0x{b:02X}>" for b in range(256)], "byte-fallback")
            w.add_tokenizer_pre(pre)
            w.add_token_list(tokens)
            w.add_token_scores(scores)
            w.add_token_types(types)
            special = SpecialVocab(tmp, load_merges=False, n_vocab=n_vocab)
        special.add_to_gguf(w, quiet=True)
    add_bos, add_eos = _add_special(tokenizer)
    w.add_add_bos_token(add_bos)  # overrides SpecialVocab's guess from the config
    w.add_add_eos_token(add_eos)
    if kind == "llama":
        # SentencePiece-style vocabularies prefix a space unless the tokenizer says otherwise
        w.add_add_space_prefix(_adds_space_prefix(tj))
    kvs = tuple(KV(k, v.value, v.type, v.sub_type) for k, v in w.kv_data[0].items() if k.startswith("tokenizer."))
    caveat = None
    if kind == "llama" and _prepends_first_only(tj):
        caveat = (
            "text that starts with a space or follows a special token: llama.cpp adds the SentencePiece space "
            "prefix there, transformers' Metaspace(prepend_scheme='first') adds it only at the very start of "
            "text that does not already begin with a space"
        )
    return TokenizerKVs(kvs, f"hf:{kind}/{pre}", len(tokens), caveat, caveat is not None)


def _prepends_first_only(tj: dict) -> bool:
    pre = tj.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    return any(p.get("type") == "Metaspace" and p.get("prepend_scheme") == "first" for p in parts)


def _byte_level_chars() -> list[str]:
    from tokenizers import pre_tokenizers

    return sorted(pre_tokenizers.ByteLevel.alphabet())


def _require_bytes(tokens: list[str], needed: list[str], kind: str) -> None:
    # llama.cpp looks byte tokens up unchecked (e.g. the newline for its linefeed id) and aborts the
    # whole process when one is missing, so refuse such a vocabulary here.
    have = set(tokens)
    missing = [t for t in needed if t not in have]
    if missing:
        raise EdgepruneError(
            f"the {kind} vocabulary lacks {len(missing)} of its 256 byte tokens (e.g. {missing[0]!r}): llama.cpp "
            "needs all of them; copy the tokenizer of the GGUF the model was made from with --source-gguf FILE "
            "(source_gguf= in Python), or retrain the tokenizer with the full byte alphabet"
        )


def _adds_space_prefix(tj: dict) -> bool:
    text = json.dumps(tj.get("normalizer")) + json.dumps(tj.get("pre_tokenizer"))
    return '"Prepend"' in text or '"prepend_scheme": "always"' in text or '"prepend_scheme": "first"' in text

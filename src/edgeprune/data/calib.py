"""Calibration and training text as token windows: from a file, a named corpus, a folder of
documents, or the model itself.

Sources (``source`` argument; None: :func:`edgeprune.data.general.default_source`, i.e. ``general``
where the data directory has it, else ``self``):
- ``"general"``: the data directory's ``general/`` folder (C4, Wikipedia, Project Gutenberg),
  documents mixed in equal shares per corpus, tokenised lazily, a 2% held-out slice never drawn,
  cached (:mod:`edgeprune.data.general`);
- ``"self"``: data-free text sampled from the model itself (LLM-QAT's recipe: a random first token,
  the next few greedy, then sampling at temperature 1), seeded with a ``torch.Generator`` and
  cached under ``<cache>/calib`` so every run sees the same windows;
- ``"shakespeare"``: ``calib/tiny_shakespeare.txt`` of the shared data directory;
- ``"wikitext2-valid"``: the WikiText-2 *validation* file;
- a folder of ``.txt`` / ``.jsonl`` files, or a ``.jsonl`` file (a ``text`` field per line): a
  user's own documents, read as ``general`` is (:mod:`edgeprune.data.general`);
- any other string: a UTF-8 text file path.

The WikiText-2 *test* file is the evaluation set and is refused, by name, path and content hash.
Text files are tokenised once without special tokens, cut into non-overlapping windows of ``seq_len``,
and ``n_windows`` of them are drawn with a seeded permutation.

How many windows of what length a compression step draws, with which seed, is
:mod:`edgeprune.data.calib_policy`'s; this module only reads a source into windows.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from edgeprune.data.documents import check_not_eval_set
from edgeprune.data.general import GENERAL, default_source, document_windows, general_root, is_document_source
from edgeprune.data.windows import TokenWindows
from edgeprune.errors import EdgepruneError

NAMED_SOURCES = {
    "shakespeare": "calib/tiny_shakespeare.txt",
    "wikitext2-valid": "wikitext-2-raw/wiki.valid.raw",
}
SELF_GEN_VERSION = 1


def concat_windows(*windows: TokenWindows) -> TokenWindows:
    """One :class:`TokenWindows` from several of the same ``seq_len`` (mixed sources)."""
    if len({w.seq_len for w in windows}) != 1:
        raise EdgepruneError("training windows from different sources must have the same length: pass one --train-seq-len")
    return TokenWindows(torch.cat([w.ids for w in windows]), " + ".join(w.source for w in windows))


def check_source(source: str) -> None:
    """EdgepruneError unless ``source`` is ``self``, ``general``, a named source, an existing file or
    folder, and not the evaluation set by name. Cheap (no tokenizer, no data directory): the CLIs call
    it before loading."""
    names = ", ".join(["self", GENERAL, *NAMED_SOURCES])
    if source in ("wikitext2", "wikitext2-test"):
        raise EdgepruneError(f"{source!r} is the evaluation set: calibrate on {names} or a file")
    if source not in ("self", GENERAL, *NAMED_SOURCES) and not Path(source).expanduser().exists():
        raise EdgepruneError(f"no calibration text {source!r}: pass {names}, an existing UTF-8 .txt/.jsonl file or a folder of them")


def check_window_count(n_windows, name: str = "n_windows") -> None:
    if not isinstance(n_windows, int) or n_windows < 1:
        raise EdgepruneError(f"the calibration set is empty ({name} {n_windows!r}): ask for at least one window")


def check_seq_len(seq_len, name: str = "seq_len") -> None:
    if not isinstance(seq_len, int) or seq_len < 2:
        raise EdgepruneError(f"{name} must be an integer >= 2, got {seq_len!r}")


def text_windows(text: str, tokenizer, *, seq_len: int, n_windows: int, seed: int = 0, source: str = "text") -> TokenWindows:
    """Non-overlapping ``seq_len`` windows of ``text``; ``n_windows`` drawn with a seeded permutation."""
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    n_full = len(ids) // seq_len
    if n_full == 0:
        raise EdgepruneError(
            f"the calibration text ({source}) has {len(ids)} tokens, fewer than one window of {seq_len}: "
            "pass more text or a shorter --seq-len"
        )
    # (n_full * seq_len,) -> (n_full, seq_len)
    all_windows = torch.tensor(ids[: n_full * seq_len], dtype=torch.long).view(n_full, seq_len)
    order = torch.randperm(n_full, generator=torch.Generator().manual_seed(seed))[:n_windows]
    return TokenWindows(all_windows[order], f"{source} ({n_full} windows available, {len(order)} drawn, seed {seed})")


def calibration_windows(tokenizer, source: str | None = None, *, n_windows: int = 128, seq_len: int = 128, seed: int = 0,
                        model=None, data_dir: str | Path | None = None, use_cache: bool = True,
                        progress: bool = True) -> TokenWindows:  # fmt: skip
    """Token windows from ``source`` (see the module docstring; None: the default source)."""
    check_window_count(n_windows)
    check_seq_len(seq_len)
    source = default_source(data_dir) if source is None else source
    check_source(source)
    if source == "self":
        if model is None:
            raise EdgepruneError("source 'self' samples text from the model: pass model=")
        return self_generated(model, tokenizer, n_windows=n_windows, seq_len=seq_len, seed=seed,
                              use_cache=use_cache, progress=progress)  # fmt: skip
    if is_document_source(source):
        path = general_root(data_dir) if source == GENERAL else Path(source).expanduser()
        return document_windows(tokenizer, path, n_windows=n_windows, seq_len=seq_len, seed=seed, use_cache=use_cache,
                                label=GENERAL if source == GENERAL else str(path))  # fmt: skip
    from edgeprune.data import read_text, resolve_data_file

    # resolve_data_file names the fix where the data directory lacks a named source
    path = resolve_data_file(NAMED_SOURCES[source], data_dir) if source in NAMED_SOURCES else Path(source).expanduser()
    text = read_text(path)
    check_not_eval_set(path, text)
    return text_windows(text, tokenizer, seq_len=seq_len, n_windows=n_windows, seed=seed, source=str(path))


# -- data-free text from the model itself ------------------------------------------------------------


def model_fingerprint(model) -> str:
    """A cheap identity of a model's weights (config + per-tensor sums), for cache keys."""
    h = hashlib.sha256(model.config.to_json_string(use_diff=False).encode())
    with torch.no_grad():
        for name, p in model.state_dict().items():
            h.update(f"{name}:{tuple(p.shape)}:{float(p.double().sum()):.10e}:{float(p.double().abs().sum()):.10e}".encode())
    return h.hexdigest()[:20]


@torch.no_grad()
def sample_sequences(model, *, n: int, seq_len: int, generator: torch.Generator, vocab_ids: torch.Tensor,
                     greedy_tokens: int = 3, temperature: float = 1.0, batch: int = 32) -> torch.Tensor:  # fmt: skip
    """``(n, seq_len)`` token ids sampled from ``model`` (KV-cached), every draw from ``generator``.

    The first token is uniform over ``vocab_ids``; the next ``greedy_tokens`` are argmax; the rest
    are sampled at ``temperature`` (LLM-QAT, arXiv 2305.17888, section 2.1).
    """
    from transformers import DynamicCache

    out = []
    for start in range(0, n, batch):
        b = min(batch, n - start)
        ids = vocab_ids[torch.randint(len(vocab_ids), (b, 1), generator=generator)]
        cache = DynamicCache(config=model.config)
        step_in = ids
        for t in range(1, seq_len):
            logits = model(input_ids=step_in, cache=cache, use_cache=True).logits[:, -1].float()
            if t <= greedy_tokens:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                probs = torch.softmax(logits / temperature, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator)
            ids = torch.cat([ids, nxt], dim=1)
            step_in = nxt
        out.append(ids)
    return torch.cat(out)


def self_generated(model, tokenizer, *, n_windows: int, seq_len: int, seed: int = 0, use_cache: bool = True,
                   progress: bool = True) -> TokenWindows:  # fmt: skip
    """Windows of text the model samples itself, cached by (weights, size, seed)."""
    from edgeprune.models.cache import cache_root

    key = f"v{SELF_GEN_VERSION}-{model_fingerprint(model)}-n{n_windows}-L{seq_len}-s{seed}"
    path = cache_root() / "calib" / f"selfgen-{key}.pt"
    source = f"self-generated (seed {seed}, {n_windows} x {seq_len} tokens, cache {path.name})"
    if use_cache and path.is_file():
        ids = torch.load(path, weights_only=True)
        if ids.shape == (n_windows, seq_len):
            return TokenWindows(ids, source)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    vocab = min(len(tokenizer), model.config.vocab_size)
    vocab_ids = torch.tensor([i for i in range(vocab) if i not in special], dtype=torch.long)
    was_training = model.training
    model.eval()
    try:
        from tqdm.auto import tqdm

        gen = torch.Generator().manual_seed(seed)
        chunks, batch = [], 32
        with tqdm(total=n_windows, desc="self-generating calibration text", unit="seq", disable=not progress, leave=False) as bar:
            for start in range(0, n_windows, batch):
                b = min(batch, n_windows - start)
                chunks.append(sample_sequences(model, n=b, seq_len=seq_len, generator=gen, vocab_ids=vocab_ids, batch=b))
                bar.update(b)
        ids = torch.cat(chunks)
    finally:
        model.train(was_training)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(ids, tmp)
        os.replace(tmp, path)
    return TokenWindows(ids, source)

"""The ``general`` source, and a folder of a user's own text: documents mixed, tokenised lazily and cut
into windows for calibration and recovery training, with a held-out slice kept for scoring.

Sources:
- ``general``: the data directory's ``general/`` folder (its PROVENANCE.md has the provenance): C4
  web pages (``c4/*.jsonl``), English Wikipedia articles (``wikipedia/**/wiki_*``, WikiExtractor
  output) and Project Gutenberg books (``gutenberg/*.txt``), three corpora, ~10.6M tokens. For
  calibration and training only, never for evaluation. A folder laid out like it is read the same way.
- a folder of a user's ``.txt`` / ``.jsonl`` files (any depth), or one ``.jsonl`` file: one corpus.
How files become documents, and which documents are held out: :mod:`edgeprune.data.documents`.

How windows are drawn (:func:`document_windows`); the same seed gives the same windows:
1. each corpus's documents, held-out ones removed, are put in an order seeded by (seed, corpus);
2. each corpus gets an equal share of the ``n_windows`` (the first corpora one more where they do not
   divide). Equal, not proportional to size: the point of this text is that it is no one domain, and
   by size C4 would be 5% of it, books and short Wikipedia biographies the rest. A corpus that runs
   out passes what is left of its share to the others;
3. a corpus's documents are tokenised in that order (each followed by a blank line; no special
   tokens), packed back to back and cut into ``seq_len`` windows, only until its share is filled:
   64 windows of 128 tokens tokenise ~8k tokens, not 10.6M;
4. the windows of all corpora are interleaved by a permutation seeded by ``seed``.
Windows are cached under ``<cache>/calib``, keyed by the files' sizes and mtimes, the tokenizer,
the seed and the sizes.

Which source a run uses when none is named: :func:`default_source` (``general`` where the data
directory has it, else ``self``: text the model writes itself), said in one line by
:func:`default_source_note`.

Torch-free at import; drawing windows imports it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from edgeprune.data.documents import (HELDOUT_FRACTION, MIN_HELDOUT_DOCS, PIECE_CHARS, Document, is_heldout, read_files,
                                      read_jsonl, read_text_file, read_wikiextractor, user_files)  # fmt: skip
from edgeprune.data.paths import DATA_ENV, find_data_root
from edgeprune.errors import EdgepruneError

GENERAL = "general"  # the source name, and the folder of the data directory it reads
GENERAL_VERSION = 1  # of documents, held-out rule, mixing and packing: part of every cache key
# corpus -> (sub-folder of general/, file name pattern, reader), in the order shares are given
GENERAL_CORPORA = {
    "c4": ("c4", "*.jsonl", read_jsonl),
    "wikipedia": ("wikipedia", "wiki_*", read_wikiextractor),
    "gutenberg": ("gutenberg", "*.txt", read_text_file),
}


# -- which source, where ------------------------------------------------------------------------------


def general_dir(data_dir: str | Path | None = None) -> Path | None:
    """The data directory's ``general/`` folder, or None where there is no such folder."""
    root = find_data_root(data_dir)
    return root / GENERAL if root is not None and (root / GENERAL).is_dir() else None


def general_root(data_dir: str | Path | None = None) -> Path:
    """The ``general/`` folder; a one-line EdgepruneError naming ``--data-dir`` where it is missing."""
    found = general_dir(data_dir)
    if found is None:
        root = find_data_root(data_dir)
        where = f"{root / GENERAL} does not exist" if root is not None else "no data directory is set"
        raise EdgepruneError(
            f"the general calibration text is missing ({where}): pass --data-dir DIR (or set ${DATA_ENV}=DIR) "
            f"to a directory holding {GENERAL}/, or calibrate on self"
        )
    return found


def default_source(data_dir: str | Path | None = None) -> str:
    """The calibration and training source of a run that names none: ``general`` where the data
    directory has it, else ``self`` (data-free: text the model writes itself)."""
    return GENERAL if general_dir(data_dir) is not None else "self"


def default_source_note(data_dir: str | Path | None = None) -> str:
    """One line saying which source :func:`default_source` picks and why (for a run's log)."""
    found = general_dir(data_dir)
    if found is not None:
        return f"using {GENERAL} ({found}: C4, Wikipedia, Gutenberg; {HELDOUT_FRACTION:.0%} of documents held out)"
    root = find_data_root(data_dir)
    where = f"{root} has no {GENERAL}/" if root is not None else "no data directory"
    return f"using self, text the model writes itself ({where}: pass --data-dir DIR holding {GENERAL}/ for general text)"


def is_document_source(source: str | Path) -> bool:
    """Whether ``source`` is read as documents here: ``general``, a folder, or a ``.jsonl`` file."""
    if str(source) == GENERAL:
        return True
    path = Path(source).expanduser()
    return path.is_dir() or (path.is_file() and path.suffix.lower() == ".jsonl")


# -- corpora and their documents -----------------------------------------------------------------------


@dataclass(frozen=True)
class Corpus:
    name: str
    root: Path  # document ids are relative to it
    files: tuple[Path, ...]
    reader: Callable | None  # None: each file by its suffix

    def documents(self) -> Iterator[Document]:
        return read_files(list(self.files), self.root, self.reader)


def corpora(path: str | Path) -> list[Corpus]:
    """The corpora of a source: a ``general``-like folder (three), a user's folder or ``.jsonl`` file (one)."""
    path = Path(path).expanduser()
    if path.is_dir() and all((path / sub).is_dir() for sub, _, _ in GENERAL_CORPORA.values()):
        return [Corpus(name, path, tuple(sorted(f for f in (path / sub).rglob(pattern) if f.is_file())), reader)
                for name, (sub, pattern, reader) in GENERAL_CORPORA.items()]  # fmt: skip
    if path.is_dir():
        files = user_files(path)
        if not files:
            raise EdgepruneError(f"{path} holds no .txt or .jsonl files: pass a folder of UTF-8 text or JSON Lines with a 'text' field")
        return [Corpus(path.name, path, tuple(files), None)]
    if path.is_file() and path.suffix.lower() == ".jsonl":
        return [Corpus(path.stem, path, (path,), read_jsonl)]
    raise EdgepruneError(f"no text folder or .jsonl file {path}: pass an existing folder of .txt/.jsonl files")


def _split(corpus: Corpus) -> tuple[list[Document], list[Document]]:
    """(documents that may be drawn, held-out documents), both in reading order."""
    docs = list(corpus.documents())
    if len(docs) < MIN_HELDOUT_DOCS:
        return docs, []
    held = [is_heldout(d.id) for d in docs]
    return [d for d, h in zip(docs, held) if not h], [d for d, h in zip(docs, held) if h]


def heldout_documents(path: str | Path) -> dict[str, list[Document]]:
    """Corpus name -> its held-out documents (in reading order): never drawn for calibration or training."""
    return {c.name: _split(c)[1] for c in corpora(path)}


def general_heldout_text(data_dir: str | Path | None = None, *, corpus: str | None = None) -> str:
    """The held-out slice of ``general`` as one text (documents separated by blank lines), of every
    corpus in turn or of ``corpus`` alone: text no calibration or training draw ever saw, to score on."""
    held = heldout_documents(general_root(data_dir))
    if corpus is not None and corpus not in held:
        raise EdgepruneError(f"no corpus {corpus!r} in {GENERAL}: pass one of {', '.join(held)}")
    names = [corpus] if corpus is not None else list(held)
    return "\n\n".join(d.text for name in names for d in held[name])


# -- windows -------------------------------------------------------------------------------------------


def tokenizer_fingerprint(tokenizer) -> str:
    """A cheap identity of a tokenizer (its class and full serialised spec, or its vocabulary), for cache keys."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(f"{type(tokenizer).__name__}|{spec}".encode()).hexdigest()[:20]


class _Packer:
    """One corpus's documents in their seeded order, tokenised only as far as windows are asked for."""

    def __init__(self, docs: list[Document], tokenizer, seq_len: int):
        self.docs, self.tokenizer, self.seq_len = docs, tokenizer, seq_len
        self.ids: list[int] = []
        self.used = 0  # documents tokenised so far

    def fill(self, n: int) -> int:
        """Tokenise until ``n`` windows are full or the documents run out; how many windows are full."""
        while len(self.ids) < n * self.seq_len and self.used < len(self.docs):
            missing = n * self.seq_len - len(self.ids)
            per_doc = len(self.ids) / self.used if self.used else 512.0  # tokens per document so far
            batch = self.docs[self.used : self.used + min(256, int(missing / max(per_doc, 1.0)) + 1)]  # tokenised at once
            self.used += len(batch)
            for ids in self.tokenizer([d.text + "\n\n" for d in batch], add_special_tokens=False, verbose=False)["input_ids"]:
                self.ids.extend(ids)
        return min(n, len(self.ids) // self.seq_len)


def _shares(n_windows: int, packers: dict[str, _Packer]) -> dict[str, int]:
    """Windows per corpus: equal shares; what a corpus cannot fill goes to those with text left."""
    names = list(packers)
    want = {c: n_windows // len(names) + (i < n_windows % len(names)) for i, c in enumerate(names)}
    got, active = {}, names
    while active:
        for c in active:
            got[c] = packers[c].fill(want[c])
        short = sum(want[c] - got[c] for c in active)
        active = [c for c in active if got[c] == want[c]]
        if short == 0 or not active:
            break
        for i, c in enumerate(active):
            want[c] += short // len(active) + (i < short % len(active))
    return got


def _cache_path(path: Path, cs: list[Corpus], tokenizer, *, n_windows: int, seq_len: int, seed: int) -> Path:
    from edgeprune.models.cache import cache_root

    h = hashlib.sha256(f"v{GENERAL_VERSION}|{PIECE_CHARS}|{HELDOUT_FRACTION}|{MIN_HELDOUT_DOCS}|{path.resolve()}|"
                       f"{tokenizer_fingerprint(tokenizer)}|n{n_windows}|L{seq_len}|s{seed}".encode())  # fmt: skip
    for c in cs:
        for f in c.files:
            st = f.stat()
            h.update(f"|{c.name}|{f.relative_to(path) if f != path else f.name}|{st.st_size}|{st.st_mtime_ns}".encode())
    return cache_root() / "calib" / f"docs-{path.name}-{h.hexdigest()[:20]}.pt"


def document_windows(tokenizer, path: str | Path, *, n_windows: int, seq_len: int, seed: int = 0, use_cache: bool = True,
                     label: str | None = None):  # fmt: skip
    """``n_windows`` windows of ``seq_len`` tokens from the documents of ``path`` (a ``general``-like
    folder, a user's folder or ``.jsonl`` file), mixed and drawn as the module docstring says, the
    held-out slice never among them. Fewer where the text holds fewer. ``label``: the name in reports."""
    import torch

    from edgeprune.data.windows import TokenWindows

    path = Path(path).expanduser()
    cs = corpora(path)
    label = label or str(path)
    cache = _cache_path(path, cs, tokenizer, n_windows=n_windows, seq_len=seq_len, seed=seed)
    if use_cache and cache.is_file():
        saved = torch.load(cache, weights_only=True)
        return TokenWindows(saved["ids"], saved["source"])
    packers = {}
    for c in cs:
        pool, _ = _split(c)
        random.Random(f"{GENERAL_VERSION}:{seed}:{c.name}").shuffle(pool)  # str seeds hash the same in every process
        packers[c.name] = _Packer(pool, tokenizer, seq_len)
    got = _shares(n_windows, packers)
    if sum(got.values()) == 0:
        raise EdgepruneError(
            f"the calibration text ({label}) has fewer tokens than one window of {seq_len}: pass more text or a shorter --seq-len"
        )
    # each corpus: (got * seq_len,) packed ids -> (got, seq_len); then all corpora, interleaved
    ids = torch.cat([torch.tensor(packers[c].ids[: got[c] * seq_len], dtype=torch.long).view(got[c], seq_len) for c in got])
    ids = ids[torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed))]
    mix = ", ".join(f"{c} {k}" for c, k in got.items())
    source = (f"{label} ({mix} windows of {seq_len} tokens; {sum(p.used for p in packers.values())} documents tokenised; "
              f"seed {seed}; held-out slice excluded)")  # fmt: skip
    if use_cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        torch.save({"ids": ids, "source": source}, tmp)
        os.replace(tmp, cache)
    return TokenWindows(ids, source)

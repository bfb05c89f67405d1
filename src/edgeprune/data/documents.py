"""Text files as documents: readers for JSON Lines, WikiExtractor output and plain text (Project
Gutenberg books included), and the rule that holds some documents out of calibration and training.

A :class:`Document` has a stable ``id`` (the file's path relative to the source folder plus where
in the file it is) and its text. Every reader streams: it yields one document at a time and never
holds more than one file.

- ``.jsonl``: one document per line, its ``text`` field; id ``<file>:<line number>``.
- WikiExtractor (``wiki_NN``): one document per ``<doc id=...>`` ... ``</doc>`` record (its first
  line is the title); a record with nothing beyond its title (a stub) is skipped; id ``<file>#<doc id>``.
- ``.txt``: a Project Gutenberg book loses the license header and footer (everything outside the
  ``*** START OF`` / ``*** END OF`` markers, see :func:`strip_gutenberg`); the text is cut at blank
  lines into pieces of at least :data:`PIECE_CHARS` characters, each a document; id ``<file>#p<n>``.
  Pieces let a few long books be drawn from, and held out, like many short web pages.

Held out (:func:`is_heldout`): a document whose id hashes below :data:`HELDOUT_FRACTION` (2%) is
never drawn for calibration or training, for any seed; a source with fewer than
:data:`MIN_HELDOUT_DOCS` documents holds none out (a user's few files are all used).

Pure Python, no torch.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edgeprune.errors import EdgepruneError

PIECE_CHARS = 2000  # ~500 tokens: a 128-token window draws on a few pieces of a book, not one chapter
HELDOUT_FRACTION = 0.02
MIN_HELDOUT_DOCS = 50
# SHA-256 of wikitext-2-raw/wiki.test.raw (see shared/data/PROVENANCE.md): never calibrate on it.
EVAL_SET_SHA256 = "173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08"

# Project Gutenberg markers. The book lies between the START line and the first end marker after it:
# "*** END OF TH(E|IS) PROJECT GUTENBERG ...", the "End of (the) Project Gutenberg ..." line that often
# precedes it, or, in old (pre-2003) files with no END marker, the header repeated after the text.
_PG_START = re.compile(r"^[ \t]*\*{3}[ \t]*START OF[ \t]+TH(E|IS)[ \t]+PROJECT GUTENBERG.*$", re.M | re.I)
_PG_END = re.compile(r"^[ \t]*(\*{3}[ \t]*END OF[ \t]+TH(E|IS)[ \t]+PROJECT GUTENBERG|End of (the |this )?Project Gutenberg"
                     r"|The Project Gutenberg Etext of)", re.M | re.I)  # fmt: skip
_WIKI_DOC = re.compile(r'<doc\b[^>]*\bid="([^"]*)"')


@dataclass(frozen=True)
class Document:
    id: str  # stable across runs: the file relative to its source folder and the place in it
    text: str


def check_not_eval_set(path: Path, text: str) -> None:
    """EdgepruneError where ``text`` (read from ``path``) is the WikiText-2 test file, the evaluation set."""
    if hashlib.sha256(text.encode("utf-8")).hexdigest() == EVAL_SET_SHA256 or path.name == "wiki.test.raw":
        raise EdgepruneError(
            f"{path} is the WikiText-2 test file, the evaluation set: calibrate on other text "
            "(general, self, shakespeare, wikitext2-valid or a file of your own)"
        )


def is_heldout(doc_id: str) -> bool:
    """Whether document ``doc_id`` is in the held-out slice: a fixed hash of its id (no seed), so no
    draw of any seed or size ever contains it."""
    h = int.from_bytes(hashlib.sha256(f"edgeprune-heldout:{doc_id}".encode()).digest()[:8], "big")
    return h < HELDOUT_FRACTION * 2**64


def _open(path: Path):
    # utf-8-sig drops a BOM; text mode turns CRLF line ends into "\n"
    return path.open(encoding="utf-8-sig")


def _decode_error(path: Path, exc: UnicodeDecodeError) -> EdgepruneError:
    return EdgepruneError(f"{path} is not UTF-8 text (byte {exc.start}): pass UTF-8 files")


def read_jsonl(path: Path, rel: str) -> Iterator[Document]:
    """One document per line of a JSON Lines file: its ``text`` field (blank lines and empty texts skipped)."""
    try:
        with _open(path) as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    text = json.loads(line).get("text")
                except (json.JSONDecodeError, AttributeError):
                    text = None
                if not isinstance(text, str):
                    raise EdgepruneError(f"{path}:{number} is not a JSON object with a 'text' string: pass .jsonl records like {{\"text\": ...}}")
                if text.strip():
                    yield Document(f"{rel}:{number}", text.strip())
    except UnicodeDecodeError as exc:
        raise _decode_error(path, exc) from None


def read_wikiextractor(path: Path, rel: str) -> Iterator[Document]:
    """One document per ``<doc ...>`` record of WikiExtractor output; title-only stubs skipped."""
    doc_id, lines = None, []
    try:
        with _open(path) as f:
            for line in f:
                if line.startswith("<doc "):
                    match = _WIKI_DOC.match(line)
                    doc_id, lines = (match.group(1) if match else line.strip()), []
                elif line.startswith("</doc>"):
                    text = "".join(lines).strip()
                    if doc_id is not None and "\n" in text:  # more than the title line
                        yield Document(f"{rel}#{doc_id}", text)
                    doc_id = None
                elif doc_id is not None:
                    lines.append(line)
    except UnicodeDecodeError as exc:
        raise _decode_error(path, exc) from None


def strip_gutenberg(text: str) -> str:
    """The book of a Project Gutenberg file: what lies between its START marker line and the first end
    marker after it (see ``_PG_END``); ``text`` itself where it has no START marker."""
    start = _PG_START.search(text)
    if start is None:
        return text
    end = _PG_END.search(text, start.end())
    return text[start.end() : end.start() if end else len(text)]


def pieces(text: str, min_chars: int = PIECE_CHARS) -> Iterator[str]:
    """``text`` cut at blank lines into pieces of at least ``min_chars`` characters (the last may be shorter)."""
    buf, size = [], 0
    for para in re.split(r"\n[ \t]*\n\s*", text.strip()):
        buf.append(para)
        size += len(para)
        if size >= min_chars:
            yield "\n\n".join(buf)
            buf, size = [], 0
    if buf and "".join(buf).strip():
        yield "\n\n".join(buf)


def read_text_file(path: Path, rel: str) -> Iterator[Document]:
    """A UTF-8 text file (a Gutenberg book loses its license header and footer) as pieces."""
    try:
        with _open(path) as f:
            text = f.read()
    except UnicodeDecodeError as exc:
        raise _decode_error(path, exc) from None
    check_not_eval_set(path, text)
    for i, piece in enumerate(pieces(strip_gutenberg(text))):
        yield Document(f"{rel}#p{i}", piece)


READERS = {".jsonl": read_jsonl, ".txt": read_text_file}  # a user's directory: by file suffix


def user_files(folder: Path) -> list[Path]:
    """The ``.txt`` and ``.jsonl`` files under ``folder`` (any depth), sorted; others are ignored."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in READERS)


def read_files(files: list[Path], root: Path, reader=None) -> Iterator[Document]:
    """The documents of ``files`` in order, each read by ``reader`` (None: by its suffix); ids relative to ``root``."""
    for path in files:
        read = reader or READERS[path.suffix.lower()]
        yield from read(path, path.relative_to(root).as_posix() if path != root else path.name)

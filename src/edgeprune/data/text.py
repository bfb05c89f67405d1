"""Corpora for perplexity: named files under the data directory, read whole as one text."""

from __future__ import annotations

from pathlib import Path

from edgeprune.data.paths import resolve_data_file
from edgeprune.errors import EdgepruneError

# name -> file under the data directory. WikiText-2 is the raw file read as one text: the
# convention of llama.cpp's perplexity tool and of the raw-file evaluations in the literature.
CORPORA = {
    "wikitext2": "wikitext-2-raw/wiki.test.raw",
    "wikitext2-valid": "wikitext-2-raw/wiki.valid.raw",
}


def corpus_path(data: str | Path, root: str | Path | None = None) -> Path:
    """A corpus name (``wikitext2``) or a path to a text file -> the file's path."""
    if str(data) in CORPORA:
        return resolve_data_file(CORPORA[str(data)], root)
    path = Path(data).expanduser()
    if not path.is_file():
        names = ", ".join(CORPORA)
        raise EdgepruneError(f"no such text file {path}: pass an existing UTF-8 file or a corpus name ({names})")
    return path


def read_text(path: str | Path) -> str:
    """The whole file as one string (UTF-8, newlines kept). Empty or undecodable -> EdgepruneError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EdgepruneError(f"no such text file {path}: pass an existing UTF-8 file") from None
    except UnicodeDecodeError as exc:
        raise EdgepruneError(f"{path} is not UTF-8 text (byte {exc.start}): pass a UTF-8 text file") from None
    except OSError as exc:
        raise EdgepruneError(f"cannot read {path}: {exc.strerror}") from None
    if not text.strip():
        raise EdgepruneError(f"{path} is empty: pass a text file with content")
    return text

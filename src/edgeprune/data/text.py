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
    "shakespeare": "calib/tiny_shakespeare.txt",
}


# name -> (hub dataset, config, split) to fetch a named corpus from when no local copy exists
HUB_CORPORA = {
    "wikitext2": ("Salesforce/wikitext", "wikitext-2-raw-v1", "test"),
    "wikitext2-valid": ("Salesforce/wikitext", "wikitext-2-raw-v1", "validation"),
}


def corpus_path(data: str | Path, root: str | Path | None = None) -> Path:
    """A corpus name (``wikitext2``) or a path to a text file -> the file's path.

    A named corpus is read from the local data directory; where there is none and the machine is
    online, it is fetched once from the Hugging Face hub and cached (the same raw text)."""
    if str(data) in CORPORA:
        try:
            return resolve_data_file(CORPORA[str(data)], root)
        except EdgepruneError as local_error:
            if root is not None:
                raise
            return _hub_corpus(str(data), local_error)
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


def _hub_corpus(name: str, local_error: EdgepruneError) -> Path:
    """The named corpus from the hub, cached under the edgeprune cache as the raw file it mirrors."""
    import os

    from edgeprune.models.cache import cache_root

    cached = cache_root() / "data" / CORPORA[name]
    if cached.is_file():
        return cached
    offline = any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    hint = f"{local_error}; and it cannot be fetched from the hub"
    if offline:
        raise EdgepruneError(f"{hint} while HF_HUB_OFFLINE is set: provide the local data directory") from None
    repo, config, split = HUB_CORPORA[name]
    try:
        from datasets import load_dataset

        rows = load_dataset(repo, config, split=split)["text"]
    except Exception as exc:  # offline, hub errors: all mean "no copy to be had"
        raise EdgepruneError(f"{hint} ({type(exc).__name__}): provide the local data directory") from None
    from edgeprune.fileio import write_text_atomic

    cached.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(cached, "".join(rows))  # the dataset's rows are the raw file's lines, newlines kept
    return cached

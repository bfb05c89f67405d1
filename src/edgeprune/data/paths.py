"""Locating data files: WikiText-2, zero-shot task files, calibration text.

A file ``relative`` (e.g. ``wikitext-2-raw/wiki.test.raw``) is looked for in the data directory:
an explicit one (``--data-dir``), else ``$EDGEPRUNE_DATA``, else ``shared/data`` beside the
checkout (``<repo>/../shared/data``, found from this file and from the working directory: a
development layout). Where the data directory does not have it, a file the package ships
(:data:`EMBEDDED`: what the default build evaluates on) is used instead, so an installed
edgeprune works with nothing beside it. Data is never downloaded: anything else missing is an
error that names the fix.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgeprune.errors import EdgepruneError

DATA_ENV = "EDGEPRUNE_DATA"
EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"
# relative path -> SHA-256 of the file shipped under EMBEDDED_DIR (its README has the license)
EMBEDDED = {
    "wikitext-2-raw/wiki.test.raw": "173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08",
    # the second held-out text of a budgeted build (another domain than Wikipedia)
    "calib/tiny_shakespeare.txt": "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
}


def _candidates() -> list[Path]:
    here = Path(__file__).resolve()
    # src/edgeprune/data/paths.py -> parents[3] is the repository root; shared/ sits beside it.
    repo = here.parents[3]
    cwd = Path.cwd()
    return [repo.parent / "shared" / "data", cwd.parent / "shared" / "data", cwd / "shared" / "data"]


def find_data_root(explicit: str | Path | None = None) -> Path | None:
    """The data directory, or None where none is set and no development copy sits beside the
    checkout. A directory that was asked for (``explicit`` or ``$EDGEPRUNE_DATA``) must exist."""
    if explicit is not None:
        root = Path(explicit).expanduser()
        if not root.is_dir():
            raise EdgepruneError(f"data directory {root} does not exist: pass an existing directory")
        return root
    env = os.environ.get(DATA_ENV)
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():
            raise EdgepruneError(f"${DATA_ENV}={env} is not a directory: point it at a data directory")
        return root
    return next((c for c in _candidates() if c.is_dir()), None)


def data_root(explicit: str | Path | None = None) -> Path:
    """The data directory; raises EdgepruneError naming ``--data-dir`` / ``$EDGEPRUNE_DATA``."""
    root = find_data_root(explicit)
    if root is None:
        raise EdgepruneError(
            f"no data directory: pass --data-dir DIR or set ${DATA_ENV}=DIR (the README's 'Data' section has the layout)"
        )
    return root


def resolve_data_file(relative: str, root: str | Path | None = None) -> Path:
    """The path of data file ``relative``: from the data directory, else the package's own copy;
    an EdgepruneError naming the missing file and the fix where neither has it."""
    found = find_data_root(root)
    if found is not None and (found / relative).is_file():
        return found / relative
    if relative in EMBEDDED:
        return EMBEDDED_DIR / relative
    where = f"{found / relative} does not exist" if found is not None else "no data directory is set"
    raise EdgepruneError(
        f"missing data file {relative} ({where}; edgeprune ships only {', '.join(EMBEDDED)}): "
        f"pass --data-dir DIR or set ${DATA_ENV}=DIR to a directory holding it"
    )

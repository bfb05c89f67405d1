"""Locating the shared data directory (WikiText-2, zero-shot task files, calibration text).

Order: an explicit directory, then ``$EDGEPRUNE_DATA``, then ``shared/data`` beside the checkout
(``<repo>/../shared/data``, found from this file and from the working directory). The data is
never downloaded: a missing directory is an error that names the fix.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgeprune.errors import EdgepruneError

DATA_ENV = "EDGEPRUNE_DATA"


def _candidates() -> list[Path]:
    here = Path(__file__).resolve()
    # src/edgeprune/data/paths.py -> parents[3] is the repository root; shared/ sits beside it.
    repo = here.parents[3]
    cwd = Path.cwd()
    return [repo.parent / "shared" / "data", cwd.parent / "shared" / "data", cwd / "shared" / "data"]


def data_root(explicit: str | Path | None = None) -> Path:
    """The data directory; raises EdgepruneError naming ``--data-dir`` / ``$EDGEPRUNE_DATA``."""
    if explicit is not None:
        root = Path(explicit).expanduser()
        if not root.is_dir():
            raise EdgepruneError(f"data directory {root} does not exist: pass an existing directory")
        return root
    env = os.environ.get(DATA_ENV)
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():
            raise EdgepruneError(f"${DATA_ENV}={env} is not a directory: point it at the shared data directory")
        return root
    for cand in _candidates():
        if cand.is_dir():
            return cand
    raise EdgepruneError(
        f"cannot find the evaluation data (looked for ../shared/data beside the checkout): "
        f"set ${DATA_ENV} or pass --data-dir"
    )


def resolve_data_file(relative: str, root: str | Path | None = None) -> Path:
    """``root / relative``, or an EdgepruneError naming the missing file."""
    path = data_root(root) / relative
    if not path.is_file():
        raise EdgepruneError(f"missing data file {path}: restore it or point --data-dir/${DATA_ENV} elsewhere")
    return path

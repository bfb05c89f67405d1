"""Where edgeprune keeps its cache (dequantized models, calibration text, host measurements).

Entries are written with :func:`edgeprune.fileio.atomic_dir` and read only when
:func:`edgeprune.fileio.is_complete`, so a crash leaves no half entry.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$EDGEPRUNE_CACHE``, else ``$XDG_CACHE_HOME/edgeprune``, else ``~/.cache/edgeprune``."""
    if os.environ.get("EDGEPRUNE_CACHE"):
        return Path(os.environ["EDGEPRUNE_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "edgeprune"

"""Where edgeprune keeps dequantized models, and how it writes them so a crash leaves no half entry."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

COMPLETE_MARKER = ".complete"


def cache_root() -> Path:
    """``$EDGEPRUNE_CACHE``, else ``$XDG_CACHE_HOME/edgeprune``, else ``~/.cache/edgeprune``."""
    if os.environ.get("EDGEPRUNE_CACHE"):
        return Path(os.environ["EDGEPRUNE_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "edgeprune"


def is_complete(entry: Path) -> bool:
    return (entry / COMPLETE_MARKER).is_file()


@contextlib.contextmanager
def atomic_dir(final: Path):
    """Yield a temporary directory beside ``final``; on success rename it into place.

    The rename is atomic on one filesystem, so readers see either no entry or a whole one. If the
    body raises, the temporary directory is removed and ``final`` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        (tmp / COMPLETE_MARKER).write_text("ok\n")
        if final.exists():  # an older incomplete entry (e.g. from a crash before the marker existed)
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

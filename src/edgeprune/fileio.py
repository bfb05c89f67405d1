"""Writing output files so that a failure or a crash never leaves a half-written one.

Exporters write to a temporary name in the destination directory and rename it into place at the
end: the rename is atomic on one filesystem, so a reader sees no file or a whole one. Directories
have their own helper, :func:`edgeprune.models.cache.atomic_dir`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from edgeprune.errors import EdgepruneError


def check_writable(path: str | Path, *, overwrite: bool = False, option: str = "overwrite=True") -> Path:
    """Fail early (before any expensive work) if ``path`` cannot be written; return it resolved.

    ``option`` names the switch that allows replacing an existing file in the caller's vocabulary
    (``overwrite=True`` in Python, ``--overwrite`` on the command line).
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise EdgepruneError(f"output {path} is a directory: pass a file name")
    if path.exists() and not overwrite:
        raise EdgepruneError(f"output {path} already exists: pass {option} to replace it, or choose another name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise EdgepruneError(f"cannot write {path}: directory {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise EdgepruneError(f"cannot write {path}: directory {parent} is not writable")
    return path.resolve()


@contextlib.contextmanager
def atomic_file(final: str | Path, *, overwrite: bool = False, option: str = "overwrite=True"):
    """Yield a temporary path beside ``final``; on success rename it to ``final``.

    If the body raises, the temporary file is removed and ``final`` is left as it was. The
    temporary name starts with a dot so that globbing for outputs does not pick it up.
    """
    final = check_writable(final, overwrite=overwrite, option=option)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    except OSError as exc:
        raise EdgepruneError(f"cannot write in {final.parent}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would
        os.chmod(tmp, _replaced_mode(final))
        yield tmp
        if final.exists() and not overwrite:  # appeared while we were working
            raise EdgepruneError(f"output {final} appeared while exporting: pass {option} to replace it")
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _replaced_mode(final: Path) -> int:
    """The mode of the file being replaced, else 0666 less the umask."""
    try:
        return final.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_text_atomic(final: str | Path, text: str) -> Path:
    """Write a small text file (a report) atomically, replacing any existing one."""
    with atomic_file(final, overwrite=True) as tmp:
        tmp.write_text(text)
    return Path(final)


@contextlib.contextmanager
def scratch_file(directory: str | Path, hint: str):
    """Yield the path of an empty temporary file in ``directory``; it is removed afterwards, always."""
    fd, name = tempfile.mkstemp(prefix=f".{hint}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)

"""Writing output files so that a failure or a crash never leaves a half-written one.

Exporters write to a temporary name in the destination directory and rename it into place at the
end: the rename is atomic on one filesystem, so a reader sees no file or a whole one. Directories
the same way (:func:`atomic_dir`), marked complete so that a reader can tell (:func:`is_complete`).
This module imports nothing from edgeprune but its errors, so every layer (models/ included) uses it.

Before any of that, :func:`check_writable` (a file) and :func:`check_output_dir` (a folder) settle
in microseconds whether the output can be written at all, so that a bad ``--out`` fails before a
model is loaded rather than after minutes of work.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from edgeprune.errors import EdgepruneError

COMPLETE_MARKER = ".complete"  # written last into a directory by atomic_dir


def check_writable(path: str | Path, *, overwrite: bool = False, option: str = "overwrite=True",
                   parents: bool = False) -> Path:  # fmt: skip
    """Fail early (before any expensive work) if the FILE ``path`` cannot be written; return it resolved.

    ``option`` names the switch that allows replacing an existing file in the caller's vocabulary
    (``overwrite=True`` in Python, ``--overwrite`` on the command line). ``parents``: the writer
    creates missing parent folders, so only the nearest existing one must be a writable folder.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise EdgepruneError(f"output {path} is a directory: pass a file name")
    if path.exists() and not overwrite:
        raise EdgepruneError(f"output {path} already exists: pass {option} to replace it, or choose another name")
    _check_ancestors(path, f"cannot write {path}", parents=parents)
    return path.resolve()


def check_output_dir(path: str | Path, *, overwrite: bool = False, option: str = "--overwrite",
                     parents: bool = False, exist_ok: bool = False) -> Path:  # fmt: skip
    """Fail early (before any expensive work) if the FOLDER ``path`` cannot be written; return it resolved.

    An existing folder is refused unless ``overwrite`` (the writer replaces it; ``option`` names
    that switch) or ``exist_ok`` (the writer adds to it, e.g. a resumed build or a profile report).
    ``parents``: the writer creates missing parent folders (else the parent must exist).
    """
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise EdgepruneError(f"output {out} is a file, not a folder: remove it or choose another name")
    if out.is_dir() and exist_ok:
        # written into, not replaced: its parent may be read-only (``--out ~``, ``--out /tmp``)
        if not os.access(out, os.W_OK | os.X_OK):
            raise EdgepruneError(f"output folder {out} is not writable; choose another path")
        return out.resolve()
    if out.is_dir() and not overwrite:
        raise EdgepruneError(f"output {out} already exists: pass {option} to replace it, or choose another folder")
    _check_ancestors(out, f"cannot create {out}", parents=parents)
    return out.resolve()


def _check_ancestors(path: Path, problem: str, *, parents: bool) -> None:
    """Refuse a ``path`` that its folder cannot receive: an ancestor that is a regular file
    (``FILE/sub``, ``FILE/a/b``), a missing parent unless ``parents``, or a nearest existing
    ancestor that is not writable.

    ``problem`` starts each message ("cannot write X"). Path.exists() is False under a regular file
    (ENOTDIR), so the walk up stops at that file, not at the root.
    """
    parent = path.parent if str(path.parent) else Path(".")
    nearest = parent
    while not nearest.exists() and nearest != nearest.parent:
        nearest = nearest.parent
    if nearest.exists() and not nearest.is_dir():
        raise EdgepruneError(f"{problem}: {nearest} is a file, not a folder; choose another path")
    if not parents and nearest != parent:
        raise EdgepruneError(f"{problem}: directory {parent} does not exist; create it first")
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise EdgepruneError(f"{problem}: folder {nearest} is not writable; choose another path")


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


@contextlib.contextmanager
def atomic_dir(final: str | Path):
    """Yield a temporary directory beside ``final``; on success mark it complete and rename it into place.

    The rename is atomic on one filesystem, so readers see either no directory or a whole one. If the
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


def is_complete(directory: str | Path) -> bool:
    """Whether ``directory`` was written whole by :func:`atomic_dir`."""
    return (Path(directory) / COMPLETE_MARKER).is_file()


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


def link_or_copy(src: str | Path, dst: str | Path) -> None:
    """``dst`` as a hard link to ``src`` (one copy on disk: a build's final artifact and its stage's
    are the same bytes), or a copy where the filesystem has no hard links."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)

"""Shared pieces of the step verbs' command lines: the flags every step verb has (same names, defaults
and help everywhere) and reading a step config from ``--config`` plus the flags."""

from __future__ import annotations

from pathlib import Path

CALIB_HELP = "wikitext2-valid or a UTF-8 file (never the WikiText-2 test file)"


def add_out(p, flag: str = "--overwrite") -> None:
    """``--out``; ``flag`` (``--overwrite``, prune's ``--force``) is added by :func:`add_run_flags`."""
    p.add_argument("--out", required=True, help=f"output directory (must not exist unless {flag})")


def add_config(p, kind: str) -> None:
    p.add_argument("--config", default=None, help=f"a {kind} YAML file; flags given on the command line override it")


def add_calib(p, default: str, writer: str = "model", *, windows_of: str | None = None) -> None:
    """``--calib``; ``writer``: who writes ``self`` text for this verb (the model, or its dense original).
    ``windows_of``: a step kind; adds ``--calib-windows`` / ``--calib-seq-len`` defaulting to its policy."""
    names = ["shakespeare", f"self ({writer}-generated)"]
    names = names[::-1] if default == "self" else names
    p.add_argument("--calib", default=default, help=f"calibration text: {', '.join(names)}, {CALIB_HELP}")
    if windows_of is not None:
        from edgeprune.data.calib_policy import policy

        n, seq_len = policy(windows_of).n_windows, policy(windows_of).seq_len
        p.add_argument("--calib-windows", type=int, default=n, help=f"calibration windows (default {n})")
        p.add_argument("--calib-seq-len", type=int, default=seq_len, help=f"calibration window length in tokens (default {seq_len})")


def add_run_flags(p, *, seed: int | None, seed_help: str, flag: str = "--overwrite") -> None:
    """The flags that close every step verb's list: --seed, --data-dir, --threads, ``flag``, --quiet."""
    p.add_argument("--seed", type=int, default=seed, help=seed_help)
    p.add_argument("--data-dir", default=None, help="shared data directory (default ../shared/data, $EDGEPRUNE_DATA)")
    p.add_argument("--threads", type=int, default=None, help="torch threads for this run (restored afterwards)")
    p.add_argument(flag, action="store_true", help="replace --out if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def config_settings(config_path: str | None, config_cls, flags: dict) -> dict:
    """The settings of ``config_cls`` from a ``--config`` YAML file (validated), overridden by the
    flags that were given (``None``: not given). Raises EdgepruneError for a missing file."""
    from edgeprune.errors import EdgepruneError

    data: dict = {}
    if config_path:
        path = Path(config_path)
        if not path.is_file():
            raise EdgepruneError(f"no such config file {path}: pass a {config_cls.kind or config_cls.STEP} YAML file")
        data = config_cls.from_yaml(path.read_text()).to_dict()
    data.update({k: v for k, v in flags.items() if v is not None})
    return data

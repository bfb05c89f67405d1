"""Shared pieces of the step verbs' command lines: the flags every step verb has (same names, defaults
and help everywhere) and reading a step config from ``--config`` plus the flags."""

from __future__ import annotations

from pathlib import Path

CALIB_HELP = "shakespeare, wikitext2-valid, a UTF-8 .txt or .jsonl file or a folder of them (never the WikiText-2 test file)"
DEFAULT_TEXT = "general where the data directory has general/, else self"  # edgeprune.data.general.default_source


def add_out(p, flag: str = "--overwrite") -> None:
    """``--out``; ``flag`` (``--overwrite``, prune's ``--force``) is added by :func:`add_run_flags`."""
    p.add_argument("--out", required=True, help=f"output directory (must not exist unless {flag})")


def add_config(p, kind: str) -> None:
    p.add_argument("--config", default=None, help=f"a {kind} YAML file; flags given on the command line override it")


def add_calib(p, writer: str = "model", *, windows_of: str | None = None) -> None:
    """``--calib`` (unset: the default source, see :func:`check_text_flags`); ``writer``: who writes
    ``self`` text for this verb (the model, or its dense original). ``windows_of``: a step kind; adds
    ``--calib-windows`` / ``--calib-seq-len`` defaulting to its policy."""
    p.add_argument("--calib", default=None, help=f"calibration text: general, self ({writer}-generated), {CALIB_HELP} "
                   f"(default: {DEFAULT_TEXT})")  # fmt: skip
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


def check_text_flags(args, windows: dict[str, int], seq_lens: dict[str, int], *, trains: bool = False) -> None:
    """Set ``--calib`` (and, where the verb ``trains`` on a source of its own, ``--train-data``) left
    unset to the default source, check every text flag before anything is loaded
    (:func:`edgeprune.cli.step_run.check_text`; ``general`` also needs its folder), then say in one
    line on stderr which source a default gave."""
    import sys

    from edgeprune.cli.step_run import check_text
    from edgeprune.data.general import GENERAL, default_source, default_source_note, general_root

    flags = {"--calib": "calib", "--train-data": "train_data"} if trains else {"--calib": "calib"}
    unset = [flag for flag, name in flags.items() if getattr(args, name) is None]
    for flag in unset:
        setattr(args, flags[flag], default_source(args.data_dir))
    sources = [args.calib, *(args.train_data.split(",") if getattr(args, "train_data", None) else [])]
    check_text(windows, seq_lens, sources)
    if GENERAL in sources:
        general_root(args.data_dir)  # a missing folder fails here, before the model loads
    if unset:
        print(f"edgeprune: no {' / '.join(unset)} given: {default_source_note(args.data_dir)}", file=sys.stderr)


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

"""What every step verb does around its step, in its fail-fast order: check the output and the text
flags (before anything heavy is imported or loaded), then load the model and run the step with torch
threads and torchrun's process group set for the run only, in a context made from the flags."""

from __future__ import annotations

import contextlib
from pathlib import Path


def check_out(args, flag: str = "--overwrite") -> Path:
    """``--out`` checked first: it needs no import of torch, and a bad ``--out`` must not cost a model load."""
    from edgeprune.fileio import check_output_dir

    check_output_dir(args.out, overwrite=getattr(args, flag[2:]), option=flag)
    return Path(args.out).expanduser()


def check_text(windows: dict[str, int], seq_lens: dict[str, int], sources) -> None:
    """Window counts and lengths (flag -> value) and text sources (None: not given), before any loading."""
    from edgeprune.data.calib import check_seq_len, check_source, check_window_count

    for flag, n in windows.items():
        check_window_count(n, flag)
    for flag, n in seq_lens.items():
        check_seq_len(n, flag)
    for src in sources:
        if src is not None:
            check_source(src)


def load_input(source, *, packed: bool = True):
    """``(model, tokenizer, source_gguf)`` of a model (built-in name, HF directory, .gguf) or, where
    ``packed``, an artifact of ``edgeprune sparsify``. Not the LoadedModel: its holder would keep the
    weights alive after the caller replaced the model (a per-layer copy, a freed dense model)."""
    from edgeprune.compress.sparse.packed import is_packed, load_packed
    from edgeprune.models import load

    loaded = load_packed(source) if packed and source and is_packed(source) else load(source)
    return loaded.model, loaded.tokenizer, loaded.source_gguf


@contextlib.contextmanager
def running(threads: int | None, *, distributed: bool = True):
    """``(torch threads, rank, world size, clock)`` for the body: ``--threads`` (restored afterwards),
    where the step can train on several processes the process group ``torchrun`` asks for
    (``distributed``), and ``clock()``: seconds since the body began."""
    import time

    from edgeprune.compress.training import distributed_from_env
    from edgeprune.threads import torch_threads

    group = distributed_from_env() if distributed else contextlib.nullcontext((0, 1))
    with torch_threads(threads) as n, group as (rank, world_size):
        t0 = time.perf_counter()
        yield n, rank, world_size, lambda: time.perf_counter() - t0


def step_context(args, tokenizer, **fields):
    """The StepContext of a verb's flags (``--calib``, ``--seed``, ``--data-dir``, ``--quiet``) plus ``fields``."""
    from edgeprune.steps import StepContext

    return StepContext(tokenizer=tokenizer, calib=args.calib, seed=args.seed, data_dir=args.data_dir,
                       progress=not args.quiet, **fields)  # fmt: skip

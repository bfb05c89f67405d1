"""``edgeprune prune``: structured width pruning (Adapt-Pruner or a baseline) -> a per-layer model directory.

Order of work: validate the output path (before anything heavy is imported), the settings
(target, method, YAML keys) and the calibration source; load the model (unsupported
architectures fail here); check the target is reachable with the alignment; calibrate; prune (and
train); write ``--out`` atomically. Any EdgepruneError before the last step leaves nothing on disk.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgeprune.compress.calib_policy import policy

CALIB = policy("structured_prune")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "prune",
        help="structured pruning (Adapt-Pruner, Taylor/magnitude-uniform, FLAP) to a per-layer-width model",
        description="Remove a fraction --target of the decoder-block parameters (embeddings excluded) by "
        "cutting whole KV groups and MLP channels; write a model directory loadable with from_pretrained "
        "plus prune_report.json (per-layer widths and importances).",
    )
    p.add_argument("--model", default=None, help="built-in name, HF directory or .gguf (default: smollm2-135m)")
    p.add_argument("--out", required=True, help="output directory (must not exist unless --force)")
    p.add_argument("--target", type=float, default=None, help="fraction of block parameters to remove, in (0, 1) (default 0.25)")
    p.add_argument("--method", default=None, help="adapt | taylor-uniform | magnitude-uniform | flap (default adapt)")
    p.add_argument("--criterion", default=None, help="override the within-layer score: taylor | magnitude | fluctuation")
    p.add_argument("--align", type=int, default=None, help="MLP widths in multiples of this (default 32)")
    p.add_argument("--stages", type=int, default=None, help="prune-then-train stages (default 1)")
    p.add_argument("--config", default=None, help="a structured_prune YAML file; flags given on the command line override it")
    p.add_argument("--calib", default="self", help="calibration text: self (model-generated), shakespeare, "
                   "wikitext2-valid or a UTF-8 file (never the WikiText-2 test file)")  # fmt: skip
    p.add_argument("--calib-pool", type=int, default=CALIB.n_windows, help=f"calibration windows in the pool (default {CALIB.n_windows})")
    p.add_argument("--calib-windows", type=int, default=None, help="windows drawn per mini-step (default 32)")
    p.add_argument("--seq-len", type=int, default=CALIB.seq_len, help=f"calibration/training window length in tokens (default {CALIB.seq_len})")
    p.add_argument("--train-tokens", type=int, default=None, help="recovery training budget in tokens (default: no training)")
    p.add_argument("--train-data", default=None, help="training text (same choices as --calib; default: the --calib source)")
    p.add_argument("--kd-alpha", type=float, default=None, help="distillation weight in [0, 1]: 0 cross-entropy only (default), 1 KD only")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 1e-4)")
    p.add_argument("--batch-size", type=int, default=None, help="sequences per step per process (default 4)")
    p.add_argument("--gradient-checkpointing", action="store_true", help="trade compute for activation memory")
    p.add_argument("--seed", type=int, default=None, help="seed of calibration draws and training order (default 0)")
    p.add_argument("--data-dir", default=None, help="shared data directory (default ../shared/data, $EDGEPRUNE_DATA)")
    p.add_argument("--threads", type=int, default=None, help="torch threads for this run (restored afterwards)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def build_config(args):
    """The StructuredPrune step from --config and the flags (flags win). Raises EdgepruneError."""
    from edgeprune.cli.options import config_settings
    from edgeprune.compress.structured import StructuredPrune
    from edgeprune.errors import EdgepruneError

    flags = {"target": args.target, "method": args.method, "criterion": args.criterion, "align": args.align,
             "stages": args.stages, "calib_windows": args.calib_windows, "seed": args.seed}  # fmt: skip
    data = config_settings(args.config, StructuredPrune, flags)
    train_flags = {"tokens": args.train_tokens, "kd_alpha": args.kd_alpha, "lr": args.lr, "batch_size": args.batch_size}
    train_flags = {k: v for k, v in train_flags.items() if v is not None}
    if args.gradient_checkpointing:
        train_flags["gradient_checkpointing"] = True
    if train_flags:
        if "tokens" not in train_flags and not data.get("train"):
            raise EdgepruneError("training flags need a budget: pass --train-tokens")
        data["train"] = {**(data.get("train") or {}), **train_flags}
    return StructuredPrune.from_dict(data)


def run(args) -> int:
    from edgeprune.fileio import check_output_dir

    # The output first: it needs no import of torch, and a bad --out must not cost a model load.
    check_output_dir(args.out, overwrite=args.force, option="--force")
    out = Path(args.out).expanduser()
    cfg = build_config(args)
    from edgeprune.compress.calib import check_seq_len, check_source, check_window_count

    check_window_count(args.calib_pool, "--calib-pool")
    check_seq_len(args.seq_len, "--seq-len")
    for src in (args.calib, args.train_data):
        if src is not None:
            check_source(src)

    import time

    from edgeprune.compress import compress
    from edgeprune.compress.calib_policy import draw_calibration, draw_training, training_tokens
    from edgeprune.compress.structured import check_reachable, save_pruned
    from edgeprune.threads import torch_threads
    from edgeprune.compress.train import distributed_from_env
    from edgeprune.models import load, to_per_layer

    progress = not args.quiet
    with torch_threads(args.threads) as threads, distributed_from_env() as (rank, world_size):
        t0 = time.perf_counter()
        loaded = load(args.model)
        model, tok, source_gguf = to_per_layer(loaded.model), loaded.tokenizer, loaded.source_gguf
        del loaded  # the per-layer copy is all we need: keep one copy of the weights in memory
        check_reachable(model.config, cfg)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        calib = draw_calibration(cfg, tok, args.calib, model=model, n_windows=args.calib_pool, seq_len=args.seq_len,
                                 data_dir=args.data_dir, progress=progress)  # fmt: skip
        train_data = None
        if training_tokens(cfg) is not None:
            train_data = draw_training(cfg, tok, args.train_data or args.calib, model=model, seq_len=args.seq_len,
                                       data_dir=args.data_dir, progress=progress)  # fmt: skip
        calib_s = time.perf_counter() - t0
        pruned, report = compress(model, cfg, calib, train_data=train_data, progress=progress)
        report.notes.append(f"torch threads {threads}, world size {world_size}")
        extra = {"model": str(args.model or "smollm2-135m"), "timings": {"load_s": load_s, "calibration_data_s": calib_s},
                 "train_data": train_data.describe() if train_data is not None else None}  # fmt: skip
        if rank == 0:
            save_pruned(out, pruned, tok, report, extra=extra, source_gguf=source_gguf)
    if rank == 0:
        summary = {
            "out": str(out), "method": report.method, "target": report.target,
            "block_params": f"{report.block_params_before} -> {report.block_params_after} "
            f"({report.removed_fraction:.1%} removed; target counts decoder blocks, embeddings excluded)",
            "total_params": f"{report.total_params_before} -> {report.total_params_after}",
            "bytes": f"{report.bytes_before} -> {report.bytes_after} ({report.dtype})",
            "kv_heads": report.widths_after["kv_heads"], "intermediate": report.widths_after["intermediate"],
            "wall_s": round(report.wall_s, 1), "peak_rss_mb": round(report.peak_rss_mb),
        }  # fmt: skip
        print(json.dumps(summary, indent=2))
    return 0

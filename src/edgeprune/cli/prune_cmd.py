"""``edgeprune prune``: structured width pruning (Adapt-Pruner or a baseline) -> a per-layer model directory.

Order of work: the output path (before anything heavy is imported), the settings and the text
sources; load the model (unsupported architectures fail here); check the target is reachable with
the alignment; calibrate; prune (and train); write ``--out`` atomically (nothing on disk before).
"""

from __future__ import annotations

import json

from edgeprune.cli.options import add_calib, add_config, add_out, add_run_flags, check_text_flags


def add_parser(sub) -> None:
    from edgeprune.data.calib_policy import policy

    calib = policy("structured_prune")
    p = sub.add_parser(
        "prune", help="structured pruning (Adapt-Pruner, Taylor/magnitude-uniform, FLAP) to a per-layer-width model",
        description="Remove a fraction --target of the decoder-block parameters (embeddings excluded) by "
        "cutting whole KV groups and MLP channels; write a model directory loadable with from_pretrained "
        "plus prune_report.json (per-layer widths and importances).",
    )  # fmt: skip
    p.add_argument("--model", default=None, help="built-in name, HF directory or .gguf (default: smollm2-135m)")
    add_out(p, "--force")
    p.add_argument("--target", type=float, default=None, help="fraction of block parameters to remove, in (0, 1) (default 0.25)")
    p.add_argument("--method", default=None, help="adapt | taylor-uniform | magnitude-uniform | flap (default adapt)")
    p.add_argument("--criterion", default=None, help="override the within-layer score: taylor | magnitude | fluctuation")
    p.add_argument("--align", type=int, default=None, help="MLP widths in multiples of this (default 32)")
    p.add_argument("--stages", type=int, default=None, help="prune-then-train stages (default 1)")
    add_config(p, "structured_prune")
    add_calib(p)
    p.add_argument("--calib-pool", type=int, default=calib.n_windows, help=f"calibration windows in the pool (default {calib.n_windows})")
    p.add_argument("--calib-windows", type=int, default=None, help="windows drawn per mini-step (default 32)")
    p.add_argument("--seq-len", type=int, default=calib.seq_len, help=f"calibration/training window length in tokens (default {calib.seq_len})")
    p.add_argument("--train-tokens", type=int, default=None, help="recovery training budget in tokens (default: no training)")
    p.add_argument("--train-data", default=None, help="training text (same choices as --calib; default: the --calib source)")
    p.add_argument("--kd-alpha", type=float, default=None, help="distillation weight in [0, 1]: 0 cross-entropy only (default), 1 KD only")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 1e-4)")
    p.add_argument("--batch-size", type=int, default=None, help="sequences per step per process (default 4)")
    p.add_argument("--gradient-checkpointing", action="store_true", help="trade compute for activation memory")
    add_run_flags(p, seed=None, seed_help="seed of calibration draws and training order (default 0)", flag="--force")
    p.set_defaults(run=run)


def run(args) -> int:
    from edgeprune.cli.step_configs import prune_config
    from edgeprune.cli.step_run import check_out, load_input, running, step_context
    from edgeprune.cli.step_summaries import prune_summary

    out, cfg = check_out(args, "--force"), prune_config(args)
    check_text_flags(args, {"--calib-pool": args.calib_pool}, {"--seq-len": args.seq_len})
    from edgeprune.compress import compress
    from edgeprune.compress.structured.budget import check_reachable
    from edgeprune.compress.structured.prune import save_pruned
    from edgeprune.models import to_per_layer

    with running(args.threads) as (threads, rank, world_size, clock):
        model, tok, source_gguf = load_input(args.model, packed=False)
        model = to_per_layer(model)  # the loaded copy is freed here: one copy of the weights in memory
        check_reachable(model.config, cfg)
        load_s = clock()
        ctx = step_context(args, tok, calib_n_windows=args.calib_pool, calib_seq_len=args.seq_len,
                           train_data=args.train_data, train_seq_len=args.seq_len)  # fmt: skip
        ctx.calibration(cfg, model)  # drawn before the step (which reads them from ctx) to time the draws apart
        train_data, calib_s = ctx.training(cfg, model), clock() - load_s  # drawn, then timed
        pruned, report = compress(model, cfg, ctx=ctx)
        report.notes.append(f"torch threads {threads}, world size {world_size}")
        extra = {"model": str(args.model or "smollm2-135m"), "timings": {"load_s": load_s, "calibration_data_s": calib_s},
                 "train_data": train_data.describe() if train_data is not None else None}  # fmt: skip
        if rank == 0:
            save_pruned(out, pruned, tok, report, extra=extra, source_gguf=source_gguf)
    if rank == 0:
        print(json.dumps(prune_summary(report, out), indent=2))
    return 0

"""``edgeprune depth``: remove whole decoder layers scored on calibration text -> a model directory.

Order of work: the output path and the step config (before anything heavy is imported), the text
source; load the model; check the layer count is removable; calibrate; score and remove; write
``--out`` atomically. ``edgeprune reconstruct --model OUT --dense MODEL`` then fits the blocks next to
the removed gaps to the dense model's activations.
"""

from __future__ import annotations

import json

from edgeprune.cli.options import add_calib, add_config, add_out, add_run_flags, check_text_flags


def add_parser(sub) -> None:
    p = sub.add_parser(
        "depth", help="depth pruning: remove whole decoder layers (ShortGPT block influence, Adapt-Pruner importance, Gromov angular distance)",
        description="Score every decoder layer by how little it turns the hidden state on calibration text and "
        "remove the lowest; write a model directory loadable with from_pretrained (fewer layers, the kept "
        "original indices in config.edgeprune_kept_layers) plus depth_report.json.",
    )  # fmt: skip
    p.add_argument("--model", default=None, help="built-in name, HF directory or .gguf (default: smollm2-135m)")
    add_out(p)
    p.add_argument("--layers", type=int, default=None, help="how many decoder layers to remove")
    p.add_argument("--fraction", type=float, default=None, help="... or this fraction of them (default 0.2 when neither is given)")
    p.add_argument("--score", default=None, help="angular (ShortGPT) | adapt (Adapt-Pruner, re-measured per cut) | "
                   "consecutive (Gromov et al.: one run of layers) (default angular)")  # fmt: skip
    p.add_argument("--no-protect-first", action="store_true", help="allow removing the first layer")
    p.add_argument("--no-protect-last", action="store_true", help="allow removing the last layer")
    add_config(p, "depth")
    add_calib(p, windows_of="depth_prune")
    add_run_flags(p, seed=None, seed_help="seed of the calibration draw (default 0)")
    p.set_defaults(run=run)


def run(args) -> int:
    from edgeprune.cli.step_configs import depth_config
    from edgeprune.cli.step_run import check_out, load_input, running, step_context
    from edgeprune.cli.step_summaries import depth_lines

    out, cfg = check_out(args), depth_config(args)
    check_text_flags(args, {"--calib-windows": args.calib_windows}, {"--calib-seq-len": args.calib_seq_len})
    from edgeprune.compress import compress
    from edgeprune.compress.sequential import decoder_layers
    from edgeprune.models import save_model

    with running(args.threads, distributed=False) as (threads, _, _, clock):
        model, tok, source_gguf = load_input(args.model, packed=False)
        cfg.n_remove(len(decoder_layers(model)))  # a count the model cannot lose fails before the calibration draw
        ctx = step_context(args, tok, calib_n_windows=args.calib_windows, calib_seq_len=args.calib_seq_len)
        model, rep = compress(model, cfg, ctx=ctx)
        summary = {"model": str(args.model or "smollm2-135m"), "threads": threads, "wall_s": round(clock(), 1), "depth": rep.to_dict()}
        save_model(out, model, tok, source_gguf=source_gguf, files={
            "depth_report.json": json.dumps(summary, indent=2, default=str) + "\n", "depth.yaml": cfg.to_yaml()})  # fmt: skip
    print("\n".join(depth_lines(rep, out, wall_s=summary["wall_s"], threads=threads)))
    return 0

"""``edgeprune build --target DEVICE``: one command from a model to deployable artifacts and a report."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("build", help="build deployable artifacts for a device and report quality and speed")
    p.add_argument("--target", default="host", help="device profile (see `edgeprune devices`); default: host")
    p.add_argument("--model", default=None, help="model source (default: the embedded smollm2-135m)")
    p.add_argument("--recipe", default=None, help="built-in recipe name or YAML file (default: default)")
    p.add_argument("--calib", default=None, help="calibration/training text: general, self, shakespeare, a file or folder "
                   "(default: general where the data directory has it, else text the model writes)")  # fmt: skip
    p.add_argument("--eval", dest="eval_data", default=None,
                   help="evaluation corpus name or text file (default wikitext2); a budgeted build takes several, "
                   "comma-separated (default wikitext2,shakespeare) and bounds the worst")  # fmt: skip
    p.add_argument("--out", default=None, help="build directory (default: dist/TARGET)")
    p.add_argument("--resume", action="store_true", help="continue a build, skipping finished stages")
    p.add_argument("--dry-run", action="store_true", help="validate and print the plan; load no weights")
    p.add_argument("--max-memory", type=float, default=None, help="memory budget in MiB (default: the device's)")
    p.add_argument("--min-decode-tps", type=float, default=None, help="required decode tokens/s on the target")
    p.add_argument("--remote", default=None, metavar="URL",
                   help="measure the final artifacts on a board: ssh://user@host[:port] or adb://SERIAL (see examples/PROFILING.md)")  # fmt: skip
    p.add_argument("--remote-python", default="python3", metavar="PATH", help="the board's Python (default: python3)")
    p.add_argument("--ssh-key", default=None, metavar="FILE", help="private key for ssh --remote")
    from edgeprune.cli.build_search import add_search_args

    add_search_args(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from edgeprune.cli.build_search import run_search

    searched = run_search(args)  # --max-ppl-ratio / --max-bytes: a budgeted build
    if searched is not None:
        return searched
    from edgeprune.pipeline.recipes import DEFAULT_RECIPE
    from edgeprune.pipeline.runner import build, prepare
    from edgeprune.models.builtin import DEFAULT_MODEL

    max_mem = int(args.max_memory * 2**20) if args.max_memory else None
    if args.dry_run:
        recipe, plan, info = prepare(args.target, model=args.model or DEFAULT_MODEL, recipe=args.recipe or DEFAULT_RECIPE,
                                     out=args.out or f"dist/{args.target}", max_memory_bytes=max_mem,
                                     min_decode_tps=args.min_decode_tps, remote=args.remote)  # fmt: skip
        print(f"model {info['source']}: {info['params'] / 1e6:.1f}M parameters, {info['file_bytes'] / 2**20:.1f} MiB")
        print("\n".join(plan.lines()))
        print(f"recipe {recipe.name}: {recipe.description}")
        for i, step in enumerate(recipe.steps, 1):
            extras = {k: v for k, v in step.to_dict().items() if k not in ("step", "version")}
            print(f"  {i}. {step.STEP} {extras}")
        print("dry run: recipe and plan are valid; no weights were loaded")
        return 0
    report = build(args.target, model=args.model, recipe=args.recipe, out=args.out, calib=args.calib,
                   eval_data=args.eval_data or "wikitext2", resume=args.resume, max_memory_bytes=max_mem,
                   min_decode_tps=args.min_decode_tps, remote=args.remote,
                   remote_options={"python": args.remote_python, "key": args.ssh_key})  # fmt: skip
    out = args.out or f"dist/{args.target}"
    print(f"build finished: {out}/report.md; artifacts: {', '.join(a['path'] for a in report['artifacts'])}")
    return 0

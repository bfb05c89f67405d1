"""``edgeprune profile ARTIFACT``: measure load, prefill, decode, TTFT and peak RSS (llama-bench style),
on this machine or on a board over ssh / adb (``--remote``)."""

from __future__ import annotations


def add_parser(sub) -> None:
    from edgeprune.export.registry import FORMATS, MODEL_RUNTIME
    from edgeprune.runtime.profile import runtime_names

    p = sub.add_parser("profile", help="measure an artifact's speed and memory here or on a remote board")
    p.add_argument("artifact", help=".gguf, .onnx / ONNX directory, HF directory or built-in name")
    defaults = ", ".join(f"{f.runtime} for {f.title}" for f in FORMATS.values())
    p.add_argument("--runtime", choices=runtime_names(), default=None,
                   help=f"default: {defaults}, {MODEL_RUNTIME} for HF directories; "
                        "llama-bench runs llama.cpp's own benchmark binary (GGUF)")  # fmt: skip
    p.add_argument("--llama-bench", default="llama-bench", metavar="PATH",
                   help="the llama-bench binary for --runtime llama-bench (here, or on the board with --remote)")  # fmt: skip
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--gen-tokens", type=int, default=128)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="default: all cores (of the board, with --remote)")
    p.add_argument("--out", default=None, help="directory for profile.json / profile.md / profile.png")
    r = p.add_argument_group("remote boards (see examples/PROFILING.md)")
    r.add_argument("--remote", default=None, metavar="URL",
                   help="ssh://user@host[:port] or adb://SERIAL: copy the artifact and a self-contained runner there and run it")  # fmt: skip
    r.add_argument("--remote-python", default="python3", metavar="PATH", help="the board's Python (default: python3)")
    r.add_argument("--ssh-key", default=None, metavar="FILE", help="private key for ssh (default: ssh's own choice)")
    r.add_argument("--ssh-option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra ssh -o option, repeatable (e.g. UserKnownHostsFile=/dev/null)")  # fmt: skip
    r.add_argument("--connect-timeout", type=int, default=10, metavar="S", help="seconds to wait for the board to answer")
    r.add_argument("--remote-timeout", type=float, default=600, metavar="S", help="seconds per repetition on the board")
    r.add_argument("--keep-remote", action="store_true", help="leave the copied files on the board")
    r.add_argument("--adb", default="adb", metavar="PATH", help="the adb binary (default: adb on PATH)")
    r.add_argument("--gpu-layers", type=int, default=0, metavar="N",
                   help="llama.cpp layers to offload to the board's GPU (a CUDA build on a Jetson: 99 = all; default 0 = CPU)")  # fmt: skip
    p.set_defaults(run=run)


def run(args) -> int:
    if args.out:  # before the minutes of measuring; write_report adds to an existing folder
        from edgeprune.fileio import check_output_dir

        check_output_dir(args.out, exist_ok=True, parents=True)
    from edgeprune.runtime.profile import format_markdown, profile, write_report

    options = None
    if args.gpu_layers and not args.remote:
        from edgeprune.errors import EdgepruneError

        raise EdgepruneError("--gpu-layers applies to --remote runs (this harness profiles the host's CPU)")
    if args.remote:
        from edgeprune.runtime.remote import RemoteOptions

        options = RemoteOptions(python=args.remote_python, key=args.ssh_key, ssh_options=tuple(args.ssh_option),
                                connect_timeout=args.connect_timeout, timeout_s=args.remote_timeout,
                                keep=args.keep_remote, adb=args.adb, gpu_layers=args.gpu_layers,
                                llama_bench=args.llama_bench)  # fmt: skip
    result = profile(args.artifact, runtime=args.runtime, prompt_tokens=args.prompt_tokens, gen_tokens=args.gen_tokens,
                     reps=args.reps, threads=args.threads, remote=args.remote, remote_options=options,
                     llama_bench=args.llama_bench)  # fmt: skip
    print(format_markdown(result))
    if args.out:
        paths = write_report(result, args.out)
        print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0

"""``edgeprune profile ARTIFACT``: measure load, prefill, decode, TTFT and peak RSS (llama-bench style)."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("profile", help="measure an artifact's speed and memory on this machine")
    p.add_argument("artifact", help=".gguf, .onnx / ONNX directory, HF directory or built-in name")
    p.add_argument("--runtime", choices=["llama.cpp", "onnxruntime", "torch"], default=None,
                   help="default: llama.cpp for GGUF, onnxruntime for ONNX, torch for HF directories")  # fmt: skip
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--gen-tokens", type=int, default=128)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="default: all cores")
    p.add_argument("--out", default=None, help="directory for profile.json / profile.md / profile.png")
    p.set_defaults(run=run)


def run(args) -> int:
    from edgeprune.runtime.profile import format_markdown, profile, write_report

    result = profile(args.artifact, runtime=args.runtime, prompt_tokens=args.prompt_tokens,
                     gen_tokens=args.gen_tokens, reps=args.reps, threads=args.threads)  # fmt: skip
    print(format_markdown(result))
    if args.out:
        paths = write_report(result, args.out)
        print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0

"""``edgeprune generate``: a short greedy generation, to check a model end to end."""

from __future__ import annotations

import time


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="generate text with a model (greedy by default)")
    p.add_argument("--model", default=None, help="model source (default: the embedded smollm2-135m)")
    p.add_argument("--prompt", default="The three most useful things to know about edge devices are")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    p.set_defaults(run=run)


def run(args) -> int:
    from edgeprune.errors import EdgepruneError
    from edgeprune.models import load
    from edgeprune.runtime.generate import generate_text

    if args.max_new_tokens < 1:
        raise EdgepruneError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    loaded = load(args.model)
    cached = loaded.timings.get("cached")
    print(f"loaded {loaded.source} in {loaded.timings['load_s']:.1f}s" + (" (cached)" if cached else ""))
    t0 = time.perf_counter()
    text, n_new = generate_text(loaded.model, loaded.tokenizer, args.prompt, max_new_tokens=args.max_new_tokens, chat=args.chat)
    dt = time.perf_counter() - t0
    print(text)
    print(f"[{n_new} tokens in {dt:.2f}s, {n_new / dt:.1f} tokens/s, torch eager on CPU]")
    return 0

"""One measured run, in its own process: load, warm up, prefill, decode; print one JSON line.

The harness (``edgeprune.runtime.profile``) starts a fresh process per repetition so that peak
RSS belongs to one run and caches do not carry over. Methodology follows llama-bench: a prompt
of random token ids processed at once (pp), then tokens generated one at a time (tg), each
token fed back without sampling cost; a short warm-up run first, excluded from the figures.

    python -m edgeprune.runtime.worker --runtime llama.cpp --artifact model.gguf --prompt-tokens 512 --gen-tokens 128
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from edgeprune.runtime.runner import peak_rss_mb, random_tokens, run_llamacpp  # noqa: F401 (re-exported)


# The llama.cpp runner, the prompt ids and the RSS probe live in the self-contained runner that is
# also copied to remote boards, so local and remote figures come from the same code.
_random_tokens = random_tokens


def run_torch(artifact: str, prompt_tokens: int, gen_tokens: int, threads: int, seed: int) -> dict:
    import torch

    from edgeprune.models import load

    prev_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        t0 = time.perf_counter()
        model = load(artifact).model
        load_s = time.perf_counter() - t0
        vocab = model.config.vocab_size
        prompt = torch.tensor([_random_tokens(prompt_tokens, vocab, seed)])
        gen = torch.tensor([_random_tokens(gen_tokens, vocab, seed + 1)])

        @torch.inference_mode()
        def once(p, g):
            t = time.perf_counter()
            out = model(p, use_cache=True, logits_to_keep=1)
            cache = out.cache
            t_prefill = time.perf_counter() - t
            t = time.perf_counter()
            for i in range(g.shape[1]):
                cache = model(g[:, i : i + 1], cache=cache, use_cache=True).cache
            return t_prefill, time.perf_counter() - t

        once(prompt[:, :16], gen[:, :4])  # warm-up
        prefill_s, decode_s = once(prompt, gen)
    finally:
        torch.set_num_threads(prev_threads)
    return {"load_s": load_s, "prefill_s": prefill_s, "decode_s": decode_s}


def run_onnxruntime(artifact: str, prompt_tokens: int, gen_tokens: int, threads: int, seed: int) -> dict:
    import numpy as np

    from edgeprune.runtime.ort_generate import OrtDecoder

    path = Path(artifact)
    if path.is_dir():  # an export directory: its one .onnx graph
        path = sorted(path.glob("*.onnx"))[0]
    t0 = time.perf_counter()
    dec = OrtDecoder(path, threads=threads)
    load_s = time.perf_counter() - t0
    vocab = int(dec.session.get_outputs()[0].shape[-1]) if isinstance(dec.session.get_outputs()[0].shape[-1], int) else 32000
    prompt = _random_tokens(prompt_tokens, vocab, seed)
    gen = _random_tokens(gen_tokens, vocab, seed + 1)

    def once(p, g):
        ids = np.array([p], dtype=np.int64)
        t = time.perf_counter()
        _, past = dec.forward(ids, np.ones_like(ids), np.arange(len(p), dtype=np.int64)[None], dec.empty_past(1))
        t_prefill = time.perf_counter() - t
        t = time.perf_counter()
        for i, tok in enumerate(g):
            pos = len(p) + i
            _, past = dec.forward(np.array([[tok]], dtype=np.int64), np.ones((1, pos + 1), dtype=np.int64),
                                  np.array([[pos]], dtype=np.int64), past)  # fmt: skip
        return t_prefill, time.perf_counter() - t

    once(prompt[:16], gen[:4])  # warm-up
    prefill_s, decode_s = once(prompt, gen)
    return {"load_s": load_s, "prefill_s": prefill_s, "decode_s": decode_s}


RUNNERS = {"llama.cpp": run_llamacpp, "torch": run_torch, "onnxruntime": run_onnxruntime}


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--runtime", choices=sorted(RUNNERS), required=True)
    p.add_argument("--artifact", required=True)
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--gen-tokens", type=int, default=128)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        result = RUNNERS[args.runtime](args.artifact, args.prompt_tokens, args.gen_tokens, args.threads, args.seed)
    except ImportError as exc:
        print(json.dumps({"error": f"runtime {args.runtime} is not installed here: {exc}"}))
        return 3
    except Exception as exc:  # reported to the harness as one line, not a traceback
        print(json.dumps({"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}))
        return 1
    result["peak_rss_mb"] = peak_rss_mb()
    result.update(prompt_tokens=args.prompt_tokens, gen_tokens=args.gen_tokens, threads=args.threads)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

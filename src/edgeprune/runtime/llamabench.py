"""llama.cpp's own ``llama-bench`` as a profiling backend (``--runtime llama-bench``).

Where the binary exists (a llama.cpp build on this machine, or one pushed to a board: on a phone
it needs no Python at all), the figures come straight from llama.cpp's benchmark: ``-p PP -n TG
-r REPS -o json``, one process for all repetitions, prompt and generation measured as separate
tests (llama-bench's pp / tg). It reports tokens/s per repetition; load time and peak RSS are not
part of its output and stay empty.
"""

from __future__ import annotations

import json
import re

from edgeprune.errors import EdgepruneError

NOT_FOUND = ("llama-bench not found ({binary}): build it with llama.cpp (`cmake -B build && cmake --build build "
             "--target llama-bench`) and pass --llama-bench PATH, or use --runtime llama.cpp")  # fmt: skip


def llama_bench_argv(binary: str, model: str, *, prompt_tokens: int, gen_tokens: int, reps: int, threads: int,
                     gpu_layers: int = 0) -> list[str]:  # fmt: skip
    return [binary, "-m", model, "-p", str(prompt_tokens), "-n", str(gen_tokens), "-r", str(reps), "-t", str(threads),
            "-ngl", str(gpu_layers), "-o", "json"]  # fmt: skip


def parse_llama_bench(stdout: str, *, prompt_tokens: int, gen_tokens: int) -> list[dict]:
    """Per-repetition runs from ``llama-bench -o json`` output: the pp test's and the tg test's
    ``samples_ts``, paired by repetition."""
    match = re.search(r"\[\s*(\{.*\})\s*\]", stdout, re.S)
    try:
        tests = json.loads(match.group(0)) if match else None
    except json.JSONDecodeError:
        tests = None
    if not tests:
        tail = stdout.strip().splitlines()[-1:] or ["no output"]
        raise EdgepruneError(f"llama-bench printed no JSON results ({tail[0][:120]}): run it by hand with -o json to see why")
    pp = next((t for t in tests if t.get("n_prompt") == prompt_tokens and not t.get("n_gen")), None)
    tg = next((t for t in tests if t.get("n_gen") == gen_tokens and not t.get("n_prompt")), None)
    if pp is None or tg is None:
        raise EdgepruneError(f"llama-bench output has no pp{prompt_tokens} and tg{gen_tokens} tests: is it an old build?")
    runs = []
    for p, g in zip(pp["samples_ts"], tg["samples_ts"]):
        runs.append({"prefill_tps": float(p), "decode_tps": float(g), "ttft_ms": 1000.0 * prompt_tokens / float(p),
                     "prefill_s": prompt_tokens / float(p), "decode_s": gen_tokens / float(g),
                     "load_s": None, "peak_rss_mb": None, "backend": tg.get("backends"), "build": tg.get("build_commit")})  # fmt: skip
    return runs

"""Bench: the embedded default model (SmolLM2-135M-Instruct, Q4_1 dequantized to float32) on
WikiText-2 test perplexity (full test set, 1024- and 2048-token windows) and the seven zero-shot
tasks (full splits, lm-evaluation-harness 0.4 definitions), with wall time and tokens/s.

    python bench/eval_dense.py                       # the full run (hours on 2 cores)
    python bench/eval_dense.py --limit 20 --limit-tokens 4096 --out /tmp/eval_small.json   # a smoke run

Writes ``bench/results/eval_dense.json`` (rewritten atomically after every row, with
``"complete": false`` until the last one) and ``eval_dense.md``, and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Cheapest first, so a partial run still has the most rows; perplexity at 1024 first of all.
TASK_ORDER = ("openbookqa", "winogrande", "arc_challenge", "piqa", "arc_easy", "boolq", "hellaswag")
COLUMNS = ("task", "seq_len", "n", "tokens", "ppl", "acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "wall_s", "tokens_per_s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--seq-lens", default="1024,2048")
    p.add_argument("--tasks", default=",".join(TASK_ORDER))
    p.add_argument("--limit", type=int, default=None, help="docs per task (seeded subset); default: all")
    p.add_argument("--limit-tokens", type=int, default=None, help="perplexity on the first N tokens only; default: all")
    p.add_argument("--batch-tokens", type=int, default=4096)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's, = cores)")
    p.add_argument("--out", default=str(HERE / "results" / "eval_dense.json"))
    p.add_argument("--md", default=None, help="markdown output (default: --out with .md)")
    p.add_argument("--resume", action="store_true",
                   help="keep the rows already in --out (same settings) and run only the missing ones")
    args = p.parse_args(argv)

    from edgeprune.benchutil import bench_document, write_bench
    from edgeprune.eval import Evaluator, PerplexityConfig, ZeroShotConfig

    out = Path(args.out)
    md = Path(args.md) if args.md else out.with_suffix(".md")
    t0 = time.perf_counter()
    ev = Evaluator(args.model, batch_tokens=args.batch_tokens, threads=args.threads)
    load_s = time.perf_counter() - t0
    model = {**ev.describe(), "load_s": round(load_s, 2), "weights": "Q4_1 GGUF dequantized to float32" if args.model == "smollm2-135m" else None}
    settings = {"limit": args.limit, "limit_tokens": args.limit_tokens, "seed": 1234, "batch_tokens": args.batch_tokens,
                "ppl_windows": "non-overlapping, last partial window dropped, no BOS", "zeroshot": "lm-eval 0.4 definitions, local files",
                "threads": args.threads or model.get("threads"), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")}  # fmt: skip
    rows: list[dict] = []
    done: set[tuple] = set()
    if args.resume and out.is_file():
        previous = json.loads(out.read_text())
        if previous.get("settings", {}).get("limit") == args.limit and previous.get("settings", {}).get("limit_tokens") == args.limit_tokens:
            rows = list(previous.get("rows", []))
            done = {(r["task"], r.get("seq_len")) for r in rows}
            print(f"resuming: {len(rows)} rows kept from {out}", flush=True)

    def save(complete: bool) -> str:
        doc = bench_document("eval_dense", rows, model=model, settings=settings, complete=complete)
        return write_bench(doc, out, md, COLUMNS, title=f"# eval_dense: {args.model} ({model['dtype']}, {model['backend']})")

    for seq_len in [int(s) for s in args.seq_lens.split(",") if s]:
        if ("wikitext2", seq_len) in done:
            continue
        r = ev.perplexity(PerplexityConfig(seq_len=seq_len, limit_tokens=args.limit_tokens))
        rows.append({"task": "wikitext2", "seq_len": seq_len, "n": r.windows, "tokens": r.tokens, "ppl": r.ppl,
                     "wall_s": r.wall_s, "tokens_per_s": r.tokens_per_s, "corpus_tokens": r.corpus_tokens,
                     "dropped_tokens": r.dropped_tokens, "last_window": r.last_window, "tokenize_s": r.tokenize_s,
                     "cpu_s": getattr(r, "cpu_s", None), "threads": r.threads})  # fmt: skip
        print(f"wikitext2 @{seq_len}: ppl {r.ppl:.4f} over {r.windows} windows / {r.tokens} tokens in {r.wall_s:.0f}s "
              f"({r.tokens_per_s:.0f} tokens/s)", flush=True)  # fmt: skip
        save(False)

    for task in [t for t in args.tasks.split(",") if t]:
        if (task, None) in done:
            continue
        (r,) = ev.zeroshot(ZeroShotConfig(tasks=(task,), limit=args.limit))
        rows.append({"task": task, "seq_len": None, "n": r.n, "tokens": r.tokens, "acc": r.acc, "acc_stderr": r.acc_stderr,
                     "acc_norm": r.acc_norm, "acc_norm_stderr": r.acc_norm_stderr, "wall_s": r.wall_s,
                     "tokens_per_s": r.tokens_per_s, "cpu_s": getattr(r, "cpu_s", None), "n_total": r.n_total})  # fmt: skip
        norm = f", acc_norm {r.acc_norm:.4f}" if r.acc_norm is not None else ""
        print(f"{task}: acc {r.acc:.4f}{norm} (n {r.n}) in {r.wall_s:.0f}s ({r.tokens_per_s:.0f} tokens/s)", flush=True)
        save(False)

    print(save(True))
    print(f"wrote {out} and {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Bench: perplexity scoring speed of each runtime, before and after issue 21 item 6.

The default model (SmolLM2-135M) is exported to GGUF q8_0 and ONNX int8 (edgeprune's exporters,
into a temporary folder) and scored on the first N x 1024 tokens of WikiText-2 test, the same
token ids for every engine (the transformers tokenizer), 2 threads:

- ``llama.cpp old``: the path before: ``Llama(logits_all=True, n_batch=512)``, ``llm.eval()`` in
  512-token micro-batches, every logit copied into llama-cpp-python's ``scores`` buffer and out again;
- ``llama.cpp new``: :class:`edgeprune.eval.backends.LlamaCppBackend`: one ``llama_decode`` per
  window (run as 256-token micro-batches), the logits read as a numpy view of llama.cpp's own buffer;
- ``onnxruntime old``: ``session.run`` (every output, the KV cache included, copied into new arrays);
- ``onnxruntime new``: :class:`edgeprune.eval.backends.OnnxBackend`: IO binding, the logits
  written in place, the KV cache not fetched;
- ``torch``: the reference (eager PyTorch, oneDNN-packed Linears, as the build evaluates).

The new paths run again at ``--also-threads`` (default 1): on a shared 2-core host ggml's and
onnxruntime's 2 threads wait for each other at every op whenever one is descheduled, and 1 thread
can then beat 2. Old and new run in ABBA order (``--reps 2``) so that a load that drifts hits both
alike; a row is the mean over its repetitions, ``load_1m`` the highest 1-minute load average seen
around them (this bench's own threads included). Compare rows across runs only at similar loads.

    python bench/eval_speed.py                         # 8 windows x 1024, 2 threads (~6 min on a quiet host, exports included)
    python bench/eval_speed.py --windows 2 --reps 1 --out /tmp/eval_speed.json   # smoke run

Writes ``bench/results/eval_speed.json`` and ``eval_speed.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
from _common import RESULTS, Checks, Results, ppl, ppl_setting

COLUMNS = ("engine", "quant", "path", "threads", "seq_len", "tokens", "ppl", "ppl_rel_vs_old", "wall_s", "eval_tps", "cpu_s",
           "speedup_vs_old", "load_1m")  # fmt: skip
# The new paths must reproduce the old numbers (issue 21 item 6): relative ppl difference at most.
PPL_TOLERANCE = {"llama.cpp": 1e-4, "onnxruntime": 1e-5}


class OldLlamaCpp:
    """The llama.cpp scoring path before issue 21 item 6, kept here to compare against."""

    name = "llama.cpp"
    max_length = None
    batch_tokens = 4096

    def __init__(self, path: Path, tokenizer, *, n_ctx: int, threads: int):
        from edgeprune.runtime.runner import new_llama

        self.llm = new_llama(model_path=str(path), logits_all=True, n_ctx=max(n_ctx, 512), n_batch=512, n_threads=threads,
                             n_threads_batch=threads, verbose=False)  # fmt: skip
        self.tokenizer, self.threads, self.dtype = tokenizer, threads, "gguf"

    def token_logprobs(self, seqs):
        import torch

        from edgeprune.eval.backends import _target_logprobs

        out = []
        for s in seqs:
            self.llm.n_tokens = 0  # eval() drops the KV cache beyond n_tokens first
            self.llm.eval(list(s[:-1]))
            out.append(_target_logprobs(torch.from_numpy(np.array(self.llm.scores[: len(s) - 1])), s[1:]))
        return out

    def close(self) -> None:
        self.llm.close()


def old_onnx(path: Path, tokenizer, *, threads: int):
    """An OnnxBackend with the forward before issue 21 item 6: ``session.run`` of every output."""
    import torch

    from edgeprune.eval.backends import OnnxBackend

    class OldOnnx(OnnxBackend):
        def _forward(self, ids, mask, pos, past, last, cache):
            batch = ids.shape[0]
            if past is None:
                past = [(np.zeros((batch, h, 0, d), dt), np.zeros((batch, h, 0, d), dt)) for h, d, dt in self._kv]
            feeds = {"input_ids": ids.numpy().astype(np.int64), "attention_mask": mask.numpy().astype(np.int64),
                     "position_ids": pos.numpy().astype(np.int64)}  # fmt: skip
            for i, (k, v) in enumerate(past):
                feeds[f"past_key_values.{i}.key"] = k
                feeds[f"past_key_values.{i}.value"] = v
            names = [o.name for o in self.session.get_outputs()]
            outs = dict(zip(names, self.session.run(None, feeds)))
            logits = torch.from_numpy(np.asarray(outs["logits"], dtype=np.float32))  # (batch, seq, vocab)
            if last is not None:
                logits = logits[torch.arange(batch), last]
            return logits, [(outs[f"present.{i}.key"], outs[f"present.{i}.value"]) for i in range(len(self._kv))]

    return OldOnnx.from_file(path, tokenizer, threads=threads)


def measure(make, *, windows: int, seq_len: int) -> dict:
    """One perplexity run of a freshly made backend, with the load average around it."""
    load_before = os.getloadavg()[0]
    backend = make()
    try:
        rep = ppl(backend, windows=windows, seq_len=seq_len)
    finally:
        close = getattr(backend, "close", None)
        if close is not None:
            close()
    return {"ppl": rep.ppl, "tokens": rep.tokens, "wall_s": rep.wall_s, "cpu_s": rep.cpu_s,
            "load_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)]}  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--windows", type=int, default=8, help="perplexity windows (the first N of WikiText-2 test)")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=2, help="runs of each old/new path, in ABBA order")
    p.add_argument("--also-threads", default="1", help="thread counts to run the new paths at too (comma-separated; '' for none)")
    p.add_argument("--engines", default="llama.cpp,onnxruntime,torch")
    p.add_argument("--gguf", default=None, help="score this q8_0 GGUF of the default model instead of exporting one")
    p.add_argument("--onnx", default=None, help="score this int8 model.onnx of the default model instead of exporting one")
    p.add_argument("--out", default=str(RESULTS / "eval_speed.json"))
    p.add_argument("--md", default=None, help="markdown output (default: --out with .md)")
    args = p.parse_args(argv)

    from edgeprune.eval import HFTokenizer, LlamaCppBackend, OnnxBackend, TorchBackend
    from edgeprune.export.gguf import export_gguf
    from edgeprune.export.onnx import export_onnx
    from edgeprune.models import load
    from edgeprune.threads import torch_threads

    engines = [e for e in args.engines.split(",") if e]
    extra_threads = [int(t) for t in args.also_threads.split(",") if t and int(t) != args.threads]
    loaded = load("smollm2-135m")
    tok = HFTokenizer(loaded.tokenizer)
    settings = {
        "ppl": ppl_setting(args.windows, args.seq_len, ", ".join(engines)), "threads": args.threads, "reps": args.reps,
        "order": "old and new alternate ABBA per engine; a row is the mean of its reps (ppl: identical across reps)",
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()], "cores": len(os.sched_getaffinity(0)),
    }  # fmt: skip
    res = Results("eval_speed", args.out, md_path=args.md, columns=COLUMNS, settings=settings,
                  title="# eval_speed: perplexity scoring speed per runtime, old path vs new (SmolLM2-135M)")  # fmt: skip
    kw = {"windows": args.windows, "seq_len": args.seq_len}

    with tempfile.TemporaryDirectory(prefix="eval-speed-") as tmp, torch_threads(args.threads):
        paths = {"llama.cpp": Path(args.gguf) if args.gguf else None, "onnxruntime": Path(args.onnx) if args.onnx else None}
        if "llama.cpp" in engines and paths["llama.cpp"] is None:
            paths["llama.cpp"] = Path(tmp) / "model-q8_0.gguf"
            export_gguf(loaded.model, loaded.tokenizer, paths["llama.cpp"], qtype="q8_0", source_gguf=loaded.source_gguf, progress=False)
        if "onnxruntime" in engines and paths["onnxruntime"] is None:
            paths["onnxruntime"] = Path(export_onnx(loaded.model, Path(tmp) / "onnx-int8", tokenizer=loaded.tokenizer, quant="int8",
                                                    threads=args.threads).path)  # fmt: skip
        makers = {  # (engine, quant) -> {path: backend(threads)}
            ("llama.cpp", "q8_0"): {
                "old": lambda t: OldLlamaCpp(paths["llama.cpp"], tok, n_ctx=args.seq_len, threads=t),
                "new": lambda t: LlamaCppBackend(paths["llama.cpp"], tok, n_ctx=args.seq_len, threads=t),
            },
            ("onnxruntime", "int8"): {
                "old": lambda t: old_onnx(paths["onnxruntime"], tok, threads=t),
                "new": lambda t: OnnxBackend.from_file(paths["onnxruntime"], tok, threads=t),
            },
        }  # fmt: skip
        for (engine, quant), make in makers.items():
            if engine not in engines:
                continue
            runs: dict[str, list[dict]] = {"old": [], "new": []}
            order = [("old", "new"), ("new", "old")]
            for rep in range(args.reps):
                for which in order[rep % 2]:
                    runs[which].append(measure(lambda: make[which](args.threads), **kw))
                    r = runs[which][-1]
                    print(f"{engine} {which}: ppl {r['ppl']:.6f}, {r['tokens'] / r['wall_s']:.0f} tok/s (load {r['load_1m']})", flush=True)
            rows = {which: summarise(engine, quant, which, rs, args.seq_len, args.threads) for which, rs in runs.items()}
            for t in extra_threads:  # the new path at other thread counts, against the old one at --threads
                rows[f"new {t}t"] = summarise(engine, quant, "new", [measure(lambda: make["new"](t), **kw)], args.seq_len, t)
            for row in rows.values():
                row["ppl_rel_vs_old"] = row["ppl"] / rows["old"]["ppl"] - 1
                row["speedup_vs_old"] = row["eval_tps"] / rows["old"]["eval_tps"]
                res.add(row)
        if "torch" in engines:
            runs = [measure(lambda: TorchBackend(loaded.model, tok), **kw) for _ in range(max(1, args.reps // 2))]
            res.add(summarise("torch", "fp32", "-", runs, args.seq_len, args.threads))
            print(f"torch: ppl {res.rows[-1]['ppl']:.6f}, {res.rows[-1]['eval_tps']:.0f} tok/s", flush=True)

    res.extra["settings"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(res.finish(figures_of(res.rows, settings["load_avg_at_start"][0])))
    print(f"wrote {res.json_path} and {res.md_path}")
    return 0


def summarise(engine: str, quant: str, path: str, runs: list[dict], seq_len: int, threads: int) -> dict:
    wall = statistics.mean(r["wall_s"] for r in runs)
    tokens = runs[0]["tokens"]
    return {
        "model": "smollm2-135m", "engine": engine, "quant": quant, "path": path, "seq_len": seq_len, "tokens": tokens,
        "ppl": runs[0]["ppl"], "ppl_all_reps": [r["ppl"] for r in runs], "wall_s": wall, "eval_tps": tokens / wall,
        "eval_tps_reps": [r["tokens"] / r["wall_s"] for r in runs], "cpu_s": statistics.mean(r["cpu_s"] for r in runs),
        "threads": threads, "load_1m": max(x for r in runs for x in r["load_1m"]), "load_1m_reps": [r["load_1m"] for r in runs],
    }  # fmt: skip


def figures_of(rows: list[dict], start_load: float) -> Checks:
    checks = Checks()
    by = {(r["engine"], r["path"]): r for r in rows if r["threads"] == rows[0]["threads"]}
    for engine, tol in PPL_TOLERANCE.items():
        old, new = by.get((engine, "old")), by.get((engine, "new"))
        if old and new:
            checks.check(f"{engine} new ppl within {tol:.0e} relative of the old path", abs(new["ppl_rel_vs_old"]) <= tol,
                         f"{new['ppl']:.6f} vs {old['ppl']:.6f} ({new['ppl_rel_vs_old']:+.1e})")  # fmt: skip
            checks.info(f"{engine}: {old['eval_tps']:.0f} -> {new['eval_tps']:.0f} tok/s (x{new['speedup_vs_old']:.2f}), "
                        f"CPU {old['cpu_s']:.1f} -> {new['cpu_s']:.1f} s")  # fmt: skip
    for r in rows:
        if r["threads"] != rows[0]["threads"]:
            checks.info(f"{r['engine']} new at {r['threads']} thread(s): {r['eval_tps']:.0f} tok/s, CPU {r['cpu_s']:.1f} s")
    if ("torch", "-") in by:
        checks.info(f"torch: {by[('torch', '-')]['eval_tps']:.0f} tok/s")
    # This bench's own threads count in the load average: more than them (+1) means other work ran too.
    peak, own = max(r["load_1m"] for r in rows), max(r["threads"] for r in rows)
    busy = start_load > 1 or peak > own + 1
    checks.info(f"1-minute load average: {start_load:.2f} before the bench, at most {peak:.2f} during it (its own "
                f"{own} threads included) on {len(os.sched_getaffinity(0))} cores"
                + ("  (BUSY: other work shared the cores; rerun on a quiet machine)" if busy else ": quiet"))  # fmt: skip
    return checks


if __name__ == "__main__":
    sys.exit(main())

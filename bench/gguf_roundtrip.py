"""Bench: the default model (SmolLM2-135M) through GGUF and back in llama.cpp, dense and pruned.

Models: ``dense`` (the stock Llama, written as arch ``llama``) and ``pruned`` (the seeded random
per-layer-width stand-in of ``_common.pruned_model``: an ``edgeprune_llama`` written as arch
``deci``). Types: F32, F16,
Q8_0, Q4_0. Per row: file bytes, llama.cpp load time, WikiText-2 test perplexity from llama.cpp and
from torch on the same token windows, max |dlogit| and top-1 agreement on 8 prompts, tokenization
vs transformers on 1,000 WikiText-2 lines, prefill and decode tokens/s in llama.cpp.

    python bench/gguf_roundtrip.py                     # 16 windows x 512 tokens (a few minutes)
    python bench/gguf_roundtrip.py --windows 4 --quants f32,q8_0 --out /tmp/gguf_small.json   # smoke run

Writes ``bench/results/gguf_roundtrip.json`` (rewritten after every row, ``"complete": false``
until the end) and ``gguf_roundtrip.md``, and prints the table and the figures the issue asks for.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import RESULTS, Checks, Results, add_pruned_args, ppl, ppl_setting, pruned_from_args, pruned_settings
from _common import valid_prompts, wikitext_test_lines

COLUMNS = ("model", "arch", "quant", "bytes", "load_s", "torch_ppl", "llamacpp_ppl", "ppl_rel_diff", "max_abs_logit_diff",
           "top1_agreement", "tokenization", "prefill_tps", "decode_tps")  # fmt: skip
# llama.cpp perplexity must be within this share of torch's (issue 4).
PPL_TOLERANCE = {"f32": 0.001, "f16": 0.005, "q8_0": 0.02}


def llama_speed(path: Path, threads: int, *, n_prompt: int = 512, n_gen: int = 64, reps: int = 3) -> dict:
    """Load time, prefill tokens/s (one ``n_prompt`` batch) and decode tokens/s (``n_gen`` single
    tokens after a short prompt): the median of ``reps`` runs after a warm-up, KV cache cleared."""
    from edgeprune.export.gguf.llamacpp import llama_model

    t0 = time.perf_counter()
    with llama_model(path, n_ctx=n_prompt + n_gen + 8, logits_all=False, n_threads=threads) as llm:
        load_s = time.perf_counter() - t0
        ids = [int(i) for i in np.random.default_rng(0).integers(100, 40000, n_prompt)]  # like llama-bench
        prefill, decode = [], []
        for rep in range(reps + 1):
            llm.reset()
            t = time.perf_counter()
            llm.eval(ids)
            p = time.perf_counter() - t
            llm.reset()
            llm.eval(ids[:8])
            t = time.perf_counter()
            for tok in ids[8 : 8 + n_gen]:
                llm.eval([tok])
            d = time.perf_counter() - t
            if rep:  # the first pass warms caches and threads
                prefill.append(n_prompt / p)
                decode.append(n_gen / d)
    return {"load_s": load_s, "prefill_tps": statistics.median(prefill), "decode_tps": statistics.median(decode)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quants", default="f32,f16,q8_0,q4_0")
    p.add_argument("--models", default="dense,pruned")
    p.add_argument("--windows", type=int, default=16, help="perplexity windows (the first N of WikiText-2 test)")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--lines", type=int, default=1000, help="WikiText-2 lines for the tokenization check")
    add_pruned_args(p)
    p.add_argument("--threads", type=int, default=None, help="llama.cpp and torch threads (default: half the cores)")
    p.add_argument("--out", default=str(RESULTS / "gguf_roundtrip.json"))
    p.add_argument("--md", default=None, help="markdown output (default: --out with .md)")
    args = p.parse_args(argv)

    from edgeprune.eval import HFTokenizer, LlamaCppBackend, TorchBackend
    from edgeprune.export.gguf import export_gguf
    from edgeprune.export.gguf.llamacpp import default_threads, llama_logits, llama_model
    from edgeprune.export.gguf.verify import compare_logits, torch_logits, torch_threads
    from edgeprune.models import load

    threads = args.threads or default_threads()
    quants = [q for q in args.quants.split(",") if q]
    loaded = load("smollm2-135m")
    dense, tok = loaded
    pruned = pruned_from_args(dense, args)
    models = {k: v for k, v in {"dense": dense, "pruned": pruned}.items() if k in args.models.split(",")}
    hf_tok = HFTokenizer(tok)
    bench_prompts = valid_prompts(tok, 8, 48)
    lines = wikitext_test_lines(args.lines)
    settings = {
        "ppl": ppl_setting(args.windows, args.seq_len, "torch and llama.cpp"),
        "logits": f"{len(bench_prompts)} prompts of 48 tokens (WikiText-2 valid), all positions",
        "speed": "llama-cpp-python, prefill = one 512-token batch, decode = 64 single tokens, median of 3 after warm-up",
        "threads": threads, "kv_cache": "f16 (llama.cpp default)",
        "pruned": pruned_settings(pruned, dense, args),
    }  # fmt: skip
    res = Results("gguf_roundtrip", args.out, md_path=args.md, columns=COLUMNS, settings=settings,
                  title="# gguf_roundtrip: SmolLM2-135M dense (llama) and pruned (deci) in llama.cpp")  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="gguf-bench-") as tmp:
        for name, model in models.items():
            with torch_threads(threads):
                torch_ppl = ppl(TorchBackend(model, hf_tok), windows=args.windows, seq_len=args.seq_len)
                ref = torch_logits(model, bench_prompts)
            print(f"{name}: torch ppl {torch_ppl.ppl:.4f} ({torch_ppl.windows} windows, {torch_ppl.tokens} tokens)", flush=True)
            for q in quants:
                path = Path(tmp) / f"{name}-{q}.gguf"
                t0 = time.perf_counter()
                report = export_gguf(model, tok, path, qtype=q, source_gguf=loaded.path, progress=False)
                export_s = time.perf_counter() - t0
                backend = LlamaCppBackend(path, hf_tok, n_ctx=args.seq_len, threads=threads)
                cpp_ppl = ppl(backend, windows=args.windows, seq_len=args.seq_len)
                backend.close()
                with llama_model(path, n_ctx=64, n_threads=threads) as llm:
                    got = [llama_logits(llm, ids) for ids in bench_prompts]
                with llama_model(path, n_ctx=64, vocab_only=True) as llm:
                    cpp_tokens = [llm.tokenize(ln.encode("utf-8"), add_bos=False, special=True) for ln in lines]
                same = sum(tok.encode(ln, add_special_tokens=False) == ids for ln, ids in zip(lines, cpp_tokens))
                logits = compare_logits(ref, got)
                speed = llama_speed(path, threads)
                rel = cpp_ppl.ppl / torch_ppl.ppl - 1
                res.add({
                    "model": name, "arch": report.arch, "quant": q, "bytes": report.bytes, "load_s": speed["load_s"],
                    "torch_ppl": torch_ppl.ppl, "llamacpp_ppl": cpp_ppl.ppl, "ppl_rel_diff": rel,
                    "ppl_within_tolerance": (abs(rel) <= PPL_TOLERANCE[q]) if q in PPL_TOLERANCE else None,
                    "max_abs_logit_diff": logits.max_abs_diff, "top1_agreement": logits.top1_agreement,
                    "tokenization": f"{same}/{len(lines)}", "tokenization_identical": same == len(lines),
                    "prefill_tps": speed["prefill_tps"], "decode_tps": speed["decode_tps"],
                    "export_s": export_s, "verified": report.verified, "tensor_types": report.tensor_types,
                    "fallbacks": len(report.fallbacks), "ppl_windows": cpp_ppl.windows, "ppl_tokens": cpp_ppl.tokens,
                })  # fmt: skip
                print(f"{name} {q}: {report.arch} {report.bytes / 1e6:.1f} MB, ppl {cpp_ppl.ppl:.4f} vs {torch_ppl.ppl:.4f} "
                      f"({rel:+.3%}), max|dlogit| {logits.max_abs_diff:.3g}, tokens {same}/{len(lines)}, "
                      f"prefill {speed['prefill_tps']:.0f} t/s, decode {speed['decode_tps']:.1f} t/s", flush=True)  # fmt: skip
                path.unlink()
                path.with_suffix(".report.json").unlink(missing_ok=True)

    print(res.finish(figures_of(res.rows)))
    print(f"wrote {res.json_path} and {res.md_path}")
    return 0


def figures_of(rows: list[dict]) -> Checks:
    """The issue's figures: ppl tolerances per type, tokenization, and pruned/dense speed vs size."""
    by = {(r["model"], r["quant"]): r for r in rows}
    checks = Checks()
    for (model, q), r in sorted(by.items()):
        if q in PPL_TOLERANCE:
            checks.check(f"{model} {q} llama.cpp ppl within {PPL_TOLERANCE[q]:.1%} of torch", r["ppl_within_tolerance"],
                         f"{r['ppl_rel_diff']:+.4%}")  # fmt: skip
    checks.check("tokenization identical to transformers on every line", all(r["tokenization_identical"] for r in rows),
                 ", ".join(sorted({r["tokenization"] for r in rows})))  # fmt: skip
    ratios = []
    for q in sorted({r["quant"] for r in rows}):
        d, p = by.get(("dense", q)), by.get(("pruned", q))
        if d and p:
            ratios.append({"quant": q, "decode_ratio": p["decode_tps"] / d["decode_tps"], "prefill_ratio": p["prefill_tps"] / d["prefill_tps"],
                           "bytes_ratio": p["bytes"] / d["bytes"]})  # fmt: skip
            checks.info(f"pruned/dense {q}: decode speed x{ratios[-1]['decode_ratio']:.2f}, prefill x{ratios[-1]['prefill_ratio']:.2f}, "
                        f"bytes x{ratios[-1]['bytes_ratio']:.2f}")  # fmt: skip
    checks.extra["pruned_vs_dense"] = ratios
    return checks


if __name__ == "__main__":
    sys.exit(main())

"""Bench: the default model (SmolLM2-135M) through GGUF and back in llama.cpp, dense and pruned.

Models: ``dense`` (the stock Llama, written as arch ``llama``) and ``pruned`` (whole KV groups and
MLP channels cut at random per layer, seeded, MLP widths multiples of 32, the first and last 4
layers kept whole: an ``edgeprune_llama`` model written as arch ``deci``; a stand-in until
importance-based pruning lands. Cutting the outer layers too leaves a model with perplexity ~1e5,
whose numbers say little). Types: F32, F16,
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

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "wikitext-2-raw"
COLUMNS = ("model", "arch", "quant", "bytes", "load_s", "torch_ppl", "llamacpp_ppl", "ppl_rel_diff", "max_abs_logit_diff",
           "top1_agreement", "tokenization", "prefill_tps", "decode_tps")  # fmt: skip
# llama.cpp perplexity must be within this share of torch's (issue 4).
PPL_TOLERANCE = {"f32": 0.001, "f16": 0.005, "q8_0": 0.02}


def prompts(tok, n: int = 8, length: int = 48) -> list[list[int]]:
    """The first ``n`` long lines of WikiText-2 *valid* (not the test windows), ``length`` tokens each."""
    lines = [ln for ln in (DATA / "wiki.valid.raw").read_text(encoding="utf-8").splitlines() if len(ln) > 400]
    return [tok.encode(ln, add_special_tokens=False)[:length] for ln in lines[:n]]


def test_lines(n: int) -> list[str]:
    return [ln for ln in (DATA / "wiki.test.raw").read_text(encoding="utf-8").splitlines() if ln.strip()][:n]


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
    p.add_argument("--attn-keep", type=float, default=0.67, help="mean share of KV groups the pruned model keeps")
    p.add_argument("--mlp-keep", type=float, default=0.6, help="mean share of MLP channels the pruned model keeps")
    p.add_argument("--protect", type=int, default=4, help="keep the first and last N layers whole")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="llama.cpp and torch threads (default: half the cores)")
    p.add_argument("--out", default=str(HERE / "results" / "gguf_roundtrip.json"))
    p.add_argument("--md", default=None, help="markdown output (default: --out with .md)")
    args = p.parse_args(argv)

    from edgeprune.benchutil import bench_document, write_bench
    from edgeprune.compress.cut import cut_widths, random_keep
    from edgeprune.eval import HFTokenizer, LlamaCppBackend, PerplexityConfig, TorchBackend, evaluate_perplexity
    from edgeprune.export.gguf import export_gguf
    from edgeprune.export.gguf.llamacpp import default_threads, llama_logits, llama_model
    from edgeprune.export.gguf.verify import compare_logits, torch_logits, torch_threads
    from edgeprune.models import load, to_per_layer

    out = Path(args.out)
    md = Path(args.md) if args.md else out.with_suffix(".md")
    threads = args.threads or default_threads()
    quants = [q for q in args.quants.split(",") if q]
    loaded = load("smollm2-135m")
    dense, tok = loaded
    n_layers = dense.config.num_hidden_layers
    keep = random_keep(to_per_layer(dense).config, attn_keep=args.attn_keep, mlp_keep=args.mlp_keep, seed=args.seed)
    pruned = cut_widths(dense, {i: k for i, k in keep.items() if args.protect <= i < n_layers - args.protect})
    models = {k: v for k, v in {"dense": dense, "pruned": pruned}.items() if k in args.models.split(",")}
    ppl_cfg = PerplexityConfig(seq_len=args.seq_len, limit_tokens=args.windows * args.seq_len)
    hf_tok = HFTokenizer(tok)
    bench_prompts = prompts(tok)
    lines = test_lines(args.lines)
    pc = pruned.config
    settings = {
        "ppl": f"WikiText-2 test, first {args.windows} non-overlapping windows of {args.seq_len} tokens, no BOS, "
               "the same token ids for torch and llama.cpp (transformers tokenizer)",
        "logits": f"{len(bench_prompts)} prompts of 48 tokens (WikiText-2 valid), all positions",
        "speed": "llama-cpp-python, prefill = one 512-token batch, decode = 64 single tokens, median of 3 after warm-up",
        "threads": threads, "kv_cache": "f16 (llama.cpp default)",
        "pruned": {"method": "random whole KV groups and MLP channels per layer (compress.cut.random_keep)",
                   "attn_keep": args.attn_keep, "mlp_keep": args.mlp_keep, "seed": args.seed,
                   "layers_kept_whole": f"first and last {args.protect}",
                   "heads": pc.heads_per_layer(), "kv_heads": pc.kv_heads_per_layer(), "mlp": pc.intermediate_per_layer(),
                   "params": sum(p.numel() for p in pruned.parameters()),
                   "dense_params": sum(p.numel() for p in dense.parameters())},
    }  # fmt: skip
    rows: list[dict] = []

    def save(complete: bool, figures=None) -> str:
        doc = bench_document("gguf_roundtrip", rows, settings=settings, figures=figures, complete=complete)
        return write_bench(doc, out, md, COLUMNS, title="# gguf_roundtrip: SmolLM2-135M dense (llama) and pruned (deci) in llama.cpp")

    with tempfile.TemporaryDirectory(prefix="gguf-bench-") as tmp:
        for name, model in models.items():
            with torch_threads(threads):
                torch_ppl = evaluate_perplexity(TorchBackend(model, hf_tok), ppl_cfg, progress=False)
                ref = torch_logits(model, bench_prompts)
            print(f"{name}: torch ppl {torch_ppl.ppl:.4f} ({torch_ppl.windows} windows, {torch_ppl.tokens} tokens)", flush=True)
            for q in quants:
                path = Path(tmp) / f"{name}-{q}.gguf"
                t0 = time.perf_counter()
                report = export_gguf(model, tok, path, qtype=q, source_gguf=loaded.path, progress=False)
                export_s = time.perf_counter() - t0
                backend = LlamaCppBackend(path, hf_tok, n_ctx=args.seq_len, threads=threads)
                cpp_ppl = evaluate_perplexity(backend, ppl_cfg, progress=False)
                backend.close()
                with llama_model(path, n_ctx=64, n_threads=threads) as llm:
                    got = [llama_logits(llm, ids) for ids in bench_prompts]
                with llama_model(path, n_ctx=64, vocab_only=True) as llm:
                    cpp_tokens = [llm.tokenize(ln.encode("utf-8"), add_bos=False, special=True) for ln in lines]
                same = sum(tok.encode(ln, add_special_tokens=False) == ids for ln, ids in zip(lines, cpp_tokens))
                logits = compare_logits(ref, got)
                speed = llama_speed(path, threads)
                rel = cpp_ppl.ppl / torch_ppl.ppl - 1
                rows.append({
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
                save(False)

    figures = figures_of(rows)
    text = save(True, figures)
    print(text)
    for line in figures["lines"]:
        print(line)
    print(f"wrote {out} and {md}")
    return 0


def figures_of(rows: list[dict]) -> dict:
    """The issue's figures: ppl tolerances per type, tokenization, and pruned/dense speed vs size."""
    by = {(r["model"], r["quant"]): r for r in rows}
    checks, lines = {}, []
    for (model, q), r in sorted(by.items()):
        if q in PPL_TOLERANCE:
            key = f"{model} {q} llama.cpp ppl within {PPL_TOLERANCE[q]:.1%} of torch"
            checks[key] = bool(r["ppl_within_tolerance"])
            lines.append(f"{'PASS' if checks[key] else 'FAIL'}  {key}: {r['ppl_rel_diff']:+.4%}")
    key = "tokenization identical to transformers on every line"
    checks[key] = all(r["tokenization_identical"] for r in rows)
    lines.append(f"{'PASS' if checks[key] else 'FAIL'}  {key} ({', '.join(sorted({r['tokenization'] for r in rows}))})")
    ratios = []
    for q in sorted({r["quant"] for r in rows}):
        d, p = by.get(("dense", q)), by.get(("pruned", q))
        if d and p:
            ratios.append({"quant": q, "decode_ratio": p["decode_tps"] / d["decode_tps"], "prefill_ratio": p["prefill_tps"] / d["prefill_tps"],
                           "bytes_ratio": p["bytes"] / d["bytes"]})  # fmt: skip
            lines.append(f"pruned/dense {q}: decode speed x{ratios[-1]['decode_ratio']:.2f}, prefill x{ratios[-1]['prefill_ratio']:.2f}, "
                         f"bytes x{ratios[-1]['bytes_ratio']:.2f}")  # fmt: skip
    return {"checks": checks, "pruned_vs_dense": ratios, "lines": lines}


if __name__ == "__main__":
    sys.exit(main())

"""Bench: the default model (SmolLM2-135M) through ONNX and back in onnxruntime, dense and pruned.

Models: ``dense`` (the stock Llama) and ``pruned`` (the seeded random per-layer-width stand-in of
``_common.pruned_model``, the same as bench/gguf_roundtrip.py's: an ``edgeprune_llama``).
Quantizations: fp32, int8 (weight-only MatMulNBits), int8-dynamic (``quantize_dynamic``), int4
(MatMulNBits with export_onnx's default int4 options), blocks of 32; extra int4 rows may name
their options (``int4:lm_head=int4;symmetric=true``) to show the trade-offs. Per row: what the
weights store, file bytes, session load time, WikiText-2 perplexity in onnxruntime and torch on
the same token windows (``_common.ppl``), max relative logit difference on real text (prefill and
greedy decode steps with the cache), prefill / decode tokens/s in onnxruntime with torch eager's
beside them, and decode_vs_torch (the issue's "ORT fp32 decode >= torch eager" is its fp32 rows).

    python bench/onnx_roundtrip.py                                   # ~25 minutes on 1 core
    python bench/onnx_roundtrip.py --models dense --quants fp32 --windows 2 --out /tmp/onnx.json  # smoke

Writes ``bench/results/onnx_roundtrip.json`` (rewritten after every row, ``"complete": false``
until the end) and ``onnx_roundtrip.md`` (the table, then the figures the issue asks for).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import RESULTS, Checks, Results, add_pruned_args, ppl, ppl_setting, pruned_from_args, pruned_settings
from _common import read_json, valid_prompts, wikitext_test_ids

COLUMNS = ("model", "quant", "weights", "bytes", "load_s", "torch_ppl", "ort_ppl", "ppl_vs_fp32", "max_rel_logit_diff",
           "top1_agreement", "prefill_tps", "decode_tps", "torch_prefill_tps", "torch_decode_tps", "decode_vs_torch")  # fmt: skip
# perplexity budget against the float32 graph's (issue 5)
PPL_BUDGET = {"int8": 0.03, "int4": 0.08}
FP32_TOLERANCE = 1e-4
TITLE = "# onnx_roundtrip: SmolLM2-135M dense and pruned (per-layer widths) in onnxruntime"
UNPREFIXED = ("block_size",)  # row options that are export_onnx keywords as they stand


def parse_quant(spec: str) -> tuple[str, dict]:
    """``int4`` or ``int4:lm_head=int4,symmetric=true,block_size=16`` -> ("int4", {"int4_lm_head": "int4",
    "int4_symmetric": True, "block_size": 16}): keys are export_onnx's, ``int4_`` added where it has one."""
    quant, _, opts = spec.partition(":")
    kwargs = {}
    for item in filter(None, opts.split(",")):
        key, _, value = item.partition("=")
        value = int(value) if value.isdigit() else {"true": True, "false": False}.get(value.lower(), value)
        kwargs[key if key.startswith(quant) or key in UNPREFIXED else f"{quant}_{key}"] = value
    return quant, kwargs


# -- torch -----------------------------------------------------------------------------------------


def torch_reference(model, bench_prompts, steps: int) -> list[list[np.ndarray]]:
    """Per prompt: prefill logits (seq, vocab), then ``steps`` greedy decode logits (1, vocab)."""
    import torch
    from transformers import DynamicCache

    out = []
    for ids in bench_prompts:
        with torch.inference_mode():
            ref = model(torch.tensor([ids]), cache=DynamicCache(config=model.config), use_cache=True)
            seq = [ref.logits[0].float().numpy()]
            for _ in range(steps):
                nxt = ref.logits[:, -1:].argmax(-1)
                ref = model(nxt, cache=ref.cache, use_cache=True)
                seq.append(ref.logits[0].float().numpy())
        out.append(seq)
    return out


def torch_speed(model, prefill_ids, prompt_ids, n_gen: int, reps: int) -> dict:
    import torch
    from transformers import DynamicCache

    prefill, decode = [], []
    for rep in range(reps + 1):
        with torch.inference_mode():
            t = time.perf_counter()
            model(torch.tensor([prefill_ids]))
            p = time.perf_counter() - t
            out = model(torch.tensor([prompt_ids]), cache=DynamicCache(config=model.config), use_cache=True)
            t = time.perf_counter()
            for _ in range(n_gen):
                out = model(out.logits[:, -1:].argmax(-1), cache=out.cache, use_cache=True)
            d = time.perf_counter() - t
        if rep:  # the first pass warms caches and threads
            prefill.append(len(prefill_ids) / p)
            decode.append(n_gen / d)
    return {"prefill_tps": statistics.median(prefill), "decode_tps": statistics.median(decode)}


# -- onnxruntime -----------------------------------------------------------------------------------


def ort_forward(dec):
    def forward(ids):
        n = len(ids)
        logits, _ = dec.forward([ids], np.ones((1, n), np.int64), np.arange(n)[None])
        return logits[0]

    return forward


def ort_logit_diffs(dec, bench_prompts, reference) -> dict:
    """Max relative logit difference (max|ort - torch| / max|torch|) for prefill and for decode
    steps fed the same (torch-greedy) tokens through the graph's own cache; top-1 agreement."""
    pre, dec_rel, agree, total = 0.0, 0.0, 0, 0
    for ids, ref in zip(bench_prompts, reference):
        n = len(ids)
        logits, present = dec.forward([ids], np.ones((1, n), np.int64), np.arange(n)[None])
        pre = max(pre, float(np.abs(logits[0] - ref[0]).max() / np.abs(ref[0]).max()))
        agree += int((logits[0].argmax(-1) == ref[0].argmax(-1)).sum())
        total += n
        past = n
        for step_ref, prev in zip(ref[1:], ref[:-1]):
            nxt = int(prev[-1].argmax())
            logits, present = dec.forward([[nxt]], np.ones((1, past + 1), np.int64), [[past]], present)
            past += 1
            dec_rel = max(dec_rel, float(np.abs(logits[0] - step_ref).max() / np.abs(step_ref).max()))
            agree += int(logits[0, -1].argmax() == step_ref[-1].argmax())
            total += 1
    return {"prefill_rel_diff": pre, "decode_rel_diff": dec_rel, "top1_agreement": agree / total}


def ort_speed(dec, prefill_ids, prompt_ids, n_gen: int, reps: int) -> dict:
    from edgeprune.runtime.ort_generate import generate

    forward = ort_forward(dec)
    prefill, decode = [], []
    for rep in range(reps + 1):
        t = time.perf_counter()
        forward(prefill_ids)
        p = time.perf_counter() - t
        r = generate(dec, [prompt_ids], max_new_tokens=n_gen + 1)  # the first new token comes from the prefill
        if rep:
            prefill.append(len(prefill_ids) / p)
            decode.append(r.decode_tps)
    return {"prefill_tps": statistics.median(prefill), "decode_tps": statistics.median(decode)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quants", default="fp32,int8,int8-dynamic,int4",
                   help="comma-separated; an int4 row may name its options after a colon, ';'-separated: "
                        "int4:lm_head=int4;symmetric=true;algo=hqq;block_size=16")  # fmt: skip
    p.add_argument("--models", default="dense,pruned")
    p.add_argument("--windows", type=int, default=8, help="perplexity windows (the first N of WikiText-2 test)")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--block-size", type=int, default=32)
    p.add_argument("--exporter", default="torchscript", choices=("dynamo", "torchscript"),
                   help="torchscript by default: ~10x faster on 135M than dynamo (same graph maths, same size)")  # fmt: skip
    p.add_argument("--decode-steps", type=int, default=8, help="decode steps compared with torch per prompt")
    p.add_argument("--gen", type=int, default=64, help="tokens decoded for decode tokens/s (after a 128-token prompt)")
    p.add_argument("--reps", type=int, default=2, help="timed repetitions (median) after one warm-up")
    add_pruned_args(p)
    p.add_argument("--threads", type=int, default=None, help="onnxruntime and torch threads (default: half the cores)")
    p.add_argument("--out", default=str(RESULTS / "onnx_roundtrip.json"))
    p.add_argument("--md", default=None, help="markdown output (default: --out with .md)")
    p.add_argument("--merge", action="store_true",
                   help="keep the rows of --out that this run does not redo (same model, quant and options); "
                        "ppl_vs_fp32 then uses the kept fp32 row when fp32 is not rerun")  # fmt: skip
    p.add_argument("--rerender", action="store_true",
                   help="measure nothing: rewrite --out and its table from its rows, judging 'default' (the rows the "
                        "figures use) against export_onnx's defaults now")  # fmt: skip
    args = p.parse_args(argv)
    if args.rerender:
        return rerender(Path(args.out), args.md)

    import os

    from edgeprune.benchutil import command_line
    from edgeprune.eval import HFTokenizer, OnnxBackend, TorchBackend
    from edgeprune.threads import torch_threads
    from edgeprune.export.onnx import export_onnx
    from edgeprune.models import load
    from edgeprune.runtime.ort_generate import OrtDecoder

    # half the cores: on a shared 2-core host two OpenMP threads per engine oversubscribe it
    threads = args.threads or max(1, (os.cpu_count() or 2) // 2)
    quants = [s.replace(";", ",") for s in args.quants.split(",") if s]  # "a=1;b=2" keeps a row's options together
    dense, tok = load("smollm2-135m")
    pruned = pruned_from_args(dense, args)
    models = {k: v for k, v in {"dense": dense, "pruned": pruned}.items() if k in args.models.split(",")}
    hf_tok = HFTokenizer(tok)
    first = wikitext_test_ids(tok, args.seq_len)  # the first ppl window: the prefill of the speed runs
    bench_prompts = valid_prompts(tok, 4, 64)
    prompt128 = first[:128]
    settings = {
        "ppl": ppl_setting(args.windows, args.seq_len, "torch and onnxruntime"),
        "logits": f"{len(bench_prompts)} WikiText-2 valid lines of 64 tokens: prefill (all positions), then "
                  f"{args.decode_steps} greedy decode steps through each engine's own KV cache; "
                  "max_rel_logit_diff = max|ort - torch| / max|torch| over both",
        "speed": f"prefill = one {args.seq_len}-token window; decode = {args.gen} greedy tokens after a 128-token "
                 f"prompt (onnxruntime: edgeprune.runtime.ort_generate, CPU provider so no IO binding; torch "
                 f"eager: a DynamicCache loop); median of {args.reps} after a warm-up; decode_vs_torch = "
                 "decode_tps / torch_decode_tps",
        "weights": "what each quantization stores (from the export report): bits of the decoder MatMuls, "
                   "of the lm_head, and whether the 4-bit blocks have zero points (asym) or not (sym)",
        "threads": threads, "exporter": args.exporter, "block_size": args.block_size,
        "pruned": pruned_settings(pruned, dense, args),
    }  # fmt: skip
    n_layers = dense.config.num_hidden_layers  # the pruned stand-in keeps every layer
    kept = previous_rows(Path(args.out), n_layers) if args.merge else []
    if kept:
        settings["merged"] = ("rows this command does not rerun are kept from earlier runs with the same settings; "
                              "each row's 'command' says which run measured it")  # fmt: skip
    settings["layers"] = n_layers
    res = Results("onnx_roundtrip", args.out, md_path=args.md, columns=COLUMNS, settings=settings, rows=kept,
                  order=row_order, title=TITLE)  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="onnx-bench-") as tmp, torch_threads(threads):
        for name, model in models.items():
            t0 = time.perf_counter()
            torch_ppl = ppl(TorchBackend(model, hf_tok), windows=args.windows, seq_len=args.seq_len).ppl
            reference = torch_reference(model, bench_prompts, args.decode_steps)
            t_speed = torch_speed(model, first, prompt128, args.gen, args.reps)
            print(f"{name}: torch ppl {torch_ppl:.4f}, prefill {t_speed['prefill_tps']:.0f} t/s, decode "
                  f"{t_speed['decode_tps']:.1f} t/s ({time.perf_counter() - t0:.0f}s)", flush=True)  # fmt: skip
            fp32_ppl = next((r["ort_ppl"] for r in kept if row_key(r) == (name, "fp32", ())), None)
            for spec in quants:
                q, options = parse_quant(spec)
                path = Path(tmp) / f"{name}-{quants.index(spec)}"
                t0 = time.perf_counter()
                report = export_onnx(model, path, tokenizer=tok, quant=q, exporter=args.exporter, threads=threads,
                                     **{"block_size": args.block_size, **options})  # fmt: skip
                export_s = time.perf_counter() - t0
                backend = OnnxBackend.from_file(path / "model.onnx", hf_tok, threads=threads, batch_tokens=args.seq_len)
                ort_ppl = ppl(backend, windows=args.windows, seq_len=args.seq_len).ppl
                del backend
                dec = OrtDecoder(path, threads=threads)
                fp32_ppl = ort_ppl if q == "fp32" else fp32_ppl
                diffs = ort_logit_diffs(dec, bench_prompts, reference)
                speed = ort_speed(dec, first, prompt128, args.gen, args.reps)
                r = {
                    "model": name, "quant": q, "options": options, "weights": report.weights,
                    "bytes": report.bytes, "load_s": dec.load_s,
                    "torch_ppl": torch_ppl, "ort_ppl": ort_ppl,
                    "ppl_vs_fp32": (ort_ppl / fp32_ppl - 1) if fp32_ppl else None,
                    "max_rel_logit_diff": max(diffs["prefill_rel_diff"], diffs["decode_rel_diff"]),
                    "prefill_rel_diff": diffs["prefill_rel_diff"], "decode_rel_diff": diffs["decode_rel_diff"],
                    "top1_agreement": diffs["top1_agreement"],
                    "prefill_tps": speed["prefill_tps"], "decode_tps": speed["decode_tps"],
                    "torch_prefill_tps": t_speed["prefill_tps"], "torch_decode_tps": t_speed["decode_tps"],
                    "decode_vs_torch": speed["decode_tps"] / t_speed["decode_tps"],
                    "export_s": export_s, "exporter": report.exporter, "verified": report.verified,
                    "verify_max_rel_diff": report.verify.max_rel_diff, "block_size": report.block_size,
                    "quantization": report.quantization, "genai_config": report.genai_config,
                    "command": command_line(),
                }  # fmt: skip
                r["default"] = is_default(r, n_layers)
                res.add(r, key=row_key)
                print(f"{name} {spec}: {r['bytes'] / 1e6:.1f} MB, ppl {ort_ppl:.4f} (torch {torch_ppl:.4f}), max rel logit "
                      f"diff {r['max_rel_logit_diff']:.2e}, prefill {r['prefill_tps']:.0f} t/s, decode {r['decode_tps']:.1f} "
                      f"t/s (export {export_s:.0f}s)", flush=True)  # fmt: skip
                del dec

    print(res.finish(figures_of(res.rows)))
    print(f"wrote {res.json_path} and {res.md_path}")
    return 0


def row_order(r: dict) -> tuple:
    from edgeprune.export.onnx.api import QUANTS

    return ({"dense": 0, "pruned": 1}.get(r["model"], 9), QUANTS.index(r["quant"]) if r["quant"] in QUANTS else 9,
            not r.get("default", True))  # fmt: skip


def rerender(out: Path, md: str | None) -> int:
    doc = read_json(out)
    settings = doc["settings"]
    rows = previous_rows(out, settings.get("layers") or len(settings["pruned"]["heads"]))
    res = Results("onnx_roundtrip", out, md_path=md, columns=COLUMNS, settings=settings, rows=rows, order=row_order,
                  title=TITLE)  # fmt: skip
    print(res.finish(figures_of(res.rows)))
    return 0


def row_key(r: dict) -> tuple:
    return r["model"], r["quant"], tuple(sorted(r.get("options", {}).items()))


def is_default(r: dict, n_layers: int) -> bool:
    """Whether a row's quantization (the settings its export report recorded) is what export_onnx
    does by default now: the rows the issue's figures judge. Reports from before an option existed
    lack it and ran what is its "off" value now (rtn, accuracy level 4)."""
    from edgeprune.export.onnx import OnnxExportConfig
    from edgeprune.export.onnx.api import DEFAULT_INT4_ALGO

    d, quant, q = OnnxExportConfig(), r["quant"], r.get("quantization")
    if quant in ("fp32", "int8-dynamic"):
        return True
    if quant == "int8":
        return r.get("block_size") == d.block_size
    if q is None or q.get("block_size") != d.block_size:
        return False
    algo = d.int4_algo or DEFAULT_INT4_ALGO
    symmetric = algo == "rtn" if d.int4_symmetric is None else d.int4_symmetric
    return (q.get("algo", "rtn"), q["symmetric"], q["lm_head"], q.get("mix"), q.get("embedding"), q.get("eight_bit_layers"),
            q.get("accuracy_level", 4)) == (algo, symmetric, d.int4_lm_head, d.int4_mix, d.int4_embedding,
            math.ceil(n_layers / 6) if d.int4_edge_layers is None else d.int4_edge_layers, d.int4_accuracy_level)  # fmt: skip


def previous_rows(path: Path, n_layers: int) -> list[dict]:
    """The rows of an earlier run, with the fields this version adds filled in where they can be
    derived (rows from before int4 options existed were run with the defaults of their time), and
    ``default`` judged against today's defaults."""
    doc = read_json(path)
    rows = doc.get("rows", [])
    for r in rows:
        r.setdefault("command", doc.get("command"))
        r.setdefault("options", {})
        r["default"] = is_default(r, n_layers)
        r.setdefault("decode_vs_torch", r["decode_tps"] / r["torch_decode_tps"])
        if "weights" not in r:
            r["weights"] = {"fp32": "fp32", "int8": "int8 sym b32", "int8-dynamic": "int8 per channel, activations int8 per tensor",
                            "int4": "int4 sym b32, lm_head int8"}.get(r["quant"])  # fmt: skip
    return rows


def figures_of(rows: list[dict]) -> Checks:
    """The issue's figures: fp32 logits within 1e-4, int8/int4 ppl budgets (default settings; other
    variants are info lines), ORT fp32 decode >= torch eager."""
    checks = Checks()
    for r in rows:
        m, q = r["model"], r["quant"]
        if q == "fp32":
            checks.check(f"{m} fp32 onnxruntime vs torch max relative logit difference <= 1e-4 (prefill and decode)",
                         r["prefill_rel_diff"] <= FP32_TOLERANCE and r["decode_rel_diff"] <= FP32_TOLERANCE,
                         f"prefill {r['prefill_rel_diff']:.2e}, decode {r['decode_rel_diff']:.2e}")  # fmt: skip
            checks.check(f"{m} fp32 onnxruntime decode tokens/s >= torch eager", r["decode_tps"] >= r["torch_decode_tps"],
                         f"{r['decode_tps']:.1f} vs {r['torch_decode_tps']:.1f} t/s, x{r['decode_vs_torch']:.2f} "
                         f"(prefill {r['prefill_tps']:.0f} vs {r['torch_prefill_tps']:.0f})")  # fmt: skip
        elif q in PPL_BUDGET and r["default"] and r["ppl_vs_fp32"] is not None:
            checks.check(f"{m} {q} ppl within {PPL_BUDGET[q]:.0%} of fp32", r["ppl_vs_fp32"] <= PPL_BUDGET[q],
                         f"{r['ort_ppl']:.3f} ({r['ppl_vs_fp32']:+.2%}), {r['bytes'] / 1e6:.0f} MB, {r['weights']}; "
                         f"decode {r['decode_tps']:.1f} t/s (torch eager {r['torch_decode_tps']:.1f} in the same run)")  # fmt: skip
        elif r["ppl_vs_fp32"] is not None:
            checks.info(f"{m} {q} {r['weights']}: ppl {r['ort_ppl']:.3f} ({r['ppl_vs_fp32']:+.2%} vs fp32), "
                        f"{r['bytes'] / 1e6:.0f} MB, decode {r['decode_tps']:.1f} t/s")  # fmt: skip
    return checks


if __name__ == "__main__":
    sys.exit(main())

"""Bench: llama.cpp quantization with and without an importance matrix (issue 21 item 3).

The default model (SmolLM2-135M) is exported to GGUF by edgeprune's exporter in each type, once
plainly and once with an importance matrix (``export/gguf/imatrix.py``: per-input-channel mean of
x^2 of every matrix) computed from the ``general`` calibration text (C4, Wikipedia, Gutenberg:
``--calib-windows`` x ``--calib-seq-len`` tokens, seed 0; never WikiText). Every file is scored by
llama.cpp (edgeprune.eval's LlamaCppBackend, the same token ids for every file) on two texts it was
not calibrated on: WikiText-2 test and tiny-shakespeare, the first ``--windows`` non-overlapping
windows of ``--seq-len`` tokens each. ``ratio_*`` is ppl over the dense F16 GGUF's on that text.

q4_k_m is also quantized with an imatrix from the build's calibration draw (the step policy's
default 64 windows x 128 tokens of the same source), what ``edgeprune build`` with
``export: {imatrix: true}`` uses.

    python bench/imatrix.py                                   # ~6 min a row on a busy shared 2-core host
    python bench/imatrix.py --types q4_k_m,q4_0 --resume      # score only the rows --out lacks
    python bench/imatrix.py --types q4_k_m --windows 2 --out /tmp/imatrix.json   # smoke run

Writes ``bench/results/imatrix.json`` and ``imatrix.md``. GGUF files and the imatrix are kept in
``--work`` and reused by a rerun.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from _common import RESULTS, Checks, Results

COLUMNS = ("quant", "imatrix", "mib", "ppl_wikitext2", "ratio_wikitext2", "ppl_shakespeare", "ratio_shakespeare", "load_1m")
TEXTS = {"wikitext2": "WikiText-2 test (wiki.test.raw)", "shakespeare": "tiny-shakespeare (calib/tiny_shakespeare.txt)"}
BUILD_DRAW = (64, 128)  # data.calib_policy.DEFAULT: what a build's export step draws from its --calib source


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--types", default="q4_k_m,q4_0,q5_k_m,q3_k_m,q6_k")
    p.add_argument("--calib", default="general", help="imatrix text (default general; never the evaluation set)")
    p.add_argument("--calib-windows", type=int, default=64)
    p.add_argument("--calib-seq-len", type=int, default=512)
    p.add_argument("--no-build-draw", dest="build_draw", action="store_false", help="skip the q4_k_m row with the build's 64 x 128 draw")
    p.add_argument("--windows", type=int, default=8, help="perplexity windows per text")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", default="dist/imatrix-bench", help="GGUF files and the imatrix (reused by a rerun)")
    p.add_argument("--out", default=str(RESULTS / "imatrix.json"))
    p.add_argument("--resume", action="store_true", help="keep the rows --out holds from a run with the same settings; score the rest")
    args = p.parse_args(argv)

    from edgeprune.data.calib import calibration_windows
    from edgeprune.eval import HFTokenizer, LlamaCppBackend, PerplexityConfig, evaluate_perplexity
    from edgeprune.export.gguf import export_gguf
    from edgeprune.export.gguf.imatrix import collect_imatrix, read_imatrix, write_imatrix
    from edgeprune.models import load
    from edgeprune.threads import torch_threads

    types = [t for t in args.types.split(",") if t]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    loaded = load("smollm2-135m")
    tok = HFTokenizer(loaded.tokenizer)
    settings = {
        "model": "smollm2-135m (the packaged default)", "threads": args.threads,
        "imatrix": f"{args.calib}: {args.calib_windows} windows x {args.calib_seq_len} tokens, seed 0 (data.calib.calibration_windows)",
        "ppl": {name: f"{what}, read as one text, no BOS; first {args.windows} non-overlapping windows of {args.seq_len} "
                      "tokens, each scored alone by llama.cpp" for name, what in TEXTS.items()},
        "reference": "the dense model as an F16 GGUF, scored the same way",
        "export": "edgeprune export_gguf, verify=False (the scores are the check); K-quants and, with an imatrix, q4_0 "
                  "by llama.cpp's quantizer (llama-cpp-python's llama_model_quantize); plain q4_0 by gguf-py",
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()], "cores": len(os.sched_getaffinity(0)),
    }  # fmt: skip
    rows = _resumable_rows(Path(args.out), settings) if args.resume else []
    res = Results("imatrix", args.out, columns=COLUMNS, settings=settings, rows=rows,
                  title="# imatrix: llama.cpp quantization with and without an importance matrix (SmolLM2-135M)")  # fmt: skip
    done = {(r["quant"], r["imatrix"]) for r in rows}

    with torch_threads(args.threads):
        imatrices = {}
        draws = [(args.calib_windows, args.calib_seq_len)] + ([BUILD_DRAW] if args.build_draw and "q4_k_m" in types else [])
        for n, t in draws:
            path = work / f"imatrix-{args.calib}-{n}x{t}.gguf"
            if not path.is_file():
                t0 = time.perf_counter()
                windows = calibration_windows(loaded.tokenizer, args.calib, n_windows=n, seq_len=t, seed=0, model=loaded.model)
                write_imatrix(path, collect_imatrix(loaded.model, windows, progress=True))
                print(f"imatrix {n}x{t}: {time.perf_counter() - t0:.0f} s", flush=True)
            imatrices[f"{args.calib} {n}x{t}"] = path
        main_im = f"{args.calib} {args.calib_windows}x{args.calib_seq_len}"
        settings["imatrix_files"] = {k: {"file": str(v), **read_imatrix(v).describe()} for k, v in imatrices.items()}

        # q4_k_m first (the figure, then the build's draw), the other types after
        variants = [("f16", None)] + [(q, im) for q in types for im in (None, main_im, *[k for k in imatrices if k != main_im])
                                      if im in (None, main_im) or q == "q4_k_m"]  # fmt: skip
        variants.sort(key=lambda v: v[0] not in ("f16", "q4_k_m"))
        dense = {t: r[f"ppl_{t}"] for r in rows if r["quant"] == "f16" for t in TEXTS}
        for quant, im in variants:
            if (quant, im or "none") in done:
                continue
            path = work / f"model-{quant}{'-' + im.replace(' ', '-') if im else ''}.gguf"
            if not path.is_file():
                export_gguf(loaded.model, loaded.tokenizer, path, qtype=quant, source_gguf=loaded.source_gguf, verify=False,
                            imatrix=imatrices[im] if im else None, progress=False)  # fmt: skip
            row = {"quant": quant, "imatrix": im or "none", "mib": round(path.stat().st_size / 2**20, 1), "bytes": path.stat().st_size}
            load = os.getloadavg()[0]
            for text in TEXTS:
                backend = LlamaCppBackend(path, tok, n_ctx=args.seq_len, threads=args.threads)
                try:
                    rep = evaluate_perplexity(backend, PerplexityConfig(data=text, seq_len=args.seq_len,
                                                                        limit_tokens=args.windows * args.seq_len), progress=False)  # fmt: skip
                finally:
                    backend.close()
                row[f"ppl_{text}"], row[f"tokens_{text}"] = rep.ppl, rep.tokens
                if quant == "f16":
                    dense[text] = rep.ppl
                row[f"ratio_{text}"] = rep.ppl / dense[text]
            row["load_1m"] = round(max(load, os.getloadavg()[0]), 2)
            print(f"{quant} imatrix={im or 'none'}: " + ", ".join(f"{t} {row[f'ppl_{t}']:.3f} (x{row[f'ratio_{t}']:.4f})" for t in TEXTS), flush=True)
            res.add(row)

    settings["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(res.finish(figures_of(res.rows, main_im)))
    print(f"wrote {res.json_path} and {res.md_path}")
    return 0


def _resumable_rows(path: Path, settings: dict) -> list[dict]:
    """The rows of an earlier run at ``path`` whose imatrix and perplexity settings equal these ([] otherwise)."""
    import json

    if not path.is_file():
        return []
    old = json.loads(path.read_text()).get("settings", {})
    same = all(old.get(k) == settings[k] for k in ("model", "imatrix", "ppl", "reference", "threads"))
    return json.loads(path.read_text())["rows"] if same else []


def figures_of(rows: list[dict], main_im: str) -> Checks:
    checks = Checks()
    by = {(r["quant"], r["imatrix"]): r for r in rows}
    for quant in dict.fromkeys(r["quant"] for r in rows if r["quant"] != "f16"):
        plain, weighted = by.get((quant, "none")), by.get((quant, main_im))
        if plain is None or weighted is None:
            continue
        detail = "; ".join(f"{t} x{plain[f'ratio_{t}']:.4f} -> x{weighted[f'ratio_{t}']:.4f}" for t in TEXTS)
        lower = all(weighted[f"ratio_{t}"] < plain[f"ratio_{t}"] for t in TEXTS)
        if quant == "q4_k_m":
            checks.check("q4_k_m ppl ratio lower with the imatrix than without, on both texts", lower, detail)
        else:
            checks.info(f"{quant}: {'lower' if lower else 'NOT lower on both'} with the imatrix: {detail}")
    for r in rows:
        if r["quant"] == "q4_k_m" and r["imatrix"] not in ("none", main_im):
            checks.info(f"q4_k_m with the build's draw ({r['imatrix']}): " + "; ".join(f"{t} x{r[f'ratio_{t}']:.4f}" for t in TEXTS))
    return checks


if __name__ == "__main__":
    sys.exit(main())

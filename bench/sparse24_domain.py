"""Is a 2:4 recipe trained on WikiText-2 *validation* text better, or only better at Wikipedia?

The best 2:4 recipe of ``bench/sparse24.py`` (SparseGPT masks inside local reconstruction, then
AST) calibrates and trains on WikiText-2 validation windows and is scored on WikiText-2 *test*: the
same domain. This bench scores the same models on text none of them saw, beside the in-domain
figure, so an in-domain gain cannot pass for a general one:

- ``ppl``: WikiText-2 test, the first ``--ppl-windows`` windows of 1024 tokens (as sparse24);
- ``ppl_ood``: tiny-shakespeare, the first ``--ppl-windows`` windows of 1024 tokens (never in the
  calibration or training text of the models given here; check each model's ``train_data``);
- ``acc_avg``: zero-shot accuracy over the seven tasks, ``--zs-limit`` docs per task.

    python bench/sparse24_domain.py --model recon=~/.cache/edgeprune/bench/sparse24-recon-<id>.pt \\
        --model ast=~/.cache/edgeprune/bench/sparse24-ast-<id>.final.pt

``--model label=path``: a ``torch.save``d ``{"model": ...}`` dict as bench/sparse24.py caches them
(the dense model is always measured first). Rows: ``method`` (the label), ``ppl`` / ``dense_ppl`` /
``ppl_ratio``, ``ppl_ood`` / ``dense_ppl_ood`` / ``ppl_ood_ratio``, ``acc_avg``, ``eval_s``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _common import DATA, RESULTS, Results, peak_rss_mb  # bench/ is on sys.path when these run

COLUMNS = ("method", "ppl", "dense_ppl", "ppl_ratio", "ppl_ood", "dense_ppl_ood", "ppl_ood_ratio", "acc_avg", "eval_s")
OOD = DATA.parent / "calib" / "tiny_shakespeare.txt"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="smollm2-135m", help="the dense model (built-in name or directory)")
    p.add_argument("--model", action="append", default=[], help="label=path of a cached model (repeatable)")
    p.add_argument("--ppl-windows", type=int, default=16)
    p.add_argument("--ood-text", default=str(OOD), help="the out-of-domain text (default tiny-shakespeare)")
    p.add_argument("--zs-limit", type=int, default=100, help="docs per zero-shot task (0: skip)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS / "sparse24_domain.json"))
    return p.parse_args(argv)


def measure(model, tok, args) -> dict:
    from edgeprune.eval import Evaluator, PerplexityConfig, ZeroShotConfig

    t0 = time.perf_counter()
    ev = Evaluator(model, tokenizer=tok, batch_tokens=2048, progress=False)
    n = args.ppl_windows * 1024
    row = {"ppl": ev.perplexity(PerplexityConfig(seq_len=1024, limit_tokens=n)).ppl,
           "ppl_ood": ev.perplexity(PerplexityConfig(data=args.ood_text, seq_len=1024, limit_tokens=n)).ppl}  # fmt: skip
    if args.zs_limit:
        res = ev.zeroshot(ZeroShotConfig(limit=args.zs_limit))
        row["acc"] = {r.task: round(r.acc, 4) for r in res}
        row["acc_avg"] = sum(r.acc for r in res) / len(res)
    row["eval_s"] = time.perf_counter() - t0
    return row


def main(argv=None) -> int:
    import torch

    from edgeprune.models import load
    from edgeprune.threads import torch_threads

    args = parse_args(argv)
    specs = [("dense", None)] + [tuple(m.split("=", 1)) for m in args.model]
    res = Results("sparse24_domain", args.out, columns=COLUMNS, title="# sparse24_domain: in-domain vs out-of-domain",
                  settings={"ppl": f"WikiText-2 test, first {args.ppl_windows} windows of 1024 tokens",
                            "ppl_ood": f"{Path(args.ood_text).name}, first {args.ppl_windows} windows of 1024 tokens",
                            "zeroshot": f"7 tasks, limit {args.zs_limit} docs per task (seed 1234)"})  # fmt: skip
    with torch_threads(args.threads):
        dense, tok = load(args.base)
        ref = None
        for label, path in specs:
            if path is None:
                model, extra = dense, {}
            else:
                saved = torch.load(Path(path).expanduser(), weights_only=False)
                model = saved["model"]
                extra = {"source": str(path), "train_data": (saved.get("report").train_data
                                                             if hasattr(saved.get("report"), "train_data") else None)}
            row = {"method": label, **extra, **measure(model.eval(), tok, args)}
            ref = ref or row
            row.update(dense_ppl=ref["ppl"], ppl_ratio=row["ppl"] / ref["ppl"], dense_ppl_ood=ref["ppl_ood"],
                       ppl_ood_ratio=row["ppl_ood"] / ref["ppl_ood"], peak_rss_mb=peak_rss_mb())  # fmt: skip
            res.add(row)
            print(f"{label}: wt2 {row['ppl']:.2f} (x{row['ppl_ratio']:.3f})  ood {row['ppl_ood']:.2f} "
                  f"(x{row['ppl_ood_ratio']:.3f})  acc_avg {row.get('acc_avg')}", flush=True)  # fmt: skip
            if model is not dense:
                del model
    print(res.finish())
    return 0


if __name__ == "__main__":
    sys.exit(main())

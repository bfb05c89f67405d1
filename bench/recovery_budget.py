"""Recovery by budget (issue 18 item 5): perplexity against tokens spent, out of domain, for a pruned
SmolLM2-135M recovered by ``step: recover`` (reconstruction first, then distillation) and by
distillation alone, on one budget.

One run per ``--mode`` (each its own process, so two modes can share the 2 cores one thread each):

    .venv/bin/python bench/recovery_budget.py --pruned DIR --mode recon+kd --tokens 600000
    .venv/bin/python bench/recovery_budget.py --pruned DIR --mode kd --tokens 600000

``--pruned``: a model ``edgeprune prune`` wrote (the rows' ``model``); calibration and training
text is ``general`` only (``--calib``), drawn by the ``recover`` step's policy; nothing is tuned on
an evaluation text. Every curve point scores the model in float32 torch on the first
``--ppl-windows`` windows of ``--ppl-seq-len`` tokens of WikiText-2 test (``ppl``) and of
tiny-shakespeare (``ppl_shakespeare``), each read as one text without BOS, and on the ``general``
text's held-out documents (``heldout_ppl``, 8 x 256 tokens: the step's own probe); the dense
model is scored once the same way. ``cpu_s`` is this process's CPU time (all its threads) since
the recovery began, probes included (``probe_cpu_s`` is theirs alone, ``recovery_cpu_s`` the rest). Rows merge into
``bench/results/recovery_budget.json`` keyed by (model, method, phase, tokens).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import RESULTS, merge_row, markdown, document

COLUMNS = ("model", "method", "phase", "tokens", "recovery_cpu_s", "ppl", "ppl_ratio", "ppl_shakespeare", "ppl_shakespeare_ratio",
           "heldout_ppl", "heldout_ratio", "acc_avg", "acc_avg_no_boolq", "params", "linear_ratio_fp32")  # fmt: skip
# mode -> Recover settings beyond the budget. sparse24 starts from the dense model: reconstruction chooses
# SparseGPT 2:4 masks block by block (lr 4e-3: the best in-loop setting of bench/results/reconstruct.md),
# distillation keeps them; its rows add an int4 (GPTQ) point with the packed file's linear-layer bytes
MODES = {"recon+kd": {}, "kd": {"recon_share": 0.0}, "sparse24": {"recon_prune": "sparsegpt", "recon_lr": 4e-3}}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pruned", default=None, help="a pruned model directory (edgeprune prune --out); mode sparse24 starts from the dense model")
    p.add_argument("--mode", choices=tuple(MODES), default="recon+kd")
    p.add_argument("--tokens", type=int, default=600_000, help="the budget (reconstruction + distillation tokens)")
    p.add_argument("--curve-points", type=int, default=6, help="probes during distillation")
    p.add_argument("--calib", default="general")
    p.add_argument("--ppl-windows", type=int, default=16)
    p.add_argument("--ppl-seq-len", type=int, default=1024)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS / "recovery_budget.json"))
    p.add_argument("--zs-limit", type=int, default=0, help="zero-shot docs per task (7 tasks) for the dense model and the final point (0: none)")
    p.add_argument("--plot-only", action="store_true", help="only redraw the plot beside --out from its rows")
    p.add_argument("--save", default=None, help="save the recovered model here (save_pretrained + tokenizer)")
    return p.parse_args(argv)


def _scorer(tokenizer, texts: tuple[str, ...], windows: int, seq_len: int):
    from edgeprune.eval import Evaluator, PerplexityConfig

    def score(model) -> dict:
        out = {}
        for text in texts:
            ev = Evaluator(model, tokenizer=tokenizer, batch_tokens=seq_len, progress=False)
            rep = ev.perplexity(PerplexityConfig(data=text, seq_len=seq_len, limit_tokens=windows * seq_len))
            out[text] = round(rep.ppl, 4)
        return out

    return score


def _zeroshot(model, tokenizer, limit: int) -> dict:
    """Zero-shot accuracy averaged over the seven tasks, and without BoolQ (a yes/no task a small model
    answers near its prior: it can hide or fake a change in the other six)."""
    from edgeprune.eval import Evaluator
    from edgeprune.eval.zeroshot import ZeroShotConfig

    results = Evaluator(model, tokenizer=tokenizer, progress=False).zeroshot(ZeroShotConfig(limit=limit))
    rest = [r.acc for r in results if r.task != "boolq"]
    return {"acc_avg": round(sum(r.acc for r in results) / len(results), 4), "acc_avg_no_boolq": round(sum(rest) / len(rest), 4),
            "acc": {r.task: round(r.acc, 4) for r in results}, "zs_limit": limit}  # fmt: skip


def _build(rows: list[dict], settings: dict):
    rows.sort(key=lambda r: (r["model"], r["method"] != "dense", r["method"], r["tokens"]))
    doc = document("recovery_budget", rows, settings=settings)
    notes = ["- `tokens`: spent so far (reconstruction: windows x 256 x epochs; distillation: steps x batch x 256)"]
    md = markdown(doc, COLUMNS, title="# recovery_budget: perplexity vs tokens spent, out of domain",
                  preface=[f"- {k}: {v}" for k, v in settings.items()], notes=notes)  # fmt: skip
    return doc, md


def plot(json_path: Path) -> Path:
    """``recovery_budget.png`` beside the JSON: ppl ratio against tokens spent, one line per (model, method)
    and text, the 25% and 2:4 figures' bounds dotted."""
    import json

    import matplotlib

    matplotlib.use("Agg")  # headless; does not touch the user's default backend elsewhere
    import matplotlib.pyplot as plt

    rows = json.loads(json_path.read_text())["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, (key, title, bound) in zip(axes, (("ppl_ratio", "WikiText-2 test", 1.30), ("ppl_shakespeare_ratio", "tiny-shakespeare", 1.40))):
        groups: dict[tuple, list] = {}
        for r in rows:
            # a 2:4 run starts from the dense model itself (its masks are chosen inside reconstruction): no point at 1.0
            starts_dense = r.get("phase") == "start" and r.get(key) == 1.0
            if r["method"] != "dense" and r.get("phase") != "int4" and r.get(key) is not None and not starts_dense:
                groups.setdefault((r["model"], r["method"]), []).append(r)
        for (model, method), rs in sorted(groups.items()):
            rs.sort(key=lambda r: r["tokens"])
            ax.plot([r["tokens"] / 1000 for r in rs], [r[key] for r in rs], marker="o", label=f"{model}: {method}")
        ax.axhline(bound, ls=":", c="grey", label=f"25% figure ({bound})")
        ax.axhline(1.60, ls=":", c="lightgrey", label="2:4 figure (1.6)")
        ax.set_title(f"{title} (out of domain)")
        ax.set_xlabel("recovery tokens spent (thousands)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("perplexity / dense perplexity")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    out = json_path.with_suffix(".png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    from edgeprune.threads import torch_threads

    a = parse_args(argv)
    if a.plot_only:
        print(plot(Path(a.out)))
        return 0
    with torch_threads(a.threads):  # restored afterwards
        return _run(a)


def _run(a) -> int:
    import torch

    from edgeprune.compress import StepContext
    from edgeprune.compress.recover import Recover, heldout_probe, recover
    from edgeprune.models import load

    dense = load("smollm2-135m")
    tok = dense.tokenizer
    if a.pruned is None and a.mode != "sparse24":
        raise SystemExit(f"--mode {a.mode} recovers a pruned model: pass --pruned DIR")
    pruned = load(a.pruned).model if a.pruned else load("smollm2-135m").model
    cfg = Recover(tokens=a.tokens, curve_points=a.curve_points, **MODES[a.mode])
    ctx = StepContext(tokenizer=tok, calib=a.calib, dense=dense.model, progress=False)
    calib = ctx.calibration(cfg, pruned) if cfg.recon_share > 0 else None
    train_windows = ctx.training(cfg, pruned)
    held, held_name = heldout_probe(tok, n_windows=cfg.probe_windows, seq_len=int(train_windows.ids.shape[1]))
    score = _scorer(tok, ("wikitext2", "shakespeare"), a.ppl_windows, a.ppl_seq_len)
    probe_cpu = [0.0]

    def probe(model) -> dict:
        c0 = time.process_time()
        got = score(model)
        out = {"ppl": got["wikitext2"], "ppl_shakespeare": got["shakespeare"], **(held(model) if held else {})}
        probe_cpu[0] += time.process_time() - c0
        return {**out, "probe_cpu_s": round(probe_cpu[0], 1)}

    model_name = Path(a.pruned).name if a.pruned else "smollm2-135m-2:4"
    settings = {"calib": f"{a.calib} (recover policy: reconstruction {calib.source if calib is not None else '-'}; "
                         f"distillation {train_windows.source})",
                "eval": f"first {a.ppl_windows} x {a.ppl_seq_len} tokens of WikiText-2 test and tiny-shakespeare, float32 torch; "
                        f"heldout: {held_name}",
                "threads": a.threads}  # fmt: skip
    out = Path(a.out)
    dense.model.eval()
    with torch.no_grad():
        d = probe(dense.model)
        if a.zs_limit:
            d.update(_zeroshot(dense.model, tok, a.zs_limit))
    dense_row = {"model": "smollm2-135m", "method": "dense", "phase": "-", "tokens": 0, "cpu_s": 0.0, **d,
                 "params": sum(p.numel() for p in dense.model.parameters())}  # fmt: skip
    merge_row(out, {**dense_row, "ppl_ratio": 1.0, "ppl_shakespeare_ratio": 1.0, "heldout_ratio": 1.0},
              key=lambda r: (r["model"], r["method"], r["phase"], r["tokens"]), build=lambda rows: _build(rows, settings))
    probe_cpu[0] = 0.0
    params = sum(p.numel() for p in pruned.parameters())

    def ratios(point: dict) -> dict:
        r = {"ppl_ratio": point["ppl"] / d["ppl"], "ppl_shakespeare_ratio": point["ppl_shakespeare"] / d["ppl_shakespeare"]}
        if "heldout_ppl" in point and "heldout_ppl" in d:
            r["heldout_ratio"] = point["heldout_ppl"] / d["heldout_ppl"]
        return {k: round(v, 4) for k, v in r.items()}

    def write_point(point: dict) -> None:
        row = {"model": model_name, "method": a.mode, **point, **ratios(point), "params": params, "budget": a.tokens,
               "recovery_cpu_s": round(max(point["cpu_s"] - point["probe_cpu_s"], 0.0), 1)}  # fmt: skip
        merge_row(out, row, key=lambda r: (r["model"], r["method"], r["phase"], r["tokens"]),
                  build=lambda rows: _build(rows, settings))  # fmt: skip
        print(f"{a.mode} {point['phase']} {point['tokens']} tokens, {point['cpu_s']} CPU-s: wt2 x{row['ppl_ratio']:.3f} "
              f"shakespeare x{row['ppl_shakespeare_ratio']:.3f}", flush=True)  # fmt: skip

    model, rep = recover(pruned, cfg, dense=dense.model, calib=calib, train_windows=train_windows, probe=probe,
                         probe_name=held_name, on_point=write_point, progress=False)  # fmt: skip
    print(f"spent {rep.spent_tokens} tokens (reconstruction {rep.recon_tokens}, {rep.recon_cpu_s} CPU-s; distillation "
          f"{rep.train_tokens}, {rep.train_cpu_s} CPU-s), {rep.spent_cpu_s} CPU-s in all", flush=True)  # fmt: skip
    if a.zs_limit and rep.curve:
        model.eval()
        with torch.no_grad():
            zs = _zeroshot(model, tok, a.zs_limit)
        write_point({**rep.curve[-1], **zs})
    if a.save:
        model.save_pretrained(a.save)
        tok.save_pretrained(a.save)
    if a.mode == "sparse24":
        _int4_point(model, tok, ctx, probe, rep, write_point)
    plot(out)
    return 0


def _int4_point(model, tok, ctx, probe, rep, write_point) -> None:
    """GPTQ int4 (group 64, act-order; embedding int8) of the recovered 2:4 model, calibrated on the step
    context's text, scored like the curve; its bytes from the packed file (compress/sparse/packed.py)."""
    import copy
    import tempfile

    import torch

    from edgeprune.compress import compress
    from edgeprune.compress.quant.weights import WeightQuant
    from edgeprune.compress.sparse.packed import save_packed

    step = WeightQuant(bits=4, group_size=64, method="gptq")
    qmodel = copy.deepcopy(model)
    c0 = time.process_time()
    qmodel, _ = compress(qmodel, step, ctx=ctx)
    quant_cpu = time.process_time() - c0
    with tempfile.TemporaryDirectory() as tmp:
        packed = save_packed(qmodel, Path(tmp) / "a", nm=(2, 4), tokenizer=tok)
    qmodel.eval()
    with torch.no_grad():
        got = probe(qmodel)
    this_probe = got["probe_cpu_s"] - (rep.curve[-1]["probe_cpu_s"] if rep.curve else 0.0)
    write_point({"phase": "int4", "tokens": rep.spent_tokens, "cpu_s": round(rep.spent_cpu_s + quant_cpu + this_probe, 2), **got,
                 "quant": "int4 gptq g64", "bytes": packed.bytes_file, "bytes_ratio_fp32": round(packed.ratio_file_fp32, 3),
                 "linear_ratio_fp32": round(packed.ratio_linear_fp32, 3)})  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())

"""Structured pruning bench: Adapt-Pruner against its baselines on SmolLM2-135M.

    python bench/structured.py                      # untrained rows: dense + 4 methods x 3 targets
    python bench/structured.py --train-only         # Adapt-Pruner with recovery training (long)
    python bench/structured.py --tiny               # the whole pipeline on a tiny random model, in minutes

Rows: ``method`` (magnitude-uniform, taylor-uniform, flap, adapt; ``dense`` for the reference),
``target`` (fraction of decoder-block parameters removed: embeddings excluded), ``train_tokens``
(0 when untrained), ``ppl`` / ``dense_ppl`` / ``ppl_ratio`` (WikiText-2 test, windows of 1024
tokens, the first ``--ppl-windows`` windows of the tokenised test stream), ``acc_avg`` (zero-shot
accuracy averaged over the seven tasks, ``--zs-limit`` docs per task, lm-eval's seed), ``params``
(all parameters), ``block_params``, ``wall_s`` (calibration + pruning + training), ``peak_rss_mb``
(the whole row process, evaluation included) and ``prune_peak_rss_mb`` (at the end of pruning:
model, calibration, importance; evaluation not yet run).

Every row runs in its own process (so peak RSS is per row) with ``--threads`` torch threads;
results merge into ``bench/results/structured.json`` (rows already there are kept and skipped
unless ``--fresh``), with a markdown table and a plot of per-layer kept widths beside it.
Calibration (``--calib``) and training text (``--train-data``): text the dense model samples itself
(``self``, seeded, cached; the default), ``shakespeare``, ``wikitext2-valid`` or a file; never the
WikiText-2 test file (the evaluation set, refused by ``calibration_windows``). Rows carry ``calib``
(source and pool size) and, when trained, ``train_data``: rows with different data sit side by side.
``--seeds 1,2`` re-runs the planned rows with other draws (pool and per-mini-step windows).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import merge_row as _merge_row  # bench/ is on sys.path when these run
from _common import read_json as _read
from _common import with_dense_ratios

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
METHODS = ("magnitude-uniform", "taylor-uniform", "flap", "adapt")
TARGETS = (0.2, 0.35, 0.5)
COLUMNS = ("method", "calib", "target", "seed", "train_data", "train_tokens", "ppl", "dense_ppl", "ppl_ratio", "ppl_ood_ratio", "acc_avg", "params", "block_params",
           "removed_fraction", "wall_s", "peak_rss_mb", "prune_peak_rss_mb")  # fmt: skip


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--targets", default=",".join(map(str, TARGETS)))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--train-only", action="store_true", help="only the Adapt-Pruner rows with recovery training")
    p.add_argument("--train-targets", default="0.25", help="targets of the trained rows (the figure is at 0.25)")
    p.add_argument("--train-tokens", type=int, default=163840, help="recovery budget (tokens, all stages)")
    p.add_argument("--train-stages", type=int, default=5, help="prune-then-train stages (~5%% of parameters each)")
    p.add_argument("--train-pool", type=int, default=256, help="training windows, split evenly over the --train-data sources (repeated if fewer than the budget)")
    p.add_argument("--train-data", default="self", help="training text: comma-separated sources (self, shakespeare, wikitext2-valid, files)")
    p.add_argument("--train-lr", type=float, default=1e-4)
    p.add_argument("--train-kd-alpha", type=float, default=1.0, help="weight of the KD loss (1: KD only; CE gets 1 - alpha)")
    p.add_argument("--train-kd-temperature", type=float, default=1.0)
    p.add_argument("--train-curve", default="0.34,0.67", help="fractions of the last stage at which to measure a short ppl")
    p.add_argument("--train-curve-windows", type=int, default=4)
    p.add_argument("--recon", default=None, help="Reconstruct settings as JSON: the trained rows become adapt+recon: prune to "
                   "the target in one go, reconstruct locally against the dense model, then train (one stage)")  # fmt: skip
    p.add_argument("--recon-windows", type=int, default=512, help="reconstruction calibration windows (of --recon-seq-len, from --calib)")
    p.add_argument("--recon-seq-len", type=int, default=256)
    p.add_argument("--calib", default="self", help="calibration source (self, shakespeare, wikitext2-valid or a file)")
    p.add_argument("--calib-pool", type=int, default=64, help="calibration windows in the pool")
    p.add_argument("--calib-windows", type=int, default=32, help="windows per calibration pass / mini-step")
    p.add_argument("--calib-dtype", default="bfloat16", help="autocast dtype of the calibration passes (float32 to disable)")
    p.add_argument("--adapt-separate", action="store_true",
                   help="one Adapt-Pruner run per target (default: one run to the largest, snapshots at the others)")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--ppl-windows", type=int, default=8, help="WikiText-2 test windows of 1024 tokens (first N)")
    p.add_argument("--zs-limit", type=int, default=10, help="docs per zero-shot task (0: skip zero-shot)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS / "structured.json"))
    p.add_argument("--fresh", action="store_true", help="recompute rows already in the JSON")
    p.add_argument("--seeds", default="", help="re-run the planned rows with these calibration-draw seeds, e.g. 1,2 (noise check)")
    p.add_argument("--tiny", action="store_true", help="a tiny random model and tiny settings: check the pipeline")
    p.add_argument("--row", default=None, help=argparse.SUPPRESS)  # internal: run one row, print JSON
    args = p.parse_args(argv)
    if args.tiny:
        args.out = str(Path(args.out).with_name("structured_tiny.json"))
    return args


# -- one row (in its own process) ------------------------------------------------------------------------


def _tiny_model(tmp: Path):
    sys.path.insert(0, str(ROOT))
    from tests.tiny import save_tiny, tiny_llama

    path = tmp / "tiny-model"
    if not path.exists():
        save_tiny(tiny_llama(num_hidden_layers=6, intermediate_size=256, max_position_embeddings=4096), path)
    return str(path)


def _evaluate(model, tok, args, row: dict) -> None:
    from edgeprune.eval import Evaluator, PerplexityConfig, ZeroShotConfig

    t0 = time.perf_counter()
    ev = Evaluator(model, tokenizer=tok, batch_tokens=1024, progress=False)
    seq = 1024 if not args.tiny else 256
    ppl = ev.perplexity(PerplexityConfig(seq_len=seq, limit_tokens=args.ppl_windows * seq))
    row.update(ppl=ppl.ppl, ppl_tokens=ppl.tokens, ppl_seq_len=seq)
    if args.zs_limit:
        results = ev.zeroshot(ZeroShotConfig(limit=args.zs_limit))
        row["acc"] = {r.task: r.acc for r in results}
        row["acc_avg"] = sum(r.acc for r in results) / len(results)
        row["zs_limit"] = args.zs_limit
    row["eval_s"] = time.perf_counter() - t0


def _short_ppl(model, tok, args, windows: int, data: str = "wikitext2") -> float:
    """Perplexity on the first ``windows`` windows of ``data`` (WikiText-2 test or a text file), in eval mode."""
    from edgeprune.eval import Evaluator, PerplexityConfig

    seq = 1024 if not args.tiny else 256
    was = model.training
    model.eval()
    try:
        return Evaluator(model, tokenizer=tok, batch_tokens=1024, progress=False).perplexity(
            PerplexityConfig(data=data, seq_len=seq, limit_tokens=windows * seq)).ppl
    finally:
        model.train(was)


def _train_windows(tok, model, args):
    """``--train-pool`` windows split evenly over the ``--train-data`` sources (seed 1), concatenated."""
    import torch

    from edgeprune.data.calib import TokenWindows, calibration_windows

    sources = [x.strip() for x in args.train_data.split(",") if x.strip()]
    parts = [calibration_windows(tok, src, n_windows=args.train_pool // len(sources) + (i < args.train_pool % len(sources)),
                                 seq_len=args.seq_len, seed=1, model=model, progress=False)
             for i, src in enumerate(sources)]  # fmt: skip
    if len(parts) == 1:
        return parts[0]
    return TokenWindows(torch.cat([p.ids for p in parts]), " + ".join(p.source for p in parts))


def _calib_label(args) -> str:
    return f"{args.calib} ({args.calib_pool}x{args.seq_len})"


def _done(rep, gen_s: float, step) -> dict:
    return dict(
        wall_s=rep.wall_s, data_gen_s=gen_s, prune_peak_rss_mb=rep.peak_rss_mb,
        removed_fraction=rep.removed_fraction, kv_heads=rep.widths_after["kv_heads"],
        intermediate=rep.widths_after["intermediate"], layer_importance=rep.layer_importance,
        mini_steps=len(rep.mini_steps), calibration=rep.calibration, step=step.to_dict(),
        train=[{k: t[k] for k in ("stage", "steps", "tokens", "first_loss", "last_loss", "wall_s", "tokens_per_s")}
               for t in rep.train],
        train_losses=[{"stage": t["stage"], "losses": t["losses"]} for t in rep.train] or None,
    )  # fmt: skip


def run_row(spec: dict, args) -> list[dict]:
    """One row, or (``spec["snapshots"]``) one Adapt-Pruner run that gives a row per target."""
    import torch

    from edgeprune.compress import StructuredPrune, TrainConfig
    from edgeprune.data.calib import calibration_windows
    from edgeprune.compress.structured.budget import param_counts
    from edgeprune.compress.structured.prune import structured_prune
    from edgeprune.memory import peak_rss_mb
    from edgeprune.threads import torch_threads
    from edgeprune.models import load, to_per_layer

    rows = []
    with torch_threads(args.threads):
        source = _tiny_model(RESULTS / ".tiny") if args.tiny else args.model
        loaded = load(source)
        model, tok = to_per_layer(loaded.model), loaded.tokenizer
        del loaded
        if spec["method"] == "dense":
            row = dict(spec, wall_s=0.0, removed_fraction=0.0, kv_heads=model.config.kv_heads_per_layer(),
                       intermediate=model.config.intermediate_per_layer())  # fmt: skip
            block, total, nbytes = param_counts(model)
            row.update(params=total, block_params=block, bytes=nbytes)
            _evaluate(model, tok, args, row)
            row.update(peak_rss_mb=peak_rss_mb(), threads=torch.get_num_threads())
            return [row]
        t0 = time.perf_counter()
        calib = calibration_windows(tok, args.calib, n_windows=args.calib_pool, seq_len=args.seq_len,
                                    seed=int(spec.get("seed") or 0), model=model, progress=False)  # fmt: skip
        train = train_data = None
        extra = {}
        if spec["train_tokens"]:
            train = TrainConfig(tokens=spec["train_tokens"], batch_size=4, lr=args.train_lr, kd_alpha=args.train_kd_alpha,
                                kd_temperature=args.train_kd_temperature,
                                train_dtype=args.calib_dtype, freeze_embeddings=True)  # fmt: skip
            train_data = _train_windows(tok, model, args)
            extra["train_data_detail"] = train_data.describe()
            extra["train_curve_dense_ppl"] = _short_ppl(model, tok, args, args.train_curve_windows)  # the curve's reference
        gen_s = time.perf_counter() - t0
        if spec["method"].endswith("+recon"):
            return _recon_rows(model, tok, calib, train, train_data, extra, gen_s, spec, args)
        targets = sorted(spec.get("snapshots", []) + [spec["target"]])
        step = StructuredPrune(target=targets[-1], method=spec["method"], align=16 if args.tiny else 32,
                               calib_windows=args.calib_windows, calib_dtype=args.calib_dtype, stages=spec.get("stages", 1),
                               train=train, seed=spec.get("seed", 0))  # fmt: skip
        stages = step.stages
        marks = {}
        curve = []

        def on_train_log(stage, n, steps, rec, student):
            if stage != stages:
                return
            if not marks:
                marks.update({max(1, round(float(f) * steps)): f for f in args.train_curve.split(",") if f})
                marks[1] = 0.0  # just after the last cut (one step in)
            if n in marks:
                curve.append({"stage_step": n, "stage_steps": steps, "loss": rec["loss"],
                              "ppl": _short_ppl(student, tok, args, args.train_curve_windows)})  # fmt: skip

        snaps = {}
        tmpdir = tempfile.TemporaryDirectory()

        def on_snapshot(x, m, r):  # parked on disk, so the peak RSS of the run is not inflated by held models
            path = Path(tmpdir.name) / f"snap-{x}.pt"
            torch.save(m, path)
            snaps[x] = (path, r)

        model_final, rep = structured_prune(model, step, calib, train_data=train_data, progress=False,
                                            snapshots=tuple(targets[:-1]), on_snapshot=on_snapshot if targets[:-1] else None,
                                            on_train_log=on_train_log if train else None)  # fmt: skip
        snaps[targets[-1]] = (model_final, rep)
        for target, (pruned, prep) in sorted(snaps.items()):
            if isinstance(pruned, Path):
                pruned = torch.load(pruned, weights_only=False)
            snap_step = StructuredPrune.from_dict({**step.to_dict(), "target": target})
            row = dict(spec, target=target, **extra)
            if spec["method"] != "magnitude-uniform":  # magnitude uses no data
                row["calib"] = _calib_label(args)
            if spec["train_tokens"]:
                row["train_data"] = args.train_data
                row["calib"] = _calib_label(args)
            row.pop("snapshots", None)
            row.update(_done(prep, gen_s, snap_step))
            if len(targets) > 1:
                row["note"] = f"snapshot of one Adapt-Pruner run to {targets[-1]:g} (identical to a run to {target:g}); " \
                              "wall_s = time at which it was reached"
            if curve:
                row["train_curve"] = curve
                row["train_curve_note"] = (f"ppl on the first {args.train_curve_windows} WikiText-2 test windows during the "
                                           "last stage (its target is the final one)")
            block, total, nbytes = param_counts(pruned)
            row.update(params=total, block_params=block, bytes=nbytes)
            _evaluate(pruned, tok, args, row)
            row.update(peak_rss_mb=peak_rss_mb(), threads=torch.get_num_threads())
            rows.append(row)
    return rows


def _recon_rows(model, tok, calib, train_cfg, train_data, extra: dict, gen_s: float, spec: dict, args) -> list[dict]:
    """Prune to the target in one go, reconstruct against the dense model (bench/reconstruct.py's
    recipe), evaluate; then, with a budget, train (KD from the dense model) and evaluate again."""
    import copy

    import torch

    from edgeprune.compress import StructuredPrune
    from edgeprune.data.calib import calibration_windows
    from edgeprune.compress.reconstruct.local import Reconstruct, reconstruct
    from edgeprune.compress.structured.budget import param_counts
    from edgeprune.compress.structured.prune import structured_prune
    from edgeprune.memory import peak_rss_mb
    from edgeprune.compress.structured.recovery import train

    dense = copy.deepcopy(model)
    c0, w0 = time.process_time(), time.perf_counter()
    step = StructuredPrune(target=spec["target"], method=spec["method"].split("+")[0], align=16 if args.tiny else 32,
                           calib_windows=args.calib_windows, calib_dtype=args.calib_dtype, seed=spec.get("seed", 0))  # fmt: skip
    pruned, prep = structured_prune(model, step, calib, progress=False)
    del model
    prune_cpu = time.process_time() - c0
    rcalib = calibration_windows(tok, args.calib, n_windows=args.recon_windows, seq_len=args.recon_seq_len, seed=0,
                                 model=dense, progress=False)  # fmt: skip
    rcfg = Reconstruct(**json.loads(args.recon))
    pruned, rrep = reconstruct(pruned, rcfg, rcalib, dense=dense, progress=False)
    recon = {"recon_step": rcfg.to_dict(), "recon_calib": rcalib.describe(), "recon_wall_s": rrep.wall_s,
             "rel_mse_before": rrep.rel_mse_before, "rel_mse_after": rrep.rel_mse_after, "prune_cpu_s": prune_cpu,
             "recon_cpu_s": time.process_time() - c0 - prune_cpu}  # fmt: skip
    recon["dense_ppl_ood"] = _ood_ppl(dense, tok, args)  # the reference of ppl_ood, on the same windows
    base = dict(spec, calib=_calib_label(args), **_done(prep, gen_s, step), **recon)
    base.pop("stages", None)
    block, total, nbytes = param_counts(pruned)
    base.update(params=total, block_params=block, bytes=nbytes)
    rows = []
    row = dict(base, train_tokens=0, wall_s=time.perf_counter() - w0, cpu_s=time.process_time() - c0)
    _evaluate(pruned, tok, args, row)
    row["ppl_ood"] = _ood_ppl(pruned, tok, args)
    row.update(peak_rss_mb=peak_rss_mb(), threads=torch.get_num_threads())
    rows.append(row)
    if train_cfg is not None:
        curve = []
        marks = {}

        def on_log(n, steps, rec, student):
            if not marks:
                marks.update({max(1, round(float(f) * steps)): f for f in args.train_curve.split(",") if f})
            if n in marks:
                curve.append({"step": n, "steps": steps, "loss": rec["loss"], "ppl": _short_ppl(student, tok, args, args.train_curve_windows)})

        c1, w1 = time.process_time(), time.perf_counter()
        trep = train(pruned, train_data.ids, train_cfg, teacher=dense, progress=False, on_log=on_log)
        row = dict(base, **extra, train_data=args.train_data, train_step=train_cfg.to_dict(), train_curve=curve,
                   train_wall_s=time.perf_counter() - w1, train_cpu_s=time.process_time() - c1,
                   wall_s=rows[0]["wall_s"] + time.perf_counter() - w1, cpu_s=rows[0]["cpu_s"] + time.process_time() - c1,
                   train=[{k: getattr(trep, k, None) for k in ("steps", "tokens", "wall_s", "tokens_per_s")}])  # fmt: skip
        _evaluate(pruned, tok, args, row)
        row["ppl_ood"] = _ood_ppl(pruned, tok, args)
        row.update(peak_rss_mb=peak_rss_mb(), threads=torch.get_num_threads())
        rows.append(row)
    for r in rows:
        r["ppl_ood_ratio"] = r["ppl_ood"] / r["dense_ppl_ood"]
    return rows


def _ood_ppl(model, tok, args) -> float:
    """Perplexity on tiny-shakespeare (first ``--ppl-windows`` windows): text outside WikiText-2's domain,
    to tell a general recovery from in-domain adaptation when calibration / training text is WikiText-2."""
    from _common import DATA

    return _short_ppl(model, tok, args, args.ppl_windows, data=str(DATA.parent / "calib" / "tiny_shakespeare.txt"))


# -- driver ---------------------------------------------------------------------------------------------------


def plan(args) -> list[dict]:
    rows = [] if args.train_only else [{"method": "dense", "target": 0.0, "train_tokens": 0}]
    if not args.train_only:
        targets = sorted(map(float, args.targets.split(",")))
        for method in args.methods.split(","):
            if method == "adapt" and not args.adapt_separate and len(targets) > 1:
                rows.append({"method": method, "target": targets[-1], "train_tokens": 0, "snapshots": targets[:-1]})
                continue
            for target in targets:
                rows.append({"method": method, "target": target, "train_tokens": 0})
    seeds = [int(x) for x in args.seeds.split(",") if x] if args.seeds else []
    if seeds:  # calibration-draw noise: the planned rows once per seed (seed 0 = the rows without a seed)
        rows = [dict(r, seed=seed) if seed else r for seed in seeds for r in rows if r["method"] != "dense"]
    if args.train_only:
        for target in map(float, args.train_targets.split(",")):
            if args.recon is not None:  # prune in one go, reconstruct, train once (rows before and after training)
                rows.append({"method": "adapt+recon", "target": target, "train_tokens": args.train_tokens, "stages": 1})
            else:
                rows.append({"method": "adapt", "target": target, "train_tokens": args.train_tokens, "stages": args.train_stages})
    return rows


def _key(r: dict) -> tuple:
    return (r["method"], round(float(r["target"]), 4), int(r.get("train_tokens") or 0), int(r.get("seed") or 0),
            r.get("calib") or "", r.get("train_data") or "")


def _spec_key(spec: dict, target: float, args) -> tuple:
    """The key the row(s) of ``spec`` will have (so already-measured rows are skipped)."""
    row = dict(spec, target=target)
    if spec["method"] != "magnitude-uniform" and spec["method"] != "dense":
        row["calib"] = _calib_label(args)
    if spec["train_tokens"]:
        row.update(calib=_calib_label(args), train_data=args.train_data)
    return _key(row)


def _document(rows: list[dict], args) -> dict:
    extra = {
        "model": "tiny random llama (pipeline check)" if args.tiny else args.model,
        "settings": {
            "target_counts": "decoder-block parameters (attention, MLP, their norms); embeddings excluded",
            "ppl": f"WikiText-2 test (raw), windows of {256 if args.tiny else 1024} tokens, first {args.ppl_windows} windows",
            "zeroshot": f"7 tasks, limit {args.zs_limit} docs per task (seed 1234)",
            "calibration": f"per row (`calib`: source (pool windows x tokens)); {args.calib_windows} windows drawn from "
            f"the pool per pass / mini-step (seed = `seed`, blank = 0), matmuls in {args.calib_dtype}; magnitude uses no data",
            "adapt": "one run to the largest target; the smaller targets are snapshots of it (the same mini-steps a run "
            "to that target takes; wall_s = time at which each was reached)" if not args.adapt_separate else "one run per target",
            # rows were trained with different settings: each row's own, never this run's flags
            "training": "adapt rows: prune-then-train stages (5), each row's TrainConfig in `step.train`; adapt+recon rows: "
            "pruned to the target in one go, reconstructed locally against the dense model (`recon_step`, on `recon_calib`), "
            "then one training stage (`train_step`); both: AdamW WSD, KD from the dense model mixed with CE by kd_alpha, "
            "embeddings frozen, on windows of the row's `train_data` (sources and count: `train_data_detail`)",
            "threads": args.threads,
        },
    }  # fmt: skip
    try:
        from edgeprune.benchutil import bench_document

        return bench_document("structured", rows, **extra)
    except Exception:  # benchutil is new; fall back to the same shape
        import platform

        return {"bench": "structured", "command": " ".join(sys.argv), "machine": {"platform": platform.platform(),
                "cores": os.cpu_count()}, "versions": {"python": platform.python_version()}, **extra, "rows": rows}  # fmt: skip


def merge_row(path: Path, row: dict, args) -> dict:
    def build(rows: list[dict]) -> tuple[dict, str]:
        with_dense_ratios(rows, lambda r: r["method"] == "dense")
        order = {m: i for i, m in enumerate(("dense",) + METHODS)}
        rows.sort(key=lambda r: (r["target"], int(r.get("train_tokens") or 0), r.get("calib") or "", order.get(r["method"], 99),
                                 r.get("seed") or 0))  # fmt: skip
        doc = _document(rows, args)
        return doc, markdown(doc)

    doc = _merge_row(path, row, key=_key, build=build)
    try:
        plot(doc, path.with_name(path.stem + "_widths.png"))
    except Exception as exc:  # a plot failure must not lose the numbers
        print(f"plot failed: {exc}", file=sys.stderr)
    return doc


def markdown(doc: dict) -> str:
    def cell(v):
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    s = doc.get("settings", {})
    lines = [f"# structured pruning bench: {doc.get('model')}", ""]
    lines += [f"- {k}: {v}" for k, v in s.items()]
    lines += ["", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in doc["rows"]:
        lines.append("| " + " | ".join(cell(r.get(c)) for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def plot(doc: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in doc["rows"] if r["method"] != "dense" and not r.get("seed")]  # seed re-runs: table only
    dense = next((r for r in doc["rows"] if r["method"] == "dense"), None)
    targets = sorted({r["target"] for r in rows})
    if not targets:
        return
    fig, axes = plt.subplots(2, len(targets), figsize=(5 * len(targets), 7), squeeze=False, sharey="row")
    for j, t in enumerate(targets):
        for r in [r for r in rows if r["target"] == t]:
            label = r["method"] + (f" [{r['calib']}]" if r.get("calib") else "")
            label += f" +train {r['train_tokens'] // 1000}k tok ({r.get('train_data', 'self')})" if r.get("train_tokens") else ""
            ff0 = dense["intermediate"] if dense else [max(r["intermediate"])] * len(r["intermediate"])
            kv0 = dense["kv_heads"] if dense else [max(r["kv_heads"])] * len(r["kv_heads"])
            axes[0][j].plot([f / f0 for f, f0 in zip(r["intermediate"], ff0)], marker=".", label=label)
            axes[1][j].plot([k / k0 for k, k0 in zip(r["kv_heads"], kv0)], marker=".", label=label)
        axes[0][j].set_title(f"{t:.0%} of block parameters removed")
        axes[1][j].set_xlabel("layer")
    axes[0][0].set_ylabel("MLP width kept (fraction)")
    axes[1][0].set_ylabel("KV groups kept (fraction)")
    for ax in axes[0]:  # per panel: line colours follow each panel's own row order
        ax.legend(fontsize=6)
    fig.suptitle(f"Per-layer kept width: {doc.get('model')}")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.row:
        print("ROWS " + json.dumps(run_row(json.loads(args.row), args)), flush=True)
        return 0
    out = Path(args.out)
    done = {_key(r) for r in _read(out).get("rows", [])} if not args.fresh else set()
    passthrough = [a for a in (argv if argv is not None else sys.argv[1:])]
    for spec in plan(args):
        keys = [_spec_key(spec, t, args) for t in spec.get("snapshots", []) + [spec["target"]]]
        if all(k in done for k in keys):
            print(f"skip {spec} (already in {out})", flush=True)
            continue
        print(f"run {spec}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, *passthrough, "--row", json.dumps(spec)], capture_output=True,
                              text=True)  # fmt: skip
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("ROWS ")), None)
        if proc.returncode != 0 or line is None:
            print(f"FAILED {spec} (exit {proc.returncode}):\n{proc.stderr[-3000:]}", flush=True)
            continue
        for row in json.loads(line[5:]):
            doc = merge_row(out, row, args)
            r = next(x for x in doc["rows"] if _key(x) == _key(row))
            print(f"  {r['method']} {r['target']}: ppl {r['ppl']:.3f} (x{r.get('ppl_ratio', float('nan')):.3f}) "
                  f"acc_avg {r.get('acc_avg')} removed {r['removed_fraction']:.3f} prune {r['wall_s']:.0f}s "
                  f"[{time.perf_counter() - t0:.0f}s]", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

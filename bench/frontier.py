"""Budgeted-build frontier: the search `edgeprune build --max-ppl-ratio R` runs (plain quants of the
dense model with and without llama.cpp's importance matrix, Adapt-Pruner + local reconstruction at
several ratios from one pruning run, depth pruning + reconstruction), as a bench.

Writes ``bench/results/frontier.json`` (the standard ``{bench, command, machine, versions, rows}``),
``frontier.md`` (the table) and ``frontier.png`` (ppl ratio vs decode tok/s and vs MiB; plain
quantization in its own colour; the frontier drawn). The work lives in ``--out`` (a build directory):
a rerun reuses every finished candidate. Settings flags shrink the search on a small machine; a run
that uses fewer ratios, types or windows than the build's defaults is recorded as ``reduced``.

    .venv/bin/python bench/frontier.py                       # the build's default search
    .venv/bin/python bench/frontier.py --ratios 0.2 --depths 6 --types q8_0,q4_k_m --ppl-windows 2   # reduced
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from _common import RESULTS, document, write_results

COLUMNS = ("name", "method", "quant", "mib", "ppl_ratio_wikitext2", "ppl_ratio_shakespeare", "ppl_ratio",
           "decode_tps_measured", "decode_tps_predicted", "gap", "loadavg_1m", "meets", "frontier")  # fmt: skip


def main(argv=None) -> int:
    from edgeprune.pipeline import frontier as fr
    from edgeprune.pipeline.search import SearchConfig, skipped_text, check_search, frontier_plot, search

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model source (default: the embedded smollm2-135m)")
    p.add_argument("--target", default="host")
    p.add_argument("--max-ppl-ratio", type=float, default=1.10, help="the bound the choice is made under (default 1.10)")
    p.add_argument("--ratios", default="0.1,0.2,0.3")
    p.add_argument("--depths", default="3,6", help="decoder layers removed, one model each")
    p.add_argument("--no-imatrix", dest="imatrix", action="store_false", help="no importance-matrix candidates")
    p.add_argument("--types", default=None, help="comma-separated types (default: the format's 4- to 8-bit types)")
    p.add_argument("--ppl-windows", type=int, default=4)
    p.add_argument("--recon-epochs", type=int, default=None, help="Reconstruct epochs (default: the search's)")
    p.add_argument("--recon-windows", type=int, default=0, help="Reconstruct calib_windows (default: the search's)")
    p.add_argument("--prune-windows", type=int, default=None, help="Adapt-Pruner calib_windows per mini-step (default: the step's)")
    p.add_argument("--reps", type=int, default=3, help="profile repetitions per candidate")
    p.add_argument("--no-measure", dest="measure", action="store_false",
                   help="predict speed only: make and score every candidate (e.g. on a busy machine), measure later")
    p.add_argument("--remeasure", action="store_true", help="drop the cached speed measurements and take them again (quiet machine)")
    p.add_argument("--calib", default=None, help="calibration source (default: general where present, else self)")
    p.add_argument("--eval", dest="eval_data", default="wikitext2,shakespeare", help="held-out texts, comma-separated")
    p.add_argument("--out", default="dist/frontier", help="the search's build directory (its cache)")
    a = p.parse_args(argv)

    recon = SearchConfig().reconstruct  # the search's own (lighter than the step's defaults)
    if a.recon_epochs or a.recon_windows:
        recon = dataclasses.replace(recon, epochs=a.recon_epochs or recon.epochs, calib_windows=a.recon_windows or recon.calib_windows)
    prune = SearchConfig().prune
    if a.prune_windows:
        prune = dataclasses.replace(prune, calib_windows=a.prune_windows)
    cfg = SearchConfig(ratios=tuple(float(r) for r in a.ratios.split(",") if r), depths=tuple(int(d) for d in a.depths.split(",") if d),
                       imatrix=a.imatrix, reconstruct=recon, ppl_windows=a.ppl_windows, prune=prune,
                       types=tuple(a.types.split(",")) if a.types else None, reps=a.reps, measure=a.measure)  # fmt: skip
    bounds = fr.Bounds(max_ppl_ratio=a.max_ppl_ratio)
    default = dataclasses.replace(SearchConfig(), types=check_search(a.target, SearchConfig(), bounds)[1])
    reduced = [f"{k}: {getattr(cfg, k)} (build default {getattr(default, k)})" for k in ("ratios", "depths", "imatrix", "ppl_windows", "types", "reps")
               if getattr(cfg, k) is not None and getattr(cfg, k) != getattr(default, k)]  # fmt: skip
    if prune != default.prune:
        reduced.append(f"prune: calib_windows {prune.calib_windows} per mini-step (search default {default.prune.calib_windows})")
    if recon != default.reconstruct:
        reduced.append(f"reconstruct: epochs {recon.epochs}, calib_windows {recon.calib_windows} "
                       f"(search default {default.reconstruct.epochs}, {default.reconstruct.calib_windows})")  # fmt: skip
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    if a.remeasure:
        import shutil

        shutil.rmtree(Path(a.out) / "search" / "speed", ignore_errors=True)
    t0 = time.perf_counter()
    try:
        rep = search(a.target, bounds, cfg, model=a.model, out=a.out, calib=a.calib, eval_data=a.eval_data, resume=True)
    except fr.NoCandidate as exc:
        print(f"no candidate meets the bound: {exc}", file=sys.stderr)
        rep = json.loads((Path(a.out) / "report.json").read_text())
    run_s = time.perf_counter() - t0
    rows = []
    for c in rep["candidates"]:
        front = "/".join(k for k, f in (("speed", c["frontier_speed"]), ("bytes", c["frontier_bytes"])) if f)
        gap = "" if c["speed_gap"] is None else f"{c['speed_gap']:.0%}" + (" (!)" if c["gap_flag"] else "")
        rows.append({**{k: c[k] for k in ("name", "method", "quant", "ppl", "ppl_ratio", "decode_tps_measured",
                                          "decode_tps_predicted", "loadavg_1m", "meets")},
                     **{f"ppl_ratio_{t}": r for t, r in (c["ppl_ratios"] or {}).items()},
                     "mib": round(c["bytes"] / 2**20, 1), "bytes": c["bytes"], "gap": gap, "frontier": front,
                     "plain": c["plain"], "decode_tps": c["decode_tps"]})  # fmt: skip
    # seconds each cached piece took when it was made (a rerun from the cache makes none)
    pieces = [json.loads(m.read_text()) for m in sorted(Path(a.out, "search").rglob("manifest.json"))]
    walls = {m["name"]: m["wall_s"] for m in pieces}
    prune_s = max((m["figures"].get("prune_wall_s", 0.0) for m in pieces), default=0.0)  # the one Adapt-Pruner run
    doc = document("frontier", rows, piece_wall_s=walls, prune_run_wall_s=round(prune_s, 1),
                   total_wall_s=round(sum(walls.values()) + prune_s, 1), settings=cfg.settings(), reduced=reduced, bounds=rep["bounds"], verdict=rep["verdict"],
                   chosen=rep["chosen"], held_out=rep["held_out"], calibration=rep["calibration"], skipped=rep["skipped"],
                   reference=rep["reference"], speed=rep["speed"])  # fmt: skip
    notes = [f"Verdict at --max-ppl-ratio {a.max_ppl_ratio:g}: {rep['verdict']}",
             f"Held out: {rep['held_out']}. Calibration: {rep['calibration']}. Reference: {rep['reference']['what']}, "
             f"ppl {', '.join(f'{t} {v:.3f}' for t, v in rep['reference']['ppl'].items())}.", f"Speed: {rep['speed']}.",
             f"Made in {(sum(walls.values()) + prune_s) / 60:.1f} min: the Adapt-Pruner run {prune_s / 60:.1f} min, the "
             f"rest {sum(walls.values()) / 60:.1f} min (a shared 2-core machine: load average above); this run computed "
             f"{len(rep['computed'])} piece(s) and took {run_s:.1f} s (a rerun reads everything from the cache).",
             *([f"Not made: {skipped_text(rep)}."] if rep["skipped"] else []),
             *([rep["not_searched"] + "."] if rep.get("not_searched") else []),
             "REDUCED run: " + "; ".join(reduced) if reduced else "Full default search."]  # fmt: skip
    notes[1:1] = compressed_vs_plain(rows, a.max_ppl_ratio)
    write_results(doc, RESULTS / "frontier.json", RESULTS / "frontier.md", COLUMNS, notes=notes)
    frontier_plot([{**r, "frontier_speed": "speed" in r["frontier"], "frontier_bytes": "bytes" in r["frontier"]}
                   for r in rows], RESULTS / "frontier.png", bounds=bounds, chosen=rep["chosen"],
                  title="SmolLM2-135M budgeted-build frontier" + (" (reduced)" if reduced else ""))  # fmt: skip
    print(rep["verdict"])
    return 0


def compressed_vs_plain(rows: list[dict], bound: float) -> list[str]:
    """The issue's question in two sentences, from the rows: how far the best compressed candidate
    is from the bound, and what compression buys in speed and costs in quality next to plain quants."""
    comp = [r for r in rows if not r["plain"]]
    base = next((r for r in rows if r["name"] == "dense-q8_0"), None)
    if not comp or base is None:
        return []
    best = min(comp, key=lambda r: r["ppl_ratio"])
    fast = max(comp, key=lambda r: r["decode_tps"])
    plain_fast = max((r for r in rows if r["plain"]), key=lambda r: r["decode_tps"])

    def vs(r, key):
        return r[key] / base[key] if r.get(key) and base.get(key) else float("nan")

    miss = f"misses {bound:g} by {best['ppl_ratio'] / bound - 1:.0%}" if best["ppl_ratio"] > bound else f"meets {bound:g}"
    head = [f"Best compressed candidate: {best['name']} (worst ppl ratio {best['ppl_ratio']:.3f}) {miss}, decoding "
            f"{vs(best, 'decode_tps'):.2f}x dense q8_0; the fastest, {fast['name']}, decodes {vs(fast, 'decode_tps'):.2f}x "
            f"at {fast['ppl_ratio']:.3f}."]
    if best["ppl_ratio"] <= bound:
        return head
    return head + [
            f"Why it does not pay: quality, not speed. Speed on this host: {fast['name']} {vs(fast, 'decode_tps'):.2f}x dense q8_0, predicted {vs(fast, 'decode_tps_predicted'):.2f}x; "
            f"the fastest plain quant, {plain_fast['name']}, {vs(plain_fast, 'decode_tps'):.2f}x, predicted "
            f"{vs(plain_fast, 'decode_tps_predicted'):.2f}x. Quality: the mildest compression searched is already "
            f"{best['ppl_ratio']:.3f} on held-out text, where the bound is {bound:g}."]  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())

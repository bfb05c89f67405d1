"""Depth pruning bench (issue 18 item 3): SmolLM2-135M with whole decoder layers removed, in llama.cpp.

    python bench/depth.py                          # build, ppl and speed: remove 6 of 30 layers (~15 min on 2 cores)
    python bench/depth.py --remove 3,6,9           # more depths
    python bench/depth.py --speed-only             # only the speed part, from the models a build left in --workdir
    python bench/depth.py --remove 6,9 --speed-only   # ... of every row of 6 and 9 that was built (others left out)
    python bench/depth.py --remove 1 --ppl-windows 1 --recon-windows 4 --speed-reps 1 --out /tmp/d.json   # smoke run

Build (skipped per model where its GGUF is already in ``--workdir``, unless ``--fresh``): the dense
model; for each k in ``--remove`` and each ``--scores`` method, ``step: depth`` removes k layers,
scored on ``general`` calibration text (the project's data loaders over ../shared/data/general, never
WikiText); a ``+recon`` row then runs ``step: reconstruct`` against the dense model on its own
``general`` windows (the blocks next to each removed gap; their dense spans in the report). Every
model is saved under ``--workdir/models/NAME`` (loadable with ``edgeprune.models.load``) and
exported to GGUF ``--qtype`` (default q8_0) by edgeprune's exporter (read back and verified).

Rows: ``ppl_wt2`` (WikiText-2 test) and ``ppl_shakespeare`` (tiny-shakespeare), each on the first
``--ppl-windows`` x 1024 tokens through llama.cpp (:class:`edgeprune.eval.LlamaCppBackend`, the
project's GGUF scorer); ``*_ratio``: over the dense GGUF's. Speed: decode tokens/s of each GGUF
(``edgeprune.runtime.profile``, one fresh llama.cpp process per measurement, ``--prompt-tokens`` /
``--gen-tokens``), measured interleaved: each of ``--speed-reps`` rounds runs dense and every depth
model once, back to back, so a load that drifts hits all alike; ``decode_tps`` is the median over
rounds and ``decode_speedup`` the median over rounds of (model / dense in the same round).
``load_1m``: the highest 1-minute load average seen around a row's speed runs (this bench included).

Writes ``bench/results/depth.json`` and ``depth.md`` (rows rewritten as they come).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from _common import ROOT, RESULTS, Checks, Results, locked  # bench/ is on sys.path when these run

COLUMNS = ("name", "layers", "score", "recon", "removed", "params", "gguf_mb", "ppl_wt2", "ppl_wt2_ratio", "ppl_shakespeare",
           "ppl_shakespeare_ratio", "decode_tps", "decode_speedup", "load_1m", "build_s")  # fmt: skip
SPEEDUP_TARGET = 1.2  # the figure: >= 1.2x dense decode at the same GGUF type
FEWER_LAYERS = 0.2  # ... with >= 20% fewer layers


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--remove", default="6", help="comma-separated numbers of layers to remove (of 30)")
    p.add_argument("--scores", default="angular", help="comma-separated depth scores: angular, adapt, consecutive")
    p.add_argument("--no-recon", action="store_true", help="one-shot rows only")
    p.add_argument("--calib", default="general", help="calibration text for scoring and reconstruction (never WikiText)")
    p.add_argument("--calib-windows", type=int, default=64, help="depth-scoring windows (of --calib-seq-len)")
    p.add_argument("--calib-seq-len", type=int, default=128)
    p.add_argument("--recon-windows", type=int, default=64, help="reconstruction windows (of --recon-seq-len)")
    p.add_argument("--recon-seq-len", type=int, default=512)
    p.add_argument("--recon", default="{}", help="Reconstruct settings as JSON (default: the step's defaults)")
    p.add_argument("--qtype", default="q8_0")
    p.add_argument("--ppl-windows", type=int, default=8, help="windows of 1024 tokens per text")
    p.add_argument("--speed-reps", type=int, default=5, help="interleaved rounds (dense, then every depth model)")
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--gen-tokens", type=int, default=128)
    p.add_argument("--threads", type=int, default=2, help="torch and llama.cpp threads")
    p.add_argument("--workdir", default=str(ROOT / ".cache" / "bench-depth"), help="models and GGUFs (reused by later runs)")
    p.add_argument("--out", default=str(RESULTS / "depth.json"))
    p.add_argument("--speed-only", action="store_true", help="only re-time the GGUFs in --workdir (rows from --out)")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--fresh", action="store_true", help="rebuild models whose GGUF is already in --workdir")
    return p.parse_args(argv)


def plan(args) -> list[dict]:
    """The rows: dense, then per k and score a one-shot and (unless --no-recon) a reconstructed model."""
    rows = [{"name": "dense", "k": 0, "score": None, "recon": False}]
    for k in [int(x) for x in args.remove.split(",") if x]:
        for score in [s for s in args.scores.split(",") if s]:
            rows.append({"name": f"depth{k}-{score}", "k": k, "score": score, "recon": False})
            if not args.no_recon:
                rows.append({"name": f"depth{k}-{score}+recon", "k": k, "score": score, "recon": True})
    return rows


def gguf_path(work: Path, name: str, qtype: str) -> Path:
    return work / "gguf" / f"{name}.{qtype}.gguf"


def build(args, rows: list[dict], work: Path) -> dict[str, dict]:
    """Build (or reuse) every planned model and its GGUF; ``{name: facts}`` (layers, removed, params, wall)."""
    import copy

    import torch

    from edgeprune.compress import compress
    from edgeprune.compress.depth.config import Depth
    from edgeprune.compress.reconstruct.local import Reconstruct
    from edgeprune.export.gguf import export_gguf
    from edgeprune.models import load, save_model
    from edgeprune.steps import StepContext

    torch.set_num_threads(args.threads)
    facts_path = work / "facts.json"
    facts = json.loads(facts_path.read_text()) if facts_path.is_file() else {}
    todo = [r for r in rows if args.fresh or r["name"] not in facts or not gguf_path(work, r["name"], args.qtype).is_file()]
    if not todo:
        return facts
    loaded = load(args.model)
    dense, tok = loaded.model, loaded.tokenizer
    one_shot: dict[tuple, object] = {}
    recon_cfg = Reconstruct.from_dict(json.loads(args.recon))
    # in plan order; a +recon row starts from its one-shot model, rebuilt in memory when only the former is missing
    needed = {r["name"] for r in todo} | {r["name"].removesuffix("+recon") for r in todo if r["recon"]}
    for r in rows:
        name = r["name"]
        if name not in needed:
            continue
        t0 = time.perf_counter()
        info: dict = {"layers": dense.config.num_hidden_layers, "removed": [], "kept": None}
        if r["k"] == 0:
            model = dense
        elif not r["recon"]:
            ctx = StepContext(tokenizer=tok, calib=args.calib, calib_n_windows=args.calib_windows,
                              calib_seq_len=args.calib_seq_len, progress=False)  # fmt: skip
            model, rep = compress(copy.deepcopy(dense), Depth(layers=r["k"], score=r["score"]), ctx=ctx)
            one_shot[(r["k"], r["score"])] = model
            info.update(layers=rep.layers_after, removed=rep.removed, kept=rep.kept, scores=rep.scores,
                        calibration=rep.calibration, depth_s=rep.wall_s)  # fmt: skip
        else:
            base = one_shot[(r["k"], r["score"])]
            ctx = StepContext(tokenizer=tok, calib=args.calib, dense=dense, calib_n_windows=args.recon_windows,
                              calib_seq_len=args.recon_seq_len, progress=True)  # fmt: skip
            model, rep = compress(copy.deepcopy(base), recon_cfg, ctx=ctx)
            prev = facts[name.removesuffix("+recon")]
            info.update(layers=prev["layers"], removed=prev["removed"], kept=prev["kept"], recon_s=rep.wall_s,
                        recon_config=recon_cfg.to_dict(), recon_calibration=rep.calibration,
                        recon_blocks=[{k: s[k] for k in ("name", "rel_mse_before", "rel_mse_after", "trainable")}
                                      for s in rep.per_submodel if s["trainable"]])  # fmt: skip
        info["params"] = sum(p.numel() for p in model.parameters())
        if r["k"]:
            save_model(work / "models" / name, model, tok, source_gguf=loaded.source_gguf)
        path = gguf_path(work, name, args.qtype)
        path.parent.mkdir(parents=True, exist_ok=True)
        report = export_gguf(model, tok, path, qtype=args.qtype, source_gguf=loaded.source_gguf, progress=False)
        info.update(gguf_bytes=report.bytes, gguf_verified=report.verified, build_s=time.perf_counter() - t0)
        facts[name] = info
        with locked(facts_path):  # merge with what another run on the same workdir wrote meanwhile
            facts = {**(json.loads(facts_path.read_text()) if facts_path.is_file() else {}), name: info}
            facts_path.write_text(json.dumps(facts, indent=2) + "\n")
        print(f"{name}: {info['layers']} layers, removed {info['removed']}, {info['build_s']:.0f}s", flush=True)
    return facts


def perplexities(args, rows: list[dict], work: Path) -> dict[str, dict]:
    """``{name: {"wikitext2": ppl, "shakespeare": ppl}}`` of every GGUF through llama.cpp (cached in the workdir)."""
    from edgeprune.eval import HFTokenizer, LlamaCppBackend, PerplexityConfig, evaluate_perplexity
    from edgeprune.models import load

    cache_path = work / f"ppl.{args.qtype}.{args.ppl_windows}x1024.json"
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() and not args.fresh else {}
    hf_tok = None
    for r in rows:
        if r["name"] in cache:
            continue
        if hf_tok is None:
            hf_tok = HFTokenizer(load(args.model).tokenizer)
        backend = LlamaCppBackend(gguf_path(work, r["name"], args.qtype), hf_tok, n_ctx=1024, threads=args.threads)
        got = {}
        for data in ("wikitext2", "shakespeare"):
            rep = evaluate_perplexity(backend, PerplexityConfig(data=data, seq_len=1024, limit_tokens=args.ppl_windows * 1024),
                                      progress=False)  # fmt: skip
            got[data] = rep.ppl
        backend.close()
        cache[r["name"]] = got
        with locked(cache_path):  # another run on the same workdir may have added rows meanwhile: merge
            on_disk = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
            cache = {**on_disk, **cache}
            cache_path.write_text(json.dumps(cache, indent=2) + "\n")
        print(f"{r['name']}: ppl wikitext2 {got['wikitext2']:.3f}, shakespeare {got['shakespeare']:.3f}", flush=True)
    return cache


def speeds(args, rows: list[dict], work: Path) -> dict[str, dict]:
    """Interleaved decode timing: ``{name: {decode_tps, decode_speedup, load_1m, samples}}``."""
    from edgeprune.runtime.profile import profile

    samples: dict[str, list[float]] = {r["name"]: [] for r in rows}
    loads: dict[str, list[float]] = {r["name"]: [] for r in rows}
    for rnd in range(args.speed_reps):
        for r in rows:  # dense first in every round, then each depth model: back to back
            loads[r["name"]].append(os.getloadavg()[0])
            res = profile(str(gguf_path(work, r["name"], args.qtype)), runtime="llama.cpp", prompt_tokens=args.prompt_tokens,
                          gen_tokens=args.gen_tokens, reps=1, threads=args.threads)  # fmt: skip
            samples[r["name"]].append(res.runs[0]["decode_tps"])
            loads[r["name"]].append(os.getloadavg()[0])
        print(f"speed round {rnd + 1}/{args.speed_reps}: " + ", ".join(f"{n} {v[-1]:.1f}" for n, v in samples.items()), flush=True)
    dense = samples["dense"]
    return {n: {"decode_tps": statistics.median(v), "decode_speedup": statistics.median(a / b for a, b in zip(v, dense)),
                "load_1m": max(loads[n]), "samples": v} for n, v in samples.items()}  # fmt: skip


def main(argv=None) -> int:
    args = parse_args(argv)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    rows = plan(args)
    settings = {
        "model": args.model, "qtype": args.qtype, "calib": f"{args.calib}: {args.calib_windows} x {args.calib_seq_len} tokens (depth scores)",
        "recon": None if args.no_recon else {"windows": f"{args.recon_windows} x {args.recon_seq_len} tokens of {args.calib}",
                                             "config": json.loads(args.recon) or "the step's defaults"},
        "ppl": f"llama.cpp (edgeprune.eval.LlamaCppBackend), first {args.ppl_windows} x 1024 tokens of WikiText-2 test and of "
               "tiny-shakespeare, each read as one text, no BOS",
        "speed": f"edgeprune.runtime.profile llama.cpp, pp{args.prompt_tokens} / tg{args.gen_tokens}, {args.threads} threads, "
                 f"{args.speed_reps} interleaved rounds (median); decode_speedup = median over rounds of model / dense",
        "workdir": str(work),
    }  # fmt: skip
    old = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
    if args.speed_only:
        facts = json.loads((work / "facts.json").read_text())
        missing = [r["name"] for r in rows if r["name"] not in facts or not gguf_path(work, r["name"], args.qtype).is_file()]
        if "dense" in missing:
            raise SystemExit(f"--speed-only: no dense model in {work}: run without --speed-only first")
        if missing:  # times what was built (a run may have built the one-shot rows of a k only)
            print(f"--speed-only: not built, left out: {', '.join(missing)}", file=sys.stderr)
            rows = [r for r in rows if r["name"] not in missing]
        ppls = perplexities(args, rows, work)
    else:
        facts = build(args, rows, work)
        ppls = perplexities(args, rows, work)
    speed = {} if args.skip_speed else speeds(args, rows, work)
    if args.skip_speed and old:  # keep the speed figures of the last timed run
        speed = {r["name"]: {k: r.get(k) for k in ("decode_tps", "decode_speedup", "load_1m")} for r in old.get("rows", [])}
    res = Results("depth", args.out, columns=COLUMNS, settings=settings,
                  title="# depth: SmolLM2-135M with whole decoder layers removed (issue 18 item 3), GGUF in llama.cpp")  # fmt: skip
    dense_ppl = ppls["dense"]
    for r in rows:
        f, p, s = facts[r["name"]], ppls[r["name"]], speed.get(r["name"], {})
        res.add({
            "name": r["name"], "layers": f["layers"], "score": r["score"], "recon": r["recon"], "removed": f["removed"],
            "kept": f.get("kept"), "params": f["params"], "gguf_mb": round(f["gguf_bytes"] / 1e6, 1),
            "ppl_wt2": p["wikitext2"], "ppl_wt2_ratio": p["wikitext2"] / dense_ppl["wikitext2"],
            "ppl_shakespeare": p["shakespeare"], "ppl_shakespeare_ratio": p["shakespeare"] / dense_ppl["shakespeare"],
            "decode_tps": s.get("decode_tps"), "decode_speedup": s.get("decode_speedup"), "load_1m": s.get("load_1m"),
            "decode_samples": s.get("samples"), "build_s": round(f.get("build_s", 0.0), 1),
            "recon_blocks": f.get("recon_blocks"),
        })  # fmt: skip
    checks = Checks()
    n0 = facts["dense"]["layers"]
    for row in res.rows[1:]:
        if (n0 - row["layers"]) / n0 >= FEWER_LAYERS - 1e-9 and row["decode_speedup"] is not None:
            checks.check(f"{row['name']} decodes >= {SPEEDUP_TARGET}x dense ({args.qtype})", row["decode_speedup"] >= SPEEDUP_TARGET,
                         f"{row['decode_speedup']:.2f}x with {n0 - row['layers']} of {n0} layers removed, load_1m {row['load_1m']:.1f}; "
                         f"ppl WikiText-2 x{row['ppl_wt2_ratio']:.2f}, tiny-shakespeare x{row['ppl_shakespeare_ratio']:.2f} dense")  # fmt: skip
    checks.info(f"load average at the end: {os.getloadavg()[0]:.1f} (1 min), on {os.cpu_count()} cores")
    print(res.finish(checks))
    return 0


if __name__ == "__main__":
    sys.exit(main())

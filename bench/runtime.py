"""Bench: the default model (SmolLM2-135M) on this host, dense vs pruned vs 2:4, llama.cpp and onnxruntime.

Models: ``dense`` (stock), ``pruned`` (whole KV groups and MLP channels cut at random per layer with
``compress.cut.random_keep``, seeded, MLP widths multiples of 32, first and last 4 layers whole: the
stand-in of bench/gguf_roundtrip.py, tuned to remove ~25% of the block parameters) and ``2:4``
(magnitude 2:4 on every block Linear). GGUF and ONNX have no 2:4 storage, so the 2:4 model is
written dense (its zeros stored): same bytes and same speed as dense on a CPU, which has no 2:4
kernels. Formats: GGUF F16 / Q8_0 / Q4_0 in llama.cpp, ONNX FP32 / int8 / int4 (weight-only
MatMulNBits) in onnxruntime.

Every row is measured by the profiling harness (``edgeprune.runtime.profile``: a fresh process per
repetition, warm-up excluded, median of the repetitions) and predicted by the roofline cost model
(``edgeprune.devices.cost``) on the measured ``host`` profile, first with the default efficiency
and then calibrated: one bandwidth efficiency per (runtime, type) fitted on the dense rows only,
so the pruned and 2:4 rows are held-out predictions. The calibration is saved with the host
profile's cache (``edgeprune.devices.host.save_calibration``).

Two stages, so that only the timed part needs a quiet machine:

    /work/cpu-slot    python bench/runtime.py build --workdir /tmp/edgeprune-runtime   # artifacts (~20 min, 1 core)
    /work/cpu-slot -2 python bench/runtime.py time  --workdir /tmp/edgeprune-runtime   # timings (exclusive, 2 threads)
    python bench/runtime.py report --workdir /tmp/edgeprune-runtime   # re-derive predictions from the measured rows

Writes ``bench/results/runtime.json`` + ``runtime.md`` + ``runtime.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
COLUMNS = ("model", "runtime", "quant", "bytes", "weight_bytes_per_token", "prefill_tps", "decode_tps", "ttft_ms", "peak_rss_mb",
           "predicted_decode_tps", "measured_vs_predicted", "predicted_decode_tps_default",
           "measured_vs_predicted_default", "roofline_fraction")  # fmt: skip
GGUF_QUANTS = ("f16", "q8_0", "q4_0")
ONNX_QUANTS = ("fp32", "int8", "int4")
BLOCK_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# -- stage 1: artifacts ----------------------------------------------------------------------------


def block_params(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if ".layers." in n)


def sparsify_24(model):
    """A copy of ``model`` with magnitude 2:4 on every block Linear (weights zeroed in place)."""
    import copy

    import torch

    from edgeprune.compress.sparse.masks import magnitude_scores, nm_mask

    out = copy.deepcopy(model)
    with torch.no_grad():
        for name, mod in out.named_modules():
            if isinstance(mod, torch.nn.Linear) and name.rsplit(".", 1)[-1] in BLOCK_LINEARS:
                mod.weight.mul_(nm_mask(magnitude_scores(mod.weight), 2, 4).to(mod.weight.dtype))
    return out


def build(args) -> int:
    import torch

    from edgeprune.compress.structured.cut import cut_widths, random_keep
    from edgeprune.export.gguf import export_gguf
    from edgeprune.export.onnx import export_onnx
    from edgeprune.models import load, to_per_layer

    torch.set_num_threads(1)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    loaded = load("smollm2-135m")
    dense, tok = loaded
    n_layers = dense.config.num_hidden_layers
    keep = random_keep(to_per_layer(dense).config, attn_keep=args.attn_keep, mlp_keep=args.mlp_keep, seed=args.seed)
    pruned = cut_widths(dense, {i: k for i, k in keep.items() if args.protect <= i < n_layers - args.protect})
    models = {"dense": dense, "pruned": pruned, "2:4": sparsify_24(dense)}
    removed = 1 - block_params(pruned) / block_params(dense)
    pc = pruned.config
    manifest = {
        "pruned": {"method": "random whole KV groups and MLP channels per layer (compress.cut.random_keep)",
                   "attn_keep": args.attn_keep, "mlp_keep": args.mlp_keep, "seed": args.seed,
                   "layers_kept_whole": f"first and last {args.protect}", "block_params_removed": removed,
                   "heads": pc.heads_per_layer(), "kv_heads": pc.kv_heads_per_layer(), "mlp": pc.intermediate_per_layer()},
        "2:4": {"method": "magnitude 2:4 on q/k/v/o/gate/up/down of every layer; stored dense (GGUF and ONNX have no 2:4 type)"},
        "artifacts": [],
    }  # fmt: skip
    print(f"pruned: {removed:.1%} of block parameters removed", flush=True)
    for name, model in models.items():
        stem = name.replace(":", "")
        for q in args.gguf_quants.split(","):
            path = work / f"{stem}-{q}.gguf"
            if not path.exists():
                t0 = time.perf_counter()
                export_gguf(model, tok, path, qtype=q, source_gguf=loaded.path, progress=False, verify=False)
                print(f"{path.name}: {path.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t0:.0f}s", flush=True)
            manifest["artifacts"].append({"model": name, "runtime": "llama.cpp", "quant": q, "path": str(path)})
        for q in args.onnx_quants.split(","):
            path = work / f"{stem}-onnx-{q}"
            if not path.exists():
                t0 = time.perf_counter()
                export_onnx(model, path, tokenizer=tok, quant=None if q == "fp32" else q, verify=False, threads=1)
                print(f"{path.name}: in {time.perf_counter() - t0:.0f}s", flush=True)
            manifest["artifacts"].append({"model": name, "runtime": "onnxruntime", "quant": q, "path": str(path)})
    (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {work / 'manifest.json'}")
    return 0


# -- stage 2: timings ------------------------------------------------------------------------------


def onnx_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.suffix in (".onnx", ".data") or f.name.endswith(".onnx_data"))


def lookup_only_bytes(path: Path) -> int:
    """Bytes of tables a decoded token only looks one row up in (an input embedding not shared with
    the LM head): in the file, but not streamed per token. ONNX exports keep the embedding for
    ``Gather`` apart from the quantized LM head; an untied GGUF has ``token_embd`` beside ``output``."""
    if path.is_file() and path.suffix == ".gguf":
        from gguf import GGUFReader

        tensors = {t.name: t for t in GGUFReader(str(path)).tensors}
        return int(tensors["token_embd.weight"].n_bytes) if "output.weight" in tensors else 0
    import numpy as np
    import onnx
    from onnx import helper

    graph = onnx.load(str(path / "model.onnx"), load_external_data=False).graph
    sizes = {i.name: int(np.prod(i.dims)) * np.dtype(helper.tensor_dtype_to_np_dtype(i.data_type)).itemsize for i in graph.initializer}
    users: dict[str, set] = {}
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name in sizes:
                users.setdefault(name, set()).add((node.op_type, k))
    return sum(sizes[n] for n, u in users.items() if u == {("Gather", 0)})


def cost_of(art: dict, shapes: dict):
    """The cost model's view of one artifact: the model's shapes (from its F16 GGUF) with this
    file's bytes, less the lookup-only embedding table."""
    from edgeprune.devices.cost import artifact_cost

    path = Path(art["path"])
    info = dict(shapes[art["model"]])
    info["file_bytes"] = file_bytes(path) - lookup_only_bytes(path)
    info["dtype"] = art["quant"]
    return artifact_cost(info)


def file_bytes(path: Path) -> int:
    return path.stat().st_size if path.is_file() else onnx_bytes(path)


MEASURED = ("model", "runtime", "quant", "path", "bytes", "prefill_tps", "decode_tps", "decode_tps_min", "decode_tps_max",
            "ttft_ms", "peak_rss_mb", "load_s")  # fmt: skip


def time_all(args) -> int:
    """Stage 2: profile every artifact (the only part that needs the quiet machine), then derive."""
    from edgeprune.benchutil import command_line
    from edgeprune.devices import host as host_mod
    from edgeprune.runtime.profile import profile

    work = Path(args.workdir)
    manifest = json.loads((work / "manifest.json").read_text())
    arts = [a for a in manifest["artifacts"] if (not args.only or a["model"] in args.only.split(","))
            and (not args.runtimes or a["runtime"] in args.runtimes.split(","))]  # fmt: skip
    # the most telling rows first, so that a run cut short still holds them: GGUF dense and pruned,
    # ONNX dense and pruned, then the 2:4 rows (stored dense)
    arts.sort(key=lambda a: (a["model"] == "2:4", a["runtime"] != "llama.cpp", a["model"] != "dense"))
    t_start = time.perf_counter()
    # Measured on the quiet machine this stage runs on (the cache may hold a figure from a busy one).
    host = host_mod.measure_host(refresh=True)
    slot = os.environ.get("OMP_NUM_THREADS")  # /work/cpu-slot sets 2 for the exclusive slot, 1 for one core
    slot_note = {"2": "exclusive use of both cores (/work/cpu-slot -2)",
                 "1": "one core of two (/work/cpu-slot); the other core ran other agents' jobs"}.get(
        slot, "outside the CPU slots while both cores ran other agents' jobs (contended; short runs only)")  # fmt: skip
    timing = {"timed_command": command_line(), "host": host, "prompt_tokens": args.prompt_tokens,
              "cpu_slot": slot_note,
              "gen_tokens": args.gen_tokens, "reps": args.reps, "threads": args.threads}  # fmt: skip
    partial = Path(args.out).with_suffix(".partial.json")
    rows = []
    if args.append and Path(args.out).exists():  # keep the rows of an earlier run with the same settings
        old = json.loads(Path(args.out).read_text())
        t0 = old["settings"]["timing"]
        if (t0["prompt_tokens"], t0["gen_tokens"], t0["threads"]) != (args.prompt_tokens, args.gen_tokens, args.threads):
            raise SystemExit("--append needs the same --prompt-tokens, --gen-tokens and --threads as the rows in --out")
        new = {(a["model"], a["runtime"], a["quant"]) for a in arts}
        rows = [{k: r[k] for k in MEASURED if k in r} for r in old["rows"] if (r["model"], r["runtime"], r["quant"]) not in new]
        timing["earlier_runs"] = t0.get("earlier_runs", []) + [{k: t0[k] for k in ("timed_command", "timed_seconds", "reps", "cpu_slot") if k in t0}
                                                                | {"host_bandwidth_gbs": t0["host"]["bandwidth_gbs"]}]  # fmt: skip
    for art in arts:
        res = profile(art["path"], runtime=art["runtime"], prompt_tokens=args.prompt_tokens, gen_tokens=args.gen_tokens,
                      reps=args.reps, threads=args.threads)  # fmt: skip
        s = res.summary
        rows.append({
            "model": art["model"], "runtime": art["runtime"], "quant": art["quant"], "path": art["path"],
            "bytes": file_bytes(Path(art["path"])),
            "prefill_tps": s["prefill_tps"]["median"], "decode_tps": s["decode_tps"]["median"],
            "decode_tps_min": s["decode_tps"]["min"], "decode_tps_max": s["decode_tps"]["max"],
            "ttft_ms": s["ttft_ms"]["median"], "peak_rss_mb": s["peak_rss_mb"]["median"], "load_s": s["load_s"]["median"],
        })  # fmt: skip
        r = rows[-1]
        print(f"{art['model']:>6} {art['runtime']:<11} {art['quant']:<5} {r['bytes'] / 1e6:7.1f} MB  pp {r['prefill_tps']:7.1f}  "
              f"tg {r['decode_tps']:6.1f} t/s  rss {r['peak_rss_mb']:.0f} MiB", flush=True)  # fmt: skip
        # the raw measurements so far, should the run be cut short (`report --partial` derives from them)
        partial.write_text(json.dumps({"settings": {"timing": dict(timing, timed_seconds=time.perf_counter() - t_start)},
                                       "rows": rows, "complete": False}, indent=2) + "\n")  # fmt: skip
    timing["timed_seconds"] = time.perf_counter() - t_start
    code = derive(rows, timing, manifest, Path(args.out))
    partial.unlink(missing_ok=True)
    return code


def report(args) -> int:
    """Re-derive predictions, calibration and figures from the measured rows already in --out
    (no timing: e.g. after a change to the cost model)."""
    src = Path(args.out).with_suffix(".partial.json") if args.partial else Path(args.out)
    doc = json.loads(src.read_text())
    manifest = json.loads((Path(args.workdir) / "manifest.json").read_text())
    rows = [{k: r[k] for k in MEASURED if k in r} for r in doc["rows"]]
    return derive(rows, doc["settings"]["timing"], manifest, Path(args.out), complete=not args.partial)


def derive(rows: list[dict], timing: dict, manifest: dict, out: Path, *, complete: bool = True) -> int:
    """Cost-model predictions before / after calibration, roofline fractions, figures; write the results."""
    from edgeprune.benchutil import bench_document, write_bench
    from edgeprune.describe import describe
    from edgeprune.devices import host as host_mod
    from edgeprune.devices.cost import (DEFAULT_BW_EFFICIENCY, DEFAULT_COMPUTE_EFFICIENCY, calibrate_bandwidth,
                                        calibrate_compute, decode_bytes_per_token, fit_per_layer_overhead, predict)  # fmt: skip

    pp, tg = timing["prompt_tokens"], timing["gen_tokens"]
    hp = host_mod.host_profile()
    if hp.bandwidth_gbs != timing["host"]["bandwidth_gbs"]:
        print(f"warning: the host cache now says {hp.bandwidth_gbs} GB/s, the timed run measured "
              f"{timing['host']['bandwidth_gbs']} GB/s; using the timed run's figure", flush=True)  # fmt: skip
    bw = timing["host"]["bandwidth_gbs"] * 1e9
    shapes = {r["model"]: describe(r["path"]) for r in rows if r["runtime"] == "llama.cpp" and r["quant"] == "f16"}
    costs = []
    for r in rows:
        cost = cost_of(r, shapes)
        costs.append(cost)
        r["weight_bytes_per_token"] = cost.weight_bytes
        r["decode_bytes_per_token"] = decode_bytes_per_token(cost, prompt_tokens=pp, gen_tokens=tg)
        r["roofline_fraction"] = r["decode_tps"] * r["decode_bytes_per_token"] / bw

    # Before: the default efficiencies. After: one (bandwidth, compute) efficiency per (runtime, type),
    # fitted on the dense rows only; the pruned and 2:4 rows are held-out predictions.
    for r, cost in zip(rows, costs):
        pred = predict(hp, cost, prompt_tokens=pp, gen_tokens=tg, bw_efficiency=DEFAULT_BW_EFFICIENCY,
                       compute_efficiency=DEFAULT_COMPUTE_EFFICIENCY)  # fmt: skip
        r["predicted_decode_tps_default"] = pred.decode_tps
        r["measured_vs_predicted_default"] = r["decode_tps"] / pred.decode_tps
    # Per runtime, a fixed per-layer decode cost fitted across the dense rows' types (it does not
    # shrink when a model is pruned), then per type the bandwidth efficiency of the rest.
    dense = [(r, c) for r, c in zip(rows, costs) if r["model"] == "dense"]
    overhead = {}
    for rt in sorted({r["runtime"] for r, _ in dense}):
        pts = [(r["decode_tps"], c) for r, c in dense if r["runtime"] == rt]
        overhead[rt] = fit_per_layer_overhead(pts, prompt_tokens=pp, gen_tokens=tg) if len(pts) > 1 else 0.0
    calibration: dict[str, dict[str, dict[str, float]]] = {}
    bytes_only: dict[tuple, float] = {}
    for r, cost in dense:
        calibration.setdefault(r["runtime"], {})[r["quant"]] = {
            "bw_efficiency": calibrate_bandwidth([(r["decode_tps"], cost)], hp, prompt_tokens=pp, gen_tokens=tg,
                                                 per_layer_overhead_us=overhead[r["runtime"]]),
            "per_layer_overhead_us": overhead[r["runtime"]],
            "compute_efficiency": calibrate_compute([(r["prefill_tps"], cost)], hp, prompt_tokens=pp),
        }  # fmt: skip
        bytes_only[(r["runtime"], r["quant"])] = calibrate_bandwidth([(r["decode_tps"], cost)], hp, prompt_tokens=pp,
                                                                     gen_tokens=tg, per_layer_overhead_us=0.0)  # fmt: skip
    host_mod.save_calibration(calibration, note=f"bench/runtime.py, dense SmolLM2-135M, pp{pp}/tg{tg}, {timing['threads']} threads")
    hp = host_mod.host_profile()  # reloaded from the cache: now carries the calibration
    for r, cost in zip(rows, costs):
        pred = predict(hp, cost, prompt_tokens=pp, gen_tokens=tg, runtime=r["runtime"])
        r["predicted_decode_tps"] = pred.decode_tps
        r["measured_vs_predicted"] = r["decode_tps"] / pred.decode_tps
        r["predicted_prefill_tps"] = pred.prefill_tps
        r["prefill_measured_vs_predicted"] = r["prefill_tps"] / pred.prefill_tps
        r["calibration_fit"] = "in-sample" if r["model"] == "dense" else "held-out"
        if (r["runtime"], r["quant"]) in bytes_only:
            alt_tps = hp.bandwidth_gbs * 1e9 * bytes_only[(r["runtime"], r["quant"])] / r["decode_bytes_per_token"]
            r["measured_vs_predicted_bytes_only"] = r["decode_tps"] / alt_tps  # no fixed part: decode ~ 1 / bytes

    figures = figures_of(rows)
    settings = {
        "method": f"edgeprune.runtime.profile: pp{pp} / tg{tg}, {timing['reps']} repetitions each in a fresh process, "
                  "warm-up excluded, median (min/max in the JSON); random prompt token ids like llama-bench",
        "timed_under": timing.get("cpu_slot"), "timing": timing,
        "kv_cache": "llama.cpp: f16; onnxruntime: fp32",
        "bytes": "bytes = file size; weight_bytes_per_token = file size less lookup-only embedding tables (ONNX keeps the "
                 "fp32 input embedding for Gather apart from the quantized LM head)",
        "roofline": "decode_tps x (weight bytes + KV bytes at the mean context) / the host's measured copy bandwidth",
        "calibration": {"fit_on": "dense rows only: per runtime a fixed per-layer decode cost (least squares of "
                                  "s/token on bytes/token over its types), per runtime and type a bandwidth efficiency "
                                  "for the rest and a prefill compute efficiency",
                        "efficiency": calibration,
                        "bytes_only_alternative": "measured_vs_predicted_bytes_only: the same without a fixed part"},
        "models": {k: v for k, v in manifest.items() if k != "artifacts"},
        "note_2_4": "GGUF and ONNX store the 2:4 model dense (no 2:4 type; no 2:4 kernels on CPUs): same bytes, no speed-up",
    }  # fmt: skip
    doc = bench_document("runtime", rows, settings=settings, figures=figures, complete=complete)
    text = write_bench(doc, out, out.with_suffix(".md"), COLUMNS,
                       title="# runtime: SmolLM2-135M dense / pruned / 2:4 on this host, llama.cpp and onnxruntime")  # fmt: skip
    notes = [f"pp{pp} / tg{tg}, {timing['reps']} fresh-process repetitions per row (median), {timing['threads']} thread(s), "
             f"timing: {timing.get('cpu_slot')} ({timing['timed_seconds']:.0f} s); host copy bandwidth "
             f"{timing['host']['bandwidth_gbs']} GB/s. The 2:4 model is stored dense in GGUF and ONNX (no 2:4 type, "
             "no 2:4 CPU kernels): same bytes, no speed-up. Predictions: default efficiency, then calibrated on the "
             "dense rows (pruned and 2:4 rows held out)."]  # fmt: skip
    for run in timing.get("earlier_runs", []):
        notes.append(f"Earlier run merged with --append (its rows are kept where a later run did not re-measure them): "
                     f"`{run['timed_command']}` ({run['reps']} repetitions, host copy bandwidth then {run['host_bandwidth_gbs']} GB/s).")  # fmt: skip
    missing = sorted({a["model"] for a in manifest["artifacts"]} - {r["model"] for r in rows})
    if missing:
        notes.append(f"Not timed: {', '.join(missing)} (artifacts built; the 2:4 files are byte-for-byte the size of dense).")
    if any(e.get("compute_efficiency", 0) > 1 for types in calibration.values() for e in types.values()):
        notes.append(f"Compute efficiencies above 1: the host's measured fp32 peak ({timing['host']['fp32_tflops']} TFLOPS, a "
                     "numpy matmul on the busy machine) is below what llama.cpp / onnxruntime reach; it acts as a scale factor.")  # fmt: skip
    if not complete:
        notes.append(f"PARTIAL: the timed run was cut short; {len(rows)} rows measured (see settings.timing).")
    with out.with_suffix(".md").open("a") as fh:
        fh.write("\n" + "\n".join(notes) + "\n\n" + "\n".join(f"- {ln}" for ln in figures["lines"]) + "\n")
    plot(rows, out.with_suffix(".png"))
    print(text)
    print("\n".join(figures["lines"]))
    print(f"wrote {out}, {out.with_suffix('.md')}, {out.with_suffix('.png')}")
    return 0


def figures_of(rows: list[dict]) -> dict:
    """The issue's three figures, each as a check with the numbers behind it."""
    by = {(r["model"], r["runtime"], r["quant"]): r for r in rows}
    checks, lines, speedups = {}, [], []

    def check(key: str, ok: bool, detail: str) -> None:
        checks[key] = bool(ok)
        lines.append(f"{'PASS' if ok else 'FAIL'}  {key}: {detail}")

    for q in GGUF_QUANTS:
        d, p = by.get(("dense", "llama.cpp", q)), by.get(("pruned", "llama.cpp", q))
        if d and p:
            speed, byte_ratio = p["decode_tps"] / d["decode_tps"], d["bytes"] / p["bytes"]
            speedups.append({"quant": q, "decode_speedup": speed, "byte_ratio": byte_ratio, "share": speed / byte_ratio})
            best = p["decode_tps_max"] / d["decode_tps_max"]  # fastest repetition of each: the least disturbed
            speedups[-1]["decode_speedup_best_of_reps"] = best
            check(f"pruned GGUF {q} decode speed-up >= 0.9 x byte ratio", speed >= 0.9 * byte_ratio,
                  f"x{speed:.3f} (medians; fastest repetitions x{best:.3f}) vs bytes x{byte_ratio:.3f} ({speed / byte_ratio:.2f} of it)")  # fmt: skip
    q8 = by.get(("dense", "llama.cpp", "q8_0"))
    if q8:
        check("llama.cpp Q8_0 decode >= 70% of the measured-bandwidth roofline", q8["roofline_fraction"] >= 0.7,
              f"{q8['roofline_fraction']:.0%} ({q8['decode_tps']:.1f} t/s x {q8['decode_bytes_per_token'] / 1e6:.1f} MB/token)")  # fmt: skip
    for stage, key in (("before calibration (default efficiency)", "measured_vs_predicted_default"),
                       ("after calibration", "measured_vs_predicted")):  # fmt: skip
        ratios = [r[key] for r in rows]
        held = [r[key] for r in rows if r["model"] != "dense"] if key == "measured_vs_predicted" else ratios
        if not held:
            continue
        worst = max(held, key=lambda x: abs(x - 1))
        check(f"cost-model decode within +-25% on host, {stage}" + (", held-out rows" if key == "measured_vs_predicted" else ""),
              all(0.75 <= x <= 1.25 for x in held),
              f"measured/predicted median {statistics.median(ratios):.2f}, worst {worst:.2f} over {len(held)} rows")  # fmt: skip
    analysis = decode_time_fit([r for r in rows if r["runtime"] == "llama.cpp"])
    if analysis:
        lines.append(analysis["line"])
    return {"checks": checks, "pruned_vs_dense_gguf": speedups, "llamacpp_decode_fit": analysis, "lines": lines}


def decode_time_fit(rows: list[dict]) -> dict | None:
    """What bounds llama.cpp decode here: a least-squares fit of seconds per token against bytes
    per token over the GGUF rows, t = fixed + bytes / streaming bandwidth. ``fixed`` is the
    per-token cost that does not shrink with the weights (30 layers of thread hand-offs, norms,
    RoPE, attention, sampling-free logits); the slope's inverse is the bandwidth the matmuls stream at."""
    import numpy as np

    if len({r["decode_bytes_per_token"] for r in rows}) < 2:
        return None
    x = np.array([r["decode_bytes_per_token"] for r in rows])
    t = np.array([1.0 / r["decode_tps"] for r in rows])
    slope, fixed = np.polyfit(x, t, 1)
    q8 = next((r for r in rows if r["model"] == "dense" and r["quant"] == "q8_0"), None)
    out = {"fixed_ms_per_token": 1e3 * fixed, "streaming_gbs": 1e-9 / slope if slope > 0 else None,
           "points": len(rows), "r2": float(1 - ((t - (slope * x + fixed)) ** 2).sum() / ((t - t.mean()) ** 2).sum())}  # fmt: skip
    line = (f"note  llama.cpp decode time per token = {out['fixed_ms_per_token']:.2f} ms fixed + bytes / "
            f"{out['streaming_gbs'] or float('nan'):.1f} GB/s (least squares over {len(rows)} GGUF rows, R^2 {out['r2']:.2f})")  # fmt: skip
    if q8 is not None:
        share = fixed * q8["decode_tps"]
        out["q8_0_fixed_share"] = share
        line += f"; the fixed part is {share:.0%} of a dense Q8_0 token"
    out["line"] = line
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgeprune.fileio import atomic_file

    labels = [f"{r['runtime'].replace('onnxruntime', 'ort')}\n{r['quant']}" for r in rows if r["model"] == "dense"]
    models = sorted({r["model"] for r in rows}, key=["dense", "pruned", "2:4"].index)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    width = 0.8 / len(models)
    for i, m in enumerate(models):
        sub = [r for r in rows if r["model"] == m]
        xs = [j + i * width for j in range(len(sub))]
        axes[0].bar(xs, [r["decode_tps"] for r in sub], width, label=f"{m} measured")
        axes[0].scatter(xs, [r["predicted_decode_tps"] for r in sub], color="k", marker="_", s=120, zorder=3,
                        label="predicted (calibrated)" if i == 0 else None)  # fmt: skip
        axes[1].bar(xs, [r["roofline_fraction"] for r in sub], width, label=m)
    for ax, title in ((axes[0], "decode tokens/s"), (axes[1], "decode / bandwidth roofline")):
        ax.set_xticks([j + width * (len(models) - 1) / 2 for j in range(len(labels))], labels, fontsize=8)
        ax.set_title(title)
        ax.legend(fontsize=7)
    axes[1].axhline(0.7, color="grey", linestyle="--", linewidth=1)
    fig.tight_layout()
    with atomic_file(path, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="stage", required=True)
    b = sub.add_parser("build", help="export the artifacts into --workdir (resumable)")
    b.add_argument("--attn-keep", type=float, default=0.75, help="mean share of KV groups the pruned model keeps")
    b.add_argument("--mlp-keep", type=float, default=0.65, help="mean share of MLP channels the pruned model keeps")
    b.add_argument("--protect", type=int, default=4, help="keep the first and last N layers whole")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--gguf-quants", default=",".join(GGUF_QUANTS))
    b.add_argument("--onnx-quants", default=",".join(ONNX_QUANTS))
    t = sub.add_parser("time", help="profile every artifact in --workdir and write the results")
    t.add_argument("--prompt-tokens", type=int, default=128)
    t.add_argument("--gen-tokens", type=int, default=64)
    t.add_argument("--reps", type=int, default=3)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--only", default="", help="comma-separated models (default: all)")
    t.add_argument("--runtimes", default="", help="comma-separated runtimes (default: all)")
    t.add_argument("--append", action="store_true", help="keep the other rows already in --out (same pp/tg/threads)")
    t.add_argument("--out", default=str(HERE / "results" / "runtime.json"))
    r = sub.add_parser("report", help="re-derive predictions and figures from the measured rows in --out (no timing)")
    r.add_argument("--out", default=str(HERE / "results" / "runtime.json"))
    r.add_argument("--partial", action="store_true", help="derive from the rows of a run cut short (OUT.partial.json)")
    for sp in (b, t, r):
        sp.add_argument("--workdir", default="/tmp/edgeprune-runtime")
    args = p.parse_args(argv)
    return {"build": build, "time": time_all, "report": report}[args.stage](args)


if __name__ == "__main__":
    sys.exit(main())

"""The build report: report.json + report.md + two plots, from the stage manifests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from edgeprune.export.registry import get_format
from edgeprune.fileio import atomic_file, link_or_copy, write_text_atomic


def write_report(ctx, header: dict) -> dict:
    out: Path = ctx.out
    finals = []
    last_per_format = {a["format"]: a for a in ctx.artifacts}  # the last export of each format ships
    for art in last_per_format.values():
        src = Path(art["path"])
        if get_format(art["format"]).folder and src.is_file():
            src = src.parent  # the recorded path is the main file; the whole folder ships
        dst = out / src.name
        if src.is_dir():
            from edgeprune.fileio import atomic_dir

            with atomic_dir(dst) as tmp_dir:  # a killed copy never leaves a half folder under the final name
                shutil.copytree(src, tmp_dir, dirs_exist_ok=True, copy_function=link_or_copy)
        else:
            with atomic_file(dst, overwrite=True) as tmp:
                tmp.unlink(missing_ok=True)
                link_or_copy(src, tmp)
        finals.append({**art, "path": str(dst)})
    profiles = [s["figures"] for s in ctx.stages if s["step"] == "profile"]
    profile = profiles[-1] if profiles else None
    keys = ("where", "runtime", "artifact", "bytes", "prefill_tps", "decode_tps", "ttft_ms", "peak_rss_mb")
    report = {
        "target": ctx.target,
        "model": header["model"],
        "recipe": header["recipe"],
        "plan": header["plan"],
        "stages": [{"stage": s["stage"], "step": s["step"], "wall_s": s["wall_s"], "config": s["config"],
                    "memory": s.get("memory", {}),
                    "figures": {k: v for k, v in s["figures"].items() if k not in ("predicted", "summary")}}
                   for s in ctx.stages],  # fmt: skip
        "artifacts": finals,
        "measured_host": None if profile is None else {k: profile.get(k) for k in keys},  # the last profile
        "measured_all": [{k: p.get(k) for k in keys} for p in profiles],
        "predicted": None if profile is None else profile["predicted"],
        "predicted_all": [{"artifact": p.get("artifact"), "target": p["predicted"].get(ctx.target)} for p in profiles],
    }
    write_text_atomic(out / "report.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(out / "report.md", format_markdown(report) + "\n")
    _plots(report, out)
    return report


def format_markdown(r: dict) -> str:
    lines = [f"# edgeprune build: {r['model']} for {r['target']} (recipe {r['recipe']})", "", "## Plan", ""]
    for key in ("format", "runtime", "quant", "width_align", "sparse_24", "memory_budget_bytes"):
        c = r["plan"][key]
        lines.append(f"- **{key}**: {c['value']} — {c['why']}")
    lines += ["", "## Stages", "", "| stage | what | params | bytes | ppl | acc_avg | wall s | peak RSS MiB |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for s in r["stages"]:
        f = s["figures"]
        what = f.get("what") or (f"{f.get('format')} {f.get('quant')}" if s["step"] == "export" else s["step"])
        ppl = f"{f['ppl']:.3f}" if "ppl" in f else ""
        acc = f"{f['acc_avg']:.3f}" if "acc_avg" in f else ""
        lines.append(f"| {s['stage']} | {what} | {f.get('params', '')} | {f.get('bytes', '')} | {ppl} | {acc} | {s['wall_s']:.1f} | {s.get('memory', {}).get('peak_rss_mb', '')} |")
    if r.get("measured_all"):
        where = r["measured_all"][-1].get("where") or "host"
        lines += ["", f"## Measured on {'the host' if where == 'host' else where}", "", "| artifact | runtime | bytes | prefill tok/s | decode tok/s | TTFT ms | peak RSS MiB | predicted decode on target |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for m, p in zip(r["measured_all"], r.get("predicted_all", [])):
            pred = p.get("target") or {}
            pd = f"{pred['decode_tps']:.1f}" if pred else ""
            lines.append(f"| {Path(str(m['artifact'])).name} | {m['runtime']} | {m['bytes']} | {m['prefill_tps']:.1f} | "
                         f"{m['decode_tps']:.1f} | {m['ttft_ms']:.0f} | {m['peak_rss_mb']:.0f} | {pd} |")  # fmt: skip
    if r["predicted"]:
        lines += ["", "## Predicted (roofline cost model, last artifact)", "", "| device | prefill tok/s | decode tok/s | TTFT ms | fits |", "|---|---:|---:|---:|---|"]
        for name, p in r["predicted"].items():
            mark = " (target)" if name == r["target"] else ""
            lines.append(f"| {name}{mark} | {p['prefill_tps']:.0f} | {p['decode_tps']:.1f} | {p['ttft_ms']:.0f} | {'yes' if p['fits'] else 'no'} |")
    lines += ["", "Artifacts: " + ", ".join(a["path"] for a in r["artifacts"])]
    return "\n".join(lines)


def _plots(r: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(s["figures"]["bytes"], s["figures"]["ppl"], s["figures"].get("what", s["stage"]))
           for s in r["stages"] if "ppl" in s["figures"] and s["figures"].get("bytes")]  # fmt: skip
    if pts:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([p[0] / 2**20 for p in pts], [p[1] for p in pts], "o-")
        for b, ppl, label in pts:
            ax.annotate(label, (b / 2**20, ppl), fontsize=8)
        ax.set_xlabel("MiB")
        ax.set_ylabel("WikiText-2 perplexity")
        ax.set_title("quality vs size across stages")
        _save(fig, out / "quality_vs_size.png")
    if r["predicted"]:
        names = list(r["predicted"])
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.barh(names, [r["predicted"][n]["decode_tps"] for n in names], color="#4477aa")
        ax.set_xscale("log")
        ax.set_xlabel("predicted decode tok/s (log)")
        ax.set_title("predicted decode speed by device")
        _save(fig, out / "predicted_tps.png")


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_file(path, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)

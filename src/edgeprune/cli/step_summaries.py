"""What the step verbs print when they are done: their summaries, made from the steps' reports."""

from __future__ import annotations


def prune_summary(report, out) -> dict:
    """``edgeprune prune``'s summary (printed as JSON) of a StructuredPruneReport."""
    r = report
    return {
        "out": str(out), "method": r.method, "target": r.target,
        "block_params": f"{r.block_params_before} -> {r.block_params_after} "
        f"({r.removed_fraction:.1%} removed; target counts decoder blocks, embeddings excluded)",
        "total_params": f"{r.total_params_before} -> {r.total_params_after}",
        "bytes": f"{r.bytes_before} -> {r.bytes_after} ({r.dtype})",
        "kv_heads": r.widths_after["kv_heads"], "intermediate": r.widths_after["intermediate"],
        "wall_s": round(r.wall_s, 1), "peak_rss_mb": round(r.peak_rss_mb),
    }  # fmt: skip


def reconstruct_lines(rep, cfg, out, *, wall_s: float, threads: int) -> list[str]:
    """``edgeprune reconstruct``'s lines for a ReconstructReport."""
    return [f"reconstructed {rep.submodels} submodels ({cfg.label}, {rep.steps} steps) in {wall_s}s "
            f"(threads {threads}, peak RSS {rep.peak_rss_mb:.0f} MB, working {rep.working_mb:.0f} MB)",
            f"relative block-output error vs dense: {rep.rel_mse_before:.4f} -> {rep.rel_mse_after:.4f} (mean over submodels)",
            f"wrote {out}"]  # fmt: skip


def recover_lines(rep, out, *, wall_s: float, threads: int) -> list[str]:
    """``edgeprune recover``'s lines for a RecoverReport."""
    lines = [f"spent {rep.spent_tokens} of {rep.budget_tokens} tokens in {wall_s}s ({rep.spent_cpu_s} CPU-s, threads {threads}): "
             f"reconstruction {rep.recon_tokens} ({rep.recon_windows} windows, {rep.recon_cpu_s} CPU-s), "
             f"distillation {rep.train_tokens} ({rep.train_cpu_s} CPU-s)"]  # fmt: skip
    figures = [k for k in ("heldout_ppl", "kl") if rep.curve and k in rep.curve[0]]
    if figures:
        key = figures[0]
        lines.append(f"{key} ({rep.probe}): " + " -> ".join(f"{p[key]:.4g} [{p['phase']} {p['tokens']}]" for p in rep.curve))
    return [*lines, f"wrote {out}"]


def depth_lines(rep, out, *, wall_s: float, threads: int) -> list[str]:
    """``edgeprune depth``'s lines for a DepthReport."""
    score = rep.config.get("score")
    return [f"removed {len(rep.removed)} of {rep.layers_before} decoder layers {rep.removed} (score {score}) in {wall_s}s "
            f"(threads {threads}); kept original layers {rep.kept}",
            f"parameters {rep.params_before} -> {rep.params_after}",
            f"wrote {out} (recover it with: edgeprune reconstruct --model {out} --dense <the dense model>)"]  # fmt: skip


def where_24_pays(target: str | None) -> list[str]:
    """Lines for ``edgeprune sparsify``'s output: the target's 2:4 note, and which known devices have
    2:4 kernels (an unknown ``target`` fails here, with "did you mean")."""
    from edgeprune.devices.profiles import device_names, get_device

    lines = []
    if target is not None:
        dev = get_device(target)
        lines.append(f"{dev.name}: {dev.sparse_24_note}")
    with_kernels = [n for n in device_names() if n != "host" and get_device(n).sparse_24]
    lines.append(f"2:4 speeds up only GPUs with sparse tensor cores ({', '.join(with_kernels)}); "
                 "on CPUs, phones and llama.cpp, 2:4 saves storage only")  # fmt: skip
    return lines


def sparsify_summary(args, step, quant, reports: dict, *, threads: int, world_size: int, wall_s: float, notes: list[str]) -> dict:
    """``edgeprune sparsify``'s ``report.json`` (before the packed artifact's figures are added)."""
    from edgeprune.memory import peak_rss_mb

    return {
        "model": str(args.model or "smollm2-135m"), "pattern": step.pattern,
        "method": f"ast (init {step.init})" if step.kind == "sparse_train" else step.method,
        "quant": quant.spec.name if quant is not None else "none", "threads": threads, "world_size": world_size,
        "wall_s": round(wall_s, 1), "peak_rss_mb": round(peak_rss_mb()), "where_2_4_pays": notes, "steps": reports,
    }  # fmt: skip


def sparsify_lines(summary: dict, out) -> list[str]:
    """``edgeprune sparsify``'s lines for its summary (``report.json``), after the packed artifact is written."""
    s, p = summary, summary["packed"]
    return [f"{s['method']} {s['pattern']} + {s['quant']} in {s['wall_s']}s (threads {s['threads']}, peak RSS {s['peak_rss_mb']} MB)",
            f"wrote {out}: file {p['bytes_file'] / 1e6:.2f} MB ({p['ratio_file_fp32']:.2f}x smaller than FP32 "
            f"{p['bytes_fp32'] / 1e6:.1f} MB); decoder Linears {p['bytes_linear'] / 1e6:.2f} MB "
            f"({p['ratio_linear_fp32']:.2f}x vs FP32, {p['bits_per_linear_weight']:.3f} bits/weight incl. positions and scales)",
            *s["where_2_4_pays"]]  # fmt: skip

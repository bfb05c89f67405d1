"""What ``edgeprune devices`` prints: a device profile, and a table of predicted speeds (plain text;
``--json`` prints the data itself)."""

from __future__ import annotations


def profile_lines(profile) -> list[str]:
    """``devices show NAME``: one line per field, its 2:4 note, then where each figure came from."""
    d = profile.to_dict()
    sources = d.pop("sources")
    lines = []
    for key, value in d.items():
        if key == "calibration":  # runtime -> type -> efficiencies
            value = "; ".join(f"{rt} {q}: bandwidth x{e.get('bw_efficiency', 0):.2f}, compute x{e.get('compute_efficiency', 0):.2f}"
                              for rt, types in value.items() for q, e in types.items()) or "- (defaults)"  # fmt: skip
        elif isinstance(value, (list, tuple)):
            value = ", ".join(map(str, value)) or "-"
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v if not isinstance(v, (list, tuple)) else '/'.join(v)}" for k, v in value.items())
        lines.append(f"{key:<22} {value}")
    lines += [f"{'2:4 sparsity':<22} {profile.sparse_24_note}", "sources:", *(f"  {k}: {src}" for k, src in sources.items())]
    return lines


def prediction_lines(name: str, cost, rows, *, prompt_tokens: int, gen_tokens: int) -> list[str]:
    """``devices predict ARTIFACT``: a markdown table, one row per device."""
    lines = [f"{name}: {cost.weight_bytes / 2**20:.1f} MiB of {cost.quant} weights, "
             f"pp{prompt_tokens} / tg{gen_tokens} (roofline prediction, not a measurement)",
             f"| {'device':<20} | prefill tok/s | decode tok/s | TTFT ms | memory MiB | fits | decode bound |",
             f"|{'-' * 22}|---------------|--------------|---------|------------|------|--------------|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r.device:<20} | {r.prefill_tps:13.0f} | {r.decode_tps:12.1f} | {r.ttft_ms:7.0f} | "
                     f"{r.memory_bytes / 2**20:10.0f} | {'yes' if r.fits else 'NO':<4} | {r.decode_bound:<12} |")  # fmt: skip
    return lines

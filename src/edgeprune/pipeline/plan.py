"""From a device profile to a plan: format, runtime, quantization, width alignment, 2:4, budget.

Every choice carries the reason it was made, so ``edgeprune build --dry-run`` can say *why*.
Pure logic over profiles and the cost model: no torch, no weights.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass, field

from edgeprune.devices.cost import ArtifactCost, estimate_weight_bytes, predict
from edgeprune.devices.device_profile import DeviceProfile
from edgeprune.errors import EdgepruneError
from edgeprune.export.common import unknown_choice
from edgeprune.export.registry import BIT_WIDTHS, FORMATS, format_names, get_format

# Besides a registered format's name, an export step may ask for the target's first or second format.
AUTO_FORMATS = ("auto", "alt")


@dataclass(frozen=True)
class Choice:
    value: object
    why: str


@dataclass
class Plan:
    target: str
    format: Choice
    runtime: Choice
    quant: Choice
    width_align: Choice
    sparse_24: Choice
    memory_budget_bytes: Choice
    predicted: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = {"target": self.target, "predicted": self.predicted}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Choice):
                out[f.name] = {"value": v.value, "why": v.why}
        return out

    def lines(self) -> list[str]:
        out = [f"plan for target {self.target}:"]
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Choice):
                shown = f"{v.value / 2**20:.0f} MiB" if f.name == "memory_budget_bytes" else v.value
                out.append(f"  {f.name:<20} {shown!s:<14} because {v.why}")
        if self.predicted:
            p = self.predicted
            out.append(
                f"  {'predicted':<20} decode {p['decode_tps']:.0f} tok/s, prefill {p['prefill_tps']:.0f} tok/s, "
                f"{p['memory_bytes'] / 2**20:.0f} MiB ({'fits' if p['fits'] else 'does NOT fit'})"
            )
        return out


def make_plan(
    profile: DeviceProfile,
    cost: ArtifactCost,
    *,
    format: str = "auto",
    quant: str = "auto",
    max_memory_bytes: int | None = None,
    min_decode_tps: float | None = None,
    prompt_tokens: int = 512,
    gen_tokens: int = 128,
) -> Plan:
    """Choose how to build for ``profile``; raise EdgepruneError when the budget cannot be met."""
    fmt, why_fmt, q, why_q = resolve_export(profile, format, quant)
    row = get_format(fmt)
    runtime = row.runtime
    backends = "/".join(profile.runtimes.get(runtime, ("?",)))

    budget, why_budget = memory_budget(profile, max_memory_bytes)
    planned = dataclasses.replace(cost, weight_bytes=_planned_bytes(cost, q), quant=q)
    pred = predict(profile, planned, prompt_tokens=prompt_tokens, gen_tokens=gen_tokens)
    if pred.memory_bytes > budget:
        over = pred.memory_bytes - budget
        # suggest the smallest of the format's standard types (its 4bit/8bit/float) that fits: lower
        # K-quants fit sooner but cost quality, which is the user's call, not a budget hint's
        plain = sorted(set(row.bit_widths.values()), key=lambda o: _planned_bytes(cost, o))
        smaller = [o for o in plain if _planned_bytes(cost, o) + (pred.memory_bytes - planned.weight_bytes) <= budget]
        fix = f"use --quant {smaller[0]}" if smaller else "prune the model (e.g. a recipe with a prune step) or pick a bigger device"
        raise EdgepruneError(
            f"budget cannot be met on {profile.name}: {pred.memory_bytes / 2**20:.0f} MiB needed with {q} "
            f"(weights + KV cache for {prompt_tokens + gen_tokens} tokens), {budget / 2**20:.0f} MiB allowed, "
            f"{over / 2**20:.0f} MiB over; {fix}"
        )
    if min_decode_tps and pred.decode_tps < min_decode_tps:
        need = min_decode_tps / pred.decode_tps
        raise EdgepruneError(
            f"--min-decode-tps {min_decode_tps:g} cannot be met on {profile.name}: predicted {pred.decode_tps:.1f} tok/s "
            f"with {q}; decode is {pred.decode_bound}-bound, so about {need:.1f}x fewer bytes per token would be "
            "needed (a smaller quant type or a pruning recipe)"
        )
    return Plan(
        target=profile.name,
        format=Choice(fmt, why_fmt),
        runtime=Choice(runtime, f"{fmt} runs in {runtime} ({backends} on {profile.name})"),
        quant=Choice(q, why_q),
        width_align=Choice(profile.width_align, f"{profile.name}'s kernels want widths in multiples of {profile.width_align}"),
        sparse_24=Choice(profile.sparse_24, profile.sparse_24_note),
        memory_budget_bytes=Choice(budget, why_budget),
        predicted=pred.to_dict(),
    )


def memory_budget(profile: DeviceProfile, max_memory_bytes: int | None = None) -> tuple[int, str]:
    """``(bytes, why)``: the memory a build's artifact may take at run time on ``profile``
    (``--max-memory``, else the device's usable memory); a plan and a budgeted build's candidates
    are held to the same figure."""
    if max_memory_bytes:
        return max_memory_bytes, "--max-memory"
    return int(profile.usable_memory_gb * 1e9), f"usable memory of {profile.name} ({profile.usable_memory_gb} GB)"


def resolve_export(profile: DeviceProfile, format: str = "auto", quant: str = "auto") -> tuple[str, str, str, str]:
    """``(format, why, quant, why)`` of an export step for ``profile``.

    ``format``: ``auto`` (the target's first preferred format), ``alt`` (its second; the first other
    registered format where it lists one only), or a registered format. ``quant``: ``auto`` (the
    target's first preferred type that exists in that format), a bit width (``4bit``, ``8bit``,
    ``float``), or one of the format's types. A type its format makes with an external binary (the
    row's ``needs``) needs it on PATH, where the export stage looks: the reason says which file.
    """
    others = [f for f in format_names() if f not in profile.preferred_formats]
    if format == "auto":
        fmt = profile.preferred_formats[0]
        why_fmt = f"{profile.name} prefers {', '.join(profile.preferred_formats)} (first listed)"
    elif format == "alt":
        ranked = list(profile.preferred_formats) + others
        fmt = ranked[1]
        why_fmt = (f"the second of {profile.name}'s formats ({', '.join(profile.preferred_formats)})" if fmt in profile.preferred_formats
                   else f"{profile.name} lists only {profile.preferred_formats[0]}; {fmt} for comparison")  # fmt: skip
    else:
        fmt, why_fmt = format, "asked for in the recipe / on the command line"
    if fmt not in FORMATS:
        raise EdgepruneError(unknown_choice("export format", fmt, AUTO_FORMATS + format_names())[0])
    row = FORMATS[fmt]
    if format == "auto" and profile.compute_engine == "gpu" and row.gpu_note:
        why_fmt += f"; {row.gpu_note}"
    quants = row.quants()
    if quant in BIT_WIDTHS:
        quant = row.bit_widths[quant]
    if quant == "auto":
        prefs = [q for q in profile.preferred_quant if q in quants]
        q = prefs[0] if prefs else row.default_quant
        why_q = f"first of {profile.name}'s preferred types for {fmt} ({', '.join(prefs) or 'none listed'})"
    else:
        if quant not in quants:
            raise EdgepruneError(f"quant {quant!r} does not exist for {fmt}: use one of {', '.join(quants)}")
        q, why_q = quant, "asked for in the recipe / on the command line"
    tool = row.needs(q)
    if tool is not None:
        found = shutil.which(tool)
        if found is None:
            raise EdgepruneError(f"{fmt} type {q} is made by {tool}, which is not on PATH where the build's export stage "
                                 f"looks for it: put {tool} on PATH, or use a type that needs no binary "
                                 f"({', '.join(row.plain_quants())})")  # fmt: skip
        why_q += f"; made by {tool} ({found})"
    return fmt, why_fmt, q, why_q


def _planned_bytes(cost: ArtifactCost, quant: str) -> int:
    # Norms and other 1-D tensors stay in f32; they are a rounding error at this scale.
    return estimate_weight_bytes(cost.params, quant)

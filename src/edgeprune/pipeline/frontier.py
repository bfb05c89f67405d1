"""The maths of a budgeted build: bounds, the Pareto frontier, the choice and the sentences about it.

Pure functions over scored candidates (no torch, no files): a candidate is a name, how it was
made, its bytes, its held-out perplexity ratio to the dense model and its decode speed. The
search (``pipeline/search.py``) makes and scores them; this module decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from edgeprune.errors import EdgepruneError

DENSE = "dense"  # the method of a plain-quantized dense candidate
GAP_FLAG = 0.25  # measured vs predicted decode speed: a gap above this is flagged in the report
# decode speeds this close to the fastest are a tie, broken by quality: two same-size files measured in
# fresh processes differ by a few percent run to run (q4_k_m with and without an imatrix: 3%)
SPEED_TIE = 0.05


class NoCandidate(EdgepruneError):
    """No candidate meets every bound: the build ships nothing (exit code 2, one line)."""


@dataclass(frozen=True)
class Bounds:
    """What the user accepts; None: no bound of that kind."""

    max_ppl_ratio: float | None = None  # held-out perplexity / the dense model's
    max_bytes: int | None = None  # artifact bytes on disk
    min_decode_tps: float | None = None  # decode tokens/s on the target (measured on the host, else predicted)
    max_memory_bytes: int | None = None  # predicted runtime memory (weights + KV cache + runtime): the plan's budget

    def searches(self) -> bool:
        """Whether these bounds ask for a search: a quality or size bound does. A memory budget
        (every build has one) or ``--min-decode-tps`` alone keep a recipe build, whose plan checks
        them (``plan.make_plan``); inside a search they bound every candidate."""
        return self.max_ppl_ratio is not None or self.max_bytes is not None

    def problems(self) -> list[str]:
        """Every contradiction or impossible value, before anything is loaded."""
        out = []
        if self.max_ppl_ratio is not None and self.max_ppl_ratio < 1.0:
            out.append(f"--max-ppl-ratio {self.max_ppl_ratio:g} is below 1: it asks for a model better than the "
                       "dense one on unseen text; use a ratio >= 1 (e.g. 1.10)")  # fmt: skip
        for flag, v in (("--max-bytes", self.max_bytes), ("--min-decode-tps", self.min_decode_tps),
                        ("--max-memory", self.max_memory_bytes)):  # fmt: skip
            if v is not None and v <= 0:
                out.append(f"{flag} must be positive, got {v:g}")
        if self.max_bytes and self.max_memory_bytes and self.max_bytes > self.max_memory_bytes:
            out.append(f"--max-bytes ({self.max_bytes / 2**20:.0f} MiB) exceeds --max-memory "
                       f"({self.max_memory_bytes / 2**20:.0f} MiB), which must also hold the weights: "
                       "the bounds contradict each other")  # fmt: skip
        return out

    def describe(self) -> list[str]:
        out = []
        if self.max_ppl_ratio is not None:
            out.append(f"ppl ratio <= {self.max_ppl_ratio:g}")
        if self.max_bytes is not None:
            out.append(f"bytes <= {self.max_bytes / 2**20:.1f} MiB")
        if self.min_decode_tps is not None:
            out.append(f"decode >= {self.min_decode_tps:g} tok/s")
        if self.max_memory_bytes is not None:
            out.append(f"memory <= {self.max_memory_bytes / 2**20:.0f} MiB")
        return out


@dataclass(frozen=True)
class Scored:
    """One scored candidate."""

    name: str
    method: str  # DENSE (+ " + imatrix"), or how the model was compressed ("adapt 0.2 + reconstruct")
    quant: str
    bytes: int
    ppl: float
    ppl_ratio: float
    decode_tps: float  # the speed the choice uses: measured when measured, else predicted
    decode_tps_measured: float | None = None
    decode_tps_predicted: float | None = None
    memory_bytes: int | None = None  # predicted runtime memory
    ppl_ratios: dict | None = None  # held-out text -> ppl ratio (ppl_ratio is the worst of them)
    loadavg_1m: float | None = None  # the host's load average when the speed was measured
    path: str = ""

    @property
    def plain(self) -> bool:
        """Plain quantization of the dense model (llama.cpp's importance matrix included: a quantizer setting)."""
        return self.method.split(" + ")[0] == DENSE

    @property
    def speed_gap(self) -> float | None:
        """|measured - predicted| / measured, when both exist."""
        if not self.decode_tps_measured or self.decode_tps_predicted is None:
            return None
        return abs(self.decode_tps_predicted - self.decode_tps_measured) / self.decode_tps_measured

    def to_dict(self) -> dict:
        return {**asdict(self), "plain": self.plain, "speed_gap": self.speed_gap}


def misses(c: Scored, b: Bounds) -> dict[str, float]:
    """Each bound ``c`` misses -> by what fraction (0.05: 5% past the bound)."""
    out = {}
    if b.max_ppl_ratio is not None and c.ppl_ratio > b.max_ppl_ratio:
        out["--max-ppl-ratio"] = c.ppl_ratio / b.max_ppl_ratio - 1
    if b.max_bytes is not None and c.bytes > b.max_bytes:
        out["--max-bytes"] = c.bytes / b.max_bytes - 1
    if b.min_decode_tps is not None and c.decode_tps < b.min_decode_tps:
        out["--min-decode-tps"] = b.min_decode_tps / c.decode_tps - 1
    if b.max_memory_bytes is not None and c.memory_bytes is not None and c.memory_bytes > b.max_memory_bytes:
        out["the memory budget"] = c.memory_bytes / b.max_memory_bytes - 1
    return out


def meets(c: Scored, b: Bounds) -> bool:
    return not misses(c, b)


def pareto(cands: Sequence[Scored], *, speed: str = "decode_tps") -> list[Scored]:
    """The candidates no other beats on both quality (lower ppl ratio) and ``speed``
    (``decode_tps``: higher is better; ``bytes``: lower is better), by increasing ppl ratio."""
    sign = -1.0 if speed == "bytes" else 1.0

    def better_or_equal(a: Scored, b: Scored) -> bool:
        return a.ppl_ratio <= b.ppl_ratio and sign * getattr(a, speed) >= sign * getattr(b, speed)

    front = [c for c in cands if not any(better_or_equal(o, c) and (o.ppl_ratio, getattr(o, speed)) != (c.ppl_ratio, getattr(c, speed))
                                         for o in cands)]  # fmt: skip
    return sorted(front, key=lambda c: (c.ppl_ratio, -sign * getattr(c, speed)))


def fastest(cands: Sequence[Scored]) -> Scored:
    """The fastest of ``cands``, where speeds within :data:`SPEED_TIE` of the top are a tie won by the
    lower ppl ratio, then fewer bytes, then speed."""
    top = max(c.decode_tps for c in cands)
    tied = [c for c in cands if c.decode_tps >= top * (1 - SPEED_TIE)]
    return min(tied, key=lambda c: (c.ppl_ratio, c.bytes, -c.decode_tps))


def choose(cands: Sequence[Scored], b: Bounds) -> Scored:
    """The fastest candidate meeting every bound (:func:`fastest`: a near-tie in speed goes to the better
    quality); :class:`NoCandidate` with one line naming the closest candidate otherwise."""
    ok = [c for c in cands if meets(c, b)]
    if ok:
        return fastest(ok)
    raise NoCandidate(closest_message(cands, b))


def closest_message(cands: Sequence[Scored], b: Bounds) -> str:
    """One line: no candidate meets the bounds; the closest one (smallest summed relative miss),
    what it misses by how much, and the bounds it does meet."""
    if not cands:
        return "no candidate was scored: nothing to ship"
    best = min(cands, key=lambda c: (sum(misses(c, b).values()), -c.decode_tps))
    missed = misses(best, b)
    given = [f for f, v in (("--max-ppl-ratio", b.max_ppl_ratio), ("--max-bytes", b.max_bytes),
                            ("--min-decode-tps", b.min_decode_tps), ("the memory budget", b.max_memory_bytes)) if v is not None]  # fmt: skip
    met = [f for f in given if f not in missed]
    miss_text = ", ".join(f"{f} by {v:.0%}" for f, v in missed.items())
    return (f"no candidate meets {' and '.join(b.describe())}: the closest is {best.name} (ppl ratio {best.ppl_ratio:.3f}, "
            f"{best.bytes / 2**20:.1f} MiB, {best.decode_tps:.1f} tok/s), which misses {miss_text} and meets "
            f"{', '.join(met) if met else 'none of the bounds'}; nothing shipped")  # fmt: skip


def verdict(chosen: Scored, cands: Sequence[Scored], b: Bounds) -> str:
    """Why ``chosen`` ships and by how much it beats the best plain-quantized dense candidate."""
    plain_ok = [c for c in cands if c.plain and meets(c, b)]
    best_plain = fastest(plain_ok) if plain_ok else None
    head = (f"shipped {chosen.name}: the fastest of {len(cands)} candidates meeting {' and '.join(b.describe()) or 'no bound'} "
            f"({chosen.decode_tps:.1f} tok/s, ppl ratio {chosen.ppl_ratio:.3f}, {chosen.bytes / 2**20:.1f} MiB; speeds "
            f"within {SPEED_TIE:.0%} of the fastest count as a tie, won by the lower ppl ratio)")  # fmt: skip
    if chosen.plain:
        return head + ". Plain quantization of the dense model wins: no compressed candidate meeting the bounds is faster."
    if best_plain is None:
        return head + ". No plain-quantized dense candidate meets the bounds: compression was needed."
    return (head + f". It decodes {chosen.decode_tps / best_plain.decode_tps:.2f}x as fast as the best plain quant meeting "
            f"the bounds, {best_plain.name} ({best_plain.decode_tps:.1f} tok/s, ppl ratio {best_plain.ppl_ratio:.3f}), "
            f"with {chosen.bytes / best_plain.bytes:.2f}x its bytes.")  # fmt: skip

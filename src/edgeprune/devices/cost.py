"""A roofline cost model: what an artifact will do on a device, from bytes and FLOPs alone.

Decode reads every weight once per token (plus the KV cache so far), so it is bound by memory
bandwidth; prefill processes many tokens per weight read, so it is bound by compute. Each bound
is scaled by an efficiency (the fraction of the peak real runtimes reach: 0.5-0.8 of bandwidth
for llama.cpp decode per the device notes) that ``calibrate`` fits on the host.
Pure arithmetic: no torch, no files.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeprune.devices.device_profile import DeviceProfile

# Bytes per weight for each storage type, block scales included (GGUF block layouts: Q8_0 = 34
# bytes per 32 weights, Q4_0 = 18/32, Q4_1 = 20/32, Q5_0 = 22/32, Q5_1 = 24/32; Q4_K = 144/256).
BYTES_PER_WEIGHT = {
    "f32": 4.0, "float32": 4.0, "fp32": 4.0, "f16": 2.0, "float16": 2.0, "bf16": 2.0, "bfloat16": 2.0,
    "q8_0": 34 / 32, "int8": 1.0 + 4 / 128, "q5_1": 24 / 32, "q5_0": 22 / 32, "q4_1": 20 / 32, "q4_0": 18 / 32,
    "int4": 0.5 + 4 / 128, "q4_k": 144 / 256, "q6_k": 210 / 256,
    "int8-dynamic": 1.0,  # one float scale per output channel: nothing at this precision
}  # fmt: skip
# llama-quantize's K-quant mixes keep some matrices at higher types, so no one block size fits them:
# bytes per weight from llama.cpp's own file size of each mix of Llama-3-8B (GiB over 8.03e9 weights,
# tools/quantize/quantize.cpp; its Q6_K and Q8_0 rows give the block sizes above to 0.2%).
BYTES_PER_WEIGHT.update({
    name: gib * 2**30 / 8.03e9
    for name, gib in [("q2_k", 2.96), ("q3_k_s", 3.41), ("q3_k_m", 3.74), ("q3_k_l", 4.03), ("q4_k_s", 4.37),
                      ("q4_k_m", 4.58), ("q5_k_s", 5.21), ("q5_k_m", 5.33)]
})  # fmt: skip

DEFAULT_BW_EFFICIENCY = 0.6
DEFAULT_COMPUTE_EFFICIENCY = 0.5
RUNTIME_OVERHEAD_BYTES = 150 * 2**20  # runtime, compute buffers, tokenizer: a measured-order constant


@dataclass(frozen=True)
class ArtifactCost:
    """What one token costs: bytes of weights read, KV bytes per context position, FLOPs."""

    name: str
    n_layers: int
    params: int
    weight_bytes: int  # bytes of weights read per decoded token
    kv_bytes_per_position: int  # K+V bytes stored per context position, all layers
    linear_flops_per_token: int  # 2 x multiply-adds of the weight matrices
    attn_flops_per_position: int  # extra FLOPs per token per position of context (QK^T and AV)
    quant: str


def artifact_cost(info: dict, *, kv_bytes_per_elem: int = 2) -> ArtifactCost:
    """Costs from ``edgeprune.describe.describe`` output (needs per-layer heads and head_dim).

    KV cache elements default to 2 bytes (llama.cpp's default F16 cache).
    """
    n = info["layers"]
    heads, kv = info["heads"], info["kv_heads"]
    head_dim = info["head_dim"]
    hidden, vocab = info["hidden_size"], info["vocab_size"]
    dtype = str(info["dtype"]).lower()
    # The embedding lookup reads one row per token; the LM head (tied or not) reads all of it,
    # so every parameter is read once per decoded token, except an untied input embedding.
    weight_bytes = info["file_bytes"]
    kv_per_pos = sum(2 * kv[i] * head_dim * kv_bytes_per_elem for i in range(n))
    linear_params = info["params"] - vocab * hidden  # everything but one copy of the vocab matrix
    attn = sum(4 * heads[i] * head_dim for i in range(n))
    return ArtifactCost(
        name=info.get("source", "?"),
        n_layers=n,
        params=int(info["params"]),
        weight_bytes=int(weight_bytes),
        kv_bytes_per_position=int(kv_per_pos),
        linear_flops_per_token=int(2 * linear_params),
        attn_flops_per_position=int(attn),
        quant=dtype,
    )


def estimate_weight_bytes(params: int, quant: str) -> int:
    """Bytes of ``params`` weights stored as ``quant`` (planning a build before it is quantized)."""
    return int(params * BYTES_PER_WEIGHT[quant.lower()])


@dataclass(frozen=True)
class Prediction:
    device: str
    prefill_tps: float
    decode_tps: float
    ttft_ms: float
    memory_bytes: int
    fits: bool
    decode_bound: str  # "bandwidth", "compute" or "overhead" (per-layer fixed costs dominate)
    bw_efficiency: float
    compute_efficiency: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _peak_flops(profile: DeviceProfile, quant: str) -> float:
    """Peak FLOP/s of the precision the runtime computes in for this storage type."""
    quantized = quant.startswith("q") or quant.startswith("int")
    order = ("int8", "fp16", "fp32") if quantized else ("fp16", "fp32") if quant in ("f16", "bf16") else ("fp32", "fp16")
    if profile.compute_engine == "cpu":
        order = tuple(o for o in order if o != "fp16") + ("fp16",)
    for key in order:
        if key in profile.peak_tflops:
            return profile.peak_tflops[key] * 1e12
    return max(profile.peak_tflops.values()) * 1e12


def decode_bytes_per_token(cost: ArtifactCost, *, prompt_tokens: int = 512, gen_tokens: int = 128) -> float:
    """Bytes one decoded token reads: every weight once, plus the KV cache at the mean context
    (prompt + gen/2 positions) of a llama-bench-style run."""
    return cost.weight_bytes + cost.kv_bytes_per_position * (prompt_tokens + gen_tokens / 2)


def calibrated(profile: DeviceProfile, quant: str, runtime: str | None) -> dict[str, float]:
    """The profile's fitted efficiencies for ``runtime`` (or, when None, llama.cpp first, then
    any runtime) and this storage type; {} when none were fitted."""
    cal = profile.calibration
    order = [runtime] if runtime else ["llama.cpp", *sorted(cal)]
    for rt in order:
        if quant.lower() in cal.get(rt, {}):
            return cal[rt][quant.lower()]
    return {}


def predict(
    profile: DeviceProfile,
    cost: ArtifactCost,
    *,
    prompt_tokens: int = 512,
    gen_tokens: int = 128,
    bw_efficiency: float | None = None,
    compute_efficiency: float | None = None,
    runtime: str | None = None,
) -> Prediction:
    """Roofline prediction for a llama-bench-style run (pp ``prompt_tokens``, tg ``gen_tokens``).

    Efficiencies left as None come from the profile's calibration for ``runtime`` and the
    artifact's storage type when it has one (``calibrate_bandwidth``; the host's is fitted by
    bench/runtime.py), else the defaults. A calibrated bandwidth efficiency is an end-to-end
    figure (measured decode x bytes per token / bandwidth): it already includes the runtime's
    compute for that type, so decode is then predicted from bandwidth alone.
    """
    cal = calibrated(profile, cost.quant, runtime) if bw_efficiency is None or compute_efficiency is None else {}
    fitted_bw = bw_efficiency is None and "bw_efficiency" in cal
    bw_efficiency = bw_efficiency if bw_efficiency is not None else cal.get("bw_efficiency", DEFAULT_BW_EFFICIENCY)
    if compute_efficiency is None:
        compute_efficiency = cal.get("compute_efficiency", DEFAULT_COMPUTE_EFFICIENCY)
    bw = profile.bandwidth_gbs * 1e9 * bw_efficiency
    flops = _peak_flops(profile, cost.quant) * compute_efficiency
    # Decode: one token at a mean context of prompt + gen/2 positions.
    ctx = prompt_tokens + gen_tokens / 2
    bytes_per_token = decode_bytes_per_token(cost, prompt_tokens=prompt_tokens, gen_tokens=gen_tokens)
    flops_per_token = cost.linear_flops_per_token + cost.attn_flops_per_position * ctx
    t_bw, t_compute = bytes_per_token / bw, (0.0 if fitted_bw else flops_per_token / flops)
    # a fitted per-layer cost (calibration) replaces the profile's figure
    t_fixed = cost.n_layers * cal.get("per_layer_overhead_us", profile.per_layer_overhead_us) * 1e-6
    decode_tps = 1.0 / (max(t_bw, t_compute) + t_fixed)
    # Prefill: all prompt tokens at once; weights read once, attention over a growing context.
    prefill_flops = prefill_flops_of(cost, prompt_tokens)
    t_prefill = max(prefill_flops / flops, cost.weight_bytes / bw) + t_fixed
    memory = cost.weight_bytes + cost.kv_bytes_per_position * (prompt_tokens + gen_tokens) + RUNTIME_OVERHEAD_BYTES
    return Prediction(
        device=profile.name,
        prefill_tps=prompt_tokens / t_prefill,
        decode_tps=decode_tps,
        ttft_ms=1000.0 * t_prefill,
        memory_bytes=int(memory),
        fits=memory <= profile.usable_memory_gb * 1e9,
        decode_bound="overhead" if t_fixed > max(t_bw, t_compute) else "bandwidth" if t_bw >= t_compute else "compute",
        bw_efficiency=bw_efficiency,
        compute_efficiency=compute_efficiency,
    )


def prefill_flops_of(cost: ArtifactCost, prompt_tokens: int) -> float:
    """FLOPs of one prompt batch: the weight matrices per token plus causal attention (n^2 / 2)."""
    return prompt_tokens * cost.linear_flops_per_token + cost.attn_flops_per_position * prompt_tokens**2 / 2


def calibrate_bandwidth(measured: list[tuple[float, ArtifactCost]], profile: DeviceProfile, *,
                        prompt_tokens: int = 512, gen_tokens: int = 128, per_layer_overhead_us: float | None = None) -> float:  # fmt: skip
    """End-to-end bandwidth efficiency from (measured decode tokens/s, artifact) pairs of one
    runtime and storage type: the geometric mean of decode x bytes per token / peak bandwidth
    (the roofline fraction). Per-layer fixed costs (``per_layer_overhead_us``, default the
    profile's) are taken out of each token's time first."""
    import math

    overhead = profile.per_layer_overhead_us if per_layer_overhead_us is None else per_layer_overhead_us
    logs = []
    for tps, cost in measured:
        t = 1.0 / tps - cost.n_layers * overhead * 1e-6
        if t <= 0:
            raise ValueError(f"measured {tps} tok/s is faster than the profile's fixed per-layer costs allow")
        logs.append(math.log(decode_bytes_per_token(cost, prompt_tokens=prompt_tokens, gen_tokens=gen_tokens) / t
                             / (profile.bandwidth_gbs * 1e9)))  # fmt: skip
    return math.exp(sum(logs) / len(logs))


def fit_per_layer_overhead(measured: list[tuple[float, ArtifactCost]], *, prompt_tokens: int = 512,
                           gen_tokens: int = 128) -> float:  # fmt: skip
    """Per-layer fixed decode cost in microseconds from (decode tokens/s, artifact) pairs of one
    runtime: the intercept of a least-squares line through seconds per token against bytes per
    token (t = fixed + bytes / streaming rate), divided by the layer count; 0 when the fit says
    there is none. Needs artifacts of different sizes (e.g. F16, Q8_0 and Q4_0 of one model)."""
    pts = [(decode_bytes_per_token(c, prompt_tokens=prompt_tokens, gen_tokens=gen_tokens), 1.0 / tps, c.n_layers)
           for tps, c in measured]  # fmt: skip
    if len({x for x, _, _ in pts}) < 2:
        raise ValueError("fitting a fixed cost needs artifacts of at least two sizes")
    n = len(pts)
    mx, my = sum(x for x, _, _ in pts) / n, sum(y for _, y, _ in pts) / n
    slope = sum((x - mx) * (y - my) for x, y, _ in pts) / sum((x - mx) ** 2 for x, _, _ in pts)
    intercept = my - slope * mx
    layers = sum(layer for _, _, layer in pts) / n
    return max(0.0, intercept / layers * 1e6)


def calibrate_compute(measured: list[tuple[float, ArtifactCost]], profile: DeviceProfile, *, prompt_tokens: int = 512) -> float:
    """Prefill compute efficiency from (measured prefill tokens/s, artifact) pairs: geometric mean
    of achieved FLOP/s over the profile's peak for the type."""
    import math

    logs = [math.log(prefill_flops_of(cost, prompt_tokens) * tps / prompt_tokens / _peak_flops(profile, cost.quant))
            for tps, cost in measured]  # fmt: skip
    return math.exp(sum(logs) / len(logs))


def calibrate(measured_decode_tps: float, measured_prefill_tps: float, profile: DeviceProfile, cost: ArtifactCost,
              *, prompt_tokens: int = 512, gen_tokens: int = 128) -> tuple[float, float]:  # fmt: skip
    """Efficiencies that make ``predict`` reproduce a measurement on ``profile`` (clipped to (0, 1])."""
    base = predict(profile, cost, prompt_tokens=prompt_tokens, gen_tokens=gen_tokens, bw_efficiency=1.0, compute_efficiency=1.0)
    bw_eff = min(1.0, measured_decode_tps / base.decode_tps)
    compute_eff = min(1.0, measured_prefill_tps / base.prefill_tps)
    return bw_eff, compute_eff

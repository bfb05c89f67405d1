"""The ``host`` profile: this machine, measured (cores, ISA flags, RAM, memory bandwidth, matmul peak),
and :func:`machine_info`, the facts that profile reports and benchmarks record about it.

Bandwidth comes from a short STREAM-style copy test (numpy ``copyto`` over arrays far larger
than the caches: bytes read + bytes written per second, best of several runs); peak compute from
a float32 matmul. Results are cached per machine in the edgeprune cache directory, because the
measurement takes a few seconds and the figures do not change between runs.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

from edgeprune.devices.device_profile import DeviceProfile

_ISA_FLAGS = {
    # /proc/cpuinfo flag -> our ISA name (x86 "flags", ARM "Features")
    "avx2": "avx2", "avx512f": "avx512", "avx512_vnni": "avx512_vnni", "avx_vnni": "avx_vnni", "fma": "fma",
    "f16c": "f16c", "avx512_bf16": "avx512_bf16", "amx_tile": "amx",
    "asimd": "neon", "asimddp": "dotprod", "i8mm": "i8mm", "sve": "sve", "sve2": "sve2", "bf16": "bf16", "fphp": "fp16",
}  # fmt: skip


def _cpuinfo() -> tuple[str, tuple[str, ...]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, ()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware") and value.strip():
            model = value.strip()
        if key in ("flags", "features"):
            flags.update(value.split())
    return model, tuple(sorted({ours for theirs, ours in _ISA_FLAGS.items() if theirs in flags}))


def _meminfo_gb() -> tuple[float, float]:
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        total = int(fields["MemTotal"].split()[0]) / 2**20
        avail = int(fields.get("MemAvailable", fields["MemTotal"]).split()[0]) / 2**20
        return round(total, 1), round(avail, 1)
    except (OSError, KeyError, ValueError):
        return 0.0, 0.0


def machine_info() -> dict:
    """This machine's facts for a report's header: CPU model, cores, ISA flags, RAM, platform, Python.

    Read from /proc in microseconds, nothing measured: profiles and benchmarks record it beside
    their figures."""
    model, isa = _cpuinfo()
    return {"cpu": model, "cores": os.cpu_count(), "isa": list(isa), "memory_gb": _meminfo_gb()[0],
            "platform": platform.platform(), "python": platform.python_version()}  # fmt: skip


def measure_bandwidth_gbs(size_mb: int = 256, repeats: int = 5) -> float:
    """Copy bandwidth in GB/s (read + write bytes), best of ``repeats`` copies of ``size_mb``."""
    import numpy as np

    n = size_mb * 2**20 // 8
    src = np.ones(n, dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # first touch: page faults are not bandwidth
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return round(2 * src.nbytes / best / 1e9, 2)


def measure_matmul_tflops(n: int = 1024, repeats: int = 5) -> float:
    import numpy as np

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = a.T.copy()
    a @ b  # warm-up (thread pool start)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return round(2 * n**3 / best / 1e12, 4)


def _cache_file() -> Path:
    from edgeprune.models.cache import cache_root

    return cache_root() / f"host-{platform.node()}.json"


def measure_host(*, refresh: bool = False) -> dict:
    """Measured host figures, cached per machine (``refresh=True`` measures again)."""
    path = _cache_file()
    model, isa = _cpuinfo()
    if not refresh and path.is_file():
        try:
            cached = json.loads(path.read_text())
            if cached.get("cpu_model") == model and cached.get("cpu_cores") == os.cpu_count():
                return cached
        except (json.JSONDecodeError, OSError):
            pass
    total, avail = _meminfo_gb()
    figures = {
        "cpu_model": model,
        "cpu_cores": os.cpu_count() or 1,
        "cpu_isa": list(isa),
        "memory_gb": total,
        "available_gb": avail,
        "bandwidth_gbs": measure_bandwidth_gbs(),
        "fp32_tflops": measure_matmul_tflops(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    from edgeprune.fileio import write_text_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(figures, indent=2) + "\n")
    return figures


def save_calibration(efficiency: dict[str, dict[str, dict[str, float]]], *, note: str = "") -> dict:
    """Store fitted efficiencies (runtime -> storage type -> {"bw_efficiency", "compute_efficiency"})
    in the host cache beside the measurements they were fitted against; a later ``refresh``
    re-measures the host and drops them (they are relative to the measured bandwidth and peak)."""
    from edgeprune.fileio import write_text_atomic

    figures = measure_host()
    figures["calibration"] = {"efficiency": efficiency, "fitted_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "note": note}
    write_text_atomic(_cache_file(), json.dumps(figures, indent=2) + "\n")
    return figures


def host_profile(*, refresh: bool = False) -> DeviceProfile:
    m = measure_host(refresh=refresh)
    cal = m.get("calibration") or {}
    isa = tuple(m["cpu_isa"])
    where = f"measured on this machine {m['measured_at']} (cached in {_cache_file()})"
    return DeviceProfile(
        name="host",
        description=f"this machine: {m['cpu_model']}, {m['cpu_cores']} cores",
        memory_gb=m["memory_gb"],
        usable_memory_gb=round(m["available_gb"] * 0.8, 1),
        bandwidth_gbs=m["bandwidth_gbs"],
        peak_tflops={"fp32": m["fp32_tflops"]},
        cpu_cores=m["cpu_cores"],
        cpu_isa=isa,
        accelerators=(),
        runtimes={"llama.cpp": ("cpu",), "onnxruntime": ("CPUExecutionProvider",), "torch": ("cpu",)},
        preferred_formats=("gguf", "onnx"),
        preferred_quant=("q8_0", "q4_0", "int8"),
        width_align=32,
        sparse_24=False,
        sources={
            "bandwidth_gbs": f"STREAM-style numpy copy, 256 MB, best of 5; {where}",
            "peak_tflops": f"numpy float32 1024x1024 matmul, best of 5; {where}",
            "usable_memory_gb": "80% of MemAvailable at measurement time",
            "cpu_isa": "/proc/cpuinfo flags",
            **({"calibration": f"fitted {cal['fitted_at']} ({cal.get('note') or 'measured decode / prefill'}), cached "
                               f"with the measurements in {_cache_file()}"} if cal else {}),  # fmt: skip
        },
        measured=True,
        calibration=cal.get("efficiency", {}),
    )

"""The device profile type: what a device offers a model (memory, bandwidth, compute, runtimes,
formats), each figure with its source.

Its own module so that the table of named profiles (``edgeprune.devices.profiles``) and the measured
``host`` profile (``edgeprune.devices.host``) can both build one without importing each other.
Imports no torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    memory_gb: float  # total RAM (unified on Jetson / Apple / phones)
    usable_memory_gb: float  # what a model plus its KV cache may take after OS / runtime
    bandwidth_gbs: float  # peak memory bandwidth, GB/s
    # Peak compute of the engine that runs the model, in TFLOPS/TOPS per precision ("fp32", "fp16", "int8").
    peak_tflops: dict[str, float]
    cpu_cores: int
    cpu_isa: tuple[str, ...]  # neon, dotprod, i8mm, sve, avx2, avx512, avx_vnni, ...
    accelerators: tuple[str, ...]
    # runtime -> execution providers / backends available on the device
    runtimes: dict[str, tuple[str, ...]]
    preferred_formats: tuple[str, ...]  # first is the default choice for `build`
    preferred_quant: tuple[str, ...]
    width_align: int  # MLP width multiple the device's fast kernels want (K-quants: 256, legacy quants: 32)
    sparse_24: bool  # hardware 2:4 sparse kernels (Ampere-class sparse tensor cores)
    power_modes: tuple[str, ...] = ()
    compute_engine: str = "cpu"  # where decode runs by default: "cpu" or "gpu"
    # Fixed cost per layer per decoded token (kernel launches, synchronisation): dominates small
    # models on GPUs, where the weights stream in microseconds.
    per_layer_overhead_us: float = 0.0
    sources: dict[str, str] = field(default_factory=dict)
    measured: bool = False
    # Efficiencies fitted on measurements (host only so far): runtime -> storage type ->
    # {"bw_efficiency": ..., "compute_efficiency": ...}; ``devices.cost.predict`` uses them.
    calibration: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def sparse_24_note(self) -> str:
        if self.sparse_24:
            return "2:4 sparse tensor cores: 2:4 can speed up prefill (TensorRT / cuSPARSELt); decode gains little"
        return "no 2:4 kernels: 2:4 sparsity saves storage only, no speed-up"

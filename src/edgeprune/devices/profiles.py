"""Device profiles as data: one named builder per device, each figure with its source.

Figures come from ../shared/notes/export-runtime-devices.md (section 4, sources in section 7).
"derived" marks a figure computed from a spec (bus width x data rate, cores x clock x FLOP/cycle)
rather than quoted; "unverified" marks one not re-read from a primary source. ``host`` is not a
table row: it is measured on this machine (see ``edgeprune.devices.host``). The profile type itself
lives in ``edgeprune.devices.device_profile``, which both modules import: host.py builds one, this
module registers it, and neither imports the other back.

This module imports no torch (profiles are read by the CLI and by build planning).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from edgeprune.devices.device_profile import DeviceProfile
from edgeprune.devices.host import host_profile
from edgeprune.errors import EdgepruneError


_BUILDERS: dict[str, Callable[[], DeviceProfile]] = {}

_NOTES = "shared/notes/export-runtime-devices.md §4"


def register_device(name: str):
    def deco(fn: Callable[[], DeviceProfile]):
        _BUILDERS[name] = fn
        return fn

    return deco


def device_names() -> list[str]:
    return list(_BUILDERS)


def get_device(name: str) -> DeviceProfile:
    """The profile called ``name``; an unknown name answers with the closest names."""
    if name not in _BUILDERS:
        close = difflib.get_close_matches(name, list(_BUILDERS), n=3, cutoff=0.4)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise EdgepruneError(
            f"unknown device {name!r}{hint}: run `edgeprune devices` to list the {len(_BUILDERS)} known devices"
        )
    return _BUILDERS[name]()


_JETSON_RUNTIMES = {
    "llama.cpp": ("cuda", "cpu"),
    "onnxruntime": ("CUDAExecutionProvider", "TensorrtExecutionProvider", "CPUExecutionProvider"),
}
_ARM_A78_ISA = ("neon", "dotprod", "fp16")


@register_device("jetson-orin-nano")
def jetson_orin_nano() -> DeviceProfile:
    return DeviceProfile(
        name="jetson-orin-nano",
        description="NVIDIA Jetson Orin Nano 8GB developer kit, Super mode (JetPack 6.1+)",
        memory_gb=8,
        usable_memory_gb=5.5,
        bandwidth_gbs=102,
        peak_tflops={"fp16": 17.0, "int8": 33.0, "int8_sparse": 67.0},
        cpu_cores=6,
        cpu_isa=_ARM_A78_ISA,
        accelerators=("ampere-gpu-1024-cuda-32-tc",),
        runtimes=_JETSON_RUNTIMES,
        preferred_formats=("gguf", "onnx"),
        preferred_quant=("q4_0", "q8_0", "int4"),
        width_align=32,
        sparse_24=True,
        power_modes=("7W", "15W", "25W", "MAXN_SUPER"),
        compute_engine="gpu",
        per_layer_overhead_us=150,
        sources={
            "per_layer_overhead_us": f"derived: SmolLM2-135M decodes at 165 tok/s in llama.cpp CUDA at 25 W "
            f"({_NOTES[:-3]}§3.3, smolhub.com) = 6.1 ms/token, of which ~1.6 ms is weight streaming; rest / 30 layers",
            "bandwidth_gbs": f"{_NOTES}: 102 GB/s Super (68 non-Super), NVIDIA Dec-2024 datasheet via brojogopalsapui.com",
            "peak_tflops": f"{_NOTES}: 67 INT8 TOPS sparse (33 dense); FP16 tensor ~17 TFLOPS dense (derived)",
            "usable_memory_gb": f"{_NOTES}: 8 GB unified, ~5-6 GB usable for models",
            "cpu_isa": f"{_NOTES}: 6x Cortex-A78AE ARMv8.2-A, NEON/dotprod/FP16, no i8mm/SVE",
            "sparse_24": f"{_NOTES}: Ampere SM 8.7 sparse tensor cores",
        },
    )


@register_device("jetson-orin-nx-16gb")
def jetson_orin_nx_16gb() -> DeviceProfile:
    return DeviceProfile(
        name="jetson-orin-nx-16gb",
        description="NVIDIA Jetson Orin NX 16GB module",
        memory_gb=16,
        usable_memory_gb=12,
        bandwidth_gbs=102.4,
        peak_tflops={"fp16": 25.0, "int8": 50.0, "int8_sparse": 100.0},
        cpu_cores=8,
        cpu_isa=_ARM_A78_ISA,
        accelerators=("ampere-gpu-1024-cuda-32-tc", "nvdla-v2-x2", "pva"),
        runtimes=_JETSON_RUNTIMES,
        preferred_formats=("gguf", "onnx"),
        preferred_quant=("q4_0", "q8_0", "int4"),
        width_align=32,
        sparse_24=True,
        power_modes=("10W", "15W", "25W", "40W-super"),
        compute_engine="gpu",
        per_layer_overhead_us=150,
        sources={
            "per_layer_overhead_us": "same CPU cluster and GPU generation as jetson-orin-nano (assumption)",
            "bandwidth_gbs": f"{_NOTES}: 102.4 GB/s, NVIDIA DS-10712 (unverified re-read)",
            "peak_tflops": f"{_NOTES}: 100 INT8 TOPS sparse (157 Super); dense = half (derived); fp16 derived",
            "usable_memory_gb": "16 GB unified minus ~4 GB OS/CUDA (assumption)",
        },
    )


@register_device("jetson-agx-orin-64gb")
def jetson_agx_orin_64gb() -> DeviceProfile:
    return DeviceProfile(
        name="jetson-agx-orin-64gb",
        description="NVIDIA Jetson AGX Orin 64GB",
        memory_gb=64,
        usable_memory_gb=56,
        bandwidth_gbs=204.8,
        peak_tflops={"fp16": 42.5, "int8": 85.0, "int8_sparse": 170.0},
        cpu_cores=12,
        cpu_isa=_ARM_A78_ISA,
        accelerators=("ampere-gpu-2048-cuda-64-tc", "nvdla-v2-x2", "pva"),
        runtimes=_JETSON_RUNTIMES,
        preferred_formats=("gguf", "onnx"),
        preferred_quant=("q8_0", "q4_0", "int4"),
        width_align=32,
        sparse_24=True,
        power_modes=("15W", "30W", "50W", "MAXN"),
        compute_engine="gpu",
        per_layer_overhead_us=120,
        sources={
            "per_layer_overhead_us": "jetson-orin-nano figure scaled by CPU clock 1.7/2.2 GHz (assumption)",
            "bandwidth_gbs": f"{_NOTES}: 204.8 GB/s, AGX Orin technical brief (unverified re-read)",
            "peak_tflops": f"{_NOTES}: 275 INT8 TOPS sparse GPU+DLA; GPU-only share and dense = half (derived)",
        },
    )


@register_device("raspberry-pi-5-8gb")
def raspberry_pi_5_8gb() -> DeviceProfile:
    return DeviceProfile(
        name="raspberry-pi-5-8gb",
        description="Raspberry Pi 5, 8 GB (BCM2712, 4x Cortex-A76 @ 2.4 GHz)",
        memory_gb=8,
        usable_memory_gb=6.5,
        bandwidth_gbs=17,
        peak_tflops={"fp32": 0.154, "fp16": 0.307, "int8": 0.614},
        cpu_cores=4,
        cpu_isa=("neon", "dotprod", "fp16"),
        accelerators=(),
        runtimes={"llama.cpp": ("cpu",), "onnxruntime": ("CPUExecutionProvider",)},
        preferred_formats=("gguf", "onnx"),
        preferred_quant=("q4_0", "q8_0"),
        width_align=32,
        sparse_24=False,
        power_modes=("5V/5A",),
        sources={
            "bandwidth_gbs": f"{_NOTES}: LPDDR4X-4267 x 32-bit = ~17 GB/s (derived)",
            "peak_tflops": f"{_NOTES}: 4 x 2.4 GHz x 16 FLOP/cycle = 154 GFLOPS FP32 (derived); fp16/int8 = 2x/4x (derived)",
            "cpu_isa": f"{_NOTES}: ARMv8.2-A NEON, dotprod, FP16; no i8mm, no SVE",
        },
    )


@register_device("snapdragon-8-gen-3")
def snapdragon_8_gen_3() -> DeviceProfile:
    return DeviceProfile(
        name="snapdragon-8-gen-3",
        description="Snapdragon 8 Gen 3 phone (e.g. Galaxy S24), CPU inference",
        memory_gb=12,
        usable_memory_gb=4,
        bandwidth_gbs=76.8,
        peak_tflops={"fp32": 0.4, "int8": 1.6},
        cpu_cores=8,
        cpu_isa=("neon", "dotprod", "i8mm", "bf16"),
        accelerators=("hexagon-npu-v75", "adreno-750"),
        runtimes={"llama.cpp": ("cpu", "opencl", "hexagon"), "onnxruntime": ("CPUExecutionProvider", "QNNExecutionProvider")},
        preferred_formats=("gguf", "onnx"),
        preferred_quant=("q4_0", "int4"),
        width_align=32,
        sparse_24=False,
        power_modes=("sustained ~3-6 W (unverified)",),
        sources={
            "bandwidth_gbs": f"{_NOTES}: LPDDR5X-9600 x 64-bit = 76.8 GB/s (derived)",
            "usable_memory_gb": "Android app memory limits leave a few GB to one app (assumption)",
            "peak_tflops": "CPU: X4 + 7 cores, NEON 4x128-bit FMA ~ 0.4 TFLOPS fp32 (derived, unverified)",
            "cpu_isa": f"{_NOTES}: ARMv9.2-A NEON, dotprod, i8mm, BF16",
        },
    )


@register_device("apple-m2-8gb")
def apple_m2_8gb() -> DeviceProfile:
    return DeviceProfile(
        name="apple-m2-8gb",
        description="Apple M2, 8 GB unified memory",
        memory_gb=8,
        usable_memory_gb=5.5,
        bandwidth_gbs=100,
        peak_tflops={"fp32": 3.6, "fp16": 3.6},
        cpu_cores=8,
        cpu_isa=("neon", "dotprod", "i8mm", "bf16"),
        accelerators=("metal-gpu-10-core", "ane-15.8-tops"),
        runtimes={"llama.cpp": ("metal", "cpu"), "onnxruntime": ("CoreMLExecutionProvider", "CPUExecutionProvider")},
        preferred_formats=("gguf",),
        preferred_quant=("q4_0", "q8_0"),
        width_align=32,
        sparse_24=False,
        compute_engine="gpu",
        per_layer_overhead_us=30,
        sources={
            "per_layer_overhead_us": "~10 kernels per layer x ~3 us launch latency (estimate, unverified)",
            "bandwidth_gbs": f"{_NOTES}: 100 GB/s (macrumors, fudzilla)",
            "peak_tflops": f"{_NOTES}: 10-core GPU ~3.6 TFLOPS FP32",
        },
    )


@register_device("x86-laptop")
def x86_laptop() -> DeviceProfile:
    return DeviceProfile(
        name="x86-laptop",
        description="Typical x86 laptop (Core Ultra 7 155H / Ryzen 7 7840U class), CPU inference",
        memory_gb=16,
        usable_memory_gb=10,
        bandwidth_gbs=75,
        peak_tflops={"fp32": 1.0, "int8": 2.0},
        cpu_cores=8,
        cpu_isa=("avx2", "avx_vnni", "fma"),
        accelerators=("igpu", "npu-10-11-tops"),
        runtimes={"llama.cpp": ("cpu", "vulkan"), "onnxruntime": ("CPUExecutionProvider", "DmlExecutionProvider", "OpenVINOExecutionProvider")},
        preferred_formats=("gguf", "onnx"),
        preferred_quant=("q4_0", "q8_0", "int4"),
        width_align=32,
        sparse_24=False,
        sources={
            "bandwidth_gbs": f"{_NOTES}: ~120 GB/s peak LPDDR5X (derived), real STREAM ~60-90; 75 used",
            "peak_tflops": f"{_NOTES}: CPU ~1-1.5 TFLOPS FP32 (derived)",
        },
    )


@register_device("rtx-4090")
def rtx_4090() -> DeviceProfile:
    return DeviceProfile(
        name="rtx-4090",
        description="NVIDIA GeForce RTX 4090 (desktop, 24 GB GDDR6X)",
        memory_gb=24,
        usable_memory_gb=22,
        bandwidth_gbs=1008,
        peak_tflops={"fp32": 82.6, "fp16": 165.0, "fp16_sparse": 330.0, "int8": 661.0},
        cpu_cores=16,
        cpu_isa=("avx2",),
        accelerators=("ada-gpu-16384-cuda-512-tc",),
        runtimes={"llama.cpp": ("cuda",), "onnxruntime": ("CUDAExecutionProvider", "TensorrtExecutionProvider")},
        preferred_formats=("gguf", "onnx"),
        preferred_quant=("q8_0", "f16", "q4_0"),
        width_align=32,
        sparse_24=True,
        compute_engine="gpu",
        per_layer_overhead_us=30,
        sources={
            "per_layer_overhead_us": "~10 kernels per layer x ~3 us launch latency (estimate, unverified)",
            "bandwidth_gbs": f"{_NOTES}: 1008 GB/s (waredb, Tom's Hardware table)",
            "peak_tflops": f"{_NOTES}: FP16 tensor 165 dense / 330 sparse, INT8 661 dense, FP32 82.6",
        },
    )


@register_device("h100")
def h100() -> DeviceProfile:
    return DeviceProfile(
        name="h100",
        description="NVIDIA H100 SXM5 80GB",
        memory_gb=80,
        usable_memory_gb=76,
        bandwidth_gbs=3350,
        peak_tflops={"fp32": 67.0, "fp16": 989.0, "fp16_sparse": 1979.0, "int8": 1979.0},
        cpu_cores=16,
        cpu_isa=("avx2", "avx512"),
        accelerators=("hopper-gpu-132-sm",),
        runtimes={"llama.cpp": ("cuda",), "onnxruntime": ("CUDAExecutionProvider", "TensorrtExecutionProvider")},
        preferred_formats=("onnx", "gguf"),
        preferred_quant=("f16", "q8_0", "int4"),
        width_align=64,
        sparse_24=True,
        compute_engine="gpu",
        per_layer_overhead_us=30,
        sources={
            "per_layer_overhead_us": "~10 kernels per layer x ~3 us launch latency (estimate, unverified)",
            "bandwidth_gbs": f"{_NOTES}: 3.35 TB/s HBM3 (glennklockwood.com)",
            "peak_tflops": f"{_NOTES}: FP16 989 dense / 1979 sparse; INT8 1979 dense",
        },
    )


@register_device("host")
def host() -> DeviceProfile:
    return host_profile()

"""A self-contained profiling runner: the one file copied to a remote board.

It needs only Python 3.8+ and the runtime (``llama_cpp`` or ``onnxruntime`` + numpy) on the board,
never edgeprune: standard library only at import time. The local worker
(``edgeprune.runtime.worker``) imports its llama.cpp runner and RSS probe from here, so local and
remote runs measure the same way (llama-bench's method: a batch of random prompt ids, then
single tokens fed back; a short warm-up excluded; one fresh process per repetition).

    python runner.py probe                               # python, runtimes, cpu, memory, telemetry sources
    python runner.py run --runtime llama.cpp --artifact m.gguf --prompt-tokens 512 --gen-tokens 128 --reps 5
    python runner.py once --runtime onnxruntime --artifact onnx_dir/ ...   # one repetition (run starts these)

``run`` prints one JSON line: ``{"runs": [...], "telemetry": {...}, "machine": {...}}``; a failure
prints ``{"error": "..."}`` and exits non-zero (3 when the runtime is not installed).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time

RUNTIME_MODULES = {"llama.cpp": "llama_cpp", "onnxruntime": "onnxruntime"}


def amx_repack_off() -> bool:
    """Whether :func:`new_llama` turns llama.cpp's extra weight buffers off: where the library was
    built with AMX. On this project's Xeon hosts (AMX in the CPU flags, llama-cpp-python 0.3.36
    built natively) the AMX buffer repacks the weights at load and the first decode segfaults, for
    the packaged SmolLM2 Q4_1 file and tiny q8_0 files alike; with the extra buffers off the same
    files load and compute. The cost is the repacked kernels' speed, on AMX builds only."""
    import llama_cpp

    return "AMX_INT8 = 1" in llama_cpp.llama_print_system_info().decode(errors="replace")


def new_llama(**kwargs):
    """``llama_cpp.Llama(**kwargs)``, with the extra (repacked) weight buffers off where
    :func:`amx_repack_off` says so. Every llama.cpp model edgeprune opens goes through here."""
    import llama_cpp
    import llama_cpp.llama as llama_module

    if not amx_repack_off():
        return llama_cpp.Llama(**kwargs)
    # Llama() takes its model parameters from this function and has no argument for the field:
    # swap the function for the constructor's duration only.
    low = llama_module.llama_cpp
    default = low.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = False
        return p

    low.llama_model_default_params = params
    try:
        return llama_cpp.Llama(**kwargs)
    finally:
        low.llama_model_default_params = default


def random_tokens(n: int, vocab: int, seed: int) -> list:
    import random

    rng = random.Random(seed)
    # Skip the lowest ids: they are special tokens in most vocabularies.
    return [rng.randrange(min(100, vocab // 2), vocab) for _ in range(n)]


def run_llamacpp(artifact: str, prompt_tokens: int, gen_tokens: int, threads: int, seed: int, gpu_layers: int = 0) -> dict:
    """``gpu_layers``: layers offloaded to the GPU (a CUDA/Metal/Vulkan build of llama.cpp; 0 = CPU)."""
    t0 = time.perf_counter()
    llm = new_llama(
        model_path=artifact, n_ctx=prompt_tokens + gen_tokens + 16, n_batch=512, n_ubatch=512, n_gpu_layers=gpu_layers,
        n_threads=threads, n_threads_batch=threads, logits_all=False, verbose=False, seed=seed,
    )  # fmt: skip
    load_s = time.perf_counter() - t0
    vocab = llm.n_vocab()
    prompt = random_tokens(prompt_tokens, vocab, seed)
    gen = random_tokens(gen_tokens, vocab, seed + 1)

    def once(p, g):
        llm.reset()  # position 0 again; eval() drops the KV cells past the current position
        t = time.perf_counter()
        llm.eval(p)
        t_prefill = time.perf_counter() - t
        t = time.perf_counter()
        for tok in g:
            llm.eval([tok])
        return t_prefill, time.perf_counter() - t

    once(prompt[:16], gen[:4])  # warm-up
    prefill_s, decode_s = once(prompt, gen)
    return {"load_s": load_s, "prefill_s": prefill_s, "decode_s": decode_s}


_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16"}


def run_onnxruntime_plain(artifact: str, prompt_tokens: int, gen_tokens: int, threads: int, seed: int) -> dict:
    """The edgeprune ONNX decoder contract (input_ids, attention_mask, position_ids,
    past_key_values.{i}.key/value -> logits, present.*) on plain onnxruntime + numpy."""
    import numpy as np
    import onnxruntime as ort

    path = artifact
    if os.path.isdir(path):  # an export directory: its one .onnx graph
        graphs = sorted(glob.glob(os.path.join(path, "*.onnx")))
        if not graphs:
            raise FileNotFoundError(f"no .onnx file in {path}")
        path = graphs[0]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    t0 = time.perf_counter()
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    load_s = time.perf_counter() - t0
    inputs = {i.name: i for i in sess.get_inputs()}
    past = []  # (name, kv_heads, head_dim, dtype) in input order
    i = 0
    while f"past_key_values.{i}.key" in inputs:
        for kind in ("key", "value"):
            inp = inputs[f"past_key_values.{i}.{kind}"]
            past.append((inp.name, inp.shape[1], inp.shape[3], _ORT_DTYPES.get(inp.type, "float32")))
        i += 1
    vocab = sess.get_outputs()[0].shape[-1]
    vocab = vocab if isinstance(vocab, int) else 32000
    has_pos = "position_ids" in inputs
    prompt = random_tokens(prompt_tokens, vocab, seed)
    gen = random_tokens(gen_tokens, vocab, seed + 1)

    def step(ids, start, cache):
        n = len(ids)
        feeds = {"input_ids": np.array([ids], dtype=np.int64), "attention_mask": np.ones((1, start + n), dtype=np.int64)}
        if has_pos:
            feeds["position_ids"] = np.arange(start, start + n, dtype=np.int64)[None]
        feeds.update(zip([p[0] for p in past], cache))
        return sess.run(None, feeds)[1:]

    def once(p, g):
        cache = [np.zeros((1, kv, 0, hd), dtype=dt) for _, kv, hd, dt in past]  # (batch, kv_heads, 0, head_dim)
        t = time.perf_counter()
        cache = step(p, 0, cache)
        t_prefill = time.perf_counter() - t
        t = time.perf_counter()
        for k, tok in enumerate(g):
            cache = step([tok], len(p) + k, cache)
        return t_prefill, time.perf_counter() - t

    once(prompt[:16], gen[:4])  # warm-up
    prefill_s, decode_s = once(prompt, gen)
    return {"load_s": load_s, "prefill_s": prefill_s, "decode_s": decode_s}


RUNNERS = {"llama.cpp": run_llamacpp, "onnxruntime": run_onnxruntime_plain}


# A verbatim copy of edgeprune.memory.peak_rss_mb, the probe every step, build and bench uses: this
# file may not import edgeprune (see the module docstring). tests/unit/test_layering.py keeps the two equal.
def peak_rss_mb() -> float:
    """Peak resident memory of this process since it started running this program.

    On Linux, ``ru_maxrss`` survives ``exec`` and so would count the (possibly huge) parent that
    forked us; ``VmHWM`` belongs to the new address space, so it is read first.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB -> MiB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


# -- machine facts and telemetry -------------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return None


def machine_facts() -> dict:
    cpu = platform.processor() or platform.machine()
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("model name", "hardware") and value.strip():
            cpu = value.strip()
    mem = None
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            mem = round(int(line.split()[1]) / 2**20, 1)
    model = _read("/proc/device-tree/model") or _read("/sys/firmware/devicetree/base/model")
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": mem, "board": model.strip("\x00") if model else None,
            "platform": platform.platform(), "python": platform.python_version(), "hostname": platform.node()}  # fmt: skip


def thermal_zones() -> dict:
    """{zone type: degrees C} from /sys/class/thermal (Linux boards, Android)."""
    out = {}
    for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        temp = _read(os.path.join(zone, "temp"))
        name = _read(os.path.join(zone, "type")) or os.path.basename(zone)
        if temp and temp.lstrip("-").isdigit():
            out[name] = int(temp) / 1000.0
    return out


def cpu_freqs_mhz() -> list:
    freqs = []
    for path in sorted(glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq")):
        value = _read(path)
        if value and value.isdigit():
            freqs.append(int(value) / 1000.0)
    return freqs


def mem_available_mb() -> float | None:
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return None


class Telemetry:
    """Samples thermal zones, CPU clocks, load and free memory every ``interval`` s while runs go
    on, and records ``tegrastats`` output on a Jetson. Everything is optional: absent sources are
    simply missing from the summary."""

    def __init__(self, interval: float = 0.5):
        self.interval = interval
        self.samples: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._tegra = None
        self._tegra_lines: list = []

    def _loop(self):
        while not self._stop.is_set():
            load = _read("/proc/loadavg")
            self.samples.append({"t": time.time(), "thermal_c": thermal_zones(), "cpu_mhz": cpu_freqs_mhz(),
                                 "load1": float(load.split()[0]) if load else None, "mem_available_mb": mem_available_mb()})  # fmt: skip
            self._stop.wait(self.interval)

    def __enter__(self):
        tegrastats = _which("tegrastats")
        if tegrastats:
            try:
                self._tegra = subprocess.Popen([tegrastats, "--interval", str(int(self.interval * 1000))],
                                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
                threading.Thread(target=self._read_tegra, daemon=True).start()
            except OSError:
                self._tegra = None
        self._thread.start()
        return self

    def _read_tegra(self):
        for line in self._tegra.stdout:
            self._tegra_lines.append(line.strip())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        if self._tegra is not None:
            self._tegra.terminate()
            try:
                self._tegra.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._tegra.kill()
        return False

    def summary(self) -> dict:
        out: dict = {"samples": len(self.samples), "interval_s": self.interval}
        zones = {}
        for s in self.samples:
            for name, temp in s["thermal_c"].items():
                lo, hi = zones.get(name, (temp, temp))
                zones[name] = (min(lo, temp), max(hi, temp))
        if zones:
            out["thermal_c"] = {name: {"min": lo, "max": hi} for name, (lo, hi) in zones.items()}
        freqs = [f for s in self.samples for f in s["cpu_mhz"]]
        if freqs:
            out["cpu_mhz"] = {"min": min(freqs), "max": max(freqs)}
        loads = [s["load1"] for s in self.samples if s["load1"] is not None]
        if loads:
            out["load1_max"] = max(loads)
        mem = [s["mem_available_mb"] for s in self.samples if s["mem_available_mb"] is not None]
        if mem:
            out["mem_available_mb_min"] = min(mem)
        if self._tegra_lines:
            out["tegrastats"] = {"lines": len(self._tegra_lines), "first": self._tegra_lines[0], "last": self._tegra_lines[-1]}
        return out


def _which(name: str) -> str | None:
    for d in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/bin", "/usr/sbin"]:
        path = os.path.join(d, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


# -- commands --------------------------------------------------------------------------------------


def probe() -> dict:
    """What the board has: Python, the runtimes (version or None), machine facts, telemetry sources."""
    import importlib

    modules = {}
    for name in ("llama_cpp", "onnxruntime", "numpy"):
        try:
            mod = importlib.import_module(name)
            modules[name] = getattr(mod, "__version__", "?")
        except Exception:  # ImportError, or a broken binary wheel
            modules[name] = None
    return {"modules": modules, "machine": machine_facts(), "tegrastats": bool(_which("tegrastats")),
            "thermal_zones": len(thermal_zones())}  # fmt: skip


def once(args) -> dict:
    extra = {"gpu_layers": args.gpu_layers} if args.runtime == "llama.cpp" and args.gpu_layers else {}
    result = RUNNERS[args.runtime](args.artifact, args.prompt_tokens, args.gen_tokens, args.threads, args.seed, **extra)
    result["peak_rss_mb"] = peak_rss_mb()
    result.update(extra)
    result.update(prompt_tokens=args.prompt_tokens, gen_tokens=args.gen_tokens, threads=args.threads)
    return result


def run(args) -> dict:
    """``reps`` repetitions, each in a fresh process, with telemetry sampled around them."""
    runs = []
    base = [sys.executable, os.path.abspath(__file__), "once", "--runtime", args.runtime, "--artifact", args.artifact,
            "--prompt-tokens", str(args.prompt_tokens), "--gen-tokens", str(args.gen_tokens), "--threads", str(args.threads),
            "--gpu-layers", str(args.gpu_layers)]  # fmt: skip
    with Telemetry() as tel:
        for rep in range(args.reps):
            proc = subprocess.run(base + ["--seed", str(rep)], capture_output=True, text=True, timeout=args.timeout)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            one = json.loads(lines[-1]) if lines else {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
            if "error" in one:
                return one
            runs.append(one)
    return {"runs": runs, "telemetry": tel.summary(), "machine": machine_facts()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="edgeprune's self-contained profiling runner")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("probe")
    for name in ("run", "once"):
        sp = sub.add_parser(name)
        sp.add_argument("--runtime", choices=sorted(RUNNERS), required=True)
        sp.add_argument("--artifact", required=True)
        sp.add_argument("--prompt-tokens", type=int, default=512)
        sp.add_argument("--gen-tokens", type=int, default=128)
        sp.add_argument("--threads", type=int, default=os.cpu_count() or 1)
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument("--reps", type=int, default=5)
        sp.add_argument("--timeout", type=float, default=600, help="seconds per repetition")
        sp.add_argument("--gpu-layers", type=int, default=0, help="llama.cpp: layers to offload to the GPU (default 0: CPU)")
    args = p.parse_args(argv)
    if args.cmd == "probe":
        print(json.dumps(probe()))
        return 0
    try:
        out = once(args) if args.cmd == "once" else run(args)
    except ImportError as exc:
        print(json.dumps({"error": f"runtime {args.runtime} is not installed here ({sys.executable}): {exc}"}))
        return 3
    except subprocess.TimeoutExpired as exc:
        print(json.dumps({"error": f"a repetition took longer than {exc.timeout:.0f}s"}))
        return 1
    except Exception as exc:  # reported to the harness as one line, not a traceback
        print(json.dumps({"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}))
        return 1
    print(json.dumps(out))
    return 0 if "error" not in out else 1


if __name__ == "__main__":
    sys.exit(main())

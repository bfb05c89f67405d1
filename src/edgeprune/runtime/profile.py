"""The profiling harness: repeated runs of one artifact in fresh processes, aggregated.

Each repetition is a separate ``edgeprune.runtime.worker`` process (peak RSS per run; nothing
warm carries over); prefill and decode tokens/s are reported as median / min / max over the
repetitions, like llama-bench's pp512 / tg128.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgeprune.devices.host import machine_info
from edgeprune.errors import EdgepruneError
from edgeprune.export.registry import FORMATS, MODEL_RUNTIME


def runtime_names() -> tuple[str, ...]:
    """Every profiling runtime: each export format's own, torch (model directories), then the others
    a format lists (llama-bench)."""
    rows = FORMATS.values()
    return tuple(dict.fromkeys([*(f.runtime for f in rows), MODEL_RUNTIME, *(r for f in rows for r in f.extra_runtimes)]))


def default_runtime(kind: str) -> str:
    """The runtime an artifact kind is profiled on: its format's own; torch for a model directory."""
    return FORMATS[kind].runtime if kind in FORMATS else MODEL_RUNTIME


@dataclass
class ProfileResult:
    artifact: str
    runtime: str
    prompt_tokens: int
    gen_tokens: int
    reps: int
    threads: int
    runs: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    machine: dict = field(default_factory=dict)
    remote: str | None = None  # ssh://... or adb://... when measured on a board
    telemetry: dict = field(default_factory=dict)  # the board's thermal zones, clocks, load, tegrastats

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_runtime(artifact: str, runtime: str | None) -> tuple[str, str]:
    """(runtime, path to hand the worker) for an artifact; the default runtime follows its kind."""
    from edgeprune.describe import resolve_artifact
    from edgeprune.models import builtin

    kind, path = resolve_artifact(artifact)
    runtime = runtime or default_runtime(kind)
    if runtime not in runtime_names():
        raise EdgepruneError(f"unknown runtime {runtime!r}: use {', '.join(runtime_names())}")
    runs_it = runtime in FORMATS[kind].runtimes if kind in FORMATS else runtime == MODEL_RUNTIME
    if not runs_it:
        raise EdgepruneError(f"runtime {runtime} cannot run a {kind} artifact ({path}): use --runtime {default_runtime(kind)}")
    # torch loads built-in names and directories through edgeprune.models.load
    handle = artifact if runtime == "torch" and builtin.is_builtin(artifact) else str(path)
    return runtime, handle


def _stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def profile(
    artifact: str,
    *,
    runtime: str | None = None,
    prompt_tokens: int = 512,
    gen_tokens: int = 128,
    reps: int = 5,
    threads: int | None = None,
    timeout_s: float = 600,
    remote: str | None = None,
    remote_options=None,
    llama_bench: str = "llama-bench",
) -> ProfileResult:
    """Measure load time, prefill and decode tokens/s, TTFT and peak RSS over ``reps`` fresh processes.

    ``remote``: ``ssh://user@host[:port]`` or ``adb://SERIAL`` runs them on that board instead
    (``remote_options``: an ``edgeprune.runtime.remote.RemoteOptions``), see ``runtime/remote.py``.
    ``runtime="llama-bench"`` runs llama.cpp's own benchmark binary (``llama_bench``: its path here;
    on a board, ``remote_options.llama_bench``) instead of the Python worker: see ``runtime/llamabench.py``.
    """
    if prompt_tokens < 1 or gen_tokens < 1 or reps < 1:
        raise EdgepruneError("--prompt-tokens, --gen-tokens and --reps must be >= 1")
    runtime, handle = resolve_runtime(artifact, runtime)
    if remote:
        return _profile_remote(artifact, handle, runtime, remote, remote_options, prompt_tokens=prompt_tokens,
                               gen_tokens=gen_tokens, reps=reps, threads=threads, timeout_s=timeout_s)  # fmt: skip
    threads = threads or os.cpu_count() or 1
    result = ProfileResult(artifact=artifact, runtime=runtime, prompt_tokens=prompt_tokens,
                           gen_tokens=gen_tokens, reps=reps, threads=threads, machine=machine_info())  # fmt: skip
    if runtime == "llama-bench":
        result.runs = _llama_bench_local(llama_bench, handle, prompt_tokens, gen_tokens, reps, threads, timeout_s)
        result.summary = _summary(result.runs)
        return result
    cmd = [sys.executable, "-m", "edgeprune.runtime.worker", "--runtime", runtime, "--artifact", handle,
           "--prompt-tokens", str(prompt_tokens), "--gen-tokens", str(gen_tokens), "--threads", str(threads)]  # fmt: skip
    from tqdm import tqdm

    for rep in tqdm(range(reps), desc=f"profile {runtime}", unit="run", leave=False):
        try:
            proc = subprocess.run(cmd + ["--seed", str(rep)], capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise EdgepruneError(f"a {runtime} run took longer than {timeout_s:.0f}s: lower --prompt-tokens/--gen-tokens") from None
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        run = json.loads(lines[-1]) if lines else {"error": proc.stderr.strip().splitlines()[-1:] or "no output"}
        if "error" in run:
            raise EdgepruneError(f"{runtime} run failed on {handle}: {run['error']}")
        result.runs.append(_rates(run, prompt_tokens, gen_tokens))
    result.summary = _summary(result.runs)
    return result


def _llama_bench_local(binary, model, prompt_tokens, gen_tokens, reps, threads, timeout_s) -> list[dict]:
    import shutil

    from edgeprune.runtime.llamabench import NOT_FOUND, llama_bench_argv, parse_llama_bench

    path = shutil.which(binary)
    if path is None:
        raise EdgepruneError(NOT_FOUND.format(binary=binary))
    argv = llama_bench_argv(path, model, prompt_tokens=prompt_tokens, gen_tokens=gen_tokens, reps=reps, threads=threads)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s * reps)
    except subprocess.TimeoutExpired:
        raise EdgepruneError(f"llama-bench took longer than {timeout_s * reps:.0f}s: lower --prompt-tokens/--gen-tokens/--reps") from None
    if proc.returncode != 0:
        raise EdgepruneError(f"llama-bench failed on {model}: {(proc.stderr.strip().splitlines() or ['exit ' + str(proc.returncode)])[-1]}")
    return parse_llama_bench(proc.stdout, prompt_tokens=prompt_tokens, gen_tokens=gen_tokens)


def _rates(run: dict, prompt_tokens: int, gen_tokens: int) -> dict:
    if "prefill_tps" in run:  # llama-bench reports rates itself
        return run
    run["prefill_tps"] = prompt_tokens / run["prefill_s"]
    run["decode_tps"] = gen_tokens / run["decode_s"]
    run["ttft_ms"] = 1000 * run["prefill_s"]  # the first token's logits come with the prompt's last position
    return run


def _summary(runs: list[dict]) -> dict:
    """median / min / max per metric; a metric a backend does not report (llama-bench: load, RSS) is left out."""
    keys = ("load_s", "prefill_tps", "decode_tps", "ttft_ms", "peak_rss_mb")
    return {k: _stats([r[k] for r in runs]) for k in keys if all(r.get(k) is not None for r in runs)}


def _profile_remote(artifact, handle, runtime, url, options, *, prompt_tokens, gen_tokens, reps, threads, timeout_s) -> ProfileResult:
    from edgeprune.runtime.remote import RemoteOptions, remote_profile

    if options is None:
        options = RemoteOptions(timeout_s=timeout_s)
    out = remote_profile(handle, url, runtime=runtime, prompt_tokens=prompt_tokens, gen_tokens=gen_tokens, reps=reps,
                         threads=threads, options=options)  # fmt: skip
    runs = [_rates(r, prompt_tokens, gen_tokens) for r in out["runs"]]
    machine = dict(out["machine"], runtimes=out["probe"].get("modules", {}))
    return ProfileResult(artifact=artifact, runtime=runtime, prompt_tokens=prompt_tokens, gen_tokens=gen_tokens, reps=reps,
                         threads=out["threads"], runs=runs, summary=_summary(runs), machine=machine, remote=out["remote"],
                         telemetry=out["telemetry"])  # fmt: skip


def write_report(result: ProfileResult, out_dir: str | Path) -> dict[str, Path]:
    """JSON + markdown + a plot of per-run tokens/s, written atomically into ``out_dir``."""
    from edgeprune.fileio import write_text_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "profile.json", "md": out / "profile.md", "png": out / "profile.png"}
    write_text_atomic(paths["json"], json.dumps(result.to_dict(), indent=2) + "\n")
    write_text_atomic(paths["md"], format_markdown(result) + "\n")
    _plot(result, paths["png"])
    return paths


def format_markdown(result: ProfileResult) -> str:
    s = result.summary
    where = f"{result.remote}: " if result.remote else ""
    rows = [
        f"# {result.artifact} on {result.runtime} ({where}{result.threads} threads, {result.machine.get('cpu', '?')})",
        "",
        f"pp{result.prompt_tokens} / tg{result.gen_tokens}, {result.reps} runs, "
        + ("llama-bench's repetitions in one process" if result.runtime == "llama-bench" else "each in a fresh process")
        + " (median [min, max])",
        "",
        "| metric | median | min | max |",
        "|---|---:|---:|---:|",
    ]
    for key, label in [("prefill_tps", "prefill tok/s"), ("decode_tps", "decode tok/s"), ("ttft_ms", "TTFT ms"),
                       ("load_s", "load s"), ("peak_rss_mb", "peak RSS MiB")]:  # fmt: skip
        if key not in s:
            continue
        rows.append(f"| {label} | {s[key]['median']:.2f} | {s[key]['min']:.2f} | {s[key]['max']:.2f} |")
    rows += _telemetry_lines(result.telemetry)
    return "\n".join(rows)


def _telemetry_lines(tel: dict) -> list[str]:
    """The board's telemetry during the runs, one line per source present."""
    if not tel:
        return []
    lines = ["", f"telemetry ({tel.get('samples', 0)} samples every {tel.get('interval_s', '?')} s):"]
    if "thermal_c" in tel:
        zones = ", ".join(f"{k} {v['min']:.0f}-{v['max']:.0f}" for k, v in tel["thermal_c"].items())
        lines.append(f"- thermal zones, deg C (min-max): {zones}")
    if "cpu_mhz" in tel:
        lines.append(f"- CPU clock MHz: {tel['cpu_mhz']['min']:.0f}-{tel['cpu_mhz']['max']:.0f}")
    if "load1_max" in tel:
        lines.append(f"- 1-min load, max: {tel['load1_max']:.2f}")
    if "mem_available_mb_min" in tel:
        lines.append(f"- available memory, min: {tel['mem_available_mb_min']:.0f} MiB")
    if "tegrastats" in tel:
        lines.append(f"- tegrastats ({tel['tegrastats']['lines']} lines), last: `{tel['tegrastats']['last']}`")
    return lines


def _plot(result: ProfileResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # headless; does not touch the user's default backend elsewhere
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for ax, key, label in [(axes[0], "prefill_tps", "prefill tok/s"), (axes[1], "decode_tps", "decode tok/s")]:
        ax.bar(range(1, len(result.runs) + 1), [r[key] for r in result.runs], color="#4477aa")
        ax.set_xlabel("run")
        ax.set_title(label)
    fig.suptitle(f"{Path(result.artifact).name} / {result.runtime}")
    fig.tight_layout()
    from edgeprune.fileio import atomic_file

    with atomic_file(path, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)

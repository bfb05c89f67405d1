"""Profiling on a remote board: over ssh (``ssh://user@host[:port]``) or adb (``adb://SERIAL``).

The artifact and the self-contained runner (``edgeprune/runtime/runner.py``, standard library
only) are copied to the board, the runner is started there with the board's Python, and its one
JSON line (per-run figures, machine facts, telemetry: thermal zones, CPU clocks, load, free
memory, tegrastats on a Jetson) comes back. The system ``ssh`` / ``scp`` / ``adb`` binaries do the
transport, each call with a timeout; ssh runs with ``BatchMode=yes`` (never a password prompt)
and a ``ConnectTimeout``. Every anticipated failure is one line (an ``EdgepruneError``):
unreachable host, timeout, authentication, no Python or no runtime on the board, adb missing, no
such device.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from edgeprune.errors import EdgepruneError

RUNNER = Path(__file__).with_name("runner.py")
ADB_DIR = "/data/local/tmp/edgeprune"
RUNTIME_MODULES = {"llama.cpp": "llama_cpp", "onnxruntime": "onnxruntime"}
INSTALL_HINT = {"llama.cpp": "pip install llama-cpp-python", "onnxruntime": "pip install onnxruntime numpy"}


@dataclass(frozen=True)
class RemoteTarget:
    scheme: str  # "ssh" or "adb"
    host: str = ""  # ssh: host name or address; adb: the device serial
    user: str | None = None
    port: int | None = None

    @property
    def url(self) -> str:
        if self.scheme == "adb":
            return f"adb://{self.host}"
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"ssh://{user}{self.host}{port}"


def parse_remote(url: str) -> RemoteTarget:
    """``ssh://[user@]host[:port]`` or ``adb://SERIAL`` -> RemoteTarget (one-line error otherwise)."""
    parts = urlsplit(url)
    if parts.scheme == "ssh" and parts.hostname:
        try:
            port = parts.port
        except ValueError:
            raise EdgepruneError(f"bad port in {url!r}: use ssh://user@host:PORT with PORT a number") from None
        return RemoteTarget("ssh", parts.hostname, parts.username, port)
    if parts.scheme == "adb" and parts.netloc:
        return RemoteTarget("adb", parts.netloc)
    raise EdgepruneError(f"bad remote {url!r}: use ssh://user@host[:port] or adb://SERIAL (see `adb devices`)")


@dataclass
class Transport:
    """What both transports offer: run a shell command on the board, copy files to it."""

    target: RemoteTarget
    connect_timeout: int = 10
    timeouts: dict = field(default_factory=dict)

    def shell(self, command: str, *, timeout: float) -> subprocess.CompletedProcess:  # pragma: no cover - abstract
        raise NotImplementedError

    def push(self, local: Path, remote_dir: str, *, timeout: float) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _call(self, argv: list[str], *, timeout: float, what: str) -> subprocess.CompletedProcess:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise EdgepruneError(f"{argv[0]} not found: install it (see examples/PROFILING.md)") from None
        except subprocess.TimeoutExpired:
            raise EdgepruneError(f"{self.target.url}: {what} timed out after {timeout:.0f}s: check the board, "
                                 "or raise --remote-timeout") from None  # fmt: skip
        self._check_transport(proc, what)
        return proc

    def _check_transport(self, proc: subprocess.CompletedProcess, what: str) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


# -- ssh --------------------------------------------------------------------------------------------

_SSH_UNREACHABLE = ("connection refused", "no route to host", "could not resolve hostname", "network is unreachable",
                    "name or service not known", "connection closed", "connection reset", "kex_exchange_identification")  # fmt: skip


@dataclass
class SshTransport(Transport):
    key: str | None = None
    options: tuple[str, ...] = ()  # extra ``-o`` options, e.g. ("UserKnownHostsFile=/tmp/kh",)
    ssh: str = "ssh"
    scp: str = "scp"

    def _opts(self) -> list[str]:
        opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}",
                "-o", "StrictHostKeyChecking=accept-new", "-o", "ServerAliveInterval=15"]  # fmt: skip
        for opt in self.options:
            opts += ["-o", opt]
        if self.key:
            opts += ["-i", str(self.key), "-o", "IdentitiesOnly=yes"]
        return opts

    @property
    def dest(self) -> str:
        return f"{self.target.user}@{self.target.host}" if self.target.user else self.target.host

    def ssh_argv(self, command: str) -> list[str]:
        port = ["-p", str(self.target.port)] if self.target.port else []
        return [self.ssh, *self._opts(), *port, self.dest, command]

    def scp_argv(self, local: Path, remote_dir: str) -> list[str]:
        port = ["-P", str(self.target.port)] if self.target.port else []
        recursive = ["-r"] if Path(local).is_dir() else []
        return [self.scp, "-q", *self._opts(), *port, *recursive, str(local), f"{self.dest}:{remote_dir}/"]

    def shell(self, command: str, *, timeout: float) -> subprocess.CompletedProcess:
        return self._call(self.ssh_argv(command), timeout=timeout, what="ssh")

    def push(self, local: Path, remote_dir: str, *, timeout: float) -> None:
        proc = self._call(self.scp_argv(local, remote_dir), timeout=timeout, what=f"copying {Path(local).name}")
        if proc.returncode != 0:
            raise EdgepruneError(f"{self.target.url}: copying {local} failed: {_last_line(proc.stderr)}")

    def _check_transport(self, proc: subprocess.CompletedProcess, what: str) -> None:
        # ssh exits 255 for its own errors; anything else is the remote command's exit status.
        if proc.returncode != 255 and not (what != "ssh" and proc.returncode and "ssh:" in proc.stderr):
            return
        err = proc.stderr.lower()
        where = f"{self.target.host}:{self.target.port or 22}"
        if "permission denied" in err or "too many authentication failures" in err:
            raise EdgepruneError(f"{self.target.url}: authentication failed (key not accepted): add your public key to "
                                 "the board's ~/.ssh/authorized_keys or pass --ssh-key (password login is not used)")  # fmt: skip
        if "host key verification failed" in err or "remote host identification has changed" in err:
            raise EdgepruneError(f"{self.target.url}: host key verification failed: the board's key is not the one in "
                                 f"known_hosts; check the board, then `ssh-keygen -R {self.target.host}`")  # fmt: skip
        if "timed out" in err:
            raise EdgepruneError(f"cannot reach {where}: connection timed out after {self.connect_timeout}s; "
                                 "is the board on and on this network?")  # fmt: skip
        if any(s in err for s in _SSH_UNREACHABLE):
            raise EdgepruneError(f"cannot reach {where}: {_last_line(proc.stderr)}; is sshd running there and the address right?")
        raise EdgepruneError(f"{self.target.url}: ssh failed: {_last_line(proc.stderr) or 'exit 255'}")


# -- adb --------------------------------------------------------------------------------------------


@dataclass
class AdbTransport(Transport):
    adb: str = "adb"

    def adb_argv(self, *args: str) -> list[str]:
        return [self.adb, "-s", self.target.host, *args]

    def check_device(self) -> None:
        """``adb get-state`` must answer "device" (not offline / unauthorized / absent)."""
        if not (shutil.which(self.adb) or os.path.isfile(self.adb)):
            raise EdgepruneError(f"adb not found ({self.adb}): install Android platform-tools and put adb on PATH")
        proc = self._call(self.adb_argv("get-state"), timeout=self.connect_timeout + 5, what="adb get-state")
        state = proc.stdout.strip()
        if proc.returncode != 0 or state != "device":
            self._not_ready(_last_line(proc.stderr) or state or f"exit {proc.returncode}")

    def _not_ready(self, detail: str):
        hint = ("accept the USB debugging prompt on the phone" if "unauthorized" in detail
                else "reconnect it or restart adb (`adb kill-server`)" if "offline" in detail
                else "`adb devices` lists the serials")  # fmt: skip
        raise EdgepruneError(f"adb device {self.target.host!r} is not ready: {detail}; {hint}")

    def shell(self, command: str, *, timeout: float) -> subprocess.CompletedProcess:
        # adb shell returns the remote exit status (adb >= 1.0.32 with shell protocol).
        return self._call(self.adb_argv("shell", command), timeout=timeout, what="adb shell")

    def push(self, local: Path, remote_dir: str, *, timeout: float) -> None:
        proc = self._call(self.adb_argv("push", str(local), f"{remote_dir}/"), timeout=timeout, what=f"adb push {Path(local).name}")
        if proc.returncode != 0:
            raise EdgepruneError(f"{self.target.url}: adb push {local} failed: {_last_line(proc.stderr or proc.stdout)}")

    def _check_transport(self, proc: subprocess.CompletedProcess, what: str) -> None:
        err = (proc.stderr or "").lower()
        if proc.returncode and ("not found" in err and "device" in err or "no devices" in err):
            raise EdgepruneError(f"no adb device {self.target.host!r}: {_last_line(proc.stderr)}; `adb devices` lists the serials")
        if proc.returncode and ("unauthorized" in err or "offline" in err):
            self._not_ready(_last_line(proc.stderr))


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


# -- the remote run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteOptions:
    python: str = "python3"  # the board's Python
    key: str | None = None
    ssh_options: tuple[str, ...] = ()
    connect_timeout: int = 10
    timeout_s: float = 600  # per repetition on the board; copying gets its own size-based budget
    keep: bool = False  # leave the copied files on the board (a re-run copies again)
    adb: str = "adb"
    gpu_layers: int = 0  # llama.cpp layers to offload to the board's GPU (Jetson: 99 = all)
    llama_bench: str = "llama-bench"  # the board's llama-bench binary (runtime "llama-bench": no Python needed)


def make_transport(target: RemoteTarget, opts: RemoteOptions) -> Transport:
    if target.scheme == "ssh":
        return SshTransport(target, connect_timeout=opts.connect_timeout, key=opts.key, options=tuple(opts.ssh_options))
    return AdbTransport(target, connect_timeout=opts.connect_timeout, adb=opts.adb)


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def artifact_files(local: Path) -> list[Path]:
    """What to copy: a GGUF file or a folder as is; an ONNX graph with its external-data files
    (``model.onnx.data``, ``model.onnx_data``), which must sit beside it."""
    if local.is_file() and local.suffix == ".onnx":
        return [local] + sorted(p for p in local.parent.iterdir() if p.name.startswith(local.name) and p != local)
    return [local]


def probe_board(tr: Transport, python: str, runtime: str, remote_dir: str) -> dict:
    """Make the work directory, copy the runner, ask it what the board has; check the runtime."""
    q = shlex.quote
    proc = tr.shell(f"mkdir -p {q(remote_dir)} && command -v {q(python)} >/dev/null 2>&1 || echo EDGEPRUNE_NO_PYTHON",
                    timeout=tr.connect_timeout + 30)  # fmt: skip
    if "EDGEPRUNE_NO_PYTHON" in proc.stdout:
        raise EdgepruneError(f"{tr.target.url}: no Python at {python!r} on the board: install Python 3 there "
                             "or pass --remote-python PATH")  # fmt: skip
    if proc.returncode != 0:
        raise EdgepruneError(f"{tr.target.url}: cannot create {remote_dir}: {_last_line(proc.stderr or proc.stdout)}")
    tr.push(RUNNER, remote_dir, timeout=tr.connect_timeout + 60)
    proc = tr.shell(f"{q(python)} {q(remote_dir + '/runner.py')} probe", timeout=tr.connect_timeout + 60)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise EdgepruneError(f"{tr.target.url}: the runner does not start with {python}: "
                             f"{_last_line(proc.stderr or proc.stdout) or f'exit {proc.returncode}'} (it needs Python >= 3.8)")  # fmt: skip
    info = json.loads(lines[-1])
    module = RUNTIME_MODULES[runtime]
    missing = [m for m in (module, "numpy") if not info["modules"].get(m)] if runtime == "onnxruntime" else \
        [m for m in (module,) if not info["modules"].get(m)]  # fmt: skip
    if missing:
        raise EdgepruneError(f"{tr.target.url}: runtime {runtime} is not installed for {python} on the board "
                             f"({', '.join(missing)} not importable): {INSTALL_HINT[runtime]} there")  # fmt: skip
    return info


def remote_profile(
    artifact_path: str | Path,
    url: str,
    *,
    runtime: str,
    prompt_tokens: int,
    gen_tokens: int,
    reps: int,
    threads: int | None,
    options: RemoteOptions = RemoteOptions(),
) -> dict:
    """Run the runner on the board; returns ``{"runs", "telemetry", "machine", "probe", "remote"}``."""
    if runtime not in RUNTIME_MODULES and runtime != "llama-bench":
        raise EdgepruneError(f"remote profiling runs llama.cpp, llama-bench or onnxruntime, not {runtime}: "
                             "export a GGUF or ONNX artifact first")  # fmt: skip
    target = parse_remote(url)
    tr = make_transport(target, options)
    if target.scheme == "adb":
        tr.check_device()
        remote_dir = ADB_DIR
    else:
        if not shutil.which(tr.ssh) or not shutil.which(tr.scp):
            raise EdgepruneError("ssh/scp not found: install OpenSSH's client (Debian: apt-get install openssh-client)")
        remote_dir = f"/tmp/edgeprune-{os.getpid()}-{os.urandom(3).hex()}"
    local = Path(artifact_path)
    if runtime == "llama-bench":
        return _remote_llama_bench(tr, local, remote_dir, prompt_tokens=prompt_tokens, gen_tokens=gen_tokens, reps=reps,
                                   threads=threads, options=options)  # fmt: skip
    info = probe_board(tr, options.python, runtime, remote_dir)
    try:
        # copying: a minute plus 1 s per 2 MB (a slow Wi-Fi board); the run: per repetition
        for path in artifact_files(local):
            tr.push(path, remote_dir, timeout=60 + _size(path) / 2e6)
        remote_artifact = f"{remote_dir}/{local.name}"
        threads = threads or info["machine"].get("cores") or 1
        q = shlex.quote
        cmd = (f"{q(options.python)} {q(remote_dir + '/runner.py')} run --runtime {q(runtime)} --artifact {q(remote_artifact)} "
               f"--prompt-tokens {prompt_tokens} --gen-tokens {gen_tokens} --reps {reps} --threads {threads} "
               f"--timeout {options.timeout_s:.0f} --gpu-layers {options.gpu_layers}")  # fmt: skip
        proc = tr.shell(cmd, timeout=reps * options.timeout_s + 60)
    finally:
        if not options.keep:
            try:
                tr.shell(f"rm -rf {shlex.quote(remote_dir)}", timeout=tr.connect_timeout + 30)
            except EdgepruneError:
                pass  # the result (or the first error) matters more than the clean-up
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    out = json.loads(lines[-1]) if lines else {"error": _last_line(proc.stderr) or f"exit {proc.returncode}"}
    if "error" in out:
        raise EdgepruneError(f"{target.url}: {runtime} run failed on the board: {out['error']}")
    out.update(probe=info, remote=target.url, threads=threads)
    return out


# One line per thermal zone, "type millidegrees", from the board's shell (no Python on it).
_THERMAL_CMD = ("for z in /sys/class/thermal/thermal_zone*; do [ -r $z/temp ] && echo \"$(cat $z/type 2>/dev/null) "
                "$(cat $z/temp)\"; done 2>/dev/null; true")  # fmt: skip


def _thermal(tr: Transport) -> dict[str, float]:
    proc = tr.shell(_THERMAL_CMD, timeout=tr.connect_timeout + 30)
    out = {}
    for line in proc.stdout.splitlines():
        name, _, value = line.strip().rpartition(" ")
        if value.lstrip("-").isdigit():
            out[name or f"zone{len(out)}"] = int(value) / 1000.0
    return out


def _remote_llama_bench(tr: Transport, local: Path, remote_dir: str, *, prompt_tokens, gen_tokens, reps, threads,
                        options: RemoteOptions) -> dict:  # fmt: skip
    """llama.cpp's llama-bench on the board: only the binary and the model are needed there."""
    from edgeprune.runtime.llamabench import NOT_FOUND, llama_bench_argv, parse_llama_bench

    q = shlex.quote
    binary = options.llama_bench
    proc = tr.shell(f"mkdir -p {q(remote_dir)} && (command -v {q(binary)} >/dev/null 2>&1 || echo EDGEPRUNE_NO_BENCH); "
                    "nproc 2>/dev/null || getconf _NPROCESSORS_ONLN", timeout=tr.connect_timeout + 30)  # fmt: skip
    if "EDGEPRUNE_NO_BENCH" in proc.stdout:
        raise EdgepruneError(f"{tr.target.url}: " + NOT_FOUND.format(binary=binary) + " (on the board)")
    cores = next((int(x) for x in proc.stdout.split() if x.isdigit()), 1)
    threads = threads or cores
    try:
        tr.push(local, remote_dir, timeout=60 + _size(local) / 2e6)
        before = _thermal(tr)
        argv = llama_bench_argv(binary, f"{remote_dir}/{local.name}", prompt_tokens=prompt_tokens, gen_tokens=gen_tokens,
                                reps=reps, threads=threads, gpu_layers=options.gpu_layers)  # fmt: skip
        proc = tr.shell(" ".join(q(a) for a in argv), timeout=2 * reps * options.timeout_s + 60)
        after = _thermal(tr)
    finally:
        if not options.keep:
            try:
                tr.shell(f"rm -rf {q(remote_dir)}", timeout=tr.connect_timeout + 30)
            except EdgepruneError:
                pass
    if proc.returncode != 0:
        raise EdgepruneError(f"{tr.target.url}: llama-bench failed on the board: {_last_line(proc.stderr or proc.stdout)}")
    runs = parse_llama_bench(proc.stdout, prompt_tokens=prompt_tokens, gen_tokens=gen_tokens)
    telemetry = {"samples": 2, "interval_s": "before/after"}
    if before or after:
        telemetry["thermal_c"] = {k: {"min": min(before.get(k, v), v), "max": max(before.get(k, v), v)} for k, v in after.items()}
    return {"runs": runs, "telemetry": telemetry, "machine": {"cores": cores, "cpu": "?"}, "probe": {},
            "remote": tr.target.url, "threads": threads}


_TEGRA_TEMP = re.compile(r"(\w+)@(-?[\d.]+)C")


def tegrastats_temps(line: str) -> dict[str, float]:
    """{sensor: degrees C} from one tegrastats line (``CPU@45.5C GPU@44C ...``)."""
    return {name: float(value) for name, value in _TEGRA_TEMP.findall(line)}

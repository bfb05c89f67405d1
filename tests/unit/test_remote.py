"""Remote profiling: URL parsing, ssh/scp/adb command construction, and the adb path end to end
against a fake ``adb`` on PATH (a script that maps /data/local/tmp to a temp dir and runs the
shell commands here), including its errors: adb missing, no such device, unauthorized, no
runtime on the phone."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from edgeprune.cli.main import main
from edgeprune.errors import EdgepruneError
from edgeprune.runtime import remote
from edgeprune.runtime.remote import AdbTransport, RemoteTarget, SshTransport, parse_remote, tegrastats_temps

FAKE_ADB = r'''#!{python}
"""A stand-in for adb: one device per serial in $FAKE_ADB_DEVICES (serial=state), /data/local/tmp
mapped to $FAKE_ADB_ROOT; every call is logged to $FAKE_ADB_LOG as one JSON line."""
import json, os, shutil, subprocess, sys
argv = sys.argv[1:]
with open(os.environ["FAKE_ADB_LOG"], "a") as fh:
    fh.write(json.dumps(argv) + "\n")
devices = dict(kv.split("=") for kv in os.environ.get("FAKE_ADB_DEVICES", "").split(",") if kv)
root = os.environ["FAKE_ADB_ROOT"]
serial = None
if argv[:1] == ["-s"]:
    serial, argv = argv[1], argv[2:]
if serial not in devices:
    sys.stderr.write(f"error: device '{{serial}}' not found\n"); sys.exit(1)
if devices[serial] != "device":
    sys.stderr.write(f"error: device {{devices[serial]}}\n"); sys.exit(1)
def local(path):
    return path.replace("/data/local/tmp", root)
cmd = argv[0]
if cmd == "get-state":
    print("device")
elif cmd == "push":
    src, dst = argv[1], local(argv[2])
    target = os.path.join(dst, os.path.basename(src.rstrip("/")))
    (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, target)
    print(f"{{src}}: 1 file pushed")
elif cmd == "shell":
    sys.exit(subprocess.run(["sh", "-c", local(" ".join(argv[1:]))]).returncode)
else:
    sys.stderr.write(f"unknown command {{cmd}}\n"); sys.exit(1)
'''


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    adb = bindir / "adb"
    adb.write_text(FAKE_ADB.format(python=sys.executable))
    adb.chmod(adb.stat().st_mode | stat.S_IXUSR)
    root = tmp_path / "phone"
    root.mkdir()
    log = tmp_path / "adb.log"
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_ROOT", str(root))
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))
    monkeypatch.setenv("FAKE_ADB_DEVICES", "emulator-5554=device,R58M123=unauthorized")

    def calls() -> list[list[str]]:
        return [json.loads(ln) for ln in log.read_text().splitlines()] if log.exists() else []

    return {"root": root, "calls": calls}


@pytest.fixture
def tiny_gguf(tmp_path):
    from edgeprune.export.gguf import export_gguf
    from tests.tiny import tiny_per_layer

    path = tmp_path / "tiny.gguf"
    export_gguf(tiny_per_layer(), None, path, qtype="f32", verify=False, progress=False)
    return path


def test_parse_remote():
    assert parse_remote("ssh://pi@raspberrypi.local:2222") == RemoteTarget("ssh", "raspberrypi.local", "pi", 2222)
    assert parse_remote("ssh://10.0.0.5") == RemoteTarget("ssh", "10.0.0.5", None, None)
    assert parse_remote("adb://R58M123").url == "adb://R58M123"
    for bad in ("pi@host", "http://host", "ssh://", "adb://", "ssh://host:port"):
        with pytest.raises(EdgepruneError, match="ssh://user@host"):
            parse_remote(bad)


def test_ssh_and_scp_commands_are_batch_mode_with_timeouts(tmp_path):
    tr = SshTransport(parse_remote("ssh://nvidia@orin:2200"), connect_timeout=7, key="/k/id", options=("UserKnownHostsFile=/dev/null",))
    argv = tr.ssh_argv("echo hi")
    assert argv[0] == "ssh" and argv[-2:] == ["nvidia@orin", "echo hi"]
    joined = " ".join(argv)
    for part in ("-o BatchMode=yes", "-o ConnectTimeout=7", "-p 2200", "-i /k/id", "-o UserKnownHostsFile=/dev/null"):
        assert part in joined
    (tmp_path / "d").mkdir()
    scp = tr.scp_argv(tmp_path / "d", "/tmp/x")
    assert scp[0] == "scp" and "-P" in scp and scp[scp.index("-P") + 1] == "2200" and "-r" in scp
    assert scp[-1] == "nvidia@orin:/tmp/x/" and "BatchMode=yes" in scp


def test_adb_commands_name_the_serial():
    tr = AdbTransport(parse_remote("adb://R58M123"), adb="/opt/adb")
    assert tr.adb_argv("push", "m.gguf", "/data/local/tmp/edgeprune/") == [
        "/opt/adb", "-s", "R58M123", "push", "m.gguf", "/data/local/tmp/edgeprune/"]  # fmt: skip


def test_profile_over_adb_with_a_fake_device(fake_adb, tiny_gguf, tmp_path, capsys):
    rc = main(["profile", str(tiny_gguf), "--reps", "2", "--prompt-tokens", "8", "--gen-tokens", "2", "--threads", "1",
               "--remote", "adb://emulator-5554", "--remote-python", sys.executable, "--out", str(tmp_path / "out")])  # fmt: skip
    out, err = capsys.readouterr()
    assert rc == 0, err
    doc = json.loads((tmp_path / "out" / "profile.json").read_text())
    assert doc["remote"] == "adb://emulator-5554" and len(doc["runs"]) == 2 and doc["telemetry"]["samples"] >= 1
    calls = fake_adb["calls"]()
    assert calls[0] == ["-s", "emulator-5554", "get-state"]
    assert all(c[:2] == ["-s", "emulator-5554"] for c in calls)
    pushes = [c[3:] for c in calls if c[2] == "push"]
    assert [Path(src).name for src, _ in pushes] == ["runner.py", "tiny.gguf"]
    assert all(dst == "/data/local/tmp/edgeprune/" for _, dst in pushes)
    run = next(c for c in calls if c[2] == "shell" and " run " in c[3])
    assert "/data/local/tmp/edgeprune/runner.py run --runtime llama.cpp --artifact /data/local/tmp/edgeprune/tiny.gguf" in run[3]
    assert calls[-1][2:] == ["shell", "rm -rf /data/local/tmp/edgeprune"]  # cleaned up
    assert "adb://emulator-5554" in out


@pytest.mark.parametrize(
    "url, message",
    [("adb://nosuch", "no adb device 'nosuch'"), ("adb://R58M123", "not ready: error: device unauthorized; accept the USB debugging")],
)  # fmt: skip
def test_adb_device_errors(fake_adb, tiny_gguf, url, message, capsys):
    assert main(["profile", str(tiny_gguf), "--remote", url]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_adb_missing(tiny_gguf, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no adb anywhere
    assert main(["profile", str(tiny_gguf), "--remote", "adb://emulator-5554"]) == 2
    assert "adb not found (adb): install Android platform-tools" in capsys.readouterr().err


def test_missing_python_or_runtime_on_the_phone(fake_adb, tiny_gguf, tmp_path, capsys):
    assert main(["profile", str(tiny_gguf), "--remote", "adb://emulator-5554", "--remote-python", "/no/python3"]) == 2
    assert "no Python at '/no/python3' on the board" in capsys.readouterr().err
    bare = tmp_path / "python-bare"  # this Python without site-packages: no llama_cpp, no numpy
    bare.write_text(f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")
    bare.chmod(0o755)
    assert main(["profile", str(tiny_gguf), "--remote", "adb://emulator-5554", "--remote-python", str(bare)]) == 2
    err = capsys.readouterr().err
    assert "runtime llama.cpp is not installed" in err and "pip install llama-cpp-python there" in err


def test_remote_needs_a_board_runtime(tmp_path):
    from tests.tiny import save_tiny, tiny_per_layer

    save_tiny(tiny_per_layer(), tmp_path)
    with pytest.raises(EdgepruneError, match="remote profiling runs llama.cpp, llama-bench or onnxruntime"):
        remote.remote_profile(tmp_path, "adb://x", runtime="torch", prompt_tokens=8, gen_tokens=2, reps=1, threads=1)


def test_timeout_is_one_line(fake_adb, monkeypatch):
    import subprocess

    def slow(*a, **k):
        raise subprocess.TimeoutExpired(a[0], k["timeout"])

    monkeypatch.setattr(remote.subprocess, "run", slow)
    tr = AdbTransport(parse_remote("adb://emulator-5554"))
    with pytest.raises(EdgepruneError, match=r"adb://emulator-5554: adb shell timed out after 5s"):
        tr.shell("true", timeout=5)


def test_runner_telemetry_and_tegrastats_parsing():
    from edgeprune.runtime import runner

    with runner.Telemetry(interval=0.05) as tel:
        import time

        time.sleep(0.2)
    s = tel.summary()
    assert s["samples"] >= 2 and "mem_available_mb_min" in s
    line = "RAM 2456/7620MB (lfb 2x4MB) CPU [12%@1510,5%@1510] CPU@47.5C soc2@46.4C GPU@45C tj@47.5C"
    assert tegrastats_temps(line) == {"CPU": 47.5, "soc2": 46.4, "GPU": 45.0, "tj": 47.5}


def test_runner_imports_only_the_standard_library():
    import subprocess

    code = ("import sys, runpy; sys.argv=['runner.py','probe']; "
            f"runpy.run_path({str(remote.RUNNER)!r}, run_name='not_main'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('edgeprune','numpy','torch','llama_cpp')))")  # fmt: skip
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


FAKE_LLAMA_BENCH = r"""#!{python}
# llama-bench's command line and its -o json output (two tests: pp, then tg), with fixed samples.
import json, sys
a = sys.argv[1:]
arg = lambda flag: a[a.index(flag) + 1]
open(arg("-m"), "rb").close()  # the model must be where we were told
reps, pp, tg = int(arg("-r")), int(arg("-p")), int(arg("-n"))
common = {{"build_commit": "fake", "backends": "CPU", "n_threads": int(arg("-t")), "n_gpu_layers": int(arg("-ngl"))}}
tests = [dict(common, n_prompt=pp, n_gen=0, samples_ts=[1000.0 + i for i in range(reps)]),
         dict(common, n_prompt=0, n_gen=tg, samples_ts=[50.0 + i for i in range(reps)])]
print("main: some log line")
print(json.dumps(tests, indent=2))
"""


@pytest.fixture
def fake_llama_bench(tmp_path):
    path = tmp_path / "bin" / "llama-bench"
    path.parent.mkdir(exist_ok=True)
    path.write_text(FAKE_LLAMA_BENCH.format(python=sys.executable))
    path.chmod(0o755)
    return path


def test_llama_bench_output_is_parsed_into_runs():
    from edgeprune.runtime.llamabench import parse_llama_bench

    out = json.dumps([{"n_prompt": 512, "n_gen": 0, "samples_ts": [100.0, 110.0]}, {"n_prompt": 0, "n_gen": 128, "samples_ts": [20.0, 25.0]}])
    runs = parse_llama_bench("log\n" + out, prompt_tokens=512, gen_tokens=128)
    assert [r["decode_tps"] for r in runs] == [20.0, 25.0] and runs[0]["ttft_ms"] == pytest.approx(5120.0)
    with pytest.raises(EdgepruneError, match="no pp64 and tg128"):
        parse_llama_bench(out, prompt_tokens=64, gen_tokens=128)
    with pytest.raises(EdgepruneError, match="printed no JSON"):
        parse_llama_bench("error: failed to load model", prompt_tokens=512, gen_tokens=128)


def test_llama_bench_backend_locally(fake_llama_bench, tiny_gguf, capsys):
    assert main(["profile", str(tiny_gguf), "--runtime", "llama-bench", "--llama-bench", str(fake_llama_bench),
                 "--reps", "3", "--prompt-tokens", "64", "--gen-tokens", "16", "--threads", "2"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "| decode tok/s | 51.00 | 50.00 | 52.00 |" in out and "peak RSS" not in out  # llama-bench reports no RSS
    assert main(["profile", str(tiny_gguf), "--runtime", "llama-bench", "--llama-bench", "/no/llama-bench"]) == 2
    assert "llama-bench not found" in capsys.readouterr().err


def test_llama_bench_over_adb_needs_no_python(fake_adb, fake_llama_bench, tiny_gguf, capsys):
    rc = main(["profile", str(tiny_gguf), "--runtime", "llama-bench", "--remote", "adb://emulator-5554", "--reps", "2",
               "--llama-bench", str(fake_llama_bench), "--remote-python", "/no/python", "--gpu-layers", "0"])  # fmt: skip
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "| prefill tok/s | 1000.50 | 1000.00 | 1001.00 |" in out
    calls = fake_adb["calls"]()
    bench = next(c for c in calls if c[2] == "shell" and " -o json" in c[3])
    assert "-m /data/local/tmp/edgeprune/tiny.gguf -p 512 -n 128 -r 2" in bench[3] and "-o json" in bench[3]
    assert not any("runner.py" in " ".join(c) for c in calls)  # no Python runner on this path


@pytest.fixture
def tiny_onnx(tmp_path):
    from edgeprune.export.onnx import export_onnx
    from tests.tiny import tiny_per_layer

    export_onnx(tiny_per_layer(), tmp_path / "onnx", exporter="torchscript", verify=False)  # layer 1 has no attention
    return tmp_path / "onnx"


def test_runner_runs_onnx_on_plain_onnxruntime(tiny_onnx, capsys):
    from edgeprune.runtime import runner

    assert runner.main(["once", "--runtime", "onnxruntime", "--artifact", str(tiny_onnx), "--prompt-tokens", "8",
                        "--gen-tokens", "3", "--threads", "1"]) == 0  # fmt: skip
    run = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert run["prefill_s"] > 0 and run["decode_s"] > 0 and run["peak_rss_mb"] > 5


def test_profile_onnx_folder_over_adb(fake_adb, tiny_onnx, tmp_path, capsys):
    rc = main(["profile", str(tiny_onnx), "--reps", "1", "--prompt-tokens", "8", "--gen-tokens", "2", "--threads", "1",
               "--remote", "adb://emulator-5554", "--remote-python", sys.executable])  # fmt: skip
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "on onnxruntime (adb://emulator-5554" in out
    pushed = [Path(c[3]).name for c in fake_adb["calls"]() if c[2] == "push"]
    assert pushed == ["runner.py", "model.onnx"]  # the graph (its external data too, when it has some)
    (tiny_onnx / "model.onnx.data").write_bytes(b"x")
    assert [p.name for p in remote.artifact_files(tiny_onnx / "model.onnx")] == ["model.onnx", "model.onnx.data"]

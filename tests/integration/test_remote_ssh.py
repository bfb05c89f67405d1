"""Remote profiling over ssh, for real: an OpenSSH server started here on 127.0.0.1.

The test starts Debian's ``/usr/sbin/sshd`` on a free port with a throwaway host key and a
throwaway client key (authorized_keys in a temp dir), profiles a tiny GGUF through
``edgeprune profile --remote ssh://...`` (the "board" runs this venv's Python, which has
llama-cpp-python) and stops the server itself. ``make install`` runs scripts/system-deps.sh,
which installs openssh-server: a missing sshd fails this test, it does not skip it.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeprune.cli.main import main

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sftp_server() -> str:
    for path in ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server", "/usr/libexec/sftp-server"):
        if os.path.exists(path):
            return path
    return "internal-sftp"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    assert os.path.exists(SSHD), f"{SSHD} is missing: run scripts/system-deps.sh (apt-get install openssh-server)"
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True, timeout=30)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        f"PidFile {d / 'sshd.pid'}\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nUsePAM no\nSubsystem sftp {sftp_server()}\n"
        "LogLevel ERROR\n"
    )  # fmt: skip
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory, needed when run as root
    log = open(d / "sshd.log", "w")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"sshd exited: {(d / 'sshd.log').read_text()}"
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        else:
            raise AssertionError("sshd did not start listening within 10 s")
        yield {"port": port, "key": d / "client_key", "known_hosts": d / "known_hosts", "dir": d}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    from edgeprune.export.gguf import export_gguf
    from tests.tiny import tiny_per_layer

    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    export_gguf(tiny_per_layer(), None, path, qtype="f32", verify=False, progress=False)
    return path


def remote_args(sshd, *extra: str) -> list[str]:
    return [f"ssh://{getpass.getuser()}@127.0.0.1:{sshd['port']}", "--ssh-key", str(sshd["key"]),
            "--ssh-option", f"UserKnownHostsFile={sshd['known_hosts']}", "--remote-python", sys.executable, *extra]  # fmt: skip


def test_profile_over_ssh_collects_runs_and_telemetry(sshd, tiny_gguf, tmp_path, capsys):
    t0 = time.monotonic()
    rc = main(["profile", str(tiny_gguf), "--reps", "2", "--prompt-tokens", "16", "--gen-tokens", "4", "--threads", "1",
               "--out", str(tmp_path), "--remote", *remote_args(sshd)])  # fmt: skip
    out, err = capsys.readouterr()
    assert rc == 0, err + (sshd["dir"] / "sshd.log").read_text()
    doc = json.loads((tmp_path / "profile.json").read_text())
    assert doc["remote"] == f"ssh://{getpass.getuser()}@127.0.0.1:{sshd['port']}"
    assert len(doc["runs"]) == 2 and all(r["decode_tps"] > 0 and r["peak_rss_mb"] > 5 for r in doc["runs"])
    assert doc["machine"]["runtimes"]["llama_cpp"]  # the board's probe found the runtime
    assert doc["telemetry"]["samples"] >= 1 and "load1_max" in doc["telemetry"]  # /proc telemetry from the "board"
    assert "ssh://" in out and "decode tok/s" in out
    # the remote work directory is removed afterwards
    assert not any(p.name.startswith(f"edgeprune-{os.getpid()}-") for p in Path("/tmp").iterdir())
    assert time.monotonic() - t0 < 60


def test_missing_runtime_on_the_board_is_one_line(sshd, tiny_gguf, tmp_path, capsys):
    # a Python without llama_cpp: the system one, or an empty venv made here
    python = shutil.which("python3") if shutil.which("python3") != sys.executable else None
    probe = subprocess.run([python or "/usr/bin/python3", "-c", "import llama_cpp"], capture_output=True) if python else None
    if probe is None or probe.returncode == 0:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True, timeout=60)
        python = str(tmp_path / "bare" / "bin" / "python")
    args = remote_args(sshd)
    args[args.index("--remote-python") + 1] = python
    rc = main(["profile", str(tiny_gguf), "--reps", "1", "--remote", *args])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "runtime llama.cpp is not installed" in err and "llama_cpp not importable" in err


def test_missing_python_and_wrong_key(sshd, tiny_gguf, tmp_path, capsys):
    args = remote_args(sshd)
    args[args.index("--remote-python") + 1] = "/nonexistent/python3"
    assert main(["profile", str(tiny_gguf), "--remote", *args]) == 2
    assert "no Python at '/nonexistent/python3'" in capsys.readouterr().err
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True, timeout=30)
    args = remote_args(sshd)
    args[args.index("--ssh-key") + 1] = str(tmp_path / "other")
    assert main(["profile", str(tiny_gguf), "--remote", *args]) == 2
    assert "authentication failed" in capsys.readouterr().err


def test_unreachable_host_is_one_line(tiny_gguf, capsys):
    port = free_port()  # nothing listens there
    rc = main(["profile", str(tiny_gguf), "--remote", f"ssh://nobody@127.0.0.1:{port}", "--connect-timeout", "3"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert f"cannot reach 127.0.0.1:{port}" in err and "Connection refused" in err

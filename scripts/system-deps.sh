#!/bin/sh
# System packages the test suite needs beyond the Python venv: Debian's OpenSSH server, which the
# remote-profiling integration test starts on 127.0.0.1 (tests/integration/test_remote_ssh.py).
# Installs through apt-get when it is missing and we may (root or passwordless sudo); otherwise
# says what to install and exits 1, so `make test` stops before a test fails for a missing binary.
set -eu

SSHD=/usr/sbin/sshd
if [ -x "$SSHD" ] && command -v ssh >/dev/null 2>&1 && command -v scp >/dev/null 2>&1; then
    exit 0
fi

if command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        SUDO=""
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        SUDO=none
    fi
    if [ "$SUDO" != none ]; then
        echo "system-deps: installing openssh-server and openssh-client (apt-get)"
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openssh-server openssh-client \
            || { $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive \
                 apt-get install -y --no-install-recommends openssh-server openssh-client; }
        # The distribution's own sshd service is not needed: the test starts its own on a free port.
        exit 0
    fi
fi

echo "system-deps: $SSHD (or ssh/scp) is missing; install Debian's openssh-server and openssh-client," >&2
echo "  e.g. 'sudo apt-get install -y openssh-server openssh-client' (the remote-profiling test needs them)" >&2
exit 1

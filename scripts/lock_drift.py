"""Print the installed distributions whose versions differ from the lock's pins.

``make test-latest`` runs it in the newest-versions venv, so a failure there comes with the list
of upstream releases that are new since the lock (the first suspects). Exit code is always 0.

    python scripts/lock_drift.py requirements.lock
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(lock: str) -> int:
    pins: dict[str, set[str]] = {}
    for line in Path(lock).read_text().splitlines():
        if m := PIN.match(line):
            pins.setdefault(canonical(m[1]), set()).add(m[2])  # one pin per marker branch
    installed = {canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}
    drift = [(n, sorted(pins[n]), v) for n, v in sorted(installed.items())
             if n in pins and v.split("+")[0] not in pins[n]]  # fmt: skip
    if not drift:
        print(f"newest allowed versions: all as pinned in {lock}")
    for name, pinned, now in drift:
        print(f"newer than {lock}: {name} {' / '.join(pinned)} -> {now}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "requirements.lock"))

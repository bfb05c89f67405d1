"""This process's memory: resident size now, its peak, a sampler for one step's own peak, and
giving freed memory back to the OS. One place for every step, build and bench that reports RSS.

Standard library only, and nothing from edgeprune: compress/, pipeline/, runtime/ and bench/ all
read memory through here, so it sits below every one of them. The one exception is
``edgeprune.runtime.runner``, the file copied alone to a remote board: it cannot import edgeprune,
so it keeps a verbatim copy of :func:`peak_rss_mb` (tests/unit/test_layering.py checks the two
stay the same), and boards and this process measure the peak the same way.
"""

from __future__ import annotations

import resource
import sys
import threading


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


def rss_mb() -> float:
    """Resident set size now, MiB (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as fh:
            import os

            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


class PeakRss:
    """Peak resident memory while a piece of work runs, sampled by a thread every ``interval`` s.

    The kernel's VmHWM is the peak of the whole process's life: in a test session or a build that
    already loaded bigger things it says nothing about this step, so the step samples its own."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.peak = interval, rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="rss-sampler", daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_mb())

    def start(self) -> PeakRss:
        self._thread.start()
        return self

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())
        return self.peak


def release_memory() -> None:
    """Give memory freed by finished work back to the OS (glibc keeps freed arenas otherwise),
    so the next step's peak does not stack on the last one's leftovers."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass

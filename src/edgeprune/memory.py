"""This process's memory: resident size now, its peak, a sampler for one step's own peak, and
giving freed memory back to the OS. One place for every step, build and bench that reports RSS."""

from __future__ import annotations

import threading

# the peak reader lives in the profiling runner, which must stay standard-library only (it is the
# one file copied to a board); steps, builds and benches read the peak the same way through here
from edgeprune.runtime.runner import peak_rss_mb  # noqa: F401


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

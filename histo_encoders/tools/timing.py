"""Wall time and CPU time of a measured block: how fast, and how many cores it kept busy."""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass


def cpu_seconds() -> float:
    """CPU seconds used so far by this process's threads and its exited children (DataLoader
    workers): divided by wall time, how many cores a loader kept busy."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass
class Stopwatch:
    """``with Stopwatch() as watch: ...`` then ``watch.seconds`` and ``watch.cores_used``."""

    seconds: float = 0.0
    cores_used: float = 0.0

    def __enter__(self) -> Stopwatch:
        self._start, self._cpu_start = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.seconds = time.perf_counter() - self._start
        self.cores_used = (cpu_seconds() - self._cpu_start) / max(self.seconds, 1e-9)

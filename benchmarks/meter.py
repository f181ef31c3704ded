"""Wall time, CPU time and peak RSS of the process tree, for one block of code.

    with Meter("dbt standardized") as m:
        ...
    m.result  -> {"stage", "wall_s", "cpu_s", "peak_rss_mb"}

CPU time is user+sys of this process and of its children (live ones from psutil, reaped ones
from ``resource.getrusage(RUSAGE_CHILDREN)``). Peak RSS is the largest sum of RSS over this
process and all its descendants, sampled by a background thread every ``interval`` seconds
(default 50 ms), so a spike shorter than the interval can be missed; the process's own
``ru_maxrss`` is also reported as a lower bound that cannot miss a spike of this process.
"""

from __future__ import annotations

import os
import resource
import threading
import time

import psutil


def _tree_cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    total = t.user + t.system
    for c in proc.children(recursive=True):
        try:
            ct = c.cpu_times()
            total += ct.user + ct.system
        except psutil.Error:
            pass
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)  # children already reaped
    return total + ru.ru_utime + ru.ru_stime


def tree_rss(proc: psutil.Process) -> int:
    total = proc.memory_info().rss
    for c in proc.children(recursive=True):
        try:
            total += c.memory_info().rss
        except psutil.Error:
            pass
    return total


class Meter:
    def __init__(self, stage: str, interval: float = 0.05, **extra):
        self.stage = stage
        self.interval = interval
        self.extra = extra
        self.proc = psutil.Process(os.getpid())
        self.result: dict = {}
        self._stop = threading.Event()

    def _sample(self):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, tree_rss(self.proc))
            except psutil.Error:
                pass
            self._stop.wait(self.interval)

    def __enter__(self) -> "Meter":
        self.peak = tree_rss(self.proc)
        self.cpu0 = _tree_cpu(self.proc)
        self.t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t0
        cpu = _tree_cpu(self.proc) - self.cpu0
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_rss(self.proc))
        self.result = {"stage": self.stage, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                       "peak_rss_mb": round(self.peak / 2**20, 1),
                       "maxrss_self_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                       **self.extra}
        return False

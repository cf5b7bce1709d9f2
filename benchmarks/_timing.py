"""Quiet timing on a shared 2-core VM (docs/PERFORMANCE.md §0).

Each repetition records the CPU used by *other* processes during it (busy jiffies from
/proc/stat minus this process tree); only repetitions where others used less than
``max_foreign_cores`` count. Report the median of the quiet repetitions, with how many were kept.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

_HZ = os.sysconf("SC_CLK_TCK")


def _total_busy() -> int:
    with open("/proc/stat") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields[:8]) - idle


def _tree_pids(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                parts = handle.read().rsplit(")", 1)[1].split()
            children.setdefault(int(parts[1]), []).append(int(name))
        except (OSError, IndexError):
            continue
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(children.get(pid, []))
    return out


def _own_busy() -> int:
    total = 0
    for pid in _tree_pids(os.getpid()):
        try:
            with open(f"/proc/{pid}/stat") as handle:
                parts = handle.read().rsplit(")", 1)[1].split()
            total += int(parts[11]) + int(parts[12])  # utime + stime
        except (OSError, IndexError):
            continue
    return total


@dataclass
class Timing:
    median_s: float
    kept: int
    total: int
    samples: list[float]

    def rate(self, items: float) -> float:
        """Items per second at the median time."""
        return items / self.median_s


def time_quiet(
    fn: Callable[[], object],
    *,
    reps: int = 7,
    min_seconds: float = 0.0,
    warmup: int = 1,
    max_foreign_cores: float = 0.25,
    max_tries: int | None = None,
) -> Timing:
    """Median wall time of ``fn`` over repetitions without foreign CPU load.

    ``min_seconds``: each repetition calls ``fn`` until at least this long has passed, and the
    time per call is recorded. Tries up to ``max_tries`` (default 3 × reps) to collect ``reps``
    quiet repetitions; if too few are quiet, the least-loaded ones are used and ``kept`` says so.
    """
    for _ in range(warmup):
        fn()
    max_tries = max_tries or 3 * reps
    quiet: list[float] = []
    loaded: list[tuple[float, float]] = []
    tries = 0
    while len(quiet) < reps and tries < max_tries:
        tries += 1
        busy0, own0, t0 = _total_busy(), _own_busy(), time.perf_counter()
        calls = 0
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= min_seconds:
                break
        foreign = max(0, (_total_busy() - busy0) - (_own_busy() - own0)) / _HZ / max(elapsed, 1e-9)
        per_call = elapsed / calls
        if foreign < max_foreign_cores:
            quiet.append(per_call)
        else:
            loaded.append((foreign, per_call))
    samples = quiet if len(quiet) >= max(1, reps // 2) else quiet + [t for _, t in sorted(loaded)][: reps]
    return Timing(statistics.median(samples), len(quiet), tries, samples)

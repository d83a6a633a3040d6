"""Timing helper shared by the benchmark scripts (run them from the repository root)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from groundrt.runtime.bench import percentile  # noqa: F401 (one percentile for all)


def timed(fn: Callable[[], object], runs: int, warmup: int = 5) -> list[float]:
    """Sorted wall times in ms of `runs` calls of `fn`, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)


def median(sorted_ms: list[float]) -> float:
    return statistics.median(sorted_ms)

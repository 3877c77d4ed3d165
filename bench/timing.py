"""Timing helpers shared by the bench scripts."""

import time


def best_of(fn, repeat):
    """The shortest wall time of `repeat` calls of fn(), in seconds."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best

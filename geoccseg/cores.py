"""How many cores this process may use: one answer for training, inference and the benchmarks."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity where the platform has one (Linux; a
    container's or ``taskset``'s limit), else every core of the machine (macOS, Windows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1

"""How much memory this process can still take: the machine's available memory, or less where a
control group (a container, a batch job's allocation) limits the process to less."""

from __future__ import annotations

from pathlib import Path

import psutil

CGROUP_ROOT = Path("/sys/fs/cgroup")

UNLIMITED = 2**60
"""Limits at or above this are no limit (cgroup v1 writes 2^63 rounded down to a page)."""


def free_memory() -> int:
    """Bytes this process can still allocate: :func:`psutil.virtual_memory`'s available memory, or
    the room left under its control group's limit where that is less."""
    free = psutil.virtual_memory().available
    room = cgroup_room()
    return max(0, free if room is None else min(free, room))


def cgroup_room() -> int | None:
    """Bytes left under the tightest control-group memory limit of this process (cgroup v2 or v1:
    its own group and every group above it, as a container or a batch job's allocation sets them),
    the page cache the kernel can drop counted as free; None where no limit applies or none can
    be read."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    rooms = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2
            base, names = CGROUP_ROOT, ("memory.max", "memory.current", "inactive_file")
        elif "memory" in controllers.split(","):
            base, names = CGROUP_ROOT / "memory", ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
        else:
            continue
        own = base / path.strip("/")
        for folder in (own, *(parent for parent in own.parents if parent.is_relative_to(base))):
            rooms.append(_room(folder, *names))
    rooms = [room for room in rooms if room is not None]
    return min(rooms) if rooms else None


def _room(folder: Path, limit_name: str, usage_name: str, cache_name: str) -> int | None:
    try:
        limit = (folder / limit_name).read_text().strip()
        if limit == "max" or int(limit) >= UNLIMITED:
            return None
        used = int((folder / usage_name).read_text())
        stat = dict(line.split() for line in (folder / "memory.stat").read_text().splitlines() if line.count(" ") == 1)
        return int(limit) - used + int(stat.get(cache_name, 0))
    except (OSError, ValueError):
        return None

"""A cap on the disk a job writes, all files together (`[run] max_disk_mb`, `--max-disk-mb`).

RLIMIT_FSIZE bounds one file; a job that writes many files (checkpoints, caches, a runaway log of its
own) is bounded by this. The supervisor measures the job's writable directories (its copy; its HOME
when it runs without the sandbox) before the job starts and then every so often, and stops the job once
they have grown by more than the cap, with the status reason "disk limit (N MB) reached". Measured as
allocated blocks (st_blocks: a sparse file counts what it takes), each inode once (hard links, the
shared read-only files), so what was there at the start (the environment's copy) is not counted.
Under the sandbox the job's private /tmp is a tmpfs of the cap's size (bwrap --size), so it cannot fill
memory that way either.

Between two measurements a job can write at the disk's speed: the cap is exceeded by at most that speed
times the interval (1 s, or 20 times what the last measurement took, whichever is longer, so that a copy
of many files is not walked without pause). Standard library only: the supervisor imports it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

MIN_INTERVAL_S = 1.0
COST_FACTOR = 20  # measuring takes at most 1/20 of the time


def disk_usage(roots: Iterable[str]) -> int:
    """Bytes allocated to everything under `roots` (symbolic links not followed, each inode once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    stack = [r for r in roots if os.path.isdir(r)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue  # removed (or made unreadable) while walking: it holds nothing the job can fill
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
            except OSError:
                continue  # removed while walking
            key = (info.st_dev, info.st_ino)
            if key not in seen:
                seen.add(key)
                total += info.st_blocks * 512
    return total


class DiskWatch:
    """The growth of a job's writable directories since it started, measured when due."""

    def __init__(self, roots: Iterable[str], limit_mb: int) -> None:
        self.roots = list(roots)
        self.limit_mb = limit_mb
        self.interval = MIN_INTERVAL_S
        self.start_bytes = self._measure()
        self.next_at = time.monotonic() + self.interval

    def _measure(self) -> int:
        began = time.monotonic()
        used = disk_usage(self.roots)
        self.interval = max(MIN_INTERVAL_S, COST_FACTOR * (time.monotonic() - began))
        return used

    def exceeded(self) -> str | None:
        """Measure now: the reason to stop the job when it wrote more than its cap, else None."""
        grown = self._measure() - self.start_bytes
        self.next_at = time.monotonic() + self.interval
        if grown <= self.limit_mb * 2**20:
            return None
        cap = self.limit_mb
        return f"disk limit ({cap} MB) reached: the job wrote more than {cap} MB ({grown / 2**20:.0f} MB)"

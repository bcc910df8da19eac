"""Pausing Python's cyclic garbage collector while a view of a large run is built.

Reading ten thousand experiments allocates hundreds of thousands of small records, dicts and tuples that
hold no reference cycles and live until the view is written. The allocations themselves trigger the
collector, whose passes over the growing heap cost about an eighth of a report's time at 10,000
experiments (docs/BENCHMARKS.md); reference counting frees everything as before, and the collector runs again after.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic collection inside the block; the collector's state is restored after it (a nested pause,
    or a caller that keeps it off, stays as it was)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()

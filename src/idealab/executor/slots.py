"""A pool of run slots: GPU ids handed out whole, plus CPU slots for jobs that need no GPU.

Requests wait in strict FIFO order per resource kind (head-of-line): a 4-GPU job at the head of the GPU
queue is served before any 1-GPU job behind it, so small jobs cannot starve it. Waiting is on futures that
`release` resolves; nothing polls.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType


@dataclass
class Lease:
    """What one job holds: `gpu_ids` (empty for a CPU slot). Release exactly once (idempotent)."""

    gpu_ids: tuple[int, ...]
    _pool: SlotPool = field(repr=False)
    released: bool = False

    @property
    def is_cpu(self) -> bool:
        return not self.gpu_ids

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._pool._give_back(self)


@dataclass(eq=False)  # identity: two waiters for the same count are different requests
class _Waiter:
    gpus: int
    future: asyncio.Future[Lease]


class SlotPool:
    """GPU ids (each held by at most one job) and `cpu_slots` slots for 0-GPU jobs.

    `cpu_slots` defaults to the number of GPUs, or 1 for a pool without GPUs.
    """

    def __init__(self, gpu_ids: Sequence[int] = (), cpu_slots: int | None = None) -> None:
        if len(set(gpu_ids)) != len(gpu_ids):
            raise ValueError(f"GPU ids must be distinct, got {list(gpu_ids)}")
        if any(i < 0 for i in gpu_ids):
            raise ValueError(f"GPU ids must be non-negative, got {list(gpu_ids)}")
        slots = cpu_slots if cpu_slots is not None else max(len(gpu_ids), 1)
        if slots < 1:
            raise ValueError(f"cpu_slots must be at least 1, got {slots}")
        self.gpu_ids: tuple[int, ...] = tuple(gpu_ids)
        self.cpu_slots = slots
        self._free_gpus: set[int] = set(gpu_ids)
        self._free_cpu = slots
        self._gpu_queue: deque[_Waiter] = deque()
        self._cpu_queue: deque[_Waiter] = deque()

    @classmethod
    def cpu_only(cls, slots: int) -> SlotPool:
        return cls((), slots)

    # ------------------------------------------------------------------------------------ inspection

    @property
    def free_gpus(self) -> tuple[int, ...]:
        return tuple(sorted(self._free_gpus))

    @property
    def free_cpu_slots(self) -> int:
        return self._free_cpu

    @property
    def waiting(self) -> int:
        return len(self._gpu_queue) + len(self._cpu_queue)

    # ----------------------------------------------------------------------------------- acquire/release

    async def acquire(self, gpus: int) -> Lease:
        """Wait for `gpus` distinct GPU ids (0 = one CPU slot). Too many GPUs for this pool: ValueError."""
        if gpus < 0:
            raise ValueError(f"a job cannot need a negative number of GPUs ({gpus})")
        if gpus > len(self.gpu_ids):
            raise ValueError(
                f"the job needs {gpus} GPU(s) but this pool has {len(self.gpu_ids)} "
                f"(GPU ids: {list(self.gpu_ids) or 'none'})"
            )
        queue = self._gpu_queue if gpus else self._cpu_queue
        if not queue and self._can_grant(gpus):
            return self._grant(gpus)
        waiter = _Waiter(gpus, asyncio.get_running_loop().create_future())
        queue.append(waiter)
        try:
            return await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                waiter.future.result().release()  # granted just as the caller gave up: hand it back
            else:
                if waiter in queue:  # `_dispatch` may already have dropped it as cancelled
                    queue.remove(waiter)
                self._dispatch()  # the head may have changed; whoever is there now may fit
            raise

    def take(self, gpu_ids: Sequence[int]) -> Lease | None:
        """Hold exactly `gpu_ids` (none: one CPU slot) now, for a job that already runs on them (one an
        earlier orchestrator started); None when they are not all free in this pool."""
        wanted = set(gpu_ids)
        if len(wanted) != len(gpu_ids) or not wanted <= self._free_gpus or (not wanted and self._free_cpu < 1):
            return None
        if wanted:
            self._free_gpus.difference_update(wanted)
        else:
            self._free_cpu -= 1
        return Lease(tuple(sorted(wanted)), self)

    def lease(self, gpus: int) -> _LeaseContext:
        """`async with pool.lease(k) as lease:` acquires and always releases."""
        return _LeaseContext(self, gpus)

    def _can_grant(self, gpus: int) -> bool:
        return len(self._free_gpus) >= gpus if gpus else self._free_cpu > 0

    def _grant(self, gpus: int) -> Lease:
        if gpus == 0:
            self._free_cpu -= 1
            return Lease((), self)
        chosen = tuple(sorted(self._free_gpus)[:gpus])
        self._free_gpus.difference_update(chosen)
        return Lease(chosen, self)

    def _give_back(self, lease: Lease) -> None:
        if lease.gpu_ids:
            overlap = self._free_gpus.intersection(lease.gpu_ids)
            if overlap:
                raise RuntimeError(f"GPU(s) {sorted(overlap)} released twice")
            self._free_gpus.update(lease.gpu_ids)
        else:
            if self._free_cpu >= self.cpu_slots:
                raise RuntimeError("a CPU slot was released twice")
            self._free_cpu += 1
        self._dispatch()

    def _dispatch(self) -> None:
        """Serve each queue from its head while the head fits (strict FIFO: never skip the head)."""
        for queue in (self._gpu_queue, self._cpu_queue):
            while queue and self._can_grant(queue[0].gpus):
                waiter = queue.popleft()
                if not waiter.future.done():
                    waiter.future.set_result(self._grant(waiter.gpus))


class _LeaseContext:
    def __init__(self, pool: SlotPool, gpus: int) -> None:
        self._pool = pool
        self._gpus = gpus
        self._lease: Lease | None = None

    async def __aenter__(self) -> Lease:
        self._lease = await self._pool.acquire(self._gpus)
        return self._lease

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._lease is not None:
            self._lease.release()

"""Job slots handed out by priority: baseline repeats and confirmation runs before new ideas.

The backend's slot pool serves jobs first come, first served. The loop wants more: a confirmation run
created when an idea finished must take the next free slot even though new ideas' jobs were waiting
already. So the loop holds a ticket from this gate around each job, with as many tickets as the backend
has slots, and the gate decides who gets a freed one.

High-priority work is *claimed* the moment it is scheduled (synchronously, before its task first runs), so
a slot freed in between is kept for it rather than handed to a waiting idea. Nothing polls: waiters wait
on futures that a release resolves.
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType

HIGH, LOW = 0, 1  # baseline repeats and confirmations; new ideas


class JobGate:
    def __init__(self, capacity: int | None) -> None:
        if capacity is not None and capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._free = capacity or 0
        self._claimed = {HIGH: 0, LOW: 0}  # claims not yet holding a ticket (waiting, or not yet asking)
        self._waiters: dict[int, deque[asyncio.Future[None]]] = {HIGH: deque(), LOW: deque()}

    def claim(self, priority: int) -> Claim:
        self._claimed[priority] += 1
        return Claim(self, priority)

    def _dispatch(self) -> None:
        while self._free > 0:
            priority = HIGH if self._claimed[HIGH] else LOW if self._claimed[LOW] else None
            if priority is None:
                return
            waiters = self._waiters[priority]
            while waiters and waiters[0].done():  # cancelled while waiting
                waiters.popleft()
            if not waiters:
                return  # keep the slot for claimed work that has not asked yet
            self._free -= 1
            self._claimed[priority] -= 1
            waiters.popleft().set_result(None)


class Claim:
    """One job's place at the gate: `async with claim:` holds a ticket; `drop()` gives up an unused claim."""

    def __init__(self, gate: JobGate, priority: int) -> None:
        self.gate, self.priority = gate, priority
        self._state = "claimed"  # claimed -> holding -> done

    async def __aenter__(self) -> Claim:
        gate = self.gate
        if self._state != "claimed":
            raise RuntimeError(f"a claim is used once (it is {self._state})")
        if gate.capacity is None:
            gate._claimed[self.priority] -= 1
            self._state = "holding"
            return self
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        gate._waiters[self.priority].append(future)
        gate._dispatch()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # granted just as it was cancelled: hand it on
                self._state = "holding"
                self._release()
            else:
                self.drop()
            raise
        self._state = "holding"
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._release()

    def _release(self) -> None:
        if self._state == "holding":
            self._state = "done"
            if self.gate.capacity is not None:
                self.gate._free += 1
                self.gate._dispatch()

    def drop(self) -> None:
        """Give up a claim that never got its ticket (the work ended before its job)."""
        if self._state == "claimed":
            self._state = "done"
            self.gate._claimed[self.priority] -= 1
            self.gate._dispatch()

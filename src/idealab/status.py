"""Explicit experiment statuses: a failed run has a status and a reason, never a sentinel number."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    # in flight
    PROPOSED = "proposed"  # idea stored, no code change yet
    IMPLEMENTING = "implementing"  # implementer working on a diff
    READY = "ready"  # code change applied to the job's copy, waiting for a slot
    RUNNING = "running"  # job submitted to a backend
    # terminal
    OK = "ok"
    FAILED = "failed"  # non-zero exit or crash; reason holds the error's last lines
    TIMEOUT = "timeout"
    INVALID = "invalid"  # no metric, non-finite, or outside valid_range
    TAMPERED = "tampered"  # a readonly or hidden file changed
    UNIMPLEMENTABLE = "unimplementable"  # no acceptable code change could be made
    REFUSED = "refused"  # every change offered reached for the evaluation's internals (static checks)
    CANCELLED = "cancelled"  # the run stopped (e.g. cost cap) before this idea ran

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def has_result(self) -> bool:
        """The idea's job ran and ended with an outcome (as opposed to never running)."""
        return self in RESULTS


TERMINAL = frozenset(
    {
        Status.OK,
        Status.FAILED,
        Status.TIMEOUT,
        Status.INVALID,
        Status.TAMPERED,
        Status.UNIMPLEMENTABLE,
        Status.REFUSED,
        Status.CANCELLED,
    }
)
IN_FLIGHT = frozenset(set(Status) - TERMINAL)
# Terminal statuses of ideas whose job ran: the evidence the next epoch's ideation waits for.
RESULTS = TERMINAL - {Status.UNIMPLEMENTABLE, Status.REFUSED, Status.CANCELLED}

"""Exceptions that cross module boundaries."""

from __future__ import annotations

import errno


class StopRun(Exception):
    """A graceful stop was requested (e.g. the cost cap was reached): finish what is running, start nothing new."""


class RunFault(Exception):
    """The machine, not an idea, failed: disk full, database locked or unreadable, workdir not writable.

    The run stops cleanly (no idea is blamed, committed state stays as it is, a resume continues) and the
    command line prints the message as one line: it must say what happened and what the user can do.
    """


# errno values that mean "the storage is the problem", not the code that tried to write
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EIO})


def storage_fault(exc: OSError, doing: str) -> RunFault | None:
    """A RunFault for an OSError caused by the storage (disk full, read-only, ...), else None."""
    if exc.errno not in STORAGE_ERRNOS:
        return None
    where = f" ({exc.filename})" if exc.filename else ""
    return RunFault(f"{doing}: {exc.strerror}{where}")

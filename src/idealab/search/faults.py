"""What the search loop needs to tell the machine's faults from an idea's: free space, copy errors, and
when a job found dead after a crash really ended."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from idealab.errors import RunFault
from idealab.store import JobRecord

# Below this much free space where the experiments live, the disk counts as full: the run stops before it
# copies another environment, and a job that failed meanwhile is not judged (the disk may be its cause).
MIN_FREE_BYTES = 1 << 20


def check_free_space(workdir: Path, doing: str) -> None:
    """Raise a RunFault when the disk holding `workdir` is (nearly) full."""
    free = free_bytes(workdir)
    if free is not None and free < MIN_FREE_BYTES:
        raise RunFault(
            f"the disk holding {workdir} is full ({free} bytes free) before {doing}: free some space, "
            "then resume with `idealab run`"
        )


def free_bytes(path: Path) -> int | None:
    """Bytes an unprivileged writer may still use on `path`'s filesystem (None if unknown)."""
    try:
        stats = os.statvfs(path)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def copy_error(exc: OSError | shutil.Error) -> str:
    """One line for a failed copy (shutil.Error carries a list of (src, dst, reason) for every file)."""
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list) and exc.args[0]:
        problems = exc.args[0]
        src, _, why = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return f"{why} ({src}){more}"
    return str(exc)


def last_sign_of_life(job: JobRecord) -> float:
    """When a job found dead after a crash was last seen alive: its logs' last write, at least its start."""
    seen = [job.started_at if job.started_at is not None else job.submitted_at]
    for log in (job.stdout_path, job.stderr_path):
        try:
            seen.append(log.stat().st_mtime)
        except OSError:
            continue
    return max(seen)

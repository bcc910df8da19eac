"""Finding a run's live job processes from outside, as a test would check for leftovers."""

from __future__ import annotations

import os
from pathlib import Path


def job_processes(workdir: Path, leaders_only: bool = False) -> list[int]:
    """Live processes of this run's jobs (IDEALAB_JOB_ID in their environment, cwd inside `workdir`);
    `leaders_only`: just each job's process-group leader."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cwd = os.readlink(entry / "cwd")
            pid = int(entry.name)
            leader = os.getpgid(pid) == pid
        except OSError:
            continue
        if b"IDEALAB_JOB_ID=" in environ and cwd.startswith(str(workdir)) and (leader or not leaders_only):
            found.append(pid)
    return found

"""One live orchestrator per workdir: an exclusive `flock` on `<workdir>/.idealab.lock`.

The kernel drops a flock when its holder dies, however it dies (SIGKILL included), so a crash never
leaves a stale lock behind and nothing has to guess whether a recorded pid is still alive. The holder
writes its pid, host and start time into the file so that a refused second `idealab run` can say who
holds the workdir. The descriptor is not inherited by jobs (Python opens files non-inheritable), so a
job that outlives its orchestrator does not keep the workdir locked.

flock is per host on most network filesystems (NFS): two machines sharing a workdir are not excluded.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from idealab.errors import RunFault

LOCK_NAME = ".idealab.lock"


class WorkdirBusy(RunFault):
    """Another live process holds the workdir."""


@dataclass
class WorkdirLock:
    """An exclusive lock on a workdir, held until `release()` (or the process's death)."""

    path: Path
    _fd: int | None

    @classmethod
    def acquire(cls, workdir: Path) -> WorkdirLock:
        """Lock `workdir` (created if needed) for this process, or raise WorkdirBusy naming the holder."""
        path = workdir / LOCK_NAME
        try:
            workdir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # read-only disk, no permission, ...: one line for the user, not a traceback
            raise RunFault(f"cannot write in {workdir} ({exc.strerror}); idealab run needs a writable workdir") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(_read(fd))
            os.close(fd)
            raise WorkdirBusy(
                f"{workdir} is in use by another idealab run ({holder}); wait for it to finish or stop it "
                "first (`idealab status` can read the workdir meanwhile)"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": time.time()}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        except OSError as exc:
            os.close(fd)
            raise RunFault(f"cannot write {path} ({exc.strerror})") from exc
        return cls(path, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the workdir up (closing the descriptor drops the flock; the file stays, harmlessly)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WorkdirLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read(fd: int) -> dict[str, object]:
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}  # the holder is between truncate and write, or wrote garbage: say what we can
    return data if isinstance(data, dict) else {}


def _describe(info: dict[str, object]) -> str:
    if "pid" not in info:
        return "holder unknown"
    since = info.get("started_at")
    when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, float) else ""
    return f"pid {info['pid']} on host {info.get('host', '?')}{when}"

"""The processes of local jobs, seen from outside: signalling and killing a job's group, waiting for
processes that are not our children to exit (on pidfds, no polling), and recognising a job's processes
after an orchestrator restart by the job id in their environment (a reused pid does not carry it).
Linux: these read /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence
from pathlib import Path

from idealab.executor.sandbox import JOB_ID_VAR
from idealab.executor.supervisor import JOB_PGID_NAME, group_members


def kill_job(supervisor_pid: int, job_id: str, job_dir: Path) -> int | None:
    """SIGKILL a job's supervisor and the job's group, now; returns the job's pgid where it is known."""
    kill_stale_job(supervisor_pid, job_id)
    job_pgid = read_pgid(job_dir)
    if job_pgid is not None:
        kill_stale_job(job_pgid, job_id)
    return job_pgid


def read_pgid(job_dir: Path) -> int | None:
    try:
        return int((job_dir / JOB_PGID_NAME).read_text())
    except (FileNotFoundError, ValueError):
        return None


def describe_returncode(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send `sig` to process group `pgid`; False when the group no longer exists."""
    if pgid <= 1:
        raise ValueError(f"refusing to signal process group {pgid}")
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def wait_group_exit(pgid: int, timeout_s: float) -> bool:
    """Wait until no process of group `pgid` is alive; False if some still are after `timeout_s`."""
    if not hasattr(os, "pidfd_open") or not Path("/proc").is_dir():
        return True  # not Linux: nothing to wait on
    return await wait_pids_exit(group_members(pgid), timeout_s)


async def wait_pids_exit(pids: list[int], timeout_s: float) -> bool:
    """Wait until every process in `pids` has exited; False if some still run after `timeout_s`.

    Waits on pidfds (readable once their process has exited), so nothing polls. Zombies count as exited.
    """
    loop = asyncio.get_running_loop()
    fds: list[int] = []
    exits: list[asyncio.Future[None]] = []
    try:
        for pid in pids:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                continue
            fds.append(fd)
            exit_future: asyncio.Future[None] = loop.create_future()
            loop.add_reader(fd, _resolve, exit_future)
            exits.append(exit_future)
        if not exits:
            return True
        _, pending = await asyncio.wait(exits, timeout=timeout_s)
        return not pending
    finally:
        for fd in fds:
            loop.remove_reader(fd)
            os.close(fd)


def _environ_entries(pid: int) -> set[bytes]:
    try:
        return set((Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return set()  # gone, or not ours to inspect: then not our job either


def kill_stale_job(pgid: int, job_id: str) -> bool:
    """After an orchestrator crash: SIGKILL group `pgid` if one of its processes is still job `job_id`.

    The job id in the process environment guards against the pgid having been reused by an unrelated
    process. Linux only (reads /proc); returns whether a group was killed.
    """
    if pgid <= 1 or not Path("/proc").is_dir():
        return False
    marker = f"{JOB_ID_VAR}={job_id}".encode()
    if not any(marker in _environ_entries(pid) for pid in group_members(pgid)):
        return False
    return signal_group(pgid, signal.SIGKILL)


def is_job_process(pid: int, job_id: str) -> bool:
    """Whether process `pid` is alive and belongs to job `job_id` (its supervisor or the job itself)."""
    return pid > 1 and f"{JOB_ID_VAR}={job_id}".encode() in _environ_entries(pid)


def find_job_process(argv_tail: Sequence[str], job_id: str) -> tuple[int, dict[str, str]] | None:
    """A live process of job `job_id` whose command line ends with `argv_tail`, and the environment it was
    started with; None when there is none. Finds a job's supervisor whose pid nobody stored (Linux: /proc)."""
    tail = [arg.encode() for arg in argv_tail]
    marker = f"{JOB_ID_VAR}={job_id}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")[:-1]
        except OSError:  # gone meanwhile, or not ours to inspect
            continue
        environ = _environ_entries(int(entry.name)) if argv[-len(tail) :] == tail else set()
        if marker in environ:
            pairs = (item.decode(errors="replace").partition("=") for item in environ if b"=" in item)
            return int(entry.name), {name: value for name, _, value in pairs}
    return None


def pid_exit(pid: int) -> asyncio.Future[None] | None:
    """A future resolved when process `pid` (not necessarily our child) exits; None when it is gone."""
    loop = asyncio.get_running_loop()
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    exited: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, _resolve, exited)

    def close(_: asyncio.Future[None]) -> None:
        loop.remove_reader(fd)
        os.close(fd)

    exited.add_done_callback(close)
    return exited


def terminate(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)

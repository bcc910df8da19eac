"""The local backend: jobs as process groups on this machine, one lease of the slot pool each.

Each job is an asyncio task: wait for a lease, start `/bin/sh -c command` in its own session (so the job
and everything it spawns form one process group), then wait for the first of: the process exiting, the
time limit, a cancel request. Whatever ends the job, the whole group is killed afterwards, so no child
outlives its job. Nothing polls: the task waits on the process, a timer and an event.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from idealab.executor.base import JobResult, JobSpec, JobStart, OnStart
from idealab.executor.sandbox import JOB_ID_VAR, job_environment
from idealab.executor.slots import Lease, SlotPool

DEFAULT_GRACE_S = 10.0
DEFAULT_REAP_TIMEOUT_S = 30.0
STDOUT_NAME = "stdout.log"
STDERR_NAME = "stderr.log"


def job_log_dir(spec: JobSpec) -> Path:
    """Where a job's logs go: `spec.log_dir`, else a `logs` directory beside its workspace."""
    return spec.log_dir if spec.log_dir is not None else spec.workspace.parent / "logs"


@dataclass(eq=False)
class _Job:
    spec: JobSpec
    stdout_path: Path
    stderr_path: Path
    stop: asyncio.Event = field(default_factory=asyncio.Event)  # set by cancel() / close()
    task: asyncio.Task[JobResult] | None = None


class LocalBackend:
    """Runs jobs as local subprocesses, as many at once as `pool` has leases.

    `grace_s`: after SIGTERM to a job's group (time limit or cancel), how long to wait before SIGKILL.
    `base_env`: the environment jobs inherit before scrubbing (default: this process's os.environ).
    `reap_timeout_s`: how long to wait for a killed group's last processes to exit before the lease is
    released anyway (a process stuck in the kernel cannot be hurried).
    """

    def __init__(
        self,
        pool: SlotPool,
        grace_s: float = DEFAULT_GRACE_S,
        base_env: Mapping[str, str] | None = None,
        reap_timeout_s: float = DEFAULT_REAP_TIMEOUT_S,
    ) -> None:
        if grace_s < 0:
            raise ValueError(f"grace_s must be non-negative, got {grace_s}")
        self.pool = pool
        self.grace_s = grace_s
        self.reap_timeout_s = reap_timeout_s
        self._base_env = base_env
        self._jobs: dict[str, _Job] = {}

    # ------------------------------------------------------------------------------ Backend protocol

    async def submit(self, spec: JobSpec, on_start: OnStart | None = None) -> str:
        if spec.job_id in self._jobs:
            raise ValueError(f"job id {spec.job_id!r} was already submitted to this backend")
        log_dir = job_log_dir(spec)
        job = _Job(spec, log_dir / STDOUT_NAME, log_dir / STDERR_NAME)
        job.task = asyncio.create_task(self._run(job, on_start), name=f"idealab-job-{spec.job_id}")
        self._jobs[spec.job_id] = job
        return spec.job_id

    async def wait(self, handle: str) -> JobResult:
        # shield: a caller that stops waiting must not cancel the job itself (that is what cancel() is for)
        return await asyncio.shield(self._task(handle))

    async def cancel(self, handle: str) -> None:
        """Drop a queued job, or terminate a running one's group; returns once it has ended."""
        job = self._job(handle)
        job.stop.set()
        await asyncio.wait({self._task(handle)})

    def logs(self, handle: str) -> tuple[Path, Path]:
        job = self._job(handle)
        return job.stdout_path, job.stderr_path

    async def close(self) -> None:
        for job in self._jobs.values():
            job.stop.set()
        tasks = {job.task for job in self._jobs.values() if job.task is not None}
        if tasks:
            await asyncio.wait(tasks)

    # ------------------------------------------------------------------------------------ internals

    def _job(self, handle: str) -> _Job:
        try:
            return self._jobs[handle]
        except KeyError:
            raise KeyError(f"unknown job handle {handle!r}") from None

    def _task(self, handle: str) -> asyncio.Task[JobResult]:
        task = self._job(handle).task
        assert task is not None  # set in submit() before the handle is returned
        return task

    def _unstarted(self, job: _Job, *, cancelled: bool = False, error: str | None = None) -> JobResult:
        now = time.time()
        return JobResult(
            job_id=job.spec.job_id,
            started_at=now,
            finished_at=now,
            exit_code=None,
            timed_out=False,
            gpu_ids=(),
            stdout_path=job.stdout_path,
            stderr_path=job.stderr_path,
            cancelled=cancelled,
            error=error,
        )

    async def _run(self, job: _Job, on_start: OnStart | None) -> JobResult:
        try:
            lease = await self._acquire(job)
        except ValueError as exc:  # the pool can never satisfy this request
            return self._unstarted(job, error=str(exc))
        if lease is None:
            return self._unstarted(job, cancelled=True)
        try:
            return await self._execute(job, lease, on_start)
        finally:
            lease.release()

    async def _acquire(self, job: _Job) -> Lease | None:
        """A lease, or None when the job was cancelled while it waited for one."""
        acquiring = asyncio.ensure_future(self.pool.acquire(job.spec.gpus))
        stopping = asyncio.ensure_future(job.stop.wait())
        try:
            await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            acquiring.cancel()  # no effect once granted; otherwise leaves the pool's queue
        await asyncio.wait({acquiring})
        if acquiring.cancelled():
            return None
        lease = acquiring.result()
        if job.stop.is_set():
            lease.release()
            return None
        return lease

    async def _execute(self, job: _Job, lease: Lease, on_start: OnStart | None) -> JobResult:
        spec = job.spec
        env = job_environment(spec.env, lease.gpu_ids, spec.job_id, self._base_env)
        started_at = time.time()
        try:
            job.stdout_path.parent.mkdir(parents=True, exist_ok=True)
            job.stderr_path.parent.mkdir(parents=True, exist_ok=True)
            with job.stdout_path.open("wb") as out, job.stderr_path.open("wb") as err:
                proc = await asyncio.create_subprocess_exec(
                    "/bin/sh",
                    "-c",
                    spec.command,
                    cwd=spec.workspace,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,  # own session => own process group, pgid == pid
                )
        except OSError as exc:
            return self._unstarted(job, error=f"could not start the job: {exc}")
        pgid = proc.pid
        exited = asyncio.ensure_future(proc.wait())
        try:
            if on_start is not None:
                on_start(
                    JobStart(spec.job_id, started_at, lease.gpu_ids, pgid, job.stdout_path, job.stderr_path)
                )
            stopping = asyncio.ensure_future(job.stop.wait())
            try:
                await asyncio.wait(
                    {exited, stopping}, timeout=spec.timeout_s, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                stopping.cancel()
            ended_by_itself = exited.done()
            if not ended_by_itself:
                await self._terminate(pgid, exited)
        except asyncio.CancelledError:
            signal_group(pgid, signal.SIGKILL)  # this task was cancelled from outside: no waiting now
            raise
        except Exception:
            signal_group(pgid, signal.SIGKILL)  # on_start raised (a caller's bug): stop the job too
            await exited
            raise
        signal_group(pgid, signal.SIGKILL)  # children the job left behind after its main process exited
        # the lease (GPU memory) is only free once every process of the group has really exited
        await wait_group_exit(pgid, self.reap_timeout_s)
        cancelled = not ended_by_itself and job.stop.is_set()
        return JobResult(
            job_id=spec.job_id,
            started_at=started_at,
            finished_at=time.time(),
            exit_code=proc.returncode if ended_by_itself else None,
            timed_out=not ended_by_itself and not cancelled,
            gpu_ids=lease.gpu_ids,
            stdout_path=job.stdout_path,
            stderr_path=job.stderr_path,
            cancelled=cancelled,
        )

    async def _terminate(self, pgid: int, exited: asyncio.Future[int]) -> None:
        """SIGTERM the group, give it `grace_s` to exit, then SIGKILL it."""
        signal_group(pgid, signal.SIGTERM)
        await asyncio.wait({exited}, timeout=self.grace_s)
        signal_group(pgid, signal.SIGKILL)
        await exited


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
    """Wait until no process of group `pgid` is alive; False if some still are after `timeout_s`.

    Waits on pidfds (readable once their process has exited), so nothing polls. Zombies count as exited.
    """
    if not hasattr(os, "pidfd_open") or not Path("/proc").is_dir():
        return True  # not Linux: nothing to wait on
    loop = asyncio.get_running_loop()
    fds: list[int] = []
    exits: list[asyncio.Future[None]] = []
    try:
        for pid in _group_members(pgid):
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


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) == pgid:
                members.append(int(entry.name))
        except ProcessLookupError:
            continue  # exited while we looked
    return members


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
    if not any(marker in _environ_entries(pid) for pid in _group_members(pgid)):
        return False
    return signal_group(pgid, signal.SIGKILL)

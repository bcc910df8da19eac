"""The local backend: jobs on this machine, one lease of the slot pool and one supervisor process each.

Each job is an asyncio task: wait for a lease, then start the job's supervisor (`supervisor.py`) in a
session of its own and wait for the first of: the supervisor exiting, a cancel request, or a backstop
deadline well past the job's own limit. The supervisor owns the job: it starts the command in its own
process group, enforces the time limit (SIGTERM to the group, grace, SIGKILL), caps the logs, streams the
metric values and writes what it saw to `exit.json`. So the orchestrator never reads a job's output while
it runs, and a job stops at its limit even when the orchestrator has died. Nothing polls: the task waits
on the supervisor's exit, a timer and an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from idealab.executor.base import JobResult, JobSpec, JobStart, OnStart
from idealab.executor.bwrap import SANDBOX_MODES, Limits, job_home, sandbox_wrapper, use_sandbox
from idealab.executor.capped_log import DEFAULT_LOG_CAP_BYTES, MIN_CAP_BYTES
from idealab.executor.sandbox import JOB_ID_VAR, job_environment
from idealab.executor.slots import Lease, SlotPool
from idealab.executor.supervisor import (
    DROP_PYTHONPATH_VAR,
    EXIT_NAME,
    JOB_PGID_NAME,
    METRICS_NAME,
    STDERR_NAME,
    STDOUT_NAME,
    SUPERVISOR_LOG_NAME,
    ExitRecord,
    SupervisorSpec,
    group_members,
)
from idealab.metric_stream import DEFAULT_MAX_METRIC_VALUES

DEFAULT_GRACE_S = 10.0
DEFAULT_REAP_TIMEOUT_S = 30.0
BACKSTOP_MARGIN_S = 30.0  # how late past its limit + grace a silent supervisor is killed from here
SUPERVISOR_MODULE = "idealab.executor.supervisor"


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
    `log_cap_bytes`: the most each of a job's stdout.log and stderr.log keeps (head and tail).
    `max_metric_values`: the most metric values kept per job (first and last ones, and those that decide
    the verdict).
    `sandbox`: "auto" (bubblewrap where usable, else a warning and no sandbox), "require" (a job fails
    to start without it) or "off", for jobs whose policy does not say (see `with_sandbox_options`).
    `limits`: resource limits for every job (the stricter of these and the job's own apply).
    `conceal`: directories no job may see (the run's workdir: its database, the other jobs' copies).
    After `close()`, nothing new starts: a job submitted later ends at once as cancelled.
    """

    def __init__(
        self,
        pool: SlotPool,
        grace_s: float = DEFAULT_GRACE_S,
        base_env: Mapping[str, str] | None = None,
        reap_timeout_s: float = DEFAULT_REAP_TIMEOUT_S,
        log_cap_bytes: int = DEFAULT_LOG_CAP_BYTES,
        max_metric_values: int = DEFAULT_MAX_METRIC_VALUES,
        sandbox: str = "auto",
        limits: Limits | None = None,
        conceal: Sequence[Path] = (),
    ) -> None:
        if sandbox not in SANDBOX_MODES:
            raise ValueError(f"sandbox must be one of {', '.join(SANDBOX_MODES)}, got {sandbox!r}")
        if grace_s < 0:
            raise ValueError(f"grace_s must be non-negative, got {grace_s}")
        if log_cap_bytes < MIN_CAP_BYTES:
            raise ValueError(f"log_cap_bytes must be at least {MIN_CAP_BYTES}, got {log_cap_bytes}")
        if max_metric_values < 2:
            raise ValueError(f"max_metric_values must be at least 2, got {max_metric_values}")
        self.pool = pool
        self.grace_s = grace_s
        self.reap_timeout_s = reap_timeout_s
        self.log_cap_bytes = log_cap_bytes
        self.max_metric_values = max_metric_values
        self._base_env = base_env
        self.sandbox = sandbox
        self.limits = limits or Limits()
        self.conceal = tuple(conceal)
        self._jobs: dict[str, _Job] = {}
        self._closed = False

    # ------------------------------------------------------------------------------ Backend protocol

    async def submit(self, spec: JobSpec, on_start: OnStart | None = None) -> str:
        if spec.job_id in self._jobs:
            raise ValueError(f"job id {spec.job_id!r} was already submitted to this backend")
        log_dir = job_log_dir(spec)
        job = _Job(spec, log_dir / STDOUT_NAME, log_dir / STDERR_NAME)
        if self._closed:
            job.stop.set()  # shutting down: it ends as cancelled without starting
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
        self._closed = True
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
        job_dir = job.stdout_path.parent
        mode = spec.sandbox.mode or self.sandbox
        sandboxed, problem = use_sandbox(mode)
        if problem is not None:
            return self._unstarted(job, error=problem)
        policy = replace(
            spec.sandbox, limits=spec.sandbox.limits.merged(self.limits), conceal=(*spec.sandbox.conceal, *self.conceal)
        )
        started_at = time.time()
        try:
            job_dir.mkdir(parents=True, exist_ok=True)
            for stale in (EXIT_NAME, METRICS_NAME, JOB_PGID_NAME):  # a log dir reused by `env check`
                (job_dir / stale).unlink(missing_ok=True)
            home = job_home(job_dir, sandboxed)
            env = job_environment(spec.env, lease.gpu_ids, spec.job_id, self._base_env, policy.allow_env, home)
            wrapper = sandbox_wrapper(policy, spec.workspace, job_dir, lease.gpu_ids, sandboxed)
            disk = _disk_watch(policy.limits.disk_mb, spec.workspace, job_dir, sandboxed)
            self._supervisor_spec(spec, wrapper, sandboxed, policy.limits.processes, disk).write(job_dir)
            with (job_dir / SUPERVISOR_LOG_NAME).open("wb") as supervisor_log:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-P",  # not the workspace first on sys.path: the job's files must not shadow a module
                    "-m",
                    SUPERVISOR_MODULE,
                    str(job_dir),
                    cwd=spec.workspace,
                    env=_supervisor_env(env),
                    stdin=subprocess.DEVNULL,
                    stdout=supervisor_log,
                    stderr=supervisor_log,
                    start_new_session=True,  # no terminal signal reaches it; it outlives a killed orchestrator
                )
        except OSError as exc:
            return self._unstarted(job, error=f"could not start the job: {exc}")
        exited = asyncio.ensure_future(proc.wait())
        try:
            if on_start is not None:
                on_start(JobStart(spec.job_id, started_at, lease.gpu_ids, proc.pid, job.stdout_path, job.stderr_path))
            stopping = asyncio.ensure_future(job.stop.wait())
            try:
                # the supervisor enforces the time limit; this is only the backstop should it hang
                backstop_s = spec.timeout_s + self.grace_s + BACKSTOP_MARGIN_S
                await asyncio.wait({exited, stopping}, timeout=backstop_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
            if not exited.done():
                await self._stop_supervisor(proc.pid, spec.job_id, job_dir, exited, forced=not job.stop.is_set())
        except asyncio.CancelledError:
            kill_job(proc.pid, spec.job_id, job_dir)  # this task was cancelled from outside: no waiting now
            raise
        except Exception:
            kill_job(proc.pid, spec.job_id, job_dir)  # on_start raised (a caller's bug): stop the job too
            await exited
            raise
        # the supervisor waited for the job's whole group before it wrote exit.json: the lease is free now
        record = ExitRecord.read(job_dir)
        if record is None:  # the supervisor died (killed, out of memory): its job must not run on alone
            job_pgid = kill_job(proc.pid, spec.job_id, job_dir)
            if job_pgid is not None:
                await wait_group_exit(job_pgid, self.reap_timeout_s)
            error = f"the job's supervisor ended without a result ({describe_returncode(proc.returncode)})"
            if job.stop.is_set():
                return self._unstarted(job, cancelled=True)
            return JobResult(
                spec.job_id, started_at, time.time(), None, False, lease.gpu_ids, job.stdout_path,
                job.stderr_path, error=error + _supervisor_tail(job_dir),
            )  # fmt: skip
        return result_from_record(record, lease.gpu_ids, job.stdout_path, job.stderr_path, job_dir / METRICS_NAME)

    def _supervisor_spec(
        self,
        spec: JobSpec,
        wrapper: list[str],
        sandboxed: bool,
        max_processes: int | None,
        disk: tuple[int | None, list[str]] = (None, []),
    ) -> SupervisorSpec:
        return SupervisorSpec(
            job_id=spec.job_id,
            command=spec.command,
            cwd=str(spec.workspace),
            timeout_s=spec.timeout_s,
            grace_s=self.grace_s,
            log_cap_bytes=self.log_cap_bytes,
            metric_name=spec.metric_name,
            metric_regex=spec.metric_regex,
            max_metric_values=self.max_metric_values,
            wrapper=wrapper,
            sandboxed=sandboxed,
            max_processes=max_processes,
            max_disk_mb=disk[0],
            disk_paths=disk[1],
        )

    async def _stop_supervisor(
        self, pid: int, job_id: str, job_dir: Path, exited: asyncio.Future[int], forced: bool
    ) -> None:
        """Ask the supervisor to end the job (SIGTERM, grace, SIGKILL); kill both if it does not answer.

        `forced`: the supervisor outlived its own deadline (it hangs): no asking, kill at once."""
        if not forced:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            await asyncio.wait({exited}, timeout=self.grace_s + BACKSTOP_MARGIN_S)
        if not exited.done():
            job_pgid = kill_job(pid, job_id, job_dir)
            if job_pgid is not None:
                await wait_group_exit(job_pgid, self.reap_timeout_s)
        await exited


def _supervisor_env(job_env: dict[str, str]) -> dict[str, str]:
    """The job's environment, plus what the supervisor needs to import this very idealab (the job's
    allow-listed environment has no PYTHONPATH); the supervisor removes it again before the job starts."""
    if "PYTHONPATH" in job_env:
        return job_env
    return {**job_env, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), DROP_PYTHONPATH_VAR: "1"}


def _disk_watch(limit_mb: int | None, workspace: Path, job_dir: Path, sandboxed: bool) -> tuple[int | None, list[str]]:
    """The disk cap and the directories it covers: the job's copy, and its HOME outside the sandbox (inside,
    HOME is in the private /tmp, a tmpfs of the cap's size)."""
    if limit_mb is None:
        return None, []
    paths = [str(workspace)] if sandboxed else [str(workspace), job_home(job_dir, sandboxed)]
    return limit_mb, paths


def result_from_record(
    record: ExitRecord, gpu_ids: tuple[int, ...], stdout_path: Path, stderr_path: Path, metrics_path: Path
) -> JobResult:
    """A job's result from its supervisor's exit record (also after an orchestrator restart)."""
    return JobResult(
        job_id=record.job_id,
        started_at=record.started_at,
        finished_at=record.finished_at,
        exit_code=record.returncode if record.ended == "exited" else None,
        timed_out=record.ended == "timeout",
        gpu_ids=gpu_ids,
        stdout_path=stdout_path,
        stderr_path=stderr_path,
        cancelled=record.ended == "stopped",
        error=record.error,
        metrics_path=metrics_path if metrics_path.is_file() else None,
        limit_hit=record.limit_hit,
    )


def kill_job(supervisor_pid: int, job_id: str, job_dir: Path) -> int | None:
    """SIGKILL a job's supervisor and the job's group, now; returns the job's pgid where it is known."""
    kill_stale_job(supervisor_pid, job_id)
    job_pgid = _read_pgid(job_dir)
    if job_pgid is not None:
        kill_stale_job(job_pgid, job_id)
    return job_pgid


def _read_pgid(job_dir: Path) -> int | None:
    try:
        return int((job_dir / JOB_PGID_NAME).read_text())
    except (FileNotFoundError, ValueError):
        return None


def _supervisor_tail(job_dir: Path) -> str:
    try:
        text = (job_dir / SUPERVISOR_LOG_NAME).read_text(errors="replace").strip()
    except FileNotFoundError:
        return ""
    return f"\n{text[-2000:]}" if text else ""


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


@dataclass(frozen=True)
class StaleJob:
    """What `settle_stale_job` found of a job a dead orchestrator had left running."""

    record: ExitRecord | None  # how the job ended, where its supervisor saw it end
    stopped_now: bool  # something of it still ran and was stopped (or killed) just now


async def settle_stale_job(pid: int | None, job_id: str, job_dir: Path) -> StaleJob:
    """After an orchestrator restart, for a job it had left running: how the job ended, if its supervisor
    saw it end (by itself or at its limit, possibly while no orchestrator ran). A job still running is
    stopped gracefully through its supervisor; what that or a dead supervisor leaves is killed. Without
    a record (or with one that says `stopped`) the job has to run again.
    """
    record = ExitRecord.read(job_dir)
    if record is not None or pid is None:
        return StaleJob(record, stopped_now=False)
    marker = f"{JOB_ID_VAR}={job_id}".encode()
    if pid > 1 and marker in _environ_entries(pid):  # its supervisor still runs (a reused pid would not match)
        try:
            grace_s = SupervisorSpec.read(job_dir).grace_s
        except (OSError, ValueError, TypeError):
            grace_s = DEFAULT_GRACE_S
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        await wait_pids_exit([pid], grace_s + BACKSTOP_MARGIN_S)
        record = ExitRecord.read(job_dir)
        if record is not None:
            return StaleJob(record, stopped_now=True)
    killed = kill_stale_job(pid, job_id)  # also a job of an older idealab: pid is then its group
    job_pgid = _read_pgid(job_dir)
    if job_pgid is not None:
        killed = kill_stale_job(job_pgid, job_id) or killed
        await wait_group_exit(job_pgid, DEFAULT_REAP_TIMEOUT_S)
    return StaleJob(None, stopped_now=killed)


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

"""The local backend: jobs on this machine, one lease of the slot pool and one supervisor process each.

Each job is an asyncio task: wait for a lease, then start the job's supervisor (`supervisor.py`) in a
session of its own and wait for the first of: the supervisor exiting, a cancel request, or a backstop
deadline well past the job's own limit. The supervisor owns the job: it starts the command in its own
process group, enforces the time limit (SIGTERM to the group, grace, SIGKILL), caps the logs, streams the
metric values and writes what it saw to `exit.json`. So the orchestrator never reads a job's output while
it runs, and a job stops at its limit even when the orchestrator has died. Nothing polls: the task waits
on the supervisor's exit, a timer and an event.

A job's handle is "local:<supervisor pid>:<GPU ids>". Before its supervisor exists it is "local:pending"
(`claim`): the job is then known by its log directory, which its supervisor is started with, and its id,
which is in the supervisor's environment. After an orchestrator restart, `reattach` collects the result of
a job that ended meanwhile (its exit.json), and waits for one whose supervisor still runs (holding its GPUs
in the pool again) instead of stopping it; given the pending handle, it looks for that supervisor first.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from idealab.executor.base import JobResult, JobSpec, JobStart, OnStart, ScoringEnd
from idealab.executor.bwrap import SANDBOX_MODES, Limits, job_home, sandbox_wrapper, use_sandbox
from idealab.executor.capped_log import DEFAULT_LOG_CAP_BYTES, MIN_CAP_BYTES
from idealab.executor.procs import (
    describe_returncode,
    find_job_process,
    is_job_process,
    kill_job,
    kill_stale_job,
    pid_exit,
    read_pgid,
    terminate,
    wait_group_exit,
)
from idealab.executor.sandbox import job_environment
from idealab.executor.scoring import supervisor_score_step
from idealab.executor.slots import Lease, SlotPool
from idealab.executor.supervision import disk_watch, supervisor_spec
from idealab.executor.supervisor import (
    DROP_PYTHONPATH_VAR,
    EXIT_NAME,
    JOB_PGID_NAME,
    METRICS_NAME,
    SCORE_STDERR_NAME,
    SCORE_STDOUT_NAME,
    SPEC_NAME,
    STDERR_NAME,
    STDOUT_NAME,
    SUPERVISOR_LOG_NAME,
    ExitRecord,
)
from idealab.metric_stream import DEFAULT_MAX_METRIC_VALUES

DEFAULT_GRACE_S = 10.0
DEFAULT_REAP_TIMEOUT_S = 30.0
BACKSTOP_MARGIN_S = 30.0  # how late past its limit + grace a silent supervisor is killed from here
SUPERVISOR_MODULE = "idealab.executor.supervisor"
PENDING_HANDLE = "local:pending"  # claimed, supervisor not started yet (or started, its pid not stored)


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

    name = "local"

    # ------------------------------------------------------------------------------ Backend protocol

    def claim(self, spec: JobSpec) -> str:
        return PENDING_HANDLE  # the job's log directory and id, both in the spec, find its supervisor

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

    async def reattach(self, spec: JobSpec, handle: str) -> str | None:
        if spec.job_id in self._jobs:
            raise ValueError(f"job id {spec.job_id!r} was already submitted to this backend")
        log_dir = job_log_dir(spec)
        pid, gpu_ids = _find_supervisor(log_dir, spec.job_id) if handle == PENDING_HANDLE else parse_handle(handle)
        job = _Job(spec, log_dir / STDOUT_NAME, log_dir / STDERR_NAME)
        record = ExitRecord.read(log_dir)
        if record is not None:  # it ended while no orchestrator waited for it
            collected = result_from_record(record, gpu_ids, job.stdout_path, job.stderr_path, log_dir / METRICS_NAME)
            job.task = asyncio.create_task(ready(collected))
        else:
            exited = pid_exit(pid) if pid else None
            if exited is None or not is_job_process(pid, spec.job_id):  # its supervisor died without a result
                if exited is not None:
                    exited.cancel()
                job_pgid = read_pgid(log_dir)
                if job_pgid is not None and kill_stale_job(job_pgid, spec.job_id):
                    await wait_group_exit(job_pgid, self.reap_timeout_s)
                return None
            lease = self.pool.take(gpu_ids)  # None: this pool lacks them now; the job runs on regardless
            job.task = asyncio.create_task(self._adopt(job, pid, gpu_ids, exited, lease))
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
            supervisor_spec(
                spec, wrapper, sandboxed, grace_s=self.grace_s, log_cap_bytes=self.log_cap_bytes,
                max_metric_values=self.max_metric_values, max_processes=policy.limits.processes,
                disk=disk_watch(policy.limits.disk_mb, spec.workspace, job_dir, sandboxed),
                score=supervisor_score_step(spec, job_dir, lease.gpu_ids, sandboxed, policy.limits, self.conceal),
            ).write(job_dir)  # fmt: skip
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
                handle = format_handle(proc.pid, lease.gpu_ids)
                on_start(
                    JobStart(spec.job_id, started_at, lease.gpu_ids, proc.pid, job.stdout_path, job.stderr_path, handle)
                )
            stopping = asyncio.ensure_future(job.stop.wait())
            try:
                # the supervisor enforces the time limit; this is only the backstop should it hang
                backstop_s = spec.limit_s + 2 * self.grace_s + BACKSTOP_MARGIN_S
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
        return await self._collect(job, proc.pid, lease.gpu_ids, started_at, describe_returncode(proc.returncode))

    async def _collect(
        self, job: _Job, pid: int, gpu_ids: tuple[int, ...], started_at: float, how_it_ended: str
    ) -> JobResult:
        """The result once the supervisor `pid` has exited: its exit record, else an error."""
        # the supervisor waited for the job's whole group before it wrote exit.json: the lease is free now
        job_dir = job.stdout_path.parent
        record = ExitRecord.read(job_dir)
        if record is not None:
            return result_from_record(record, gpu_ids, job.stdout_path, job.stderr_path, job_dir / METRICS_NAME)
        # the supervisor died (killed, out of memory): its job must not run on alone
        job_pgid = kill_job(pid, job.spec.job_id, job_dir)
        if job_pgid is not None:
            await wait_group_exit(job_pgid, self.reap_timeout_s)
        if job.stop.is_set():
            return self._unstarted(job, cancelled=True)
        error = f"the job's supervisor ended without a result ({how_it_ended})"
        return JobResult(
            job.spec.job_id, started_at, time.time(), None, False, gpu_ids, job.stdout_path, job.stderr_path,
            error=error + _supervisor_tail(job_dir),
        )  # fmt: skip

    async def _adopt(
        self, job: _Job, pid: int, gpu_ids: tuple[int, ...], exited: asyncio.Future[None], lease: Lease | None
    ) -> JobResult:
        """Wait for a job an earlier orchestrator started, as `_execute` waits for its own (the supervisor
        is not our child: its exit is watched on a pidfd)."""
        spec = job.spec
        try:
            stopping: asyncio.Future[Any] = asyncio.ensure_future(job.stop.wait())
            try:
                backstop_s = spec.limit_s + 2 * self.grace_s + BACKSTOP_MARGIN_S  # counted from now: generous
                await asyncio.wait({exited, stopping}, timeout=backstop_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
            job_dir = job.stdout_path.parent
            if not exited.done():
                await self._stop_supervisor(pid, spec.job_id, job_dir, exited, forced=not job.stop.is_set())
            started_at = _started_at(job_dir)
            return await self._collect(job, pid, gpu_ids, started_at, "it was not this orchestrator's child")
        finally:
            exited.cancel()
            if lease is not None:
                lease.release()

    async def _stop_supervisor(
        self, pid: int, job_id: str, job_dir: Path, exited: asyncio.Future[Any], forced: bool
    ) -> None:
        """Ask the supervisor to end the job (SIGTERM, grace, SIGKILL); kill both if it does not answer.

        `forced`: the supervisor outlived its own deadline (it hangs): no asking, kill at once."""
        if not forced:
            terminate(pid)
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


def _find_supervisor(job_dir: Path, job_id: str) -> tuple[int, tuple[int, ...]]:
    """The pid and GPUs of job `job_id`'s live supervisor, found by the arguments it was started with; pid
    0 when none runs (it never started, or it ended: then its exit.json says how; GPUs unknown then)."""
    found = find_job_process(["-m", SUPERVISOR_MODULE, str(job_dir)], job_id)
    if found is None:
        return 0, ()
    pid, environ = found
    return pid, tuple(int(g) for g in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.isdigit())


def format_handle(supervisor_pid: int, gpu_ids: tuple[int, ...]) -> str:
    return f"local:{supervisor_pid}:{','.join(str(g) for g in gpu_ids)}"


def parse_handle(handle: str) -> tuple[int, tuple[int, ...]]:
    """(supervisor pid, GPU ids) of a local handle; ValueError for anything else."""
    kind, _, rest = handle.partition(":")
    pid, _, gpus = rest.partition(":")
    if kind != "local" or not pid.isdigit():
        raise ValueError(f"not a local job handle: {handle!r}")
    try:
        return int(pid), tuple(int(g) for g in gpus.split(",") if g)
    except ValueError:
        raise ValueError(f"not a local job handle: {handle!r}") from None


def _started_at(job_dir: Path) -> float:
    """When a job an earlier orchestrator started began: its spec file was written just before."""
    try:
        return (job_dir / SPEC_NAME).stat().st_mtime
    except OSError:
        return time.time()


async def ready(result: JobResult) -> JobResult:
    """A job's task whose result was collected already."""
    return result


def result_from_record(
    record: ExitRecord, gpu_ids: tuple[int, ...], stdout_path: Path, stderr_path: Path, metrics_path: Path
) -> JobResult:
    """A job's result from its supervisor's exit record (also after an orchestrator restart)."""
    scoring = None
    if record.score is not None:
        score = record.score
        scoring = ScoringEnd(
            exit_code=score.get("returncode"),  # type: ignore[arg-type]
            timed_out=score.get("ended") == "timeout",
            stdout_path=stdout_path.parent / SCORE_STDOUT_NAME,
            stderr_path=stdout_path.parent / SCORE_STDERR_NAME,
            error=score.get("error"),  # type: ignore[arg-type]
            started_at=float(score.get("started_at") or 0.0),  # type: ignore[arg-type]
            finished_at=float(score.get("finished_at") or 0.0),  # type: ignore[arg-type]
            cpu_s=score.get("cpu_s"),  # type: ignore[arg-type]
        )
    return JobResult(
        job_id=record.job_id,
        started_at=record.started_at,
        finished_at=record.finished_at,
        exit_code=record.returncode if record.ended == "exited" else None,
        timed_out=record.ended in ("timeout", "over_budget"),
        gpu_ids=gpu_ids,
        stdout_path=stdout_path,
        stderr_path=stderr_path,
        cancelled=record.ended == "stopped",
        error=record.error,
        metrics_path=metrics_path if metrics_path.is_file() else None,
        limit_hit=record.limit_hit,
        training_s=record.training_s,
        over_budget=record.ended == "over_budget",
        scoring=scoring,
        cpu_s=record.cpu_s,
    )


def _supervisor_tail(job_dir: Path) -> str:
    try:
        text = (job_dir / SUPERVISOR_LOG_NAME).read_text(errors="replace").strip()
    except FileNotFoundError:
        return ""
    return f"\n{text[-2000:]}" if text else ""

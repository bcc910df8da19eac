"""The Slurm backend: each job is one `sbatch` job that runs the job's supervisor on a node.

The job's files (its copy of the environment, its logs, `job.json`, `exit.json`) are on the work
directory, which the nodes share with the orchestrator. The batch script runs the same per-job supervisor
as the local backend (`supervisor.py`), so the time limit, the capped logs, the streamed metric values, the
sandbox and `exit.json` work the same on the node; Slurm's own `--time` is only a backstop behind it.

- Environment: `sbatch --export=NONE`, and the supervisor replaces whatever the node gave it by the job's
  scrubbed, allow-listed environment from `job.env.json` (never the orchestrator's credentials), keeping
  only what Slurm assigned on the node (CUDA_VISIBLE_DEVICES for the job's GRES GPUs, SLURM_JOB_ID).
- Waiting: a scheduler on other machines sends no events to the orchestrator, and inotify does not see
  writes made on another NFS client. So one watcher per backend asks `squeue` about all of its jobs in a
  single call every `poll_s` seconds (one RPC to slurmctld per interval, whatever the number of jobs), and
  reads a job's `exit.json` once Slurm no longer lists it as pending or running.
- Cancel: `scancel --batch --signal=TERM` asks the supervisor to stop the job gracefully (it writes
  `exit.json`); then `scancel` ends the Slurm job, and with it every process left on the node.
- Restart: the handle is "slurm:<job id>"; `reattach` looks the job up with `squeue` and waits for it, or
  collects its `exit.json` when it ended meanwhile. Before sbatch answers, it is "slurm:pending:<job name>"
  (`claim`): each job is submitted under a job name of its own, so `reattach` finds by `squeue --name` a job
  whose id was never stored; one Slurm no longer lists ended with its `exit.json` or never reached Slurm.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import shlex
import shutil
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from idealab.errors import RunFault
from idealab.executor.base import JobResult, JobSpec, JobStart, OnStart
from idealab.executor.bwrap import SANDBOX_MODES, Limits, job_home, sandbox_wrapper, use_sandbox
from idealab.executor.capped_log import DEFAULT_LOG_CAP_BYTES
from idealab.executor.defaults import SLURM_POLL_S
from idealab.executor.local import BACKSTOP_MARGIN_S, DEFAULT_GRACE_S, job_log_dir, ready, result_from_record
from idealab.executor.sandbox import job_environment
from idealab.executor.scoring import supervisor_score_step
from idealab.executor.supervision import supervisor_spec
from idealab.executor.supervisor import (
    ENVIRONMENT_NAME,
    EXIT_NAME,
    JOB_PGID_NAME,
    METRICS_NAME,
    STDERR_NAME,
    STDOUT_NAME,
    SUPERVISOR_LOG_NAME,
    ExitRecord,
)
from idealab.metric_stream import DEFAULT_MAX_METRIC_VALUES

log = logging.getLogger(__name__)

DEFAULT_POLL_S = SLURM_POLL_S
SCRIPT_NAME = "job.sbatch"
PENDING_PREFIX = "slurm:pending:"  # + the job's name: claimed, its Slurm job id not known (yet)
NODE_VARIABLES = ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")  # what the job keeps of the node's environment
ACTIVE_STATES = frozenset(
    {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING", "SIGNALING",
     "STAGE_OUT", "STOPPED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}
)  # fmt: skip
_GPU_INDEX = re.compile(r"IDX:([0-9,\-]+)")


class SlurmError(RunFault):
    """Slurm cannot be used (no client commands here, the controller does not answer): the machine's fault,
    not an idea's, so the run stops (a resume continues). A job that sbatch refuses is that job's failure."""


@dataclass(frozen=True)
class SlurmOptions:
    """Where and how jobs are submitted (each maps to the sbatch option of the same name)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    cpus_per_job: int | None = None  # --cpus-per-task; None: the cluster's default
    extra: tuple[str, ...] = ()  # further sbatch options, as written: "--constraint=a100", "--exclusive"
    poll_s: float = DEFAULT_POLL_S  # how often squeue is asked about the jobs


@dataclass(eq=False)
class _Job:
    spec: JobSpec
    stdout_path: Path
    stderr_path: Path
    name: str  # the Slurm job name, unique to this job (see `claim`)
    on_start: OnStart | None = None
    slurm_id: str | None = None  # set once sbatch accepted it
    state: str = "SUBMITTING"  # the last state squeue told
    running_told: bool = False
    running_since: float | None = None
    gpu_ids: tuple[int, ...] = ()
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # Slurm no longer lists it as active
    task: asyncio.Task[JobResult] | None = None

    @property
    def job_dir(self) -> Path:
        return self.stdout_path.parent


class SlurmBackend:
    """Runs each job as an sbatch job on a Slurm cluster that shares the work directory.

    `grace_s`, `base_env`, `log_cap_bytes`, `max_metric_values`, `sandbox`, `limits`, `conceal`: as for
    `LocalBackend` (they reach the job's supervisor on the node). How many jobs run at once is the caller's
    to decide (the search loop's job slots); the cluster decides when and where each runs.
    """

    name = "slurm"

    def __init__(
        self,
        options: SlurmOptions | None = None,
        grace_s: float = DEFAULT_GRACE_S,
        base_env: Mapping[str, str] | None = None,
        log_cap_bytes: int = DEFAULT_LOG_CAP_BYTES,
        max_metric_values: int = DEFAULT_MAX_METRIC_VALUES,
        sandbox: str = "auto",
        limits: Limits | None = None,
        conceal: Sequence[Path] = (),
    ) -> None:
        if sandbox not in SANDBOX_MODES:
            raise ValueError(f"sandbox must be one of {', '.join(SANDBOX_MODES)}, got {sandbox!r}")
        self.options = options or SlurmOptions()
        if self.options.poll_s <= 0:
            raise ValueError(f"poll_s must be positive, got {self.options.poll_s}")
        self.grace_s = grace_s
        self._base_env = base_env
        self.log_cap_bytes = log_cap_bytes
        self.max_metric_values = max_metric_values
        self.sandbox = sandbox
        self.limits = limits or Limits()
        self.conceal = tuple(conceal)
        self._jobs: dict[str, _Job] = {}
        self._claims: dict[str, str] = {}  # job_id: the Slurm job name claimed for it, not submitted yet
        self._closed = False
        self._wake = asyncio.Event()  # a job was submitted or asked to stop: look now, not at the next tick
        self._watcher: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------------------ Backend protocol

    def claim(self, spec: JobSpec) -> str:
        name = self._claims.setdefault(spec.job_id, job_name(spec.job_id))
        return PENDING_PREFIX + name

    async def submit(self, spec: JobSpec, on_start: OnStart | None = None) -> str:
        job = self._register(spec, self._claims.pop(spec.job_id, "") or job_name(spec.job_id))
        job.on_start = on_start
        if self._closed:
            job.stop.set()
        job.task = asyncio.create_task(self._run(job), name=f"idealab-slurm-{spec.job_id}")
        return spec.job_id

    async def reattach(self, spec: JobSpec, handle: str) -> str | None:
        job_dir = job_log_dir(spec)
        name = handle.removeprefix(PENDING_PREFIX) if handle.startswith(PENDING_PREFIX) else ""
        slurm_id = await self._id_by_name(name) if name else parse_handle(handle)
        if slurm_id is None:  # Slurm lists no job of that name: it ended long enough ago, or never got there
            record = ExitRecord.read(job_dir)
            if record is None:
                return None
            job = self._register(spec, name)
            collected = result_from_record(record, (), job.stdout_path, job.stderr_path, job_dir / METRICS_NAME)
            job.task = asyncio.create_task(ready(collected))
            return spec.job_id
        states = await self._states([slurm_id])
        active = states.get(slurm_id) in ACTIVE_STATES
        if not active and ExitRecord.read(job_dir) is None:
            await _scancel(slurm_id)  # whatever is left of it (a state squeue did not list)
            return None
        job = self._register(spec, name)
        job.slurm_id, job.state, job.running_told = slurm_id, states.get(slurm_id, "GONE"), True
        job.task = asyncio.create_task(self._follow(job), name=f"idealab-slurm-{spec.job_id}")
        return spec.job_id

    async def wait(self, handle: str) -> JobResult:
        return await asyncio.shield(self._task(handle))

    async def cancel(self, handle: str) -> None:
        job = self._job(handle)
        job.stop.set()
        self._wake.set()
        await asyncio.wait({self._task(handle)})

    def logs(self, handle: str) -> tuple[Path, Path]:
        job = self._job(handle)
        return job.stdout_path, job.stderr_path

    async def close(self) -> None:
        self._closed = True
        for job in self._jobs.values():
            job.stop.set()
        self._wake.set()
        tasks = {job.task for job in self._jobs.values() if job.task is not None}
        if tasks:
            await asyncio.wait(tasks)
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)

    # ------------------------------------------------------------------------------------ internals

    def _register(self, spec: JobSpec, name: str) -> _Job:
        if spec.job_id in self._jobs:
            raise ValueError(f"job id {spec.job_id!r} was already submitted to this backend")
        log_dir = job_log_dir(spec)
        job = _Job(spec, log_dir / STDOUT_NAME, log_dir / STDERR_NAME, name)
        self._jobs[spec.job_id] = job
        return job

    def _job(self, handle: str) -> _Job:
        try:
            return self._jobs[handle]
        except KeyError:
            raise KeyError(f"unknown job handle {handle!r}") from None

    def _task(self, handle: str) -> asyncio.Task[JobResult]:
        task = self._job(handle).task
        assert task is not None  # set before the handle is returned
        return task

    def _result(self, job: _Job, *, cancelled: bool = False, error: str | None = None) -> JobResult:
        now = time.time()
        return JobResult(
            job.spec.job_id, job.running_since or now, now, None, False, job.gpu_ids, job.stdout_path,
            job.stderr_path, cancelled=cancelled, error=error,
        )  # fmt: skip

    async def _run(self, job: _Job) -> JobResult:
        if job.stop.is_set():
            return self._result(job, cancelled=True)
        try:
            script = self._prepare(job)
        except (OSError, ValueError) as exc:
            return self._result(job, error=f"could not prepare the Slurm job: {exc}")
        if isinstance(script, str):
            return self._result(job, error=script)
        slurm_id = await _sbatch(self._sbatch_argv(job.spec, job.name, script))
        if not slurm_id.isdigit():  # refused: why
            return self._result(job, error=slurm_id)
        job.slurm_id = slurm_id
        if job.on_start is not None:  # accepted: its handle is stored now, before it runs
            job.on_start(self._start(job, time.time()))
        return await self._follow(job)

    def _prepare(self, job: _Job) -> Path | str:
        """Write job.json, job.env.json and the batch script; the script, or why the job cannot run."""
        spec = job.spec
        sandboxed, problem = use_sandbox(spec.sandbox.mode or self.sandbox)
        if problem is not None:
            return problem
        policy = replace(
            spec.sandbox, limits=spec.sandbox.limits.merged(self.limits), conceal=(*spec.sandbox.conceal, *self.conceal)
        )
        job_dir = job.job_dir
        job_dir.mkdir(parents=True, exist_ok=True)
        for stale in (EXIT_NAME, METRICS_NAME, JOB_PGID_NAME):
            (job_dir / stale).unlink(missing_ok=True)
        devices = tuple(range(spec.gpus))  # which ones: Slurm decides on the node (CUDA_VISIBLE_DEVICES)
        env = job_environment(
            spec.env, devices, spec.job_id, self._base_env, policy.allow_env, job_home(job_dir, sandboxed)
        )
        if spec.gpus:
            del env["CUDA_VISIBLE_DEVICES"]  # the node's, from the job's GRES
        wrapper = sandbox_wrapper(policy, spec.workspace, job_dir, devices, sandboxed)
        supervisor_spec(
            spec, wrapper, sandboxed, grace_s=self.grace_s, log_cap_bytes=self.log_cap_bytes,
            max_metric_values=self.max_metric_values, max_processes=policy.limits.processes,
            score=supervisor_score_step(spec, job_dir, devices, sandboxed, policy.limits, self.conceal),
        ).write(job_dir)  # fmt: skip
        (job_dir / ENVIRONMENT_NAME).write_text(json.dumps({"env": env, "keep": list(NODE_VARIABLES)}))
        script = job_dir / SCRIPT_NAME
        script.write_text(batch_script(spec.job_id, job_dir))
        return script

    def _sbatch_argv(self, spec: JobSpec, name: str, script: Path) -> list[str]:
        opts = self.options
        memory_mb = spec.sandbox.limits.merged(self.limits).memory_mb
        minutes = max(1, math.ceil((spec.limit_s + 2 * self.grace_s + BACKSTOP_MARGIN_S) / 60))
        log_path = str(script.parent / SUPERVISOR_LOG_NAME)
        argv = [
            "sbatch", "--parsable", f"--job-name={name}", f"--chdir={spec.workspace}",
            f"--output={log_path}", f"--error={log_path}", "--export=NONE", "--nodes=1", "--ntasks=1",
            f"--time={minutes}",
        ]  # fmt: skip
        if spec.gpus:
            argv.append(f"--gres=gpu:{spec.gpus}")
        if opts.cpus_per_job is not None:
            argv.append(f"--cpus-per-task={opts.cpus_per_job}")
        if memory_mb is not None:
            argv.append(f"--mem={memory_mb}M")
        for flag, value in (("partition", opts.partition), ("account", opts.account), ("qos", opts.qos)):
            if value:
                argv.append(f"--{flag}={value}")
        return [*argv, *opts.extra, str(script)]

    def _start(self, job: _Job, started_at: float) -> JobStart:
        return JobStart(
            job.spec.job_id, started_at, job.gpu_ids, None, job.stdout_path, job.stderr_path,
            f"slurm:{job.slurm_id}",
        )  # fmt: skip

    async def _follow(self, job: _Job) -> JobResult:
        """Wait until Slurm no longer lists the job as active (asking it to stop when told to), then collect."""
        assert job.slurm_id is not None
        self._ensure_watcher()
        self._wake.set()
        stopping = asyncio.ensure_future(job.stop.wait())
        ended = asyncio.ensure_future(job.ended.wait())
        try:
            await asyncio.wait({stopping, ended}, return_when=asyncio.FIRST_COMPLETED)
            if not job.ended.is_set():  # cancel: the supervisor stops the job gracefully, then Slurm ends it
                await _scancel(job.slurm_id, "--batch", "--signal=TERM")
                await asyncio.wait({ended}, timeout=self.grace_s + BACKSTOP_MARGIN_S)
                await _scancel(job.slurm_id)
                await ended
        finally:
            stopping.cancel()
            ended.cancel()
        record = ExitRecord.read(job.job_dir)
        if record is None:  # on NFS the file may show a moment after the job left the queue
            await asyncio.sleep(self.options.poll_s)
            record = ExitRecord.read(job.job_dir)
        if record is None:
            if job.stop.is_set():
                return self._result(job, cancelled=True)
            tail = _tail(job.job_dir / SUPERVISOR_LOG_NAME)
            why = f"Slurm job {job.slurm_id} ended ({job.state}) without its supervisor's result"
            return self._result(job, error=why + (f"\n{tail}" if tail else ""))
        if record.ended == "timeout":
            await _scancel(job.slurm_id)  # anything of it still on the node goes with the Slurm job
        return result_from_record(record, job.gpu_ids, job.stdout_path, job.stderr_path, job.job_dir / METRICS_NAME)

    def _ensure_watcher(self) -> None:
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch(), name="idealab-slurm-watcher")

    async def _watch(self) -> None:
        """Ask squeue about every followed job at once, every poll_s (sooner when woken), until none is left."""
        while True:
            followed = [j for j in self._jobs.values() if j.slurm_id is not None and not j.ended.is_set()]
            if not followed:
                return
            try:
                states = await self._states([j.slurm_id for j in followed if j.slurm_id is not None])
            except SlurmError as exc:  # the controller may be restarting: the jobs run on; ask again later
                log.warning("%s; asking again in %g s", exc, self.options.poll_s)
                states = None
            if states is not None:
                for job in followed:
                    await self._update(job, states.get(job.slurm_id or "", "GONE"))
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.options.poll_s)
            except TimeoutError:
                pass

    async def _update(self, job: _Job, state: str) -> None:
        job.state = state
        if state not in ACTIVE_STATES:
            job.ended.set()
            return
        if state == "RUNNING" and job.running_since is None:
            job.running_since = time.time()
            job.gpu_ids = await _gpu_ids(job.slurm_id or "")
            if job.on_start is not None and not job.running_told:
                job.running_told = True
                job.on_start(self._start(job, job.running_since))
        backstop = job.spec.limit_s + 2 * self.grace_s + 2 * BACKSTOP_MARGIN_S
        if job.running_since is not None and time.time() - job.running_since > backstop and job.slurm_id:
            log.warning("Slurm job %s outlived its limit; cancelling it", job.slurm_id)
            await _scancel(job.slurm_id)

    async def _id_by_name(self, name: str) -> str | None:
        """The id of the Slurm job named `name`, while Slurm lists it (queued, running, or ended a short while
        ago: MinJobAge); None when it lists none."""
        code, out, err = await _command("squeue", "--noheader", "--states=all", f"--name={name}", "--format=%i")
        if code != 0:
            raise SlurmError(f"squeue failed (exit {code}): {err.strip()}; is the Slurm controller up?")
        ids = out.split()
        return ids[-1] if ids else None

    async def _states(self, slurm_ids: list[str]) -> dict[str, str]:
        """{job id: state} of those Slurm still lists (a job it forgot is absent)."""
        if not slurm_ids:
            return {}
        code, out, err = await _command("squeue", "--noheader", "--jobs=" + ",".join(slurm_ids), "--format=%i %T")
        if code != 0:
            if "Invalid job id" in err:  # every one of them is long gone
                return {}
            raise SlurmError(f"squeue failed (exit {code}): {err.strip()}; is the Slurm controller up?")
        states = {}
        for line in out.splitlines():
            words = line.split()
            if len(words) == 2:
                states[words[0]] = words[1]
        return states


def batch_script(job_id: str, job_dir: Path) -> str:
    """The sbatch script: the job's supervisor, with the job's own environment (job.env.json)."""
    src = str(Path(__file__).resolve().parents[2])  # this very idealab, for the supervisor's import only
    argv = [sys.executable, "-P", "-m", "idealab.executor.supervisor", str(job_dir), "--environment",
            str(job_dir / ENVIRONMENT_NAME)]  # fmt: skip
    return (
        "#!/bin/sh\n"
        f"# idealab job {job_id}: its supervisor enforces the time limit and writes exit.json\n"
        f"exec /usr/bin/env PYTHONPATH={shlex.quote(src)} {shlex.join(argv)}\n"
    )


def job_name(job_id: str) -> str:
    """A Slurm job name of its own for the job (job ids repeat across runs, which may share a cluster)."""
    return f"idealab-{re.sub(r'[^A-Za-z0-9_.-]', '_', job_id)}-{uuid.uuid4().hex[:10]}"


def missing_commands() -> list[str]:
    """The Slurm client commands this backend uses that are not on PATH here."""
    return [name for name in ("sbatch", "squeue", "scontrol", "scancel") if shutil.which(name) is None]


def parse_handle(handle: str) -> str:
    kind, _, slurm_id = handle.partition(":")
    if kind != "slurm" or not re.fullmatch(r"[0-9]+(_[0-9]+)?", slurm_id):
        raise ValueError(f"not a Slurm job handle: {handle!r}")
    return slurm_id


async def _command(*argv: str) -> tuple[int, str, str]:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
    except FileNotFoundError:
        raise SlurmError(f"{argv[0]} not found: is this a Slurm submit host (slurm-client installed)?") from None
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


async def _sbatch(argv: list[str]) -> str:
    """The job id sbatch answered, or why it refused the job."""
    code, out, err = await _command(*argv)
    if code != 0:
        return f"sbatch refused the job (exit {code}): {err.strip() or out.strip()}"
    slurm_id = out.strip().split(";")[0]
    return slurm_id if slurm_id.isdigit() else f"sbatch answered {out.strip()!r}, not a job id"


async def _scancel(slurm_id: str, *flags: str) -> None:
    code, _, err = await _command("scancel", *flags, slurm_id)
    if code != 0 and "already completing or completed" not in err and "Invalid job id" not in err:
        log.warning("scancel %s %s failed (exit %d): %s", " ".join(flags), slurm_id, code, err.strip())


async def _gpu_ids(slurm_id: str) -> tuple[int, ...]:
    """The GPU indices Slurm gave the job (from `scontrol show job -d`: GRES=gpu:2(IDX:0-1))."""
    code, out, _ = await _command("scontrol", "--details", "show", "job", slurm_id)
    match = _GPU_INDEX.search(out) if code == 0 else None
    if match is None:
        return ()
    ids: list[int] = []
    for part in match.group(1).split(","):
        low, _, high = part.partition("-")
        ids.extend(range(int(low), int(high or low) + 1))
    return tuple(ids)


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace").strip()[-chars:]
    except OSError:
        return ""


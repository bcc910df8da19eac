"""The Ray backend: each job is a Ray job (Ray Jobs API) on a Ray cluster; no shared filesystem needed.

A job is submitted with `JobSubmissionClient.submit_job`: the experiment's copy goes as the job's
`working_dir` (Ray zips and uploads it; nothing is shared between the orchestrator and the nodes), idealab
itself as a `py_modules` entry, and the entrypoint is `idealab.executor.ray_worker`, which runs the job
under idealab's per-job supervisor on the node, exactly as the local backend does (time limit, capped
logs, metric stream, exit record, sandbox). Ray does the placement: `entrypoint_num_gpus` = the job's GPUs
(Ray sets CUDA_VISIBLE_DEVICES to the devices it assigned), `entrypoint_num_cpus`, `entrypoint_memory`.

Why idealab travels as `py_modules` rather than being required on the nodes: the orchestrator and the
supervisor on the node talk through files (job.json, exit.json, metrics.jsonl) whose format must match;
shipping the orchestrator's own package (about 1 MB, uploaded once: Ray caches it by content) makes a
version skew impossible. The node only needs a Python >= 3.11 with `ray` (which it has, to be a Ray node)
and whatever the environment's training code imports.

Following a job waits on Ray's log stream (`tail_job_logs`, a websocket that ends with the job), so nothing
polls while it runs; the worker's start line gives the GPUs, its output lines are the job's stdout and
stderr as they are written (appended to the job's logs here while it runs: the dashboard's log tail
shows its progress), and its result line brings the logs, metric values and exit record back
into the job's log directory when it ends. Cancel and the backstop are
`stop_job`: Ray sends SIGTERM to the entrypoint and every process under it, which the supervisor turns into
a graceful stop of the job's group; what is left after `RAY_JOB_STOP_WAIT_TIME_S` (set per job to the
grace period plus a margin) is SIGKILLed by Ray. A job's handle is `ray:<submission id>`; it is durable, so
an orchestrator that restarts can `reattach` to a job that is still queued, running or finished.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import idealab
from idealab.credentials import matches
from idealab.executor.base import JobResult, JobSpec, JobStart, OnStart
from idealab.executor.bwrap import SANDBOX_MODES, Limits
from idealab.executor.capped_log import DEFAULT_LOG_CAP_BYTES, MIN_CAP_BYTES
from idealab.executor.local import BACKSTOP_MARGIN_S, DEFAULT_GRACE_S, job_log_dir, result_from_record
from idealab.executor.ray_worker import (
    OUTPUT_MARK,
    REQUEST_VAR,
    RESULT_MARK,
    SHIPPED_FILES,
    START_MARK,
    UPLOAD_SCORING,
    UPLOAD_WORKSPACE,
    decode,
    spec_payload,
)
from idealab.executor.sandbox import COPY_IGNORE
from idealab.executor.supervisor import METRICS_NAME, STDERR_NAME, STDOUT_NAME, ExitRecord
from idealab.metric_stream import DEFAULT_MAX_METRIC_VALUES

log = logging.getLogger(__name__)

HANDLE_PREFIX = "ray:"
DRIVER_LOG_NAME = "ray-driver.log"  # the Ray job's own log (the worker's lines, Ray's set-up), result removed
ENTRYPOINT = "exec python -m idealab.executor.ray_worker"
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
STREAM_RETRY_S = 2.0  # when Ray's log stream ends or breaks before the job has, how long before following again
QUEUE_TIMEOUT_ERROR = "JOB_SUPERVISOR_ACTOR_START_TIMEOUT"  # Ray's error_type for a job that never got resources
MAX_REQUEUES = 8
SUBMIT_RETRY_S = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)  # waits between tries of a submission the cluster could not take
INSTALL_HINT = "the Ray backend needs the ray extra: pip install 'idealab[ray]'"


class RayUnavailable(RuntimeError):
    """Ray is not installed, or the cluster cannot be reached."""


def connect(address: str) -> Any:
    """A JobSubmissionClient for the cluster at `address` (its dashboard: http://HOST:8265, or ray://...)."""
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as exc:
        raise RayUnavailable(f"{INSTALL_HINT} ({exc})") from None
    # a line per upload and per log stream closed (these modules set their own loggers to INFO)
    for chatty in ("ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk", "ray._private.runtime_env"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayUnavailable(f"cannot reach the Ray cluster at {address}: {exc}") from None


def new_handle(job_id: str) -> str:
    """A fresh handle: submission ids are unique per cluster, and several runs may share one cluster."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", job_id)
    return f"{HANDLE_PREFIX}idealab-{safe}-{uuid.uuid4().hex[:10]}"


def submission_id(handle: str) -> str:
    if not handle.startswith(HANDLE_PREFIX):
        raise ValueError(f"not a Ray job handle: {handle!r} (expected {HANDLE_PREFIX}<submission id>)")
    return handle[len(HANDLE_PREFIX) :]


@dataclass(eq=False)
class _RayJob:
    spec: JobSpec
    handle: str
    stdout_path: Path
    stderr_path: Path
    started: bool = False
    stop_requested: bool = False  # stop_job was asked for (a cancel, or the backstop)
    cancel_requested: bool = False  # by cancel() or close()
    requeues: int = 0
    gpu_ids: tuple[int, ...] = ()
    started_at: float | None = None
    task: asyncio.Task[JobResult] | None = None
    stream_text: list[str] = field(default_factory=list)  # the part of the log stream not yet parsed
    live: set[str] = field(default_factory=set)  # the logs this stream of Ray's has written to so far

    @property
    def sid(self) -> str:
        return submission_id(self.handle)


class RayBackend:
    """Runs jobs as Ray jobs on the cluster at `address` (see the module docstring).

    `num_cpus`: CPUs Ray reserves per job (`entrypoint_num_cpus`); `memory_mb`: memory it reserves
    (`entrypoint_memory`, scheduling only; the hard per-process limit is the sandbox's `limits`). The
    other settings are the local backend's, applied by the supervisor on the node.
    `client`: a JobSubmissionClient (default: one for `address`).
    """

    name = "ray"

    def __init__(
        self,
        address: str,
        grace_s: float = DEFAULT_GRACE_S,
        log_cap_bytes: int = DEFAULT_LOG_CAP_BYTES,
        max_metric_values: int = DEFAULT_MAX_METRIC_VALUES,
        sandbox: str = "auto",
        limits: Limits | None = None,
        num_cpus: float = 1.0,
        memory_mb: int | None = None,
        base_env: Mapping[str, str] | None = None,
        client: Any = None,
    ) -> None:
        if sandbox not in SANDBOX_MODES:
            raise ValueError(f"sandbox must be one of {', '.join(SANDBOX_MODES)}, got {sandbox!r}")
        if log_cap_bytes < MIN_CAP_BYTES:
            raise ValueError(f"log_cap_bytes must be at least {MIN_CAP_BYTES}, got {log_cap_bytes}")
        if num_cpus < 0:
            raise ValueError(f"num_cpus must be non-negative, got {num_cpus}")
        self.address = address
        self.grace_s = grace_s
        self.log_cap_bytes = log_cap_bytes
        self.max_metric_values = max_metric_values
        self.sandbox = sandbox
        self.limits = limits or Limits()
        self.num_cpus = num_cpus
        self.memory_mb = memory_mb
        self._base_env = base_env
        self.client = client if client is not None else connect(address)
        self._jobs: dict[str, _RayJob] = {}
        self._claims: dict[str, str] = {}  # job_id: the handle claimed for it, not submitted yet
        self._backstops: set[asyncio.Future[None]] = set()  # stop requests of jobs past their limit
        self._closed = False

    # ------------------------------------------------------------------------------ Backend protocol

    def claim(self, spec: JobSpec) -> str:
        """Ray lets the client choose the submission id: the handle is the final one before Ray has the job."""
        return self._claims.setdefault(spec.job_id, new_handle(spec.job_id))

    async def submit(self, spec: JobSpec, on_start: OnStart | None = None) -> str:
        if spec.job_id in self._jobs:
            raise ValueError(f"job id {spec.job_id!r} was already submitted to this backend")
        job = self._track(spec, self._claims.pop(spec.job_id, "") or new_handle(spec.job_id))
        if self._closed:
            job.task = asyncio.create_task(self._ended_unstarted(job, cancelled=True))
        else:
            job.task = asyncio.create_task(self._submit_and_follow(job, on_start), name=f"idealab-ray-{spec.job_id}")
        return spec.job_id

    async def reattach(self, spec: JobSpec, handle: str) -> str | None:
        """Follow a job a previous orchestrator submitted: its job_id when Ray still knows it, else None."""
        if spec.job_id in self._jobs:
            raise ValueError(f"job id {spec.job_id!r} is already followed by this backend")
        try:
            await asyncio.to_thread(self.client.get_job_info, submission_id(handle))
        except RuntimeError:  # Ray answers 404 for a job it does not know (or no longer keeps)
            return None
        job = self._track(spec, handle)
        job.task = asyncio.create_task(self._follow_reattached(job), name=f"idealab-ray-{spec.job_id}")
        return spec.job_id

    async def _follow_reattached(self, job: _RayJob) -> JobResult:
        result = await self._follow(job, None)
        # requeued: this process has no on_start to store the new handle; should it die too, the next one
        # finds the old handle's job failed without a result, and the job runs again
        return result if result is not None else await self._submit_and_follow(job, None)

    async def wait(self, handle: str) -> JobResult:
        return await asyncio.shield(self._task(handle))

    async def cancel(self, handle: str) -> None:
        job = self._job(handle)
        job.cancel_requested = True
        await self._stop(job)
        await asyncio.wait({self._task(handle)})

    def logs(self, handle: str) -> tuple[Path, Path]:
        job = self._job(handle)
        return job.stdout_path, job.stderr_path

    async def close(self) -> None:
        self._closed = True
        unfinished = [job for job in self._jobs.values() if job.task is not None and not job.task.done()]
        for job in unfinished:
            job.cancel_requested = True
        await asyncio.gather(*(self._stop(job) for job in unfinished))
        tasks = {job.task for job in unfinished if job.task is not None}
        if tasks:
            await asyncio.wait(tasks)

    # ------------------------------------------------------------------------------------ internals

    def _track(self, spec: JobSpec, handle: str) -> _RayJob:
        log_dir = job_log_dir(spec)
        job = _RayJob(spec, handle, log_dir / STDOUT_NAME, log_dir / STDERR_NAME)
        self._jobs[spec.job_id] = job
        return job

    def _job(self, handle: str) -> _RayJob:
        try:
            return self._jobs[handle]
        except KeyError:
            raise KeyError(f"unknown job handle {handle!r}") from None

    def _task(self, handle: str) -> asyncio.Task[JobResult]:
        task = self._job(handle).task
        assert task is not None  # set before the handle is returned
        return task

    async def _stop(self, job: _RayJob) -> None:
        job.stop_requested = True
        try:
            await asyncio.to_thread(self.client.stop_job, job.sid)
        except RuntimeError as exc:  # not submitted yet, or already gone: nothing to stop
            log.debug("stop_job %s: %s", job.sid, exc)

    async def _ended_unstarted(
        self, job: _RayJob, *, cancelled: bool = False, error: str | None = None
    ) -> JobResult:
        now = time.time()
        return JobResult(
            job.spec.job_id, now, now, None, False, (), job.stdout_path, job.stderr_path,
            cancelled=cancelled, error=error,
        )  # fmt: skip

    def _request(self, spec: JobSpec) -> dict[str, object]:
        """What the worker needs to run the job (see ray_worker.run)."""
        policy = spec.sandbox
        base = os.environ if self._base_env is None else self._base_env
        # only the names the manifest explicitly allows travel from here; the rest comes from the node
        explicit = {k: v for k, v in base.items() if any(matches(k, p) for p in policy.allow_env)}
        on_node = replace(
            spec, env={**explicit, **spec.env},
            sandbox=replace(policy, limits=policy.limits.merged(self.limits), mode=policy.mode or self.sandbox),
        )  # fmt: skip
        log_dir = job_log_dir(spec)
        return {
            "job_id": spec.job_id,
            "spec": spec_payload(on_node),
            # the directories the spec's paths are under here, moved to the node's own there
            "workspace": sorted({str(spec.workspace), str(spec.workspace.resolve())}),
            "log_dir": sorted({str(log_dir), str(log_dir.resolve())}),
            "grace_s": self.grace_s,
            "log_cap_bytes": self.log_cap_bytes,
            "max_metric_values": self.max_metric_values,
        }

    def _runtime_env(self, spec: JobSpec, working_dir: Path) -> dict[str, Any]:
        return {
            "working_dir": str(working_dir),
            "excludes": list(COPY_IGNORE),
            "py_modules": [str(Path(idealab.__file__).parent)],
            "env_vars": {
                REQUEST_VAR: json.dumps(self._request(spec)),
                # Ray's SIGKILL comes only after the supervisor has had its grace period to stop the job
                "RAY_JOB_STOP_WAIT_TIME_S": str(int(self.grace_s + BACKSTOP_MARGIN_S)),
            },
        }

    async def _submit_and_follow(self, job: _RayJob, on_start: OnStart | None) -> JobResult:
        while True:
            refused = await self._submit_retrying(job)
            if refused is not None:
                return await self._ended_unstarted(job, error=f"Ray did not accept the job: {refused}")
            if job.stop_requested:  # cancelled while it was being uploaded
                await self._stop(job)
            elif on_start is not None:  # accepted: queued in Ray or not, it counts as started
                on_start(self._accepted(job))
            result = await self._follow(job, on_start)
            if result is not None:
                return result
            if on_start is not None:  # to be submitted again under a new id: stored before Ray has it
                on_start(self._accepted(job))

    @staticmethod
    def _accepted(job: _RayJob) -> JobStart:
        return JobStart(job.spec.job_id, time.time(), (), None, job.stdout_path, job.stderr_path, job.handle)

    async def _submit_retrying(self, job: _RayJob) -> str | None:
        """Submit, trying again while the cluster is briefly unavailable (its job agent not ready yet, a head
        restarting, a dropped connection); None once Ray has the job, else why it was refused."""
        for delay in (*SUBMIT_RETRY_S, None):
            try:
                await self._submit(job)
                return None
            except ValueError as exc:  # the job itself (its runtime environment): no use trying again
                return str(exc)
            except (RuntimeError, OSError) as exc:  # OSError: requests' connection errors
                if "already exists" in str(exc):  # an earlier try got through after all
                    return None
                transient = isinstance(exc, OSError) or "try again" in str(exc) or "status code 5" in str(exc)
                if delay is None or not transient or job.stop_requested:
                    return str(exc)
                log.warning("Ray did not take job %s yet (%s); trying again in %g s", job.sid, exc, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # the last delay (None) returns

    async def _submit(self, job: _RayJob) -> None:
        # Ray skips what a .gitignore in the working directory names: an experiment's copy must go whole
        os.environ["RAY_RUNTIME_ENV_IGNORE_GITIGNORE"] = "1"
        await asyncio.to_thread(self._submit_now, job)

    def _submit_now(self, job: _RayJob) -> None:
        """Submit the job (Ray uploads its working directory now). A job with a scoring step uploads a
        staging directory holding its copy and its scoring directory side by side (see ray_worker.run)."""
        spec = job.spec
        with contextlib.ExitStack() as stack:
            working_dir = spec.workspace
            if spec.scoring is not None:
                working_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="idealab-ray-upload-")))
                ignore = shutil.ignore_patterns(*COPY_IGNORE)
                shutil.copytree(spec.workspace, working_dir / UPLOAD_WORKSPACE, symlinks=True, ignore=ignore)
                shutil.copytree(spec.scoring.workspace, working_dir / UPLOAD_SCORING, symlinks=True)
            self.client.submit_job(
                entrypoint=ENTRYPOINT,
                submission_id=job.sid,
                runtime_env=self._runtime_env(spec, working_dir),
                entrypoint_num_gpus=spec.gpus or None,
                entrypoint_num_cpus=self.num_cpus,
                entrypoint_memory=self.memory_mb * 2**20 if self.memory_mb else None,
                # which run's job this is, for whoever lists the cluster's jobs (job ids repeat across runs)
                metadata={"idealab_job_id": spec.job_id, "idealab_log_dir": str(job.stdout_path.parent)},
            )

    def _requeue(self, job: _RayJob, info: Any) -> bool:
        """Whether the job never started because it waited in Ray's queue past RAY_JOB_START_TIMEOUT_SECONDS
        (15 minutes unless the head node sets it): then it is submitted again, under a new id, a few times."""
        timed_out = _word(getattr(info, "error_type", None)) == QUEUE_TIMEOUT_ERROR
        if job.started or job.stop_requested or not timed_out or job.requeues >= MAX_REQUEUES:
            return False
        job.requeues += 1
        log.warning("Ray job %s waited too long for resources; submitting it again (%d)", job.sid, job.requeues)
        job.handle = new_handle(job.spec.job_id)
        return True

    async def _follow(self, job: _RayJob, on_start: OnStart | None) -> JobResult | None:
        """Wait for the job to end (following its log stream), then collect its result; None when it has to
        be submitted again (see `_requeue`)."""
        backstop: asyncio.TimerHandle | None = None
        try:
            while True:
                job.stream_text.clear()
                job.live.clear()  # a new stream starts at the log's beginning: the job's logs are written again
                try:
                    async with contextlib.aclosing(self.client.tail_job_logs(job.sid)) as stream:
                        async for chunk in stream:
                            if self._read_stream(job, chunk, on_start) and backstop is None:
                                backstop = self._arm_backstop(job)
                except (RuntimeError, OSError) as exc:  # the stream broke (dashboard restart, network)
                    log.warning("Ray log stream of %s broke (%s); following it again", job.sid, exc)
                info = await asyncio.to_thread(self.client.get_job_info, job.sid)
                if _status(info) in TERMINAL:
                    break
                await asyncio.sleep(STREAM_RETRY_S)
        finally:
            if backstop is not None:
                backstop.cancel()
        text = await asyncio.to_thread(self.client.get_job_logs, job.sid)
        if not job.started:
            job.stream_text.clear()
            self._read_stream(job, text, on_start)
        if self._requeue(job, info):
            return None
        return self._collect(job, info, text)

    def _arm_backstop(self, job: _RayJob) -> asyncio.TimerHandle:
        """Stop the job should it outlive its own limit (the supervisor's, plus grace and a margin): then
        its supervisor hangs."""

        def fire() -> None:
            log.warning("Ray job %s outlived its limit: stopping it", job.sid)
            stopping = asyncio.ensure_future(self._stop(job))
            self._backstops.add(stopping)  # held until done: the loop keeps only a weak reference
            stopping.add_done_callback(self._backstops.discard)

        delay = job.spec.timeout_s + self.grace_s + BACKSTOP_MARGIN_S
        return asyncio.get_running_loop().call_later(delay, fire)

    def _read_stream(self, job: _RayJob, chunk: str, on_start: OnStart | None) -> bool:
        """Read the next part of the job's Ray log (`chunk`): at the worker's start line, note the GPUs and
        start time and tell `on_start`; append the job's output lines to its logs here. Whether the job was
        seen to start in this chunk."""
        if "\n" not in chunk:  # a part of a long line (the result's): joined once, when it is complete
            job.stream_text.append(chunk)
            return False
        lines = ("".join(job.stream_text) + chunk).split("\n")
        job.stream_text[:] = [lines.pop()]  # an unfinished line waits for the rest
        started_now = False
        for line in lines:
            if line.startswith(OUTPUT_MARK):
                self._live_output(job, line[len(OUTPUT_MARK) :])
            elif line.startswith(START_MARK) and not job.started:
                started = json.loads(line[len(START_MARK) :])
                job.gpu_ids = tuple(int(g) for g in started["gpu_ids"])
                job.started_at = float(started["started_at"])
                job.started = started_now = True
                if on_start is not None:
                    on_start(
                        JobStart(job.spec.job_id, job.started_at, job.gpu_ids, None, job.stdout_path,
                                 job.stderr_path, handle=job.handle)
                    )  # fmt: skip
        return started_now

    @staticmethod
    def _live_output(job: _RayJob, text: str) -> None:
        """A piece of the job's output (`<log name> <base64>`), appended to that log in its log directory
        (the first piece of a stream replaces what an earlier stream of the same log wrote)."""
        name, _, data = text.partition(" ")
        if name not in SHIPPED_FILES:  # only the job's own log names: never a path
            return
        log_dir = job.stdout_path.parent
        log_dir.mkdir(parents=True, exist_ok=True)
        with (log_dir / name).open("ab" if name in job.live else "wb") as out:
            out.write(base64.b64decode(data))
        job.live.add(name)

    def _collect(self, job: _RayJob, info: Any, text: str) -> JobResult:
        """The job's result from its Ray log: the worker's bundle, written into the job's log directory."""
        log_dir = job.stdout_path.parent
        log_dir.mkdir(parents=True, exist_ok=True)
        bundle_text = None
        kept = []
        for line in text.splitlines(keepends=True):
            if line.startswith(RESULT_MARK):
                bundle_text = line[len(RESULT_MARK) :].strip()
            elif not line.startswith(OUTPUT_MARK):  # the job's output is in its own logs
                kept.append(line)
        (log_dir / DRIVER_LOG_NAME).write_text("".join(kept))
        if bundle_text is None:
            return self._without_bundle(job, info, "".join(kept))
        bundle = decode(bundle_text)
        files = bundle["files"]
        assert isinstance(files, dict)
        for name in SHIPPED_FILES:
            (log_dir / name).unlink(missing_ok=True)
            if files.get(name) is not None:
                (log_dir / name).write_bytes(base64.b64decode(files[name]))
        self._restore_protected(job.spec.workspace, bundle["protected"])
        if job.spec.scoring is not None:  # what scoring did to its directory, where the tamper check looks
            self._restore_protected(job.spec.scoring.workspace, bundle.get("scoring", {}))
        exit_fields = bundle["exit"]
        assert isinstance(exit_fields, dict)
        record = ExitRecord(**exit_fields)
        if job.cancel_requested and record.ended == "exited" and (record.returncode or 0) < 0:
            # Ray's stop signals every process of the job at once: the job may die of it before its supervisor
            # has seen its own signal. It was stopped on request all the same.
            record.ended = "stopped"
        record.write(log_dir)
        return result_from_record(record, job.gpu_ids, job.stdout_path, job.stderr_path, log_dir / METRICS_NAME)

    @staticmethod
    def _restore_protected(workspace: Path, protected: object) -> None:
        """Put what the job did to protected files into the local copy, where the tamper check looks."""
        assert isinstance(protected, dict)
        for rel, content in protected.items():
            path = workspace / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if content is None:
                path.unlink(missing_ok=True)
            else:
                with contextlib.suppress(FileNotFoundError, PermissionError):
                    path.chmod(0o644)
                path.write_bytes(base64.b64decode(content))

    def _without_bundle(self, job: _RayJob, info: Any, driver_log: str) -> JobResult:
        """The worker did not get to report: stopped before it could, or it never ran (set-up failed)."""
        status = _status(info)
        now = time.time()
        started_at = job.started_at if job.started_at is not None else now
        if status == "STOPPED" and job.cancel_requested:
            return JobResult(job.spec.job_id, started_at, now, None, False, job.gpu_ids, job.stdout_path,
                             job.stderr_path, cancelled=True)  # fmt: skip
        tail = driver_log.strip()[-2000:]
        message = getattr(info, "message", None) or ""
        if status == "STOPPED" and job.stop_requested:
            message = "its supervisor outlived the job's time limit, so Ray stopped it"
        error = f"the Ray job ended {status} without a result: {message}".rstrip(": ")
        return JobResult(
            job.spec.job_id, started_at, now, None, False, job.gpu_ids, job.stdout_path, job.stderr_path,
            error=f"{error}\n{tail}" if tail else error,
        )  # fmt: skip


def _status(info: Any) -> str:
    return _word(info.status)


def _word(value: object) -> str:
    """An enum of Ray's (JobStatus, JobErrorType) or the plain string it stands for, as that string."""
    return str(getattr(value, "value", value) or "")



"""The backend interface: submit / wait / cancel / logs.

A backend runs a shell command in a prepared directory with a hard time limit and reports how the
process ended. It knows nothing of ideas, judging or the store (it may only be told which metric to pick
out of stdout as it streams); the search loop knows nothing of processes. The local backend lives in
`local.py`, the Slurm backend in `slurm.py`, the Ray backend in `ray_backend.py`.

Every started job has a durable `handle` (told in `JobStart`, stored by the loop), so that an orchestrator
that restarts after a crash can `reattach` to a job its predecessor submitted instead of running it again.
Before that, `claim` gives the job's engine-side identity, chosen before anything is submitted: the caller
stores it first, so an orchestrator killed between the engine accepting a job and the store learning its
handle leaves no job that nobody knows about (`reattach` finds it by that identity, or learns it never ran).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from idealab.executor.bwrap import SandboxPolicy


@dataclass(frozen=True)
class Budget:
    """The training budget the supervisor measures and enforces (the manifest's `[budget]`)."""

    seconds: float
    clock: str = "wall"  # "wall" or "cpu" (user + system time of every process of the job's tree)
    grace_s: float = 10.0  # SIGUSR1 at `seconds`, SIGKILL of the tree at `seconds + grace_s`


@dataclass(frozen=True)
class ScoringSpec:
    """The scoring step run by the job's supervisor after training exited 0 (the manifest's `[score]`)."""

    command: str
    workspace: Path  # the fresh scoring directory (pristine protected files + the editable files as run)
    timeout_s: float
    env: Mapping[str, str] = field(default_factory=dict)  # set for scoring, over the job's environment
    unset: tuple[str, ...] = ()  # the training's own variables, not passed on to scoring
    sandbox: SandboxPolicy = SandboxPolicy()


@dataclass(frozen=True)
class ScoringEnd:
    """How a job's scoring step ended."""

    exit_code: int | None  # None when it did not exit by itself
    timed_out: bool
    stdout_path: Path
    stderr_path: Path
    error: str | None = None  # it could not be started
    started_at: float = 0.0
    finished_at: float = 0.0
    cpu_s: float | None = None  # CPU time of the scoring process and its children


@dataclass(frozen=True)
class JobSpec:
    job_id: str  # unique within a run; also exported to the job as IDEALAB_JOB_ID
    workspace: Path  # the job's own copy of the environment; the command runs here
    command: str  # shell syntax; a simple command is exec'd directly (no shell in between)
    timeout_s: float  # hard wall-clock limit, counted from the moment the job starts
    gpus: int = 0  # GPUs the job needs; 0 = one CPU slot
    env: Mapping[str, str] = field(default_factory=dict)  # extra variables (on top of the scrubbed base)
    log_dir: Path | None = None  # where stdout.log / stderr.log go (one per job); default: workspace/../logs
    metric_name: str | None = None  # when set, the backend may stream metric values out of stdout
    metric_regex: str | None = None  # the manifest's regex for metric_name, if any
    sandbox: SandboxPolicy = SandboxPolicy()  # what the job may see and use (see bwrap.py)
    budget: Budget | None = None  # the training budget, enforced by the supervisor
    scoring: ScoringSpec | None = None  # run after training exited 0; its stdout alone gives the metric

    @property
    def limit_s(self) -> float:
        """The longest the job may take: training, then scoring (the grace periods not included)."""
        return self.timeout_s + (self.scoring.timeout_s if self.scoring is not None else 0.0)


@dataclass(frozen=True)
class JobStart:
    """Told to the caller the moment a job holds its slot and its process exists."""

    job_id: str
    started_at: float  # epoch seconds
    gpu_ids: tuple[int, ...]
    pid: int | None  # process (group) id where the backend has one (shown to the user; not for recovery)
    stdout_path: Path
    stderr_path: Path
    handle: str | None = None  # durable id ("local:...", "slurm:<job id>", "ray:<submission id>") for reattach


@dataclass(frozen=True)
class JobResult:
    job_id: str
    started_at: float
    finished_at: float
    exit_code: int | None  # None when the process never ran or was killed by the time limit
    timed_out: bool
    gpu_ids: tuple[int, ...]
    stdout_path: Path
    stderr_path: Path
    cancelled: bool = False
    error: str | None = None  # the backend could not run the job at all (not the job's own failure)
    metrics_path: Path | None = None  # metric values streamed from stdout (JSON lines); None: read stdout
    limit_hit: str | None = None  # a limit the job ran into, as its supervisor saw it (the process limit)
    training_s: float | None = None  # training time on the budget's clock, as the supervisor measured it
    over_budget: bool = False  # killed at budget + grace (then timed_out is also true)
    scoring: ScoringEnd | None = None  # the scoring step, where it ran
    cpu_s: float | None = None  # CPU time of every process of the job (scoring included), where measured

    @property
    def duration_s(self) -> float:
        return self.finished_at - self.started_at


OnStart = Callable[[JobStart], None]


class Backend(Protocol):
    """Runs jobs. `submit` returns at once (the job waits for a slot inside the backend).

    The handles `submit` and `reattach` return are for this process only (the job_id); what survives a
    restart is `JobStart.handle`.
    """

    name: str  # as on the command line (`--backend NAME`), stored beside each job's handle

    def claim(self, spec: JobSpec) -> str:
        """The job's durable handle before it is submitted (a "pending" handle where the engine's own id is
        not known yet): the identity under which the next `submit` of this job puts it into the engine. The
        caller stores it before calling `submit`; `reattach` accepts it. Calling it again gives the same one."""
        ...

    async def submit(self, spec: JobSpec, on_start: OnStart | None = None) -> str:
        """Queue a job (under the identity `claim` gave; claimed now if it was not); returns its handle (the
        job_id). `on_start` fires when it starts running; a backend whose jobs wait in a scheduler's queue
        fires it once the scheduler accepted the job (so its handle is stored at once) and again, with the
        real start time and devices, once it runs."""
        ...

    async def reattach(self, spec: JobSpec, handle: str) -> str | None:
        """Take over a job that a previous orchestrator process started (`handle`: its `JobStart.handle`, or
        the pending one `claim` gave: then the job is looked up by that identity, and None when it never
        reached the engine).

        Returns a handle to `wait()` on when the job still runs (wait returns when it ends) or has already
        ended (wait returns its collected result at once); None when the job is gone without a result (the
        caller runs it again). Never stops a job that still runs."""
        ...

    async def wait(self, handle: str) -> JobResult:
        """Wait, without polling, until the job has ended; return how it ended."""
        ...

    async def cancel(self, handle: str) -> None:
        """Stop a queued or running job (terminate, then kill its whole process group)."""
        ...

    def logs(self, handle: str) -> tuple[Path, Path]:
        """Paths of the job's stdout and stderr logs."""
        ...

    async def close(self) -> None:
        """Cancel whatever is still queued or running."""
        ...

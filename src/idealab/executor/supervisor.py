"""The per-job supervisor: `python -m idealab.executor.supervisor JOB_DIR`.

One small process per job, started by the backend in its own session. It reads `JOB_DIR/job.json`, starts
the job's command in a process group of its own, and owns the job from then on:

- the time limit: SIGTERM to the job's whole group at the limit, SIGKILL after the grace period. This
  does not depend on the orchestrator, so a job cannot outlive its limit (+ grace) even when the
  orchestrator was SIGKILLed;
- the output: stdout and stderr go through pipes into capped log files (head and tail kept); stdout is
  parsed for metric values as it streams, with a cap on the values kept. The orchestrator never reads a
  job's output while it runs (on a Ray node, where no file is shared, the worker that runs this in its own
  process is handed each piece of output as well: `supervise(echo=...)`);
- a stop request (SIGTERM, SIGINT or SIGHUP to the supervisor) ends the job the same graceful way;
- the training budget, when the manifest declares one: the supervisor measures the wall-clock or CPU time
  of the job's whole tree itself (every descendant, double-forked and setsid'd ones included: see
  `proctree.py`), sends SIGUSR1 to the training processes at the budget and kills the tree at
  budget + grace (`ended` = "over_budget"); the measured training time goes into the exit record;
- the scoring step, when the manifest has `[score]` and training exited 0: the scoring command runs in
  its own fresh directory and sandbox, with its own time limit and logs; then only its stdout's metric
  values count, and the training's are kept as progress (source "progress");
- the end: `metrics.jsonl`, then `exit.json` (what the supervisor saw) are written atomically, so an
  orchestrator that restarts after a crash can collect the result of a job that finished without it
  (its scoring included).

A simple command (no shell syntax) is exec'd directly, so the program itself receives the SIGTERM and
its handler gets the grace period; anything else runs under /bin/sh -c, and the signal still reaches the
whole group, whose end (not just the shell's) is awaited. Only the standard library is imported, to keep
the start of every job cheap. Issue 10 runs this as the init of the job's PID namespace.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import shlex
import signal
import sys
import time
from collections.abc import Callable

from idealab.executor.capped_log import DEFAULT_LOG_CAP_BYTES, CappedLog
from idealab.executor.disk_quota import DiskWatch
from idealab.executor.proctree import TreeClock, all_procs, become_subreaper, descendants
from idealab.metric_stream import DEFAULT_MAX_METRIC_VALUES, MetricStream

SPEC_NAME = "job.json"
ENVIRONMENT_NAME = "job.env.json"  # a cluster job's environment: {"env": {...}, "keep": [names from the node]}
EXIT_NAME = "exit.json"
METRICS_NAME = "metrics.jsonl"
JOB_PGID_NAME = "job.pgid"
SUPERVISOR_LOG_NAME = "supervisor.log"
DROP_PYTHONPATH_VAR = "IDEALAB_SUPERVISOR_DROP_PYTHONPATH"  # PYTHONPATH was set for the supervisor only
STDOUT_NAME = "stdout.log"
STDERR_NAME = "stderr.log"
SCORE_STDOUT_NAME = "score-stdout.log"
SCORE_STDERR_NAME = "score-stderr.log"
PROGRESS_SOURCE = "progress"  # the source of a training value when a scoring step gives the result
BUDGET_TICK_MAX_S = 1.0  # the longest wait between two samples of a CPU-time budget
BUDGET_TICK_MIN_S = 0.05
REAP_TIMEOUT_S = 30.0  # a process stuck in the kernel cannot be hurried: give up waiting on it then
DRAIN_S = 2.0  # after the job's group is gone, how long to wait for escaped processes to close the pipes
_READ_BYTES = 1 << 20
_SHELL_SYNTAX = re.compile(r"[|&;<>()$`\\*?\[\]{}!\n]")  # anything that needs a shell to mean what it says
# words that only a shell understands as the first word of a command (keywords and special built-ins)
_SHELL_WORDS = frozenset(
    "! { } case do done elif else esac fi for if in then until while . : break cd continue eval exec exit "
    "export readonly return set shift source times trap ulimit umask unset wait alias command type".split()
)
PathLike = str | os.PathLike[str]
Echo = Callable[[str, bytes], None]  # (log file name, a piece of the job's output written to it)
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class SupervisorSpec:
    """What the backend asks of the supervisor (written as job.json).

    Plain classes here, not dataclasses: importing dataclasses (and inspect) would cost every job's start.
    """

    def __init__(
        self,
        job_id: str,
        command: str,
        cwd: str,
        timeout_s: float,
        grace_s: float,
        log_cap_bytes: int = DEFAULT_LOG_CAP_BYTES,
        metric_name: str | None = None,  # parse stdout for this metric (and any @metric line); None: do not
        metric_regex: str | None = None,
        max_metric_values: int = DEFAULT_MAX_METRIC_VALUES,
        wrapper: list[str] | None = None,  # argv put in front of the command: prlimit, bwrap (see bwrap.py)
        sandboxed: bool = False,  # the wrapper ends in bwrap: its processes are the namespace's init side
        max_processes: int | None = None,  # tasks (processes and threads) of the job, through a pids cgroup
        max_disk_mb: int | None = None,  # what the job may write in `disk_paths`, all files together
        disk_paths: list[str] | None = None,
        budget_s: float | None = None,  # the training budget (None: only timeout_s)
        budget_clock: str = "wall",  # "wall" or "cpu" (summed over the job's tree)
        budget_grace_s: float = 10.0,  # from SIGUSR1 at the budget to the kill of the tree
        score: dict[str, object] | None = None,  # the scoring step (see ScoreStep), run after training exited 0
    ) -> None:
        self.job_id = job_id
        self.command = command
        self.cwd = cwd
        self.timeout_s = timeout_s
        self.grace_s = grace_s
        self.log_cap_bytes = log_cap_bytes
        self.metric_name = metric_name
        self.metric_regex = metric_regex
        self.max_metric_values = max_metric_values
        self.wrapper = wrapper or []
        self.sandboxed = sandboxed
        self.max_processes = max_processes
        self.max_disk_mb = max_disk_mb
        self.disk_paths = disk_paths or []
        self.budget_s = budget_s
        self.budget_clock = budget_clock
        self.budget_grace_s = budget_grace_s
        self.score = score

    def write(self, job_dir: PathLike) -> None:
        _write_atomic(os.path.join(job_dir, SPEC_NAME), json.dumps(vars(self)))

    @classmethod
    def read(cls, job_dir: PathLike) -> SupervisorSpec:
        with open(os.path.join(job_dir, SPEC_NAME)) as handle:
            return cls(**json.load(handle))


class ScoreStep:
    """The scoring step of a job (in job.json under `score`): a fresh process after training."""

    def __init__(
        self,
        command: str,
        cwd: str,  # the fresh scoring directory
        timeout_s: float,
        wrapper: list[str] | None = None,  # limits and the scoring sandbox (see bwrap.py)
        sandboxed: bool = False,
        env: dict[str, str] | None = None,  # variables set for scoring
        unset: list[str] | None = None,  # the training's own variables, not passed on
    ) -> None:
        self.command = command
        self.cwd = cwd
        self.timeout_s = timeout_s
        self.wrapper = wrapper or []
        self.sandboxed = sandboxed
        self.env = env or {}
        self.unset = unset or []


class ExitRecord:
    """What the supervisor saw (written as exit.json once the job and its group are gone)."""

    def __init__(
        self,
        job_id: str,
        started_at: float,
        finished_at: float,
        returncode: int | None,  # the main process's; negative: killed by that signal; None: never started
        ended: str,  # "exited" (by itself), "timeout", "over_budget", "stopped" (on request), "limit" (over its
        # disk cap) or "error" (could not start)
        error: str | None = None,
        stdout_bytes: int = 0,
        stdout_dropped: int = 0,
        stderr_bytes: int = 0,
        stderr_dropped: int = 0,
        metric_values_seen: int = 0,
        metric_values_dropped: int = 0,
        limit_hit: str | None = None,  # a limit the job ran into, said plainly ("process limit (64) reached")
        training_s: float | None = None,  # the training time the supervisor measured, on the budget's clock
        budget_clock: str | None = None,
        score: dict[str, object] | None = None,  # how the scoring step ended: returncode, ended, error, times
        cpu_s: float | None = None,  # CPU time (user + system) of every process of the job, scoring included
    ) -> None:
        self.job_id = job_id
        self.started_at = started_at
        self.finished_at = finished_at
        self.returncode = returncode
        self.ended = ended
        self.error = error
        self.stdout_bytes = stdout_bytes
        self.stdout_dropped = stdout_dropped
        self.stderr_bytes = stderr_bytes
        self.stderr_dropped = stderr_dropped
        self.metric_values_seen = metric_values_seen
        self.metric_values_dropped = metric_values_dropped
        self.limit_hit = limit_hit
        self.training_s = training_s
        self.budget_clock = budget_clock
        self.score = score
        self.cpu_s = cpu_s

    def write(self, job_dir: PathLike) -> None:
        _write_atomic(os.path.join(job_dir, EXIT_NAME), json.dumps(vars(self)))

    @classmethod
    def read(cls, job_dir: PathLike) -> ExitRecord | None:
        """The record of a job that ended, or None while it has not (or its supervisor died first)."""
        try:
            with open(os.path.join(job_dir, EXIT_NAME)) as handle:
                return cls(**json.load(handle))
        except FileNotFoundError:
            return None


def job_argv(command: str) -> list[str]:
    """The command as an argv: split and exec'd directly when it has no shell syntax, else via /bin/sh."""
    if not _SHELL_SYNTAX.search(command):
        try:
            words = shlex.split(command)
        except ValueError:  # unbalanced quotes: let the shell report it
            words = []
        if words and words[0] not in _SHELL_WORDS and "=" not in words[0]:
            if not any(w.startswith(("~", "#")) for w in words):
                return words
    return ["/bin/sh", "-c", command]


def _write_atomic(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as handle:
        handle.write(text)
    os.replace(path + ".tmp", path)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # already gone


def group_members(pgid: int) -> list[int]:
    """Pids of the processes in group `pgid` (Linux: read from /proc)."""
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.getpgid(int(name)) == pgid:
                members.append(int(name))
        except ProcessLookupError:
            continue  # exited while we looked
    return members


def wait_group_gone(pgid: int, timeout_s: float) -> bool:
    """Block until no process of group `pgid` is alive (zombies count as gone), waiting on pidfds."""
    fds = []
    for pid in group_members(pgid):
        try:
            fds.append(os.pidfd_open(pid))
        except ProcessLookupError:
            continue  # exited while we looked
    try:
        with selectors.DefaultSelector() as selector:
            for fd in fds:
                selector.register(fd, selectors.EVENT_READ)
            deadline = time.monotonic() + timeout_s
            while selector.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                for key, _ in selector.select(left):
                    selector.unregister(key.fd)
        return True
    finally:
        for fd in fds:
            os.close(fd)


class _PidsCgroup:
    """A pids cgroup of the job's own (v1 `pids` hierarchy, or v2 where the pids controller is on): every
    process the job forks stays in it, however it daemonises, and `pids.max` caps how many there are.
    RLIMIT_NPROC would not do: it counts all of a user's processes on the machine."""

    def __init__(self, path: str, home: str) -> None:
        self.path = path
        self.home = home  # the supervisor's own cgroup, where it goes back after starting the job

    @classmethod
    def create(cls, name: str, limit: int) -> _PidsCgroup | None:
        try:
            with open("/proc/self/cgroup") as handle:
                lines = handle.read().splitlines()
        except OSError:
            return None
        for line in lines:
            _, controllers, rel = line.split(":", 2)
            if "pids" in controllers.split(","):
                home = "/sys/fs/cgroup/pids" + rel.rstrip("/")
            elif controllers == "":
                home = "/sys/fs/cgroup" + rel.rstrip("/")
            else:
                continue
            path = os.path.join(home, name)
            try:
                os.mkdir(path)
            except OSError:
                continue
            try:
                with open(os.path.join(path, "pids.max"), "w") as handle:
                    handle.write(str(limit))
                return cls(path, home)
            except OSError:
                os.rmdir(path)
        return None

    def move_here(self, into: str) -> None:
        with open(os.path.join(into, "cgroup.procs"), "w") as handle:
            handle.write(str(os.getpid()))

    def hits(self) -> int:
        """How often a fork was refused at the limit."""
        try:
            with open(os.path.join(self.path, "pids.events")) as handle:
                for line in handle:
                    key, _, value = line.partition(" ")
                    if key == "max":
                        return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def remove(self) -> None:
        try:
            os.rmdir(self.path)
        except OSError:
            pass  # a process stuck in the kernel still in it: the empty group is harmless


class _Pipe:
    """The read end of one of the job's output streams and where its bytes go."""

    def __init__(self, fd: int, log: CappedLog, metrics: MetricStream | None) -> None:
        self.fd = fd
        self.log = log
        self.metrics = metrics


class _Budget:
    """The training budget on its clock: when to send SIGUSR1 and when to kill the tree."""

    def __init__(self, seconds: float, clock: str, grace_s: float) -> None:
        self.seconds = seconds
        self.clock = clock
        self.grace_s = grace_s
        self.started = time.monotonic()
        self.tree = TreeClock() if clock == "cpu" else None
        self.cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        self.warned = False  # SIGUSR1 was sent
        self.used = 0.0

    def measure(self) -> float:
        self.used = self.tree.sample() if self.tree is not None else time.monotonic() - self.started
        return self.used

    def next_check(self) -> float:
        """Monotonic time of the next look: a deadline on the wall clock; on the CPU clock, the soonest the
        tree could reach the next threshold with every CPU busy (bounded, so a sample is never far off)."""
        threshold = self.seconds + (self.grace_s if self.warned else 0.0)
        if self.tree is None:
            return self.started + threshold
        wait = (threshold - self.used) / self.cpus
        return time.monotonic() + min(BUDGET_TICK_MAX_S, max(BUDGET_TICK_MIN_S, wait))

    def check(self) -> str | None:
        """Whether to "warn" (the budget is spent) or "kill" (budget + grace is), else None."""
        used = self.measure()
        if used >= self.seconds + self.grace_s:
            return "kill"
        if used >= self.seconds and not self.warned:
            self.warned = True
            return "warn"
        return None


class _Phase:
    """One command run to its end in a process group of its own: the training, or the scoring."""

    def __init__(
        self,
        command: str,
        cwd: str,
        env: dict[str, str],
        wrapper: list[str],
        sandboxed: bool,
        timeout_s: float,
        stdout: CappedLog,
        stderr: CappedLog,
        metrics: MetricStream | None,
    ) -> None:
        self.command = command
        self.cwd = cwd
        self.env = env
        self.wrapper = wrapper
        self.sandboxed = sandboxed
        self.timeout_s = timeout_s
        self.stdout = stdout
        self.stderr = stderr
        self.metrics = metrics
        self.budget: _Budget | None = None
        self.disk: DiskWatch | None = None
        self.ended = "exited"
        self.kill_at: float | None = None  # monotonic time of the SIGKILL once termination began
        self.started_at = 0.0
        self.finished_at = 0.0
        self.returncode: int | None = None
        self.error: str | None = None

    def close(self) -> None:
        self.stdout.close()
        self.stderr.close()
        if self.metrics is not None:
            self.metrics.finish()


def _children_cpu_s() -> float:
    """CPU time of the supervisor's children that it has waited for (the job's, once it has ended)."""
    times = os.times()
    return times.children_user + times.children_system


class _Supervision:
    """The event loop of one job: pipes, the child's exit, stop signals and the deadlines."""

    def __init__(self, spec: SupervisorSpec, job_dir: str, echo: Echo | None = None) -> None:
        self.spec = spec
        self.job_dir = job_dir
        self.echo = echo
        self.selector = selectors.DefaultSelector()
        self.cgroup: _PidsCgroup | None = None
        self.limit_hit: str | None = None
        self.stop_requested = False
        self.wake_r = -1
        self.disk: DiskWatch | None = None  # the training's disk cap

    def _metrics(self) -> MetricStream | None:
        spec = self.spec
        if spec.metric_name is None:
            return None
        regex = re.compile(spec.metric_regex) if spec.metric_regex else None
        return MetricStream(spec.metric_name, regex, spec.max_metric_values)

    def run(self) -> ExitRecord:
        spec = self.spec
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        for sig in _STOP_SIGNALS:
            signal.signal(sig, lambda *_: None)  # the wake-up fd carries it into the loop
        self.selector.register(self.wake_r, selectors.EVENT_READ, "signal")
        if spec.budget_s is not None or spec.score is not None:
            become_subreaper()  # a double-forked process of the job stays in our tree (to count and to kill)
        training = _Phase(
            spec.command, spec.cwd, dict(os.environ), spec.wrapper, spec.sandboxed, spec.timeout_s,
            CappedLog(os.path.join(self.job_dir, STDOUT_NAME), spec.log_cap_bytes),
            CappedLog(os.path.join(self.job_dir, STDERR_NAME), spec.log_cap_bytes),
            self._metrics(),
        )  # fmt: skip
        self._enter_cgroup()
        if spec.max_disk_mb is not None:  # measured before the job writes anything
            self.disk = DiskWatch(spec.disk_paths, spec.max_disk_mb)
        children_before = os.times()
        if spec.budget_s is not None:
            training.budget = _Budget(spec.budget_s, spec.budget_clock, spec.budget_grace_s)
        training.disk = self.disk
        self._run_phase(training)
        training_s = None
        if training.budget is not None and training.error is None:
            training_s = training.budget.used
            if training.budget.tree is not None:  # every process of the tree has been reaped by now
                after = os.times()
                waited = after.children_user + after.children_system
                training_s = max(training_s, waited - children_before.children_user - children_before.children_system)
        scoring: _Phase | None = None
        scoring_cpu_s = None
        if spec.score is not None and training.ended == "exited" and training.returncode == 0:
            scoring = self._scoring_phase(ScoreStep(**spec.score))  # type: ignore[arg-type]
            before = _children_cpu_s()
            self._run_phase(scoring)
            scoring_cpu_s = _children_cpu_s() - before
        if self.cgroup is not None:
            if self.cgroup.hits():
                self.limit_hit = f"process limit ({self.spec.max_processes} processes and threads) reached"
            self.cgroup.remove()
        record = self._record(training, scoring, training_s)
        record.cpu_s = _children_cpu_s() - children_before.children_user - children_before.children_system
        if record.score is not None:
            record.score["cpu_s"] = scoring_cpu_s
        return record

    def _scoring_phase(self, step: ScoreStep) -> _Phase:
        env = {k: v for k, v in os.environ.items() if k not in step.unset}
        env.update(step.env)
        return _Phase(
            step.command, step.cwd, env, step.wrapper, step.sandboxed, step.timeout_s,
            CappedLog(os.path.join(self.job_dir, SCORE_STDOUT_NAME), self.spec.log_cap_bytes),
            CappedLog(os.path.join(self.job_dir, SCORE_STDERR_NAME), self.spec.log_cap_bytes),
            self._metrics(),
        )  # fmt: skip

    def _run_phase(self, phase: _Phase) -> None:
        phase.started_at = time.time()
        if self.stop_requested:  # a stop came while the previous phase ended: this one does not start
            phase.ended, phase.finished_at = "stopped", phase.started_at
            phase.close()
            return
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            os.chdir(phase.cwd)  # where the command starts (posix_spawn has no portable chdir)
            if self.cgroup is not None:
                self.cgroup.move_here(self.cgroup.path)
            try:
                pid = self._spawn(self._argv(phase), phase.env, out_w, err_w)
            except (FileNotFoundError, PermissionError):  # a built-in, or a mistake the shell words for us
                pid = self._spawn(["/bin/sh", "-c", phase.command], phase.env, out_w, err_w)
            finally:
                if self.cgroup is not None:  # the job was born in it; the supervisor does not count
                    self.cgroup.move_here(self.cgroup.home)
        except OSError as exc:
            os.close(out_r)
            os.close(err_r)
            phase.ended, phase.error = "error", f"could not start the job: {exc}"
            phase.finished_at = time.time()
            phase.close()
            return
        finally:
            os.close(out_w)
            os.close(err_w)
        try:
            _write_atomic(os.path.join(self.job_dir, JOB_PGID_NAME), str(pid))
            self.selector.register(out_r, selectors.EVENT_READ, _Pipe(out_r, phase.stdout, phase.metrics))
            self.selector.register(err_r, selectors.EVENT_READ, _Pipe(err_r, phase.stderr, None))
            phase.returncode = self._watch(pid, phase)
        except BaseException:
            _signal_group(pid, signal.SIGKILL)  # a bug here must not leave the job without its limit
            raise
        phase.finished_at = time.time()
        phase.close()

    def _enter_cgroup(self) -> None:
        limit = self.spec.max_processes
        if limit is None:
            return
        name = f"idealab-{re.sub(r'[^A-Za-z0-9_.-]', '_', self.spec.job_id)}-{os.getpid()}"
        self.cgroup = _PidsCgroup.create(name, limit)
        if self.cgroup is None:
            print(f"idealab supervisor: no writable pids cgroup here: the process limit ({limit}) is not enforced",
                  file=sys.stderr)  # fmt: skip

    def _argv(self, phase: _Phase) -> list[str]:
        argv = job_argv(phase.command)
        if not phase.wrapper:
            return argv
        if argv[0] != "/bin/sh":  # exec'd in the sandbox by a shell, which words "not found" for us
            argv = ["/bin/sh", "-c", 'exec "$@"', "sh", *argv]
        return [*phase.wrapper, *argv]

    def _spawn(self, argv: list[str], env: dict[str, str], out_w: int, err_w: int) -> int:
        """Start the job in a process group of its own (pgid == its pid), stdin from /dev/null."""
        return os.posix_spawnp(
            argv[0],
            argv,
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, out_w, 1),
                (os.POSIX_SPAWN_DUP2, err_w, 2),
            ],
            setpgroup=0,
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),  # Python ignores these; a program expects defaults
        )

    def _watch(self, pid: int, phase: _Phase) -> int:
        """Pump the output until the command ends by itself, at its limit, over its budget or on request;
        its exit code."""
        pidfd = os.pidfd_open(pid)
        self.selector.register(pidfd, selectors.EVENT_READ, "exit")
        deadline = time.monotonic() + phase.timeout_s
        main_exited = False
        while not self._done(phase, main_exited, pid):
            wake_at = deadline if phase.kill_at is None else phase.kill_at
            budget = phase.budget if phase.kill_at is None else None
            next_at = min(wake_at, budget.next_check()) if budget is not None else wake_at
            disk = phase.disk if phase.kill_at is None else None
            next_at = min(next_at, disk.next_at) if disk is not None else next_at
            for key, _ in self.selector.select(max(0.0, next_at - time.monotonic())):
                if key.data == "exit":
                    main_exited = True
                    self.selector.unregister(pidfd)
                elif key.data == "signal":
                    os.read(self.wake_r, 512)
                    self.stop_requested = True
                    self._terminate(pid, phase, "stopped")
                else:
                    self._pump(key.data)
            if disk is not None and time.monotonic() >= disk.next_at:
                self._check_disk(pid, phase)
            if budget is not None and not main_exited and phase.kill_at is None:
                verdict = budget.check()
                if verdict == "warn":
                    self._signal_job(pid, phase, signal.SIGUSR1)
                elif verdict == "kill":
                    phase.ended = "over_budget"
                    break  # the grace was the budget's: the tree is killed now
            if time.monotonic() >= wake_at:
                if phase.kill_at is None:
                    self._terminate(pid, phase, "timeout")
                else:
                    break  # the grace period is over
        if phase.budget is not None and phase.ended != "over_budget":
            phase.budget.measure()  # the last look before the tree is gone
        _signal_group(pid, signal.SIGKILL)  # whatever of the group is left (or was left behind)
        self._kill_tree()
        _, status = os.waitpid(pid, 0)
        os.close(pidfd)
        # once exit.json exists the job's GPUs may go to the next job: every process of it must be gone
        wait_group_gone(pid, REAP_TIMEOUT_S)
        self._reap_orphans()
        self._drain(time.monotonic() + DRAIN_S)
        code = os.waitstatus_to_exitcode(status)
        if phase.sandboxed and code > 128:  # bwrap words a job killed by signal N as exit 128 + N
            code = 128 - code
        return code

    def _check_disk(self, pgid: int, phase: _Phase) -> None:
        """Stop the job once it wrote more than its disk cap (ended "limit": it did not end by itself)."""
        assert phase.disk is not None
        hit = phase.disk.exceeded()
        if hit is not None and phase.kill_at is None:
            self.limit_hit = hit
            self._terminate(pgid, phase, "limit")

    def _kill_tree(self) -> None:
        """SIGKILL every process below the supervisor (a setsid'd, double-forked one left the group)."""
        for pid in descendants(os.getpid(), all_procs()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # already gone

    def _reap_orphans(self) -> None:
        """Wait for the processes re-parented to the supervisor (its subreaper role), so none is left."""
        while True:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                return
            if pid == 0:
                return

    def _pipes_open(self) -> bool:
        return any(isinstance(k.data, _Pipe) for k in self.selector.get_map().values())

    def _done(self, phase: _Phase, main_exited: bool, pgid: int) -> bool:
        if phase.kill_at is None:
            return main_exited  # a normal end: leftover children are killed, not waited for
        # terminating: the whole group gets the grace period, not just the main process (a shell in
        # front of the program dies at once on SIGTERM while the program's handler still runs)
        if not main_exited or self._pipes_open():
            return False
        wait_group_gone(pgid, max(0.0, phase.kill_at - time.monotonic()))
        return True

    def _signal_job(self, pgid: int, phase: _Phase, sig: signal.Signals) -> None:
        """`sig` to the job's processes: its group and (setsid'd) descendants, never the sandbox's own
        bwrap and namespace init (the signal's default action would end the sandbox at once)."""
        if not phase.sandboxed:
            _signal_group(pgid, sig)
            for pid in descendants(os.getpid(), all_procs()):
                try:
                    if os.getpgid(pid) != pgid:  # a setsid'd process left the group
                        os.kill(pid, sig)
                except ProcessLookupError:
                    pass  # already gone
            return
        procs = all_procs()
        sandbox = {pgid, *(p.pid for p in procs.values() if p.ppid == pgid)}
        for pid in descendants(os.getpid(), procs):
            if pid not in sandbox:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass  # already gone

    def _terminate(self, pgid: int, phase: _Phase, why: str) -> None:
        if phase.kill_at is not None:
            return
        phase.ended = why
        phase.kill_at = time.monotonic() + self.spec.grace_s
        if not phase.sandboxed:
            _signal_group(pgid, signal.SIGTERM)
            return
        # not to bwrap itself (pgid is its pid): it would die at once and take the job down without
        # its grace period; the namespace's init ignores SIGTERM from outside, the job receives it
        for member in group_members(pgid):
            if member != pgid:
                try:
                    os.kill(member, signal.SIGTERM)
                except ProcessLookupError:
                    pass  # already gone

    def _pump(self, pipe: _Pipe) -> None:
        data = os.read(pipe.fd, _READ_BYTES)
        if not data:
            self.selector.unregister(pipe.fd)
            os.close(pipe.fd)
            return
        pipe.log.write(data)
        if self.echo is not None:
            self.echo(os.path.basename(pipe.log.path), data)
        if pipe.metrics is not None:
            pipe.metrics.feed(data)

    def _drain(self, until: float) -> None:
        """Read what is left in the pipes, until they close or `until` (a process that left the group
        may hold them open forever)."""
        while self._pipes_open():
            left = until - time.monotonic()
            if left <= 0:
                for key in list(self.selector.get_map().values()):
                    if isinstance(key.data, _Pipe):  # the next phase must not read this one's output
                        self.selector.unregister(key.fd)
                        os.close(key.fd)
                break
            for key, _ in self.selector.select(left):
                if isinstance(key.data, _Pipe):
                    self._pump(key.data)
                elif key.data == "signal":
                    os.read(key.fd, 512)
                    self.stop_requested = True

    def _record(self, training: _Phase, scoring: _Phase | None, training_s: float | None) -> ExitRecord:
        values: list[tuple[str, float, int | None, str]] = []
        seen = 0
        if training.metrics is not None:
            kept = training.metrics.values()
            seen = training.metrics.seen
            if self.spec.score is not None:  # the scoring step gives the result: training values are progress
                kept = [(name, value, step, PROGRESS_SOURCE) for name, value, step, _ in kept]
            values += kept
        score: dict[str, object] | None = None
        if scoring is not None:
            if scoring.metrics is not None:
                values += scoring.metrics.values()
                seen += scoring.metrics.seen
            score = {
                "returncode": scoring.returncode if scoring.ended == "exited" else None,
                "ended": scoring.ended,
                "error": scoring.error,
                "started_at": scoring.started_at,
                "finished_at": scoring.finished_at,
            }
        if self.spec.metric_name is not None:
            lines = (json.dumps(value) + "\n" for value in values)
            _write_atomic(os.path.join(self.job_dir, METRICS_NAME), "".join(lines))
        ended = training.ended
        if scoring is not None and scoring.ended == "stopped":
            ended = "stopped"  # the job did not finish: it runs again
        return ExitRecord(
            job_id=self.spec.job_id,
            started_at=training.started_at,
            finished_at=(scoring or training).finished_at,
            returncode=training.returncode,
            ended=ended,
            error=training.error,
            stdout_bytes=training.stdout.total,
            stdout_dropped=training.stdout.dropped,
            stderr_bytes=training.stderr.total,
            stderr_dropped=training.stderr.dropped,
            limit_hit=self.limit_hit,
            metric_values_seen=seen,
            metric_values_dropped=seen - len(values),
            training_s=training_s,
            budget_clock=self.spec.budget_clock if self.spec.budget_s is not None else None,
            score=score,
        )


def supervise(job_dir: PathLike, echo: Echo | None = None) -> ExitRecord:
    """Run the job described in `job_dir` to its end and write its exit record. `echo(log name, bytes)` is
    given every piece of the job's output as it is written to its log (stdout.log, stderr.log, ...)."""
    job_dir = os.path.abspath(job_dir)
    record = _Supervision(SupervisorSpec.read(job_dir), job_dir, echo).run()
    record.write(job_dir)
    return record


def use_environment(path: PathLike) -> None:
    """Replace this process's environment (which the job inherits) by the one in `path`, keeping only the
    listed variables of what the node gave (on a cluster node: the devices the scheduler assigned)."""
    with open(path) as handle:
        wanted = json.load(handle)
    kept = {name: os.environ[name] for name in wanted["keep"] if name in os.environ}
    os.environ.clear()
    os.environ.update(wanted["env"])
    os.environ.update(kept)


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 3) or (len(argv) == 3 and argv[1] != "--environment"):
        print("usage: python -m idealab.executor.supervisor JOB_DIR [--environment ENV_JSON]", file=sys.stderr)
        return 2
    if os.environ.pop(DROP_PYTHONPATH_VAR, None) is not None:
        os.environ.pop("PYTHONPATH", None)  # imported already; the job must not see it
    if len(argv) == 3:
        use_environment(argv[2])
    supervise(argv[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

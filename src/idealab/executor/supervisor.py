"""The per-job supervisor: `python -m idealab.executor.supervisor JOB_DIR`.

One small process per job, started by the backend in its own session. It reads `JOB_DIR/job.json`, starts
the job's command in a process group of its own, and owns the job from then on:

- the time limit: SIGTERM to the job's whole group at the limit, SIGKILL after the grace period. This
  does not depend on the orchestrator, so a job cannot outlive its limit (+ grace) even when the
  orchestrator was SIGKILLed;
- the output: stdout and stderr go through pipes into capped log files (head and tail kept); stdout is
  parsed for metric values as it streams, with a cap on the values kept. The orchestrator never reads a
  job's output while it runs;
- a stop request (SIGTERM, SIGINT or SIGHUP to the supervisor) ends the job the same graceful way;
- the end: `metrics.jsonl`, then `exit.json` (what the supervisor saw) are written atomically, so an
  orchestrator that restarts after a crash can collect the result of a job that finished without it.

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

from idealab.executor.capped_log import DEFAULT_LOG_CAP_BYTES, CappedLog
from idealab.executor.disk_quota import DiskWatch
from idealab.metric_stream import DEFAULT_MAX_METRIC_VALUES, MetricStream

SPEC_NAME = "job.json"
EXIT_NAME = "exit.json"
METRICS_NAME = "metrics.jsonl"
JOB_PGID_NAME = "job.pgid"
SUPERVISOR_LOG_NAME = "supervisor.log"
ENVIRONMENT_NAME = "job.env.json"  # a cluster job's environment: {"env": {...}, "keep": [names from the node]}
DROP_PYTHONPATH_VAR = "IDEALAB_SUPERVISOR_DROP_PYTHONPATH"  # PYTHONPATH was set for the supervisor only
STDOUT_NAME = "stdout.log"
STDERR_NAME = "stderr.log"
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

    def write(self, job_dir: PathLike) -> None:
        _write_atomic(os.path.join(job_dir, SPEC_NAME), json.dumps(vars(self)))

    @classmethod
    def read(cls, job_dir: PathLike) -> SupervisorSpec:
        with open(os.path.join(job_dir, SPEC_NAME)) as handle:
            return cls(**json.load(handle))


class ExitRecord:
    """What the supervisor saw (written as exit.json once the job and its group are gone)."""

    def __init__(
        self,
        job_id: str,
        started_at: float,
        finished_at: float,
        returncode: int | None,  # the main process's; negative: killed by that signal; None: never started
        ended: str,  # "exited" (by itself), "timeout", "stopped" (on request), "limit" (over its disk cap)
        # or "error" (could not start)
        error: str | None = None,
        stdout_bytes: int = 0,
        stdout_dropped: int = 0,
        stderr_bytes: int = 0,
        stderr_dropped: int = 0,
        metric_values_seen: int = 0,
        metric_values_dropped: int = 0,
        limit_hit: str | None = None,  # a limit the job ran into, said plainly ("process limit (64) reached")
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


class _Supervision:
    """The event loop of one job: pipes, the child's exit, stop signals and the deadlines."""

    def __init__(self, spec: SupervisorSpec, job_dir: str) -> None:
        self.spec = spec
        self.job_dir = job_dir
        self.stdout = CappedLog(os.path.join(job_dir, STDOUT_NAME), spec.log_cap_bytes)
        self.stderr = CappedLog(os.path.join(job_dir, STDERR_NAME), spec.log_cap_bytes)
        self.metrics = (
            MetricStream(
                spec.metric_name,
                re.compile(spec.metric_regex) if spec.metric_regex else None,
                spec.max_metric_values,
            )
            if spec.metric_name is not None
            else None
        )
        self.selector = selectors.DefaultSelector()
        self.ended = "exited"
        self.kill_at: float | None = None  # monotonic time of the SIGKILL once termination began
        self.cgroup: _PidsCgroup | None = None
        self.limit_hit: str | None = None
        self.disk: DiskWatch | None = None

    def run(self) -> ExitRecord:
        started_at = time.time()
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        for sig in _STOP_SIGNALS:
            signal.signal(sig, lambda *_: None)  # the wake-up fd carries it into the loop
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            os.chdir(self.spec.cwd)  # where the job starts (posix_spawn has no portable chdir)
            if self.spec.max_disk_mb is not None:  # measured before the job writes anything
                self.disk = DiskWatch(self.spec.disk_paths, self.spec.max_disk_mb)
            self._enter_cgroup()
            try:
                pid = self._spawn(self._argv(), out_w, err_w)
            except (FileNotFoundError, PermissionError):  # a built-in, or a mistake the shell words for us
                pid = self._spawn(["/bin/sh", "-c", self.spec.command], out_w, err_w)
            finally:
                if self.cgroup is not None:  # the job was born in it; the supervisor does not count
                    self.cgroup.move_here(self.cgroup.home)
        except OSError as exc:
            if self.cgroup is not None:
                self.cgroup.remove()
            return self._record(started_at, None, "error", f"could not start the job: {exc}")
        finally:
            os.close(out_w)
            os.close(err_w)
        try:
            _write_atomic(os.path.join(self.job_dir, JOB_PGID_NAME), str(pid))
            self.selector.register(out_r, selectors.EVENT_READ, _Pipe(out_r, self.stdout, self.metrics))
            self.selector.register(err_r, selectors.EVENT_READ, _Pipe(err_r, self.stderr, None))
            self.selector.register(wake_r, selectors.EVENT_READ, "signal")
            returncode = self._watch(pid, wake_r)
        except BaseException:
            _signal_group(pid, signal.SIGKILL)  # a bug here must not leave the job without its limit
            raise
        return self._record(started_at, returncode, self.ended)

    def _enter_cgroup(self) -> None:
        limit = self.spec.max_processes
        if limit is None:
            return
        name = f"idealab-{re.sub(r'[^A-Za-z0-9_.-]', '_', self.spec.job_id)}-{os.getpid()}"
        self.cgroup = _PidsCgroup.create(name, limit)
        if self.cgroup is None:
            print(f"idealab supervisor: no writable pids cgroup here: the process limit ({limit}) is not enforced",
                  file=sys.stderr)  # fmt: skip
            return
        self.cgroup.move_here(self.cgroup.path)

    def _argv(self) -> list[str]:
        argv = job_argv(self.spec.command)
        if not self.spec.wrapper:
            return argv
        if argv[0] != "/bin/sh":  # exec'd in the sandbox by a shell, which words "not found" for us
            argv = ["/bin/sh", "-c", 'exec "$@"', "sh", *argv]
        return [*self.spec.wrapper, *argv]

    def _spawn(self, argv: list[str], out_w: int, err_w: int) -> int:
        """Start the job in a process group of its own (pgid == its pid), stdin from /dev/null."""
        return os.posix_spawnp(
            argv[0],
            argv,
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, out_w, 1),
                (os.POSIX_SPAWN_DUP2, err_w, 2),
            ],
            setpgroup=0,
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),  # Python ignores these; a program expects defaults
        )

    def _watch(self, pid: int, wake_r: int) -> int:
        """Pump the output until the job ends by itself, at its limit or on request; its exit code."""
        pidfd = os.pidfd_open(pid)
        self.selector.register(pidfd, selectors.EVENT_READ, "exit")
        deadline = time.monotonic() + self.spec.timeout_s
        main_exited = False
        while not self._done(main_exited, pid):
            wake_at = deadline if self.kill_at is None else self.kill_at
            checks_disk = self.disk is not None and self.kill_at is None
            select_until = min(wake_at, self.disk.next_at) if self.disk is not None and checks_disk else wake_at
            for key, _ in self.selector.select(max(0.0, select_until - time.monotonic())):
                if key.data == "exit":
                    main_exited = True
                    self.selector.unregister(pidfd)
                elif key.data == "signal":
                    os.read(wake_r, 512)
                    self._terminate(pid, "stopped")
                else:
                    self._pump(key.data)
            if self.disk is not None and checks_disk and time.monotonic() >= self.disk.next_at:
                self._check_disk(pid)
            if time.monotonic() >= wake_at:
                if self.kill_at is None:
                    self._terminate(pid, "timeout")
                else:
                    break  # the grace period is over
        _signal_group(pid, signal.SIGKILL)  # whatever of the group is left (or was left behind)
        _, status = os.waitpid(pid, 0)
        os.close(pidfd)
        # once exit.json exists the job's GPUs may go to the next job: every process of it must be gone
        wait_group_gone(pid, REAP_TIMEOUT_S)
        self._drain(time.monotonic() + DRAIN_S)
        if self.cgroup is not None:
            if self.cgroup.hits():
                self.limit_hit = f"process limit ({self.spec.max_processes} processes and threads) reached"
            self.cgroup.remove()
        code = os.waitstatus_to_exitcode(status)
        if self.spec.sandboxed and code > 128:  # bwrap words a job killed by signal N as exit 128 + N
            code = 128 - code
        return code

    def _check_disk(self, pgid: int) -> None:
        """Stop the job once it wrote more than its disk cap (ended "limit": it did not end by itself)."""
        assert self.disk is not None
        hit = self.disk.exceeded()
        if hit is not None and self.kill_at is None:
            self.limit_hit = hit
            self._terminate(pgid, "limit")

    def _pipes_open(self) -> bool:
        return any(isinstance(k.data, _Pipe) for k in self.selector.get_map().values())

    def _done(self, main_exited: bool, pgid: int) -> bool:
        if self.kill_at is None:
            return main_exited  # a normal end: leftover children are killed, not waited for
        # terminating: the whole group gets the grace period, not just the main process (a shell in
        # front of the program dies at once on SIGTERM while the program's handler still runs)
        if not main_exited or self._pipes_open():
            return False
        wait_group_gone(pgid, max(0.0, self.kill_at - time.monotonic()))
        return True

    def _terminate(self, pgid: int, why: str) -> None:
        if self.kill_at is not None:
            return
        self.ended = why
        self.kill_at = time.monotonic() + self.spec.grace_s
        if not self.spec.sandboxed:
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
        if pipe.metrics is not None:
            pipe.metrics.feed(data)

    def _drain(self, until: float) -> None:
        """Read what is left in the pipes, until they close or `until` (a process that left the group
        may hold them open forever)."""
        while self._pipes_open():
            left = until - time.monotonic()
            if left <= 0:
                break
            for key, _ in self.selector.select(left):
                if isinstance(key.data, _Pipe):
                    self._pump(key.data)
                elif key.data == "signal":
                    os.read(key.fd, 512)

    def _record(
        self, started_at: float, returncode: int | None, ended: str, error: str | None = None
    ) -> ExitRecord:
        self.stdout.close()
        self.stderr.close()
        seen = dropped = 0
        if self.metrics is not None:
            self.metrics.finish()
            kept = self.metrics.values()
            seen, dropped = self.metrics.seen, self.metrics.seen - len(kept)
            lines = (json.dumps(value) + "\n" for value in kept)
            _write_atomic(os.path.join(self.job_dir, METRICS_NAME), "".join(lines))
        return ExitRecord(
            job_id=self.spec.job_id,
            started_at=started_at,
            finished_at=time.time(),
            returncode=returncode,
            ended=ended,
            error=error,
            stdout_bytes=self.stdout.total,
            stdout_dropped=self.stdout.dropped,
            stderr_bytes=self.stderr.total,
            stderr_dropped=self.stderr.dropped,
            limit_hit=self.limit_hit,
            metric_values_seen=seen,
            metric_values_dropped=dropped,
        )


def supervise(job_dir: PathLike) -> ExitRecord:
    """Run the job described in `job_dir` to its end and write its exit record."""
    job_dir = os.path.abspath(job_dir)
    record = _Supervision(SupervisorSpec.read(job_dir), job_dir).run()
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

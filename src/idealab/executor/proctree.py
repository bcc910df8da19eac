"""The processes a job started, found from outside, and the CPU time they used (Linux: read from /proc).

The supervisor is the root of every job's tree: it is made a child subreaper, so a process of the job that
double-forks or calls setsid is re-parented to it (not to the machine's init), and in the sandbox every
process lives in the job's PID namespace under its init, itself under bwrap, the supervisor's child. So the
job's tree is every descendant of the supervisor, found through the parent pids of /proc/<pid>/stat.

CPU time (user + system) of the tree = the time of its live processes plus the time of those that ended.
A process that ended and was waited for by its parent moved its time into the parent's `cutime`/`cstime`,
which are counted; a process whose parent did not wait for it (SIGCHLD ignored: the kernel reaps it and
its time is lost) is counted from what it had used when it was last seen. Only the standard library is
imported: the supervisor of every job imports this.
"""

from __future__ import annotations

import os
import signal

_TICKS = os.sysconf("SC_CLK_TCK")
PR_SET_CHILD_SUBREAPER = 36


class Proc:
    """One sample of one process: its parent, its own CPU time and that of the children it waited for."""

    __slots__ = ("pid", "ppid", "start", "own", "reaped")

    def __init__(self, pid: int, ppid: int, start: int, own: float, reaped: float) -> None:
        self.pid = pid
        self.ppid = ppid
        self.start = start  # start time in clock ticks since boot: a reused pid has another
        self.own = own  # seconds of CPU time (user + system) of the process itself
        self.reaped = reaped  # seconds of the children it waited for (cumulative, their children included)

    @property
    def total(self) -> float:
        return self.own + self.reaped


def read_proc(pid: int) -> Proc | None:
    """The process's sample, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()  # the command name may hold spaces and parentheses
    try:
        utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
        return Proc(pid, int(fields[1]), int(fields[19]), (utime + stime) / _TICKS, (cutime + cstime) / _TICKS)
    except (IndexError, ValueError):
        return None


def all_procs() -> dict[int, Proc]:
    procs = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            proc = read_proc(int(name))
            if proc is not None:
                procs[proc.pid] = proc
    return procs


def descendants(root: int, procs: dict[int, Proc]) -> dict[int, Proc]:
    """The processes below `root` (not `root` itself)."""
    children: dict[int, list[int]] = {}
    for proc in procs.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    found: dict[int, Proc] = {}
    stack = list(children.get(root, ()))
    while stack:
        pid = stack.pop()
        if pid not in found:
            found[pid] = procs[pid]
            stack.extend(children.get(pid, ()))
    return found


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (prctl); False where that is not possible."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


class TreeClock:
    """CPU time used by the descendants of `root` since the clock was made, sampled on `sample()`."""

    def __init__(self, root: int | None = None) -> None:
        self.root = os.getpid() if root is None else root
        self.seen: dict[int, Proc] = {}
        self.lost = 0.0  # time of processes that ended without being waited for by a process of the tree
        self.used = 0.0
        self.base = sum(p.total for p in descendants(self.root, all_procs()).values())

    def sample(self) -> float:
        """Seconds of CPU time used by the tree so far (never decreasing)."""
        now = descendants(self.root, all_procs())
        expected: dict[int, float] = {}  # live ancestor -> time of descendants that ended since the last sample
        for pid, old in self.seen.items():
            new = now.get(pid)
            if new is not None and new.start == old.start:
                continue
            ancestor = old.ppid
            while ancestor in self.seen and ancestor not in now:
                ancestor = self.seen[ancestor].ppid
            if ancestor in now:
                expected[ancestor] = expected.get(ancestor, 0.0) + old.total
            else:
                self.lost += old.total
        for pid, owed in expected.items():
            before = self.seen[pid].reaped if pid in self.seen else now[pid].reaped
            self.lost += max(0.0, owed - (now[pid].reaped - before))
        self.seen = now
        total = sum(p.total for p in now.values()) + self.lost - self.base
        self.used = max(self.used, total)
        return self.used

    def signal_all(self, sig: signal.Signals, skip: set[int] | frozenset[int] = frozenset()) -> None:
        """Send `sig` to every live descendant of the root but those in `skip`."""
        for pid in descendants(self.root, all_procs()):
            if pid not in skip:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass  # ended meanwhile

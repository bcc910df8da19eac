"""The job sandbox on Linux: bubblewrap (`bwrap`) around the job's command, and resource limits.

The supervisor stays outside the sandbox (the job must not be able to forge its exit.json or metrics);
it starts `bwrap ... -- COMMAND` in the job's process group. bwrap's first child is the init (pid 1) of a
new PID namespace and the job runs under it, so:

- when the supervisor kills the job's group at the limit, the namespace's init dies and the kernel kills
  every process left in the namespace (double-forked, setsid'd daemons included) before that init is
  reaped: once the group is gone, nothing of the job is left; `--die-with-parent` ends the sandbox when
  the supervisor itself is killed;
- the job sees a fresh /proc with only its own processes (no /proc/<orchestrator>/environ);
- the filesystem is `/` read-only, with an empty tmpfs over every concealed directory (home directories,
  the run's workdir with its database and the other experiments' copies, the environment's source
  directory, the job's log directory), then the interpreter's prefix and the data directory bound back
  read-only, then the job's copy bound writable and its protected files bound read-only over it;
- /tmp is a fresh tmpfs per job, HOME a directory in it;
- no network (`--unshare-net`, only a loopback of its own) unless the manifest says `network = true`;
- /dev is a minimal one, plus the NVIDIA device files for a GPU job.

Limits (memory as RLIMIT_AS, open files, the size of any file written) are set with util-linux's
`prlimit` in front of bwrap, so they hold for every process of the job and cannot be raised by it.
"""

from __future__ import annotations

import functools
import glob
import logging
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from idealab.paths import data_dir

log = logging.getLogger(__name__)

SANDBOX_MODES = ("auto", "require", "off")
TMPFS_DIRS = tuple(p for p in (Path("/tmp"), Path("/var/tmp")) if p.is_dir())  # fresh and empty per job
JOB_HOME = "/tmp/home"  # a job's HOME inside the sandbox: in its private /tmp
_PROBE_TIMEOUT_S = 20.0
# The init (pid 1) of a job's PID namespace (`bwrap --as-pid-1`): runs the job's command and reaps every
# process the namespace holds. When the command ends by itself, init ends at once, and the kernel kills
# whatever it left (daemons included). Once the supervisor has asked the job to stop (SIGTERM, which
# reaches init too), it waits for all of them instead, so that a program under a shell (`a | b`) still
# gets its grace period after the shell died. Python without site (-I -S): cheap, and nothing imported.
NSINIT = """
import os, signal, sys
stopping = []
signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
pid = os.fork()
if pid == 0:
    for sig in (signal.SIGTERM, signal.SIGPIPE, signal.SIGXFSZ):  # Python ignores the last two; a job expects
        signal.signal(sig, signal.SIG_DFL)  # the defaults (SIGXFSZ ends a job over the file-size limit)
    try:
        os.execvp(sys.argv[1], sys.argv[1:])
    except OSError as exc:
        print(f"idealab: cannot run {sys.argv[1]}: {exc}", file=sys.stderr)
    os._exit(127)
code = 1
while True:
    try:
        done, status = os.wait()
    except ChildProcessError:
        break
    if done == pid:
        code = os.waitstatus_to_exitcode(status)
        code = 128 - code if code < 0 else code
        if not stopping:
            break
sys.exit(code)
"""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one job; None: no limit."""

    memory_mb: int | None = None  # address space of each process (RLIMIT_AS)
    open_files: int | None = None  # RLIMIT_NOFILE
    file_size_mb: int | None = None  # the largest file a job may write (RLIMIT_FSIZE)
    processes: int | None = None  # tasks (processes and threads) at once: a pids cgroup, by the supervisor
    disk_mb: int | None = None  # all files a job writes together: measured by the supervisor (disk_quota.py)

    def merged(self, other: Limits) -> Limits:
        """The stricter of each limit (a CLI limit tightens a manifest's, never loosens it)."""

        def pick(a: int | None, b: int | None) -> int | None:
            return b if a is None else a if b is None else min(a, b)

        return Limits(
            pick(self.memory_mb, other.memory_mb),
            pick(self.open_files, other.open_files),
            pick(self.file_size_mb, other.file_size_mb),
            pick(self.processes, other.processes),
            pick(self.disk_mb, other.disk_mb),
        )

    def prlimit_argv(self) -> list[str]:
        """`prlimit --as=... -- ` (soft and hard, so the job cannot raise them); [] without limits."""
        args = []
        if self.memory_mb is not None:
            args.append(f"--as={self.memory_mb * 2**20}")
        if self.open_files is not None:
            args.append(f"--nofile={self.open_files}")
        if self.file_size_mb is not None:
            args.append(f"--fsize={self.file_size_mb * 2**20}")
        if not args:
            return []
        return [shutil.which("prlimit") or "prlimit", *args, "--"]


@dataclass(frozen=True)
class SandboxPolicy:
    """What one job may see and do (from its manifest and the backend's settings)."""

    network: bool = False
    allow_env: tuple[str, ...] = ()  # variable names (or PREFIX*) the job may see besides the defaults
    readonly: tuple[str, ...] = ()  # workspace-relative files bound read-only over the job's copy
    conceal: tuple[Path, ...] = ()  # directories replaced by an empty tmpfs (env source, workdir)
    limits: Limits = Limits()
    mode: str | None = None  # "auto" | "require" | "off"; None: the backend's
    writable: tuple[Path, ...] = ()  # directories outside the copy bound writable (the training's output)
    readonly_dirs: tuple[Path, ...] = ()  # directories outside the copy bound read-only (scoring's artefact)
    private_data: tuple[str, ...] = ()  # globs relative to the data directory that the job must not see


@functools.cache
def bwrap_problem() -> str | None:
    """Why bwrap cannot sandbox jobs here (None: it can). Probed once per process with a real sandbox."""
    if not sys.platform.startswith("linux"):
        return f"bubblewrap sandboxes only exist on Linux (this is {sys.platform})"
    exe = shutil.which("bwrap")
    if exe is None:
        return "bwrap is not installed (Debian/Ubuntu: apt-get install bubblewrap; or `make sandbox`)"
    probe = [exe, "--die-with-parent", "--unshare-pid", "--unshare-net", "--ro-bind", "/", "/",
             "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "true"]  # fmt: skip
    try:
        done = subprocess.run(probe, capture_output=True, timeout=_PROBE_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap could not be run: {exc}"
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip() or f"exit status {done.returncode}"
        return f"bwrap cannot create namespaces here: {why}"
    return None


@functools.cache
def _warn_unsandboxed(problem: str) -> None:
    log.warning("jobs run WITHOUT a sandbox (they can read this machine's files and network): %s", problem)


def use_sandbox(mode: str) -> tuple[bool, str | None]:
    """(sandbox the job?, error): `require` without a usable bwrap is an error; `auto` warns once."""
    if mode not in SANDBOX_MODES:
        return False, f"unknown sandbox mode {mode!r} (expected one of {', '.join(SANDBOX_MODES)})"
    if mode == "off":
        return False, None
    problem = bwrap_problem()
    if problem is None:
        return True, None
    if mode == "require":
        return False, f"a sandbox is required but {problem}"
    _warn_unsandboxed(problem)
    return False, None


def _hidden_dirs() -> list[Path]:
    """Home directories: ~/.netrc, cloud and hub tokens, ssh keys."""
    dirs = [Path.home(), Path("/root"), Path("/home")]
    return [d for d in dirs if d.is_dir()]


def _reveal_dirs() -> list[Path]:
    """What a job needs back from under a concealed directory: the interpreter and the data."""
    paths = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).parent, data_dir()}
    return sorted((p for p in paths if p.is_dir()), key=lambda p: len(p.parts))


def _linked_files(workspace: Path) -> list[Path]:
    """Files of the copy hard-linked from the run's pool of shared files (`shared.py`): one inode for
    every experiment, so the job must not be able to chmod and write it (as root it could)."""
    linked = []
    for top, _, names in os.walk(workspace):
        for name in names:
            path = Path(top, name)
            try:
                info = path.lstat()
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
                linked.append(path)
    return linked


def private_paths(root: Path, patterns: Sequence[str]) -> list[Path]:
    """The files and directories under `root` that the globs `patterns` name."""
    found = {Path(p) for pattern in patterns for p in glob.glob(str(root / pattern), recursive=True)}
    return sorted(found)


def private_data_mounts(root: Path, patterns: Sequence[str]) -> list[str]:
    """bwrap arguments that take the private data out of the job's view: each directory holding some is
    covered by an empty tmpfs, and its other entries are bound back read-only (a private file is then
    absent, not merely unreadable)."""
    named = private_paths(root, patterns)
    if not named:
        return []
    private = {*named, *(p.resolve() for p in named)}
    argv: list[str] = []
    covered: list[Path] = []

    def rebuild(directory: Path) -> None:
        argv.extend(["--tmpfs", str(directory)])
        covered.append(directory)
        for entry in sorted(directory.iterdir()):
            if entry in private or entry.resolve() in private:
                continue
            if entry.is_symlink():  # kept as a link: what it points to is seen (or hidden) there
                argv.extend(["--symlink", os.readlink(entry), str(entry)])
            elif entry.is_dir() and any(p.is_relative_to(entry) for p in private):
                argv.extend(["--dir", str(entry)])
                rebuild(entry)
            else:
                argv.extend(["--ro-bind", str(entry), str(entry)])

    parents = sorted({p.parent for p in named}, key=lambda p: len(p.parts))
    tops = [d for d in parents if not any(d != o and d.is_relative_to(o) for o in parents)]
    for top in tops:
        rebuild(top)
    for directory in covered:
        argv.extend(["--remount-ro", str(directory)])
    return argv


def bwrap_argv(
    policy: SandboxPolicy, workspace: Path, log_dir: Path, gpu_ids: Sequence[int], exe: str | None = None
) -> list[str]:
    """The bwrap command line, up to the init of the namespace, that runs a job in `workspace`."""
    argv = [exe or shutil.which("bwrap") or "bwrap", "--die-with-parent", "--unshare-pid", "--unshare-ipc",
            "--unshare-uts", "--unshare-cgroup-try"]  # fmt: skip
    if not policy.network:
        argv.append("--unshare-net")
    argv += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    for tmp in TMPFS_DIRS:  # with a disk cap, each of its size (bwrap --size)
        size = [] if policy.limits.disk_mb is None else ["--size", str(policy.limits.disk_mb * 2**20)]
        argv += [*size, "--tmpfs", str(tmp)]
    if gpu_ids:  # the card's device files; CUDA_VISIBLE_DEVICES picks the leased ones among them
        for dev in sorted(glob.glob("/dev/nvidia*")):
            argv += ["--dev-bind", dev, dev]
    workspace = workspace.resolve()
    concealed = [*_hidden_dirs(), *policy.conceal, log_dir]
    hidden = [
        path for path in sorted({p.resolve() for p in concealed if p.is_dir()}, key=lambda p: len(p.parts))
        if path != Path("/") and path != workspace
    ]  # fmt: skip
    outside = [p for p in hidden if not p.is_relative_to(workspace)]
    for path in outside:
        argv += ["--tmpfs", str(path)]
    # The interpreter and the data come back read-only wherever they were covered: under a concealed
    # directory (a venv in a home directory) or under the fresh /tmp (a clone in /tmp).
    covered = [*(c for c in concealed if c.is_dir()), *TMPFS_DIRS]
    for path in _reveal_dirs():
        if any(path.resolve().is_relative_to(c.resolve()) for c in covered):
            argv += ["--ro-bind", str(path), str(path)]
    argv += ["--bind", str(workspace), str(workspace)]
    for path in policy.writable:
        argv += ["--bind", str(path), str(path)]
    for path in policy.readonly_dirs:
        argv += ["--ro-bind", str(path), str(path)]
    argv += private_data_mounts(data_dir(), policy.private_data)
    for path in hidden:
        if path not in outside:  # a log directory inside the copy: covered again, over the copy
            argv += ["--tmpfs", str(path)]
    for path in hidden:  # the empty layers read-only too, now that the mount points under them exist
        argv += ["--remount-ro", str(path)]
    for target in sorted({*(workspace / rel for rel in policy.readonly), *_linked_files(workspace)}):
        if target.is_file() and not target.is_symlink():
            argv += ["--ro-bind", str(target), str(target)]
    argv += ["--dir", JOB_HOME, "--chdir", str(workspace), "--as-pid-1", "--",
             sys.executable, "-I", "-S", "-c", NSINIT]  # fmt: skip
    return argv


def sandbox_wrapper(
    policy: SandboxPolicy, workspace: Path, log_dir: Path, gpu_ids: Sequence[int], sandboxed: bool
) -> list[str]:
    """What goes in front of the job's command: limits, then (when `sandboxed`) bwrap."""
    wrapper = policy.limits.prlimit_argv()
    if sandboxed:
        wrapper += bwrap_argv(policy, workspace, log_dir, gpu_ids)
    return wrapper


def job_home(log_dir: Path, sandboxed: bool) -> str:
    """A job's private HOME: in its private /tmp when sandboxed, else a directory of its own."""
    if sandboxed:
        return JOB_HOME
    home = log_dir / "home"
    home.mkdir(parents=True, exist_ok=True)
    return str(home)



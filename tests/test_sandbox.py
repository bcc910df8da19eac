"""The job sandbox (issue 10) with real processes under bubblewrap: one test per way adversarial job code
could reach what it must not (credentials, the run's state, other jobs, the network, the future)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import sys
import textwrap
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from idealab.executor.base import JobResult, JobSpec
from idealab.executor.bwrap import Limits, SandboxPolicy, bwrap_problem
from idealab.executor.local import LocalBackend
from idealab.executor.runner import classify, protected_hashes, run_job
from idealab.executor.sandbox import copy_environment
from idealab.executor.slots import SlotPool
from idealab.manifest import load_manifest
from idealab.status import Status

T = TypeVar("T")
PROBLEM = bwrap_problem()
pytestmark = pytest.mark.skipif(PROBLEM is not None, reason=f"no bubblewrap sandbox here: {PROBLEM}")
QUAD = Path(__file__).parent / "envs" / "quad"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 60))


def run_jobs(*specs: JobSpec, backend: LocalBackend | None = None) -> list[JobResult]:
    async def main() -> list[JobResult]:
        used = backend or LocalBackend(SlotPool.cpu_only(1), sandbox="require")
        try:
            return [await used.wait(await used.submit(spec)) for spec in specs]
        finally:
            await used.close()

    return run(main())


def script_job(workspace: Path, job_id: str, source: str, policy: SandboxPolicy | None = None,
               timeout_s: float = 30, log_dir: Path | None = None) -> JobSpec:  # fmt: skip
    workspace.mkdir(parents=True, exist_ok=True)
    (workspace / f"{job_id}.py").write_text(textwrap.dedent(source))
    return JobSpec(
        job_id, workspace, f"python {job_id}.py", timeout_s,
        log_dir=log_dir or workspace.parent / f"logs-{job_id}", sandbox=policy or SandboxPolicy(),
    )  # fmt: skip


def stdout_json(result: JobResult) -> Any:
    assert result.exit_code == 0, result.stderr_path.read_text()
    return json.loads(result.stdout_path.read_text())


def test_the_orchestrators_canary_key_is_not_readable_through_proc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "canary-7d1f")
    job = script_job(tmp_path / "code", "peek", """
        import json, os
        seen = {}
        for pid in [p for p in os.listdir("/proc") if p.isdigit()] + [str(os.getppid())]:
            try:
                seen[pid] = open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace")
            except OSError as exc:
                seen[pid] = repr(exc)
        print(json.dumps({"pids": sorted(seen), "canary": any("canary-7d1f" in v for v in seen.values())}))
    """)
    report = stdout_json(run_jobs(job)[0])
    assert report["canary"] is False
    assert len(report["pids"]) <= 4  # only the namespace's own: its init, the job (no orchestrator, no pytest)
    assert str(os.getpid()) not in report["pids"] or int(os.getpid()) <= 4


def test_an_unlisted_credential_does_not_reach_the_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "GH_PAT", "HF_AUTH", "SOME_SETTING"):
        monkeypatch.setenv(name, f"planted-{name}")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    source = "import json, os; print(json.dumps(dict(os.environ)))"
    default = script_job(tmp_path / "a", "env1", source)
    allowed = script_job(tmp_path / "b", "env2", source, SandboxPolicy(allow_env=("SOME_SETTING",)))
    env1, env2 = (stdout_json(r) for r in run_jobs(default, allowed))
    for name in ("DATABASE_URL", "GH_PAT", "HF_AUTH", "SOME_SETTING"):
        assert name not in env1
    assert env1["OMP_NUM_THREADS"] == "2" and env1["HOME"] == "/tmp/home"
    assert env2["SOME_SETTING"] == "planted-SOME_SETTING" and "GH_PAT" not in env2


def test_the_database_env_source_other_copies_and_home_are_invisible_and_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".netrc").write_text("machine example.invalid password planted\n")
    monkeypatch.setenv("HOME", str(home))
    workdir = tmp_path / "run"
    (workdir / "experiments" / "00001" / "code").mkdir(parents=True)
    (workdir / "idealab.db").write_bytes(b"SQLite format 3\x00 the run's state")
    (workdir / "experiments" / "00001" / "code" / "train.py").write_text("print('queued idea')\n")
    source = copy_environment(QUAD, tmp_path / "envsrc")
    before = {p: p.read_bytes() for p in [*workdir.rglob("*"), *source.rglob("*"), home / ".netrc"] if p.is_file()}
    mine = workdir / "experiments" / "00002" / "code"
    job = script_job(mine, "snoop", f"""
        import json, os
        targets = {[str(workdir / "idealab.db"), str(workdir / "experiments" / "00001" / "code" / "train.py"),
                    str(source / "score.py"), str(home / ".netrc"), "/root/.netrc"]!r}
        found, wrote = [], []
        listing = {{"workdir": sorted(os.listdir({str(workdir)!r})),
                   "experiments": sorted(os.listdir({str(workdir / "experiments")!r}))}}
        for path in targets:
            if os.path.exists(path):
                found.append(path)
            try:
                open(path, "w").write("pwned")
                wrote.append(path)
            except OSError:
                pass
        print(json.dumps({{"found": found, "wrote": wrote, **listing}}))
    """, SandboxPolicy(conceal=(source,)), log_dir=workdir / "experiments" / "00002" / "logs")
    backend = LocalBackend(SlotPool.cpu_only(1), sandbox="require", conceal=[workdir])
    report = stdout_json(run_jobs(job, backend=backend)[0])
    assert report["found"] == [] and report["workdir"] == ["experiments"] and report["experiments"] == ["00002"]
    assert report["wrote"] == []  # the empty layers over them are read-only too
    after = {p: p.read_bytes() for p in before}
    assert after == before


def test_rewrite_and_restore_of_a_protected_file_is_impossible(tmp_path: Path) -> None:
    manifest = load_manifest(QUAD)
    workspace = copy_environment(QUAD, tmp_path / "code")
    (workspace / "train.py").write_text(textwrap.dedent("""
        import os
        attempts = []
        for how in ("write", "replace", "unlink", "chmod"):
            try:
                if how == "write":
                    open("score.py", "a").write("SCORE = 0  # perfect")
                elif how == "replace":
                    open("fake.py", "w").write("SCORE = 0")
                    os.replace("fake.py", "score.py")
                elif how == "unlink":
                    os.unlink("score.py")
                else:
                    os.chmod("score.py", 0o777)
                attempts.append(how + ":done")
            except OSError as exc:
                attempts.append(f"{how}:{type(exc).__name__}")
        print(attempts)
        print('@metric {"name": "loss", "value": 1.0}')
    """))
    pristine = protected_hashes(manifest)

    async def main() -> Any:
        backend = LocalBackend(SlotPool.cpu_only(1), sandbox="require")
        try:
            return await run_job(backend, manifest, workspace, "tamper", tmp_path / "logs", expected_hashes=pristine)
        finally:
            await backend.close()

    outcome = run(main())
    out = outcome.result.stdout_path.read_text()
    assert ":done" not in out, out  # every attempt failed: the file is bound read-only
    assert outcome.status is Status.OK and (workspace / "score.py").read_bytes() == (QUAD / "score.py").read_bytes()
    # and where a change does happen (no sandbox), the check against the pristine hashes still sees it
    (workspace / "score.py").write_text("SCORE = 0\n")
    assert classify(outcome.result, manifest, workspace, pristine).status is Status.TAMPERED


def _alive_with(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_no_process_survives_the_job_double_fork_and_setsid(tmp_path: Path) -> None:
    marker = f"{time.time_ns() % 10**6 + 10**6}.5"  # a sleep length nothing else on this machine uses
    job = script_job(tmp_path / "code", "daemon", f"""
        import os
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execvp("sleep", ["sleep", "{marker}"])
            os._exit(0)
        os.wait()
        print("parent leaves")
    """)
    result = run_jobs(job)[0]
    assert result.exit_code == 0
    assert _alive_with(marker) == []  # gone when the job's result is known, not some time later


def test_nothing_carries_over_in_tmp_between_jobs(tmp_path: Path) -> None:
    name = f"idealab-weights-cache-{os.getpid()}"
    first = script_job(tmp_path / "a", "cache", f"open('/tmp/{name}', 'w').write('weights'); print('[]')")
    second = script_job(tmp_path / "b", "reuse", "import os, json; print(json.dumps(os.listdir('/tmp')))")
    results = run_jobs(first, second)
    assert results[0].exit_code == 0 and name not in stdout_json(results[1])
    assert not Path("/tmp", name).exists()


class _Listener:
    """A loopback TCP listener that counts the connections it accepted."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


def test_a_loopback_listener_is_unreachable_unless_network_is_allowed(tmp_path: Path) -> None:
    listener = _Listener()
    try:
        source = f"""
            import socket
            try:
                socket.create_connection(("127.0.0.1", {listener.port}), timeout=5).close()
                print('"connected"')
            except OSError as exc:
                print('"refused"')
        """
        closed = script_job(tmp_path / "a", "net1", source)
        opened = script_job(tmp_path / "b", "net2", source, SandboxPolicy(network=True))
        results = run_jobs(closed, opened)
        assert [stdout_json(r) for r in results] == ["refused", "connected"]
        assert listener.accepted == 1
    finally:
        listener.close()


def test_a_memory_hungry_job_ends_with_a_clear_reason(tmp_path: Path) -> None:
    env = copy_environment(QUAD, tmp_path / "env")
    toml = (env / "idealab.toml").read_text().replace("timeout_s = 30", "timeout_s = 30\nmemory_mb = 512")
    (env / "idealab.toml").write_text(toml)
    manifest = load_manifest(env)
    workspace = copy_environment(env, tmp_path / "code")
    (workspace / "train.py").write_text("hog = bytearray(4 * 2**30)\nprint('loss: 1.0')\n")

    async def main() -> Any:
        backend = LocalBackend(SlotPool.cpu_only(1), sandbox="require")
        try:
            return await run_job(backend, manifest, workspace, "hog", tmp_path / "logs")
        finally:
            await backend.close()

    outcome = run(main())
    assert outcome.status is Status.FAILED
    assert outcome.reason is not None and outcome.reason.startswith("memory limit (512 MiB) reached: exit code 1")


def test_limits_from_the_backend_tighten_the_jobs(tmp_path: Path) -> None:
    job = script_job(tmp_path / "code", "lim", """
        import json, resource
        print(json.dumps([resource.getrlimit(r) for r in (resource.RLIMIT_AS, resource.RLIMIT_NOFILE,
                                                         resource.RLIMIT_FSIZE)]))
    """, SandboxPolicy(limits=Limits(memory_mb=2048, open_files=512)))
    backend = LocalBackend(SlotPool.cpu_only(1), sandbox="require", limits=Limits(memory_mb=1024, file_size_mb=8))
    got = stdout_json(run_jobs(job, backend=backend)[0])
    assert got == [[2**30, 2**30], [512, 512], [8 * 2**20, 8 * 2**20]]  # hard limits too: not raisable


def test_a_job_over_the_file_size_limit_is_killed_by_sigxfsz(tmp_path: Path) -> None:
    (tmp_path / "code").mkdir()
    job = JobSpec("big", tmp_path / "code", "head -c 4194304 /dev/zero > big.bin", 30, log_dir=tmp_path / "logs",
                  sandbox=SandboxPolicy(limits=Limits(file_size_mb=1)))  # fmt: skip
    result = run_jobs(job)[0]
    assert result.exit_code == -25  # SIGXFSZ, as the supervisor words it (not bwrap's 128 + 25)
    assert (tmp_path / "code" / "big.bin").stat().st_size <= 2**20


def test_require_without_bwrap_fails_to_start_with_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from idealab.executor import bwrap

    monkeypatch.setattr(bwrap, "bwrap_problem", lambda: "bwrap is not installed (test)")
    job = script_job(tmp_path / "code", "req", "print(1)", SandboxPolicy(mode="require"))
    result = run_jobs(job, backend=LocalBackend(SlotPool.cpu_only(1)))[0]
    assert result.error == "a sandbox is required but bwrap is not installed (test)"
    assert shutil.which("bwrap") is not None and sys.platform.startswith("linux")


def test_a_copy_is_verified_against_its_stored_diff(tmp_path: Path) -> None:
    from idealab.executor.runner import copy_matches_diff
    from idealab.patching import diff_trees

    manifest = load_manifest(QUAD)
    workspace = copy_environment(QUAD, tmp_path / "code")
    (workspace / "train.py").write_text((QUAD / "train.py").read_text().replace("X = 0.5", "X = 0.25"))
    (workspace / "extra.py").write_text("BONUS = 1\n")  # a file the change created
    stored = diff_trees(QUAD, workspace, sorted({*manifest.files.shown, "extra.py"}))
    assert copy_matches_diff(manifest, workspace, stored)
    (workspace / "extra.py").write_text("BONUS = 2\n")  # written after the change was accepted
    assert not copy_matches_diff(manifest, workspace, stored)
    (workspace / "extra.py").write_text("BONUS = 1\n")
    (workspace / "score.py").write_text("def score(x, y):\n    return 0.0\n")  # shown (readonly) files too
    assert not copy_matches_diff(manifest, workspace, stored)


def _pids_cgroup_problem() -> str | None:
    import idealab.executor.supervisor as sup

    probe = sup._PidsCgroup.create(f"idealab-probe-{os.getpid()}", 10)
    if probe is None:
        return "no writable pids cgroup here"
    probe.remove()
    return None


def test_a_fork_bomb_ends_with_the_process_limit_as_its_reason(tmp_path: Path) -> None:
    problem = _pids_cgroup_problem()
    if problem is not None:
        pytest.skip(problem)
    env = copy_environment(QUAD, tmp_path / "env")
    toml = (env / "idealab.toml").read_text().replace("timeout_s = 30", "timeout_s = 30\nmax_processes = 16")
    (env / "idealab.toml").write_text(toml)
    manifest = load_manifest(env)
    workspace = copy_environment(env, tmp_path / "code")
    (workspace / "train.py").write_text(textwrap.dedent("""
        import os, sys, time
        children = []
        try:
            for _ in range(100):
                pid = os.fork()
                if pid == 0:
                    time.sleep(30)
                    os._exit(0)
                children.append(pid)
        except OSError as exc:
            print(f"fork refused after {len(children)}: {exc}", file=sys.stderr)
            sys.exit(3)
    """))

    async def main() -> Any:
        backend = LocalBackend(SlotPool.cpu_only(1), sandbox="require")
        try:
            return await run_job(backend, manifest, workspace, "bomb", tmp_path / "logs")
        finally:
            await backend.close()

    outcome = run(main())
    assert outcome.status is Status.FAILED and outcome.reason is not None
    assert outcome.reason.startswith("process limit (16 processes and threads) reached: exit code 3"), outcome.reason
    assert not list(Path("/sys/fs/cgroup").glob("**/idealab-bomb-*"))  # its cgroup is removed


def test_a_job_and_its_daemons_do_not_outlive_the_time_limit(tmp_path: Path) -> None:
    marker = f"{time.time_ns() % 10**6 + 2 * 10**6}.5"
    job = script_job(tmp_path / "code", "stuck", f"""
        import os, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # needs the SIGKILL after the grace period
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execvp("sleep", ["sleep", "{marker}"])
            os._exit(0)
        time.sleep(600)
    """, timeout_s=1)
    backend = LocalBackend(SlotPool.cpu_only(1), sandbox="require", grace_s=0.5)
    result = run_jobs(job, backend=backend)[0]
    assert result.timed_out and _alive_with(marker) == []


def test_files_linked_from_the_shared_pool_are_read_only_in_the_sandbox(tmp_path: Path) -> None:
    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "data.bin").write_bytes(b"shared by every experiment")
    job = script_job(tmp_path / "code", "chmodw", """
        import os
        try:
            os.chmod("data.bin", 0o644)
            open("data.bin", "ab").write(b" and changed")
            print('"changed"')
        except OSError as exc:
            print('"refused"')
    """)
    os.link(pool / "data.bin", tmp_path / "code" / "data.bin")
    assert stdout_json(run_jobs(job)[0]) == "refused"
    assert (pool / "data.bin").read_bytes() == b"shared by every experiment"


def test_the_data_and_interpreter_under_tmp_come_back_read_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A clone in /tmp (its venv, its data dir) is covered by the job's fresh /tmp: the interpreter and the
    # data directory must be bound back (they were not: every job failed with "python: No such file").
    data = tmp_path / "data"
    data.mkdir()
    (data / "corpus.txt").write_text("tokens")
    monkeypatch.setenv("IDEALAB_DATA_DIR", str(data))
    job = script_job(tmp_path / "w", "reads", f"""
        import json, pathlib
        path = pathlib.Path({str(data / "corpus.txt")!r})
        try:
            path.write_text("changed")
            wrote = True
        except OSError:
            wrote = False
        print(json.dumps([path.read_text(), wrote]))
    """)
    assert stdout_json(run_jobs(job)[0]) == ["tokens", False]

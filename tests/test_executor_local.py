"""The local backend with real subprocesses: time limits, process groups, slots, cancel, environment."""

from __future__ import annotations

import asyncio
import os
import select
import subprocess
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from idealab.executor.base import JobResult, JobSpec, JobStart
from idealab.executor.local import LocalBackend
from idealab.executor.procs import kill_stale_job
from idealab.executor.sandbox import (
    MISSING_FILE_HASH,
    copy_environment,
    hash_files,
    job_environment,
    scrubbed_environ,
)
from idealab.executor.slots import SlotPool

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 30))


def spec(tmp_path: Path, job_id: str, command: str, timeout_s: float = 10, gpus: int = 0) -> JobSpec:
    return JobSpec(job_id, tmp_path, command, timeout_s, gpus, log_dir=tmp_path / "logs" / job_id)


def wait_gone(pid: int, timeout_s: float = 5.0) -> bool:
    """True once process `pid` has exited (a zombie counts as exited), waiting on a pidfd."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout_s)
        return bool(readable)
    finally:
        os.close(fd)


def group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is still in group `pgid`."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


# ------------------------------------------------------------------------------------ time limits


def test_hang_times_out_and_kills_the_whole_group(tmp_path: Path) -> None:
    # the leader ignores SIGTERM (so SIGKILL is needed), and leaves a grandchild sleeping
    command = "trap '' TERM; sh -c 'sleep 60 & echo $! > grandchild.pid; wait' & sleep 60; wait"
    starts: list[JobStart] = []

    async def main() -> JobResult:
        # pids written by the job are host pids only outside a PID namespace (test_sandbox.py: inside one)
        backend = LocalBackend(SlotPool.cpu_only(1), grace_s=0.5, sandbox="off")
        handle = await backend.submit(spec(tmp_path, "hang", command, timeout_s=1), starts.append)
        return await backend.wait(handle)

    t0 = time.monotonic()
    result = run(main())
    assert result.timed_out and not result.cancelled and result.exit_code is None
    assert 1.0 <= time.monotonic() - t0 < 5
    assert len(starts) == 1 and starts[0].pid is not None
    assert wait_gone(int((tmp_path / "grandchild.pid").read_text()))
    assert not group_alive(starts[0].pid)


def test_sigterm_comes_first_so_a_job_can_exit_cleanly(tmp_path: Path) -> None:
    command = "trap 'echo terminated > term.txt; exit 3' TERM; sleep 60 & wait"

    async def main() -> JobResult:
        backend = LocalBackend(SlotPool.cpu_only(1), grace_s=5)
        return await backend.wait(await backend.submit(spec(tmp_path, "term", command, timeout_s=0.5)))

    t0 = time.monotonic()
    result = run(main())
    assert result.timed_out
    assert (tmp_path / "term.txt").read_text().strip() == "terminated"
    assert time.monotonic() - t0 < 4  # did not sit out the 5 s grace: it exited on SIGTERM


def test_normal_exit_writes_logs_and_kills_leftover_children(tmp_path: Path) -> None:
    command = "echo to-out; echo to-err >&2; sleep 60 & echo $! > bg.pid; exit 0"
    starts: list[JobStart] = []

    async def main() -> tuple[JobResult, tuple[Path, Path]]:
        backend = LocalBackend(SlotPool.cpu_only(1), sandbox="off")  # host pids: see above
        handle = await backend.submit(spec(tmp_path, "leftover", command), starts.append)
        return await backend.wait(handle), backend.logs(handle)

    result, (out, err) = run(main())
    assert result.exit_code == 0 and not result.timed_out and result.error is None
    assert (out, err) == (result.stdout_path, result.stderr_path) == (starts[0].stdout_path, starts[0].stderr_path)
    assert out.read_text() == "to-out\n" and err.read_text() == "to-err\n"
    assert wait_gone(int((tmp_path / "bg.pid").read_text()))


def test_exit_code_and_missing_workspace(tmp_path: Path) -> None:
    async def main() -> tuple[JobResult, JobResult]:
        backend = LocalBackend(SlotPool.cpu_only(2))
        failing = await backend.submit(spec(tmp_path, "fails", "exit 7"))
        nowhere = JobSpec("nowhere", tmp_path / "missing", "true", 5, log_dir=tmp_path / "logs" / "nowhere")
        missing = await backend.submit(nowhere)
        return await backend.wait(failing), await backend.wait(missing)

    failed, missing = run(main())
    assert failed.exit_code == 7 and failed.error is None
    assert missing.error is not None and "could not start" in missing.error


def test_a_failing_on_start_still_kills_the_job(tmp_path: Path) -> None:
    pids: list[int] = []

    def on_start(s: JobStart) -> None:
        assert s.pid is not None
        pids.append(s.pid)
        raise RuntimeError("store is down")

    async def main() -> None:
        backend = LocalBackend(SlotPool.cpu_only(1))
        handle = await backend.submit(spec(tmp_path, "cb", "sleep 60"), on_start)
        with pytest.raises(RuntimeError, match="store is down"):
            await backend.wait(handle)
        assert backend.pool.free_cpu_slots == 1  # the lease came back

    run(main())
    assert wait_gone(pids[0])


# ------------------------------------------------------------------------------------------ slots


def _recorder(name: str, hold_s: float) -> str:
    # start line: CUDA_VISIBLE_DEVICES and time; end line: time
    return f'echo "[$CUDA_VISIBLE_DEVICES] $(date +%s.%N)" > {name}; sleep {hold_s}; date +%s.%N >> {name}'


def _read_record(path: Path) -> tuple[list[int], float, float]:
    first, second = path.read_text().splitlines()
    devices, start = first.rsplit(" ", 1)
    ids = [int(g) for g in devices.strip("[]").split(",") if g]
    return ids, float(start), float(second)


def test_gpu_jobs_never_share_a_gpu(tmp_path: Path) -> None:
    needs = [1, 2, 1, 1, 2, 1, 2, 1, 1, 2, 1, 1]
    starts: dict[str, JobStart] = {}

    async def main() -> list[JobResult]:
        backend = LocalBackend(SlotPool([0, 1, 2, 3]))
        handles = []
        for i, k in enumerate(needs):
            job = spec(tmp_path, f"g{i}", _recorder(f"rec{i}.txt", 0.25), gpus=k)
            handles.append(await backend.submit(job, lambda s: starts.__setitem__(s.job_id, s)))
        return [await backend.wait(h) for h in handles]

    results = run(main())
    records = [_read_record(tmp_path / f"rec{i}.txt") for i in range(len(needs))]
    for i, (ids, _, _) in enumerate(records):
        assert len(ids) == needs[i] == len(set(ids))
        assert tuple(ids) == results[i].gpu_ids == starts[f"g{i}"].gpu_ids
    for i, (ids_a, start_a, end_a) in enumerate(records):
        for j, (ids_b, start_b, end_b) in enumerate(records[i + 1 :], i + 1):
            overlap_in_time = start_a < end_b and start_b < end_a
            assert not (overlap_in_time and set(ids_a) & set(ids_b)), f"jobs {i} and {j} shared a GPU"
    max_parallel = max(sum(s <= t < e for _, s, e in records) for _, t, _ in records)
    assert max_parallel >= 2  # the pool really ran jobs side by side


def test_cpu_slots_bound_concurrency(tmp_path: Path) -> None:
    async def main() -> None:
        backend = LocalBackend(SlotPool.cpu_only(2))
        handles = [await backend.submit(spec(tmp_path, f"c{i}", _recorder(f"c{i}.txt", 0.2))) for i in range(6)]
        for h in handles:
            await backend.wait(h)

    run(main())
    records = [_read_record(tmp_path / f"c{i}.txt") for i in range(6)]
    assert all(ids == [] for ids, _, _ in records)  # CPU jobs see CUDA_VISIBLE_DEVICES=""
    assert max(sum(s <= t < e for _, s, e in records) for _, t, _ in records) == 2


# ----------------------------------------------------------------------------------------- cancel


def test_cancel_running_and_queued_jobs(tmp_path: Path) -> None:
    starts: list[JobStart] = []

    async def main() -> tuple[JobResult, JobResult]:
        backend = LocalBackend(SlotPool.cpu_only(1), grace_s=0.5)
        started = asyncio.Event()

        def on_start(s: JobStart) -> None:
            starts.append(s)
            started.set()

        running = await backend.submit(spec(tmp_path, "running", "sleep 60 & sleep 60; wait"), on_start)
        queued = await backend.submit(spec(tmp_path, "queued", "touch queued-ran"), on_start)
        await started.wait()
        await backend.cancel(queued)
        await backend.cancel(running)
        return await backend.wait(running), await backend.wait(queued)

    t0 = time.monotonic()
    running, queued = run(main())
    assert time.monotonic() - t0 < 5
    assert running.cancelled and not running.timed_out and running.exit_code is None
    assert queued.cancelled and queued.gpu_ids == ()
    assert [s.job_id for s in starts] == ["running"] and not (tmp_path / "queued-ran").exists()
    assert starts[0].pid is not None and not group_alive(starts[0].pid)


def test_close_cancels_everything_and_handles_are_checked(tmp_path: Path) -> None:
    async def main() -> list[JobResult]:
        backend = LocalBackend(SlotPool.cpu_only(1), grace_s=0.5)
        handles = [await backend.submit(spec(tmp_path, f"j{i}", "sleep 60")) for i in range(3)]
        with pytest.raises(ValueError, match="already submitted"):
            await backend.submit(spec(tmp_path, "j0", "true"))
        with pytest.raises(KeyError, match="unknown job"):
            await backend.wait("nope")
        await asyncio.sleep(0.2)
        await backend.close()
        return [await backend.wait(h) for h in handles]

    t0 = time.monotonic()
    assert all(r.cancelled for r in run(main()))
    assert time.monotonic() - t0 < 5


def test_kill_stale_job_checks_the_job_id(tmp_path: Path) -> None:
    env = {**os.environ, "IDEALAB_JOB_ID": "stale-1"}
    command = ["sh", "-c", "sleep 60 & echo $!; sleep 60"]
    proc = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        child = int(proc.stdout.readline())  # once this is printed, the job runs with its own environment
        assert not kill_stale_job(proc.pid, "stale-10")  # another job's id: a reused pgid is left alone
        assert proc.poll() is None
        assert kill_stale_job(proc.pid, "stale-1")
        assert proc.wait(timeout=5) == -9 and wait_gone(child)
        assert not kill_stale_job(proc.pid, "stale-1")  # nothing left to kill
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


# ------------------------------------------------------------------------------------- environment

CREDENTIALS = {
    "OPENAI_API_KEY": "sk-planted-1",
    "MY_SECRET_THING": "planted-2",
    "GITHUB_TOKEN": "planted-3",
    "DB_PASSWORD": "planted-4",
    "ANTHROPIC_BASE_URL": "http://planted-5.invalid",
}


def test_job_environment_has_no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HARMLESS_SETTING", "dropped")  # not on the allow-list: dropped, whatever its name
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    extra = {"RUN_TAG": "${IDEALAB_JOB_ID}-tag", "LEAK": "${OPENAI_API_KEY}", "SNEAKY_TOKEN": "x"}
    command = "env > env.txt; python -c 'import sys; print(sys.executable)' > exe.txt"

    async def main() -> JobResult:
        backend = LocalBackend(SlotPool.cpu_only(1))
        job = JobSpec("envjob", tmp_path, command, 20, env=extra, log_dir=tmp_path / "logs")
        return await backend.wait(await backend.submit(job))

    assert run(main()).exit_code == 0
    dump = (tmp_path / "env.txt").read_text()
    env = dict(line.split("=", 1) for line in dump.splitlines() if "=" in line)
    for name, value in CREDENTIALS.items():
        assert name not in env and value not in dump
    assert "SNEAKY_TOKEN" not in env
    assert "HARMLESS_SETTING" not in env and env["OMP_NUM_THREADS"] == "3" and env["RUN_TAG"] == "envjob-tag"
    assert env["IDEALAB_JOB_ID"] == "envjob" and env["CUDA_VISIBLE_DEVICES"] == ""
    assert env["IDEALAB_NUM_GPUS"] == "0" and env["PYTHONUNBUFFERED"] == "1" and "IDEALAB_DATA_DIR" in env
    assert Path((tmp_path / "exe.txt").read_text().strip()) == Path(sys.executable)


def test_job_environment_sets_leased_gpus_and_interpreter_first() -> None:
    base = {"PATH": "/usr/bin:/bin", "AWS_REGION": "x", "aws_secret": "y", "KEEP": "1", "TOKENIZERS_PARALLELISM": "0"}
    env = job_environment(
        {"WORLD": "${IDEALAB_NUM_GPUS}", "GPUS": "${CUDA_VISIBLE_DEVICES}"}, [3, 1], "j", base, allow=("KEEP",)
    )
    assert env["CUDA_VISIBLE_DEVICES"] == "3,1" and env["WORLD"] == "2" and env["GPUS"] == "3,1"
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert "AWS_REGION" not in env and "aws_secret" not in env and env["KEEP"] == "1"
    assert env["TOKENIZERS_PARALLELISM"] == "0"  # looks like a credential, is not one
    assert scrubbed_environ({"HF_TOKEN": "a", "GOOGLE_API_KEY": "b", "DEEPSEEK_BASE": "c", "HOME": "/h"}) == {
        "HOME": "/h"
    }


def test_copy_environment_and_hash_files(tmp_path: Path) -> None:
    src = tmp_path / "env"
    (src / "__pycache__").mkdir(parents=True)
    (src / ".git").mkdir()
    (src / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"x")
    (src / "stale.pyc").write_bytes(b"x")
    (src / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (src / "run.sh").chmod(0o755)
    (src / "data").mkdir()
    (src / "data" / "eval.py").write_text("print(1)\n")
    dest = copy_environment(src, tmp_path / "work")
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == [
        "data",
        "data/eval.py",
        "run.sh",
    ]
    assert os.access(dest / "run.sh", os.X_OK)
    before = hash_files(dest, ["data/eval.py", "run.sh", "absent.py"])
    assert before == hash_files(src, ["data/eval.py", "run.sh", "absent.py"])
    assert before["absent.py"] == MISSING_FILE_HASH != before["run.sh"]
    (dest / "data" / "eval.py").write_text("print(2)\n")
    (dest / "run.sh").unlink()
    after = hash_files(dest, ["data/eval.py", "run.sh"])
    assert after["data/eval.py"] != before["data/eval.py"] and after["run.sh"] == MISSING_FILE_HASH

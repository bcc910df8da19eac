"""The local backend's `reattach`: after an orchestrator is SIGKILLed, a new one waits for the jobs it left
running (holding their GPUs again) or collects those that ended meanwhile; a job gone without a result is
reported gone. The first orchestrator is a real process, killed for real: after the job started, or at the
worst moment, right after its supervisor was spawned and before its handle could be stored (then the new
one knows only the handle `claim` gave)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from idealab.executor.base import JobResult, JobSpec
from idealab.executor.bwrap import SandboxPolicy
from idealab.executor.local import LocalBackend
from idealab.executor.slots import SlotPool

GATED = "sh -c 'echo ran >> runs; while [ ! -e go ]; do sleep 0.05; done; echo finished'"  # until told

ORCHESTRATOR = """
import asyncio, os, signal, sys
from pathlib import Path
from idealab.executor.base import JobSpec
from idealab.executor.bwrap import SandboxPolicy
from idealab.executor.local import LocalBackend
from idealab.executor.slots import SlotPool

async def main():
    backend = LocalBackend(SlotPool([0, 1]), sandbox="off")
    spec = JobSpec("adopted", Path(sys.argv[1]), sys.argv[2], 60, 1, log_dir=Path(sys.argv[1]) / "logs",
                   sandbox=SandboxPolicy(mode="off"))
    if sys.argv[3] == "crash":  # SIGKILLed once the job exists, before anything could store its handle
        print(backend.claim(spec), flush=True)
        await backend.submit(spec, lambda start: os.kill(os.getpid(), signal.SIGKILL))
    else:
        await backend.submit(spec, lambda start: print(start.handle, flush=True))
    await asyncio.Event().wait()  # until SIGKILLed

asyncio.run(main())
"""


def spec(workspace: Path) -> JobSpec:
    return JobSpec("adopted", workspace, GATED, 60, 1, log_dir=workspace / "logs", sandbox=SandboxPolicy(mode="off"))


def started_then_killed(workspace: Path, when: str = "started") -> str:
    """Start the gated job from an orchestrator process, SIGKILL that process; the job's handle (`when` is
    "crash": the pending one, all that was known when the process died right after spawning the job)."""
    argv = [sys.executable, "-c", ORCHESTRATOR, str(workspace), GATED, when]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    handle = proc.stdout.readline().decode().strip()
    if when == "crash":
        assert proc.wait(timeout=30) == -signal.SIGKILL  # it killed itself in on_start
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return handle


def wait_until_ended(workspace: Path) -> None:
    (workspace / "go").touch()
    deadline = time.time() + 30
    while not (workspace / "logs" / "exit.json").exists():  # it ends with no orchestrator
        assert time.time() < deadline
        time.sleep(0.05)


@pytest.mark.parametrize("when", ["started", "crash"])
def test_a_running_job_is_waited_for_holding_its_gpu(tmp_path: Path, when: str) -> None:
    """`crash`: known only by the pending handle, the job is found by its log directory and id, and its GPU
    read from its supervisor's environment."""
    handle = started_then_killed(tmp_path, when)
    assert handle == "local:pending" if when == "crash" else handle.startswith("local:") and handle.endswith(":0")

    async def main() -> tuple[JobResult, tuple[int, ...], tuple[int, ...]]:
        pool = SlotPool([0, 1])
        backend = LocalBackend(pool, sandbox="off")
        adopted = await backend.reattach(spec(tmp_path), handle)
        assert adopted is not None
        held = pool.free_gpus  # GPU 0 is the running job's again
        (tmp_path / "go").touch()
        result = await backend.wait(adopted)
        return result, held, pool.free_gpus

    result, held, after = asyncio.run(asyncio.wait_for(main(), 60))
    assert held == (1,) and after == (0, 1)
    assert result.exit_code == 0 and result.gpu_ids == (0,) and result.stdout_path.read_text() == "finished\n"
    assert (tmp_path / "runs").read_text() == "ran\n"  # once: not started again


@pytest.mark.parametrize("when", ["started", "crash"])
def test_a_job_that_ended_meanwhile_is_collected(tmp_path: Path, when: str) -> None:
    handle = started_then_killed(tmp_path, when)
    wait_until_ended(tmp_path)

    async def main() -> JobResult:
        backend = LocalBackend(SlotPool([0, 1]), sandbox="off")
        adopted = await backend.reattach(spec(tmp_path), handle)
        assert adopted is not None
        return await backend.wait(adopted)

    result = asyncio.run(asyncio.wait_for(main(), 30))
    assert result.exit_code == 0 and result.stdout_path.read_text() == "finished\n"
    assert (tmp_path / "runs").read_text() == "ran\n"


def test_a_job_gone_without_a_result_is_reported_gone(tmp_path: Path) -> None:
    async def main() -> str | None:
        backend = LocalBackend(SlotPool([0, 1]), sandbox="off")
        return await backend.reattach(spec(tmp_path), "local:999999999:0")  # no such process, no exit.json

    assert asyncio.run(main()) is None


def test_a_claimed_job_that_never_started_is_reported_gone(tmp_path: Path) -> None:
    async def main() -> str | None:
        backend = LocalBackend(SlotPool([0, 1]), sandbox="off")
        return await backend.reattach(spec(tmp_path), backend.claim(spec(tmp_path)))

    assert asyncio.run(main()) is None and not (tmp_path / "runs").exists()

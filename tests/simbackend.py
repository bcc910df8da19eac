"""An in-process backend for testing the search loop without processes: jobs are asyncio sleeps.

It honours the same slot pool as the local backend and writes the job's stdout to its log file, so the
real runner reads and judges it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from idealab.executor.base import JobResult, JobSpec, JobStart, OnStart
from idealab.executor.slots import SlotPool

# (duration_s, stdout text, exit code) for a job, decided from its workspace
Script = Callable[[JobSpec], tuple[float, str, int]]


@dataclass
class SimBackend:
    pool: SlotPool
    script: Script
    started: list[tuple[str, float]] = field(default_factory=list)
    intervals: list[tuple[float, float]] = field(default_factory=list)
    _tasks: dict[str, asyncio.Task[JobResult]] = field(default_factory=dict)
    name = "sim"

    def claim(self, spec: JobSpec) -> str:
        return f"sim:{spec.job_id}"

    async def reattach(self, spec: JobSpec, handle: str) -> str | None:
        return None  # its jobs are tasks of the process that ran them: gone after a restart

    async def submit(self, spec: JobSpec, on_start: OnStart | None = None) -> str:
        self._tasks[spec.job_id] = asyncio.create_task(self._run(spec, on_start))
        return spec.job_id

    async def _run(self, spec: JobSpec, on_start: OnStart | None) -> JobResult:
        log_dir = spec.log_dir or spec.workspace.parent / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        out, err = log_dir / "stdout.log", log_dir / "stderr.log"
        async with self.pool.lease(spec.gpus) as lease:
            start = time.time()
            self.started.append((spec.job_id, start))
            if on_start:
                on_start(JobStart(spec.job_id, start, lease.gpu_ids, None, out, err))
            duration, text, code = self.script(spec)
            await asyncio.sleep(duration)
            out.write_text(text)
            err.write_text("" if code == 0 else "Traceback: simulated crash\n")
            end = time.time()
            self.intervals.append((start, end))
        return JobResult(spec.job_id, start, end, code, False, lease.gpu_ids, out, err)

    async def wait(self, handle: str) -> JobResult:
        return await self._tasks[handle]

    async def cancel(self, handle: str) -> None:
        self._tasks[handle].cancel()

    def logs(self, handle: str) -> tuple[Path, Path]:
        raise NotImplementedError

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()

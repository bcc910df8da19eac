"""Slot utilisation of idealab's event-driven search versus an epoch-barrier schedule like the original's.

Both schedules run the same simulated search with real processes on K CPU slots: jobs that sleep for
varied durations (set by a knob the mutate ideator changes), an ideator and an implementer that take a
simulated LLM latency. Utilisation = busy slot time / (K x makespan), makespan from the search's start
to its last result.

    python benchmarks/utilisation.py [--slots 8] [--ideas 80] [--epochs 3] [--mean-job-s 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

from idealab.executor.local import LocalBackend
from idealab.executor.runner import run_job
from idealab.executor.sandbox import copy_environment
from idealab.executor.slots import SlotPool
from idealab.ideators.base import IdeaKind, IdeaProposal, IdeationRequest, Implementation
from idealab.ideators.mutate import MutateIdeator
from idealab.ideators.ready import ReadyDiffImplementer
from idealab.manifest import Manifest, load_manifest
from idealab.patching import write_changes
from idealab.search.loop import Search, SearchConfig
from idealab.store import Store

MANIFEST = """
name = "sleepy"
description = "Simulated training: sleeps for a duration set by a knob."
[run]
command = "python train.py"
timeout_s = 120
[metric]
name = "loss"
goal = "minimize"
[files]
editable = ["train.py"]
[knobs.SPEED]
file = "train.py"
low = 0.25
high = 1.75
"""
TRAIN = """import os, time
SPEED = 1.0
time.sleep(float(os.environ["MEAN_JOB_S"]) * SPEED)
print('@metric {"name": "loss", "value": %r}' % abs(SPEED - 0.8))
"""


class SlowIdeator(MutateIdeator):
    """The mutate ideator behind a simulated LLM latency per call."""

    def __init__(self, latency_s: float) -> None:
        super().__init__()
        self.latency_s = latency_s

    async def propose(self, manifest: Manifest, request: IdeationRequest) -> list[IdeaProposal]:
        await asyncio.sleep(self.latency_s)
        return await super().propose(manifest, request)


class SlowImplementer(ReadyDiffImplementer):
    def __init__(self, latency_s: float, seed: int) -> None:
        self.latency_s = latency_s
        self.rng = random.Random(seed)

    async def implement(
        self, manifest: Manifest, idea_id: int, proposal: IdeaProposal, workspace: Path
    ) -> Implementation:
        await asyncio.sleep(self.latency_s * self.rng.uniform(0.5, 1.5))
        return await super().implement(manifest, idea_id, proposal, workspace)


def utilisation(intervals: list[tuple[float, float]], slots: int, start: float, end: float) -> float:
    busy = sum(b - a for a, b in intervals)
    return busy / (slots * (end - start))


class RecordingBackend(LocalBackend):
    def __init__(self, pool: SlotPool) -> None:
        super().__init__(pool)
        self.intervals: list[tuple[float, float]] = []

    async def wait(self, handle: str):  # type: ignore[no-untyped-def]
        result = await super().wait(handle)
        self.intervals.append((result.started_at, result.finished_at))
        return result


async def idealab_schedule(env: Path, work: Path, args: argparse.Namespace) -> float:
    manifest = load_manifest(env)
    store = Store.open(work)
    run = store.create_run("sleepy", str(env), None, {}, {"metric": {"goal": "minimize", "name": "loss"}})
    backend = RecordingBackend(SlotPool.cpu_only(args.slots))
    config = SearchConfig(epochs=args.epochs, ideas_per_epoch=args.ideas, seed=0, next_epoch_at=0.5)
    search = Search(
        manifest,
        store,
        run.id,
        backend,
        SlowIdeator(args.ideation_s),
        SlowImplementer(args.implement_s, 0),
        config,
        work,
    )
    start = time.time()
    await search.run()
    end = time.time()
    await backend.close()
    store.close()
    return utilisation(backend.intervals, args.slots, start, end)


async def barrier_schedule(env: Path, work: Path, args: argparse.Namespace) -> float:
    """The released code's shape: ideate the epoch, implement all of it, run all of it, wait, repeat."""
    manifest = load_manifest(env)
    backend = RecordingBackend(SlotPool.cpu_only(args.slots))
    ideator, implementer = SlowIdeator(args.ideation_s), SlowImplementer(args.implement_s, 0)
    threads = asyncio.Semaphore(10)
    start = time.time()
    for epoch in range(args.epochs):
        proposals: list[IdeaProposal] = []
        while len(proposals) < args.ideas:
            request = IdeationRequest(
                epoch,
                IdeaKind.EXPLORE,
                min(10, args.ideas - len(proposals)),
                [],
                [],
                None,
                epoch * 1000 + len(proposals),
            )
            proposals += await ideator.propose(manifest, request)

        async def implement(i: int, proposal: IdeaProposal, epoch: int = epoch) -> Path:
            async with threads:
                workspace = copy_environment(manifest.root, work / f"e{epoch}-{i}" / "code")
                impl = await implementer.implement(manifest, i, proposal, workspace)
                write_changes(workspace, impl.changes)
                return workspace

        workspaces = await asyncio.gather(*(implement(i, p) for i, p in enumerate(proposals)))
        await asyncio.gather(
            *(run_job(backend, manifest, ws, f"e{epoch}-{i}", ws.parent / "logs") for i, ws in enumerate(workspaces))
        )
    end = time.time()
    await backend.close()
    return utilisation(backend.intervals, args.slots, start, end)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--ideas", type=int, default=80)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--mean-job-s", type=float, default=1.0)
    parser.add_argument("--ideation-s", type=float, default=0.5, help="simulated latency of one ideator call")
    parser.add_argument("--implement-s", type=float, default=1.0, help="mean simulated implementer latency")
    args = parser.parse_args()

    import os

    os.environ["MEAN_JOB_S"] = str(args.mean_job_s)
    with tempfile.TemporaryDirectory(prefix="idealab-bench-") as tmp:
        env = Path(tmp) / "sleepy"
        env.mkdir()
        (env / "idealab.toml").write_text(MANIFEST)
        (env / "train.py").write_text(TRAIN)
        ours = asyncio.run(idealab_schedule(env, Path(tmp) / "idealab", args))
        theirs = asyncio.run(barrier_schedule(env, Path(tmp) / "barrier", args))
    print(
        f"{args.slots} slots, {args.epochs} epochs x {args.ideas} ideas, mean job {args.mean_job_s:g} s, "
        f"ideation {args.ideation_s:g} s/call, implementation ~{args.implement_s:g} s/idea"
    )
    print(f"{'schedule':<28}{'utilisation':>12}")
    print(f"{'idealab (event-driven)':<28}{ours:>12.3f}")
    print(f"{'epoch barrier (original)':<28}{theirs:>12.3f}")
    print(f"ratio idealab / barrier: {ours / theirs:.2f}x")


if __name__ == "__main__":
    main()

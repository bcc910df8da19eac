"""How often the declared winner is truly no better than the baseline: single-run versus confirmed search.

The landscape is tests/envs/noisy (loss = 2 - GAIN + Gaussian noise of sd 0.1 drawn from the job's
IDEALAB_SEED). Each search proposes N ideas in one epoch:
- "null": every idea changes DUMMY only (true effect zero), so any declared winner is a false discovery;
- "one real": the same, except one idea (at a random place) has a true gain of 3 noise sd.
Each repetition runs the same search twice with the same run seed (so the ideas' first runs draw the
same noise): single-run (`confirm_top=0`: a win is a first result better than the measured baseline's
mean) and confirmed (defaults: top 3 confirmed with 3 seeds, Welch one-sided at 5%). The loop, the store
and the job runner are the real ones; jobs run in-process on the simulated backend (tests/simbackend.py)
for speed, computing the same metric as the environment's score.py.

    python benchmarks/false_discoveries.py [--reps 100] [--ideas 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from idealab.executor.base import JobSpec
from idealab.executor.slots import SlotPool
from idealab.ideators.base import IdeaProposal, IdeationRequest
from idealab.ideators.ready import ReadyDiffImplementer
from idealab.manifest import Goal, load_manifest
from idealab.search.journal import Journal
from idealab.search.loop import Search, SearchConfig
from idealab.store import Store

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the simulated backend
sys.path.insert(0, str(ROOT / "tests" / "envs" / "noisy"))  # the environment's own noise
from score import noise  # noqa: E402

from simbackend import SimBackend  # noqa: E402

NOISY = ROOT / "tests" / "envs" / "noisy"
SD = 0.1
EFFECT = 3 * SD


def change(name: str, value: float) -> str:
    line = 7 if name == "GAIN" else 8
    return f"--- a/train.py\n+++ b/train.py\n@@ -{line},1 +{line},1 @@\n-{name} = 0.0\n+{name} = {value}\n"


class Landscape:
    """N ideas: zero-effect DUMMY changes, and optionally one real GAIN change at a random position."""

    name = "landscape"

    def __init__(self, n: int, real_at: int | None) -> None:
        self.ideas = [
            (f"Set GAIN to {EFFECT}.", change("GAIN", EFFECT))
            if i == real_at
            else (f"Set DUMMY to {i + 1}.", change("DUMMY", float(i + 1)))
            for i in range(n)
        ]

    async def propose(self, manifest: object, request: IdeationRequest) -> list[IdeaProposal]:
        fresh = [(text, diff) for text, diff in self.ideas if text not in request.avoid]  # batches go on in order
        return [IdeaProposal(text, diff) for text, diff in fresh[: request.count]]


def script(spec: JobSpec) -> tuple[float, str, int]:
    """The environment's metric, computed in-process: 2 - GAIN + noise(IDEALAB_SEED)."""
    gain = float(re.search(r"^GAIN = (.+)$", (spec.workspace / "train.py").read_text(), re.M).group(1))  # type: ignore[union-attr]
    loss = 2.0 - gain + noise(int(spec.env["IDEALAB_SEED"]), SD)
    return 0.0, "@metric " + json.dumps({"name": "loss", "value": loss}) + "\n", 0


@dataclass
class Outcome:
    winner_real: bool | None  # None: no winner declared
    jobs: int


def search_once(workdir: Path, n: int, real_at: int | None, seed: int, confirm_top: int) -> Outcome:
    store = Store.open(workdir)
    run = store.create_run("noisy", str(NOISY), None, {}, {"metric": {"goal": "minimize", "name": "loss"}})
    config = SearchConfig(epochs=1, ideas_per_epoch=n, seed=seed, confirm_top=confirm_top)
    search = Search(
        load_manifest(NOISY), store, run.id, SimBackend(SlotPool.cpu_only(4), script), Landscape(n, real_at),
        ReadyDiffImplementer(), config, workdir, job_slots=4,
    )  # fmt: skip
    asyncio.run(search.run())
    journal = Journal.load(store, run.id, Goal.MINIMIZE, None, config.trials_needed)
    winners = journal.winners()
    jobs = len(store.jobs())
    store.close()
    if not winners:
        return Outcome(None, jobs)
    return Outcome(winners[0].idx == real_at, jobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=100)
    parser.add_argument("--ideas", type=int, default=20)
    args = parser.parse_args()
    rng = random.Random(0)
    started = time.perf_counter()
    print(f"noisy landscape: {args.ideas} ideas per search, noise sd {SD}, real effect {EFFECT:g} (3 sd); "
          f"{args.reps} repetitions per cell, each mode with the same run seeds")
    header = ("landscape", "mode", "winner declared", "false winner", "true winner", "jobs/search")
    widths = (16, 13, 12, 12)
    print(f"{header[0]:<10} {header[1]:<11} " + " ".join(f"{h:>{w}}" for h, w in zip(header[2:], widths, strict=True)))
    with tempfile.TemporaryDirectory(prefix="idealab-fdr-") as tmp:
        for landscape in ("null", "one real"):
            results: dict[str, list[Outcome]] = {"single-run": [], "confirmed": []}
            for rep in range(args.reps):
                real_at = None if landscape == "null" else rng.randrange(args.ideas)
                for mode, top in (("single-run", 0), ("confirmed", 3)):
                    workdir = Path(tmp) / f"{landscape}-{rep}-{mode}".replace(" ", "_")
                    results[mode].append(search_once(workdir, args.ideas, real_at, seed=1000 + rep, confirm_top=top))
            for mode, outcomes in results.items():
                declared = [o for o in outcomes if o.winner_real is not None]
                false = sum(o.winner_real is False for o in outcomes)
                true = sum(o.winner_real is True for o in outcomes)
                jobs = sum(o.jobs for o in outcomes) / len(outcomes)
                n = len(outcomes)
                print(f"{landscape:<10} {mode:<11} {len(declared) / n:>16.0%} {false / n:>13.0%} "
                      f"{true / n if landscape != 'null' else float('nan'):>12.0%} {jobs:>12.1f}")
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()

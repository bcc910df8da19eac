"""charlm before and after the scoring contract: the same val_loss, and what separate scoring costs per job.

    python benchmarks/scoring_overhead.py [--seeds 3] [--preset cpu-smoke] [--old-ref 62c43e9]

"old" is charlm as it was before the scoring contract (read from the git commit `--old-ref` of this
repository: training and evaluation in one process, the training loop budgeted on its own clock, the
metric printed by training); "new" is charlm as it is now (training saves the state dict, a separate
scoring process prints the metric, the executor measures and enforces the CPU-time budget). Both run
through `run_job` and the local backend exactly as a search runs them (sandboxed where bubblewrap is
usable), alternating old and new for each seed so that both see the same machine load. Prints, per run,
the status, val_loss, training steps, job wall-clock seconds and (new) the scoring step's seconds, then the
mean val_loss of each side with its spread, the difference, and the extra seconds per job.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from idealab.executor.local import LocalBackend
from idealab.executor.runner import Outcome, copy_omits, run_job
from idealab.executor.sandbox import copy_environment
from idealab.executor.slots import SlotPool
from idealab.manifest import load_manifest

REPO = Path(__file__).resolve().parents[1]
ENV_REL = "src/idealab/envs/charlm"
_STEPS = re.compile(r"^trained (\d+) steps", re.MULTILINE)


@dataclass
class Run:
    side: str
    seed: int
    status: str
    val_loss: float | None
    steps: int | None
    job_s: float
    scoring_s: float | None
    job_cpu_s: float
    scoring_cpu_s: float | None


def old_env(ref: str, dest: Path) -> Path:
    """charlm's files at commit `ref`, written to `dest`."""
    names = subprocess.run(["git", "ls-tree", "--name-only", ref, ENV_REL + "/"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.split()  # fmt: skip
    dest.mkdir(parents=True)
    for name in names:
        blob = subprocess.run(["git", "show", f"{ref}:{name}"], cwd=REPO, check=True, capture_output=True).stdout
        (dest / Path(name).name).write_bytes(blob)
    return dest


async def one(side: str, env: Path, preset: str, seed: int, work: Path) -> Run:
    manifest = load_manifest(env, preset)
    job = f"{side}-{seed}"
    workspace = copy_environment(env, work / job / "code", omit=copy_omits(manifest))
    backend = LocalBackend(SlotPool.cpu_only(1))
    try:
        outcome: Outcome = await run_job(backend, manifest, workspace, job, work / job / "logs", seed=seed)
    finally:
        await backend.close()
    result = outcome.result
    steps = _STEPS.search(result.stdout_path.read_text(errors="replace"))
    scoring = result.scoring
    return Run(
        side, seed, outcome.status.value, outcome.metric, int(steps.group(1)) if steps else None,
        result.duration_s, scoring.finished_at - scoring.started_at if scoring is not None else None,
        result.cpu_s or 0.0, scoring.cpu_s if scoring is not None else None,
    )  # fmt: skip


def summary(runs: list[Run], side: str) -> tuple[float, float, float]:
    mine = [r for r in runs if r.side == side]
    losses = [r.val_loss for r in mine if r.val_loss is not None]
    spread = statistics.stdev(losses) if len(losses) > 1 else 0.0
    return statistics.mean(losses), spread, statistics.mean(r.job_s for r in mine)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--preset", default="cpu-smoke")
    parser.add_argument("--old-ref", default="62c43e9", help="a commit with charlm before the scoring contract")
    args = parser.parse_args()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="idealab-scoring-bench-") as tmp:
        work = Path(tmp)
        old = old_env(args.old_ref, work / "old-env")
        new = REPO / ENV_REL
        for seed in range(1, args.seeds + 1):
            for side, env in (("old", old), ("new", new)):
                run = asyncio.run(one(side, env, args.preset, seed, work))
                runs.append(run)
                scoring = f"{run.scoring_s:.1f} s ({run.scoring_cpu_s:.1f} CPU s)" if run.scoring_s else "-"
                print(f"{run.side} seed {run.seed}: {run.status} val_loss {run.val_loss} steps {run.steps} "
                      f"job {run.job_s:.1f} s ({run.job_cpu_s:.1f} CPU s) scoring {scoring}", flush=True)  # fmt: skip
    old_mean, old_sd, old_job = summary(runs, "old")
    new_mean, new_sd, new_job = summary(runs, "new")
    scoring_s = statistics.mean(r.scoring_s for r in runs if r.scoring_s is not None)
    scoring_cpu = statistics.mean(r.scoring_cpu_s for r in runs if r.scoring_cpu_s is not None)
    cpu = {side: statistics.mean(r.job_cpu_s for r in runs if r.side == side) for side in ("old", "new")}
    print(f"val_loss old {old_mean:.4f} ± {old_sd:.4f}, new {new_mean:.4f} ± {new_sd:.4f} "
          f"(difference {new_mean - old_mean:+.4f}; sd over seeds)")  # fmt: skip
    steps = {side: statistics.mean(r.steps for r in runs if r.side == side and r.steps) for side in ("old", "new")}
    print(f"training steps old {steps['old']:.0f}, new {steps['new']:.0f} (ratio {steps['new'] / steps['old']:.3f})")
    print(f"job wall-clock old {old_job:.1f} s, new {new_job:.1f} s: {new_job - old_job:+.1f} s per job "
          f"(ratio {new_job / old_job:.2f}); the scoring step itself {scoring_s:.1f} s")  # fmt: skip
    print(f"job CPU old {cpu['old']:.1f} s, new {cpu['new']:.1f} s: {cpu['new'] - cpu['old']:+.1f} CPU s per job "
          f"(ratio {cpu['new'] / cpu['old']:.2f}); the scoring step itself {scoring_cpu:.1f} CPU s")  # fmt: skip


if __name__ == "__main__":
    main()

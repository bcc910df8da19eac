"""A synthetic run of N finished experiments, written through the real Store API, for the scale benchmarks.

Each experiment is what an LLM search leaves behind: an idea (~300 characters, a payload with its seed,
parents and strategy), an implementer LLM call (a ~6 kB prompt, a ~1.5 kB answer), two code changes (one
rejected, one applied), the applied and final diff (~1.5 kB each), one job that started and finished with
ten metric values, and its stdout/stderr logs on disk; one in five failed with a 1 kB stderr tail as its
reason, one in fifty timed out. Every ten ideas have one ideation call (~10 kB prompt). Three baseline
repeats and confirmation trials (two more seeds for one idea in a hundred) are stored as the loop stores
them. The manifest is tests/envs/noisy's (loss, minimize), so a search can resume the run.

Building goes up in steps (100, then 1,000, then 10,000): each size is a copy of the one before, extended.
A cache directory keeps them between invocations (built once; several minutes for 10,000 on two cores).
While building, the store's writes per experiment are timed at each size (`writes.json` beside the run).

    python benchmarks/synthetic_run.py --cache DIR --sizes 100,1000,10000
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from pathlib import Path

from idealab.manifest import load_manifest
from idealab.metrics import MetricValue
from idealab.status import Status
from idealab.store import JobEnd, Store

ROOT = Path(__file__).resolve().parent.parent
ENV = ROOT / "tests" / "envs" / "noisy"
PER_EPOCH = 80
VERSION = 2  # bump when what is built changes, so stale caches are rebuilt

DIFF = "".join(
    f"@@ -{i * 10},3 +{i * 10},3 @@\n-old line {i} of train.py, as the environment has it\n"
    f"+new line {i} of train.py, changed by the idea\n context line {i}\n"
    for i in range(14)
)
REASON = "exit code 1\n" + "".join(f'  File "train.py", line {i}, in step: error text of the job\n' for i in range(16))
PROMPT = json.dumps([{"role": "user", "content": "the environment's files and rules " * 180}])
STDOUT = "".join(f"step {s} loss {3.0 - s / 100:.4f} lr 0.001 tokens/s 51234\n" for s in range(60))


def manifest_dict() -> dict[str, object]:
    manifest = load_manifest(ENV)
    return {"name": manifest.name, "metric": {"name": manifest.metric.name, "goal": manifest.metric.goal.value}}


def config() -> dict[str, object]:
    return {
        "seed": 0, "epochs": 10_000, "ideas_per_epoch": PER_EPOCH, "ideator": "llm", "model": "fake:model",
        "confirm_top": 3, "confirm_seeds": 3, "next_epoch_at": 0.5, "batch_size": 10,
    }  # fmt: skip


def start(workdir: Path) -> None:
    """A fresh run with its three baseline repeats, finished."""
    with Store.open(workdir) as store:
        run = store.create_run("noisy", str(ENV), None, config(), manifest_dict())
        for k in range(3):
            idea = store.add_idea(run.id, -1, k, "baseline", f"Baseline run {k + 1} of 3.", "baseline", {"seed": k})
            key = f"i{idea.id}-a1"
            store.add_job(idea.id, key, "python train.py", f"/w/b{k}", f"/w/b{k}/o", f"/w/b{k}/e")
            store.job_started(key, 1.7e9 + k, (), 100 + k)
            end = JobEnd(1.7e9 + k + 30, 0, False, "ok")
            store.finish_idea(idea.id, Status.OK, 2.0 + k / 100, None, 1.7e9 + k + 30, key, (), end, baseline=True)


def add_experiment(store: Store, run_id: int, workdir: Path, i: int, rng: random.Random) -> None:
    """Experiment number `i` (0-based) of the run, written as the loop writes it."""
    epoch, idx = divmod(i, PER_EPOCH)
    if idx % 10 == 0:
        extra = {"ideas": 10, "format": "text"}
        store.add_llm_call(run_id, "ideator", "fake", "model", PROMPT * 2, "ideas " * 500, 2500, 800, 0.02, 3.0,
                           extra=extra)  # fmt: skip
    text = f"Idea {i}: " + "replace the learning-rate schedule with a warm restart variant " * 5
    parents = [rng.randrange(1, i + 1)] if i else []
    payload = {"seed": rng.randrange(2**31), "parents": parents, "strategy": "exploit" if epoch else "initial"}
    idea = store.add_idea(run_id, epoch, idx, "exploit" if epoch else "initial", text, "llm", payload)
    store.update_idea(idea.id, status=Status.IMPLEMENTING)
    store.add_llm_call(run_id, "implementer", "fake", "model", PROMPT, DIFF, 1500, 400, 0.01, 2.0, idea_id=idea.id)
    store.add_code_change(idea.id, 1, 0, "diff", DIFF, "rejected", "hunk 3 does not apply")
    store.add_code_change(idea.id, 1, 1, "diff", DIFF, "applied", None)
    store.update_idea(idea.id, status=Status.READY, applied_diff=DIFF, final_diff=DIFF)
    key = f"i{idea.id}-a1"
    logs = workdir / "experiments" / f"{idea.id:05d}" / "logs" / key
    logs.mkdir(parents=True, exist_ok=True)
    store.add_job(idea.id, key, "python train.py", str(logs.parent.parent / "code"), str(logs / "stdout.log"),
                  str(logs / "stderr.log"))  # fmt: skip
    t = 1.7e9 + 100 + i * 40
    store.job_started(key, t, (i % 8,), 10_000 + i)
    store.update_idea(idea.id, status=Status.RUNNING, started_at=t)
    failed, timed_out = i % 5 == 0, i % 50 == 1
    (logs / "stdout.log").write_text(STDOUT)
    (logs / "stderr.log").write_text(REASON if failed else "")
    status = Status.FAILED if failed else Status.TIMEOUT if timed_out else Status.OK
    metric = None if status is not Status.OK else 2.0 - rng.random() * 0.1
    values = [MetricValue("loss", 3.0 - s / 10, s) for s in range(10)]
    end = JobEnd(t + 35, 1 if failed else None if timed_out else 0, timed_out, status.value)
    store.finish_idea(idea.id, status, metric, REASON if failed else "timed out" if timed_out else None, t + 35,
                      job_key=key, values=values, job_end=end)  # fmt: skip
    if metric is not None and i % 100 == 2:  # confirmation trials of one idea in a hundred
        for n in (1, 2):
            confirm = {"confirms": idea.id, "trial": n, "seed": rng.randrange(2**31)}
            trial = store.add_idea(run_id, -2, idea.id * 11 + n, "confirm", f"Confirmation run {n + 1} of 3.",
                                   "confirm", confirm)  # fmt: skip
            store.finish_idea(trial.id, Status.OK, metric + rng.gauss(0, 0.01), None, t + 40)


def extend(workdir: Path, have: int, want: int) -> float:
    """Add experiments `have` .. `want` - 1; returns the mean seconds of writes per experiment (the last
    hundred, at this size)."""
    rng = random.Random(have)
    with Store.open(workdir) as store:
        run = store.get_run()
        assert run is not None
        timed_from = max(have, want - 100)
        started = 0.0
        for i in range(have, want):
            if i == timed_from:
                started = time.perf_counter()
            add_experiment(store, run.id, workdir, i, rng)
        return (time.perf_counter() - started) / (want - timed_from)


def build(cache: Path, sizes: list[int]) -> dict[int, Path]:
    """The cached run directory of each size, built where missing."""
    root = cache / f"v{VERSION}"
    root.mkdir(parents=True, exist_ok=True)
    have, previous = 0, None
    found: dict[int, Path] = {}
    for n in sorted(sizes):
        workdir = root / f"n{n}"
        if not (workdir / "done").is_file():
            shutil.rmtree(workdir, ignore_errors=True)
            if previous is None:
                start(workdir)
            else:
                shutil.copytree(previous, workdir)
                (workdir / "done").unlink()
            print(f"building {n} experiments in {workdir} ...", flush=True)
            per_experiment = extend(workdir, have, n)
            (workdir / "writes.json").write_text(json.dumps({"experiments": n, "write_s": per_experiment}))
            (workdir / "done").write_text("")
        found[n], have, previous = workdir, n, workdir
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--sizes", default="100,1000,10000")
    args = parser.parse_args()
    for n, workdir in build(args.cache, [int(s) for s in args.sizes.split(",")]).items():
        print(n, workdir, (workdir / "writes.json").read_text())


if __name__ == "__main__":
    main()

"""nanogpt and grpo before and after the scoring contract: the same metric for the unmodified code, and the
cost of scoring in a separate process.

    python benchmarks/scoring_overhead_envs.py --env nanogpt --seeds 0 1 2 [--steps 60]
    python benchmarks/scoring_overhead_envs.py --env grpo --seeds 0
    python benchmarks/scoring_overhead_envs.py --env nanogpt --preset 1gpu --old-dir OLD --seeds 0 \
        --steps 150 --set NANOGPT_DATASET=shakespeare_bytes NANOGPT_VAL_SIZE=524288    (on a GPU)

For each seed it runs the environment's preset (default cpu-smoke) twice, side by side:
- old: the code of `--old-ref` (the last commit before the contract), which evaluates inside the training
  process and prints the metric there (`--old-dir`: that code exported beforehand, where git is missing);
- new: this checkout's training command (which saves the artefact), then its scorer in a fresh process.
Training is cut by an iteration count (nanogpt: --steps; grpo: its one step), not by the time budget, so
that both train exactly the same model from the same seed whatever the machine's load: the metrics must
then agree up to rounding. Prints the metric of each and the wall time of training (old: including its
in-process evaluation) and of scoring. Data: the prepared cpu-smoke data under IDEALAB_DATA_DIR (or
~/.cache/idealab), read in place.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from idealab.manifest import load_manifest  # noqa: E402

OLD_REF = "62c43e9"  # main just before nanogpt and grpo moved to the scoring contract
METRICS = {"nanogpt": "val_loss", "grpo": "eval_accuracy"}
TRAIN = {"nanogpt": "train_gpt.py", "grpo": "grpo.py"}
SCORE = {"nanogpt": "score.py", "grpo": "evaluate.py"}


def export_env(ref: str, env: str, dest: Path) -> Path:
    """The environment's directory as it is at git `ref`."""
    blob = subprocess.run(["git", "-C", str(REPO), "archive", ref, f"src/idealab/envs/{env}"],
                          capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(blob)) as tar:
        tar.extractall(dest, filter="data")
    return dest / "src" / "idealab" / "envs" / env


def metric(stdout: str, name: str, reduce: str) -> float:
    values = [json.loads(m)["value"] for m in re.findall(r"^@metric (\{.*\})$", stdout, re.MULTILINE)
              if json.loads(m)["name"] == name]
    if not values:
        raise SystemExit(f"no {name} metric line in:\n{stdout[-2000:]}")
    return max(values) if reduce == "max" else values[-1]


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[str, float]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} in {cwd} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc.stdout, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--env", choices=sorted(METRICS), required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=60, help="nanogpt: training iterations of every run")
    ap.add_argument("--old-ref", default=OLD_REF)
    ap.add_argument("--old-dir", type=Path, help="the old environment directory (instead of --old-ref)")
    ap.add_argument("--preset", default="cpu-smoke")
    ap.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE", help="environment overrides")
    args = ap.parse_args()
    manifest = load_manifest(REPO / "src" / "idealab" / "envs" / args.env, args.preset)
    reduce = manifest.metric.reduce.value
    base = {**os.environ, **manifest.run.env, "PYTHONUNBUFFERED": "1"}
    if manifest.run.gpus == 0:
        base["CUDA_VISIBLE_DEVICES"] = ""
    base.update(item.split("=", 1) for item in args.set)
    if args.env == "nanogpt":  # iterations, not time, end training: both runs train the same model
        base.update(NANOGPT_NUM_ITERATIONS=str(args.steps), NANOGPT_TIME_LIMIT_S="100000",
                    IDEALAB_BUDGET_S="100000", IDEALAB_BUDGET_CLOCK="wall")
    rows = []
    with tempfile.TemporaryDirectory(prefix="scoring-overhead-") as tmp:
        old_dir = args.old_dir or export_env(args.old_ref, args.env, Path(tmp) / "old")
        new_dir = REPO / "src" / "idealab" / "envs" / args.env
        for seed in args.seeds:
            env = {**base, "IDEALAB_SEED": str(seed)}
            old_out, old_wall = timed([sys.executable, TRAIN[args.env]], old_dir, env)
            out = Path(tmp) / f"artefact-{seed}"
            new_env = {**env, "IDEALAB_OUTPUT_DIR": str(out)}
            _, train_wall = timed([sys.executable, TRAIN[args.env]], new_dir, new_env)
            score_env = {k: v for k, v in env.items() if not k.startswith("IDEALAB_BUDGET")}
            score_out, score_wall = timed([sys.executable, SCORE[args.env]], new_dir,
                                          {**score_env, "IDEALAB_ARTEFACT_DIR": str(out)})
            row = (seed, metric(old_out, METRICS[args.env], reduce), metric(score_out, METRICS[args.env], reduce),
                   old_wall, train_wall, score_wall)
            rows.append(row)
            finals = [line for line in (old_out + score_out).splitlines() if line.startswith(("step:", "eval step"))]
            print("\n".join(finals[-4:]))
            print(f"seed {seed}: old {row[1]:.6f} new {row[2]:.6f} (diff {row[2] - row[1]:+.2e}); wall old "
                  f"train+eval {old_wall:.1f}s, new train {train_wall:.1f}s + score {score_wall:.1f}s", flush=True)
    olds, news = [r[1] for r in rows], [r[2] for r in rows]
    spread = statistics.stdev(olds) if len(olds) > 1 else float("nan")
    old_total = statistics.median(r[3] for r in rows)
    new_total = statistics.median(r[4] + r[5] for r in rows)
    gap = max(abs(a - b) for a, b in zip(olds, news, strict=True))
    print(f"{args.env} {args.preset}, {len(rows)} seeds: mean {METRICS[args.env]} old {statistics.mean(olds):.6f} "
          f"new {statistics.mean(news):.6f}; max |new - old| {gap:.2e}; seed-to-seed std (old) {spread:.2e}")
    print(f"median wall: old {old_total:.1f}s, new train + score {new_total:.1f}s, "
          f"new/old = {new_total / old_total:.2f}")


if __name__ == "__main__":
    main()

"""The red-team corpus (tests/redteam) through the real executor path, new guards beside the old ones.

Every case is an idea with a fixed code change (tests/redteam/hacks: reward hacks; tests/redteam/legit:
idea-style changes). Each environment's cases go through one search of one epoch, as `idealab run` runs
them: the ready-diff implementer (the change guards), the local backend (sandbox, limits), the runner's
classification, the store. Each case ends as refused (no acceptable change), a status, and the flags of
its result where the guards set any.

A hack is caught when it ends in anything but an unflagged `ok`; a legitimate change must end `ok` without
flags. "old" is the same corpus run in a temporary git worktree of --old-rev (the guards before issue 11),
with that checkout's idealab and environments, in a subprocess: both sides in one run.

    python benchmarks/reward_hacks.py                     # both sides, every environment
    python benchmarks/reward_hacks.py --envs charlm       # one environment
    python benchmarks/reward_hacks.py --verify            # each hack's effect without any guard

--verify runs each hack's environment command directly (no executor, no sandbox) in a copy of the
environment of --old-rev, with the preset's variables (and the case's `verify_env`, given to the unmodified
code too) and one seed, beside the unmodified code: it shows that each hack moves the printed metric when
nothing guards it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from idealab.manifest import Manifest, load_manifest, resolve_env
from idealab.metrics import extract_values, judge
from idealab.paths import data_dir

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the corpus lives with the tests
from redteam import corpus  # noqa: E402
from redteam.drive import Ended, run_cases  # noqa: E402

OLD_REV = "62c43e9"  # main before issue 11: file hashes, protected regions, the literal-marker check, valid_range
ENVS = ("charlm", "nanogpt", "grpo")


def run_side(
    envs: Sequence[str], slots: int, baseline_runs: int, confirm_top: int, wall_limit_s: float | None,
    budget_extra_s: float = 0.0,
) -> list[Ended]:
    """Every case of `envs` that applies to this checkout's environments, through its idealab. A case whose
    anchors are not in this checkout's files (an attack on a part the old code did not have, such as the
    separate scorer) is left out and shows as `-` on this side."""
    groups: dict[tuple[str, str | None], list[corpus.Case]] = defaultdict(list)
    for case in corpus.load("hacks") + corpus.load("legit"):
        if case.env in envs and _applies(case):
            groups[(case.env, case.preset)].append(case)
    ended: list[Ended] = []
    with tempfile.TemporaryDirectory(prefix="idealab-redteam-") as tmp:
        for (env, preset), cases in groups.items():
            ended += run_cases(
                cases, Path(tmp) / f"{env}-{preset}", slots, baseline_runs, confirm_top, wall_limit_s, budget_extra_s
            )
    return ended


def _applies(case: corpus.Case) -> bool:
    try:
        corpus.render(case, resolve_env(case.env))
    except corpus.CorpusError:
        return False
    return True


# ----------------------------------------------------------------------------------------- old side


def old_checkout(rev: str, where: Path) -> Path:
    """A detached worktree of `rev` at `where` (removed by the caller with `remove_checkout`)."""
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(where), rev], check=True)
    return where


def remove_checkout(where: Path) -> None:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(where)], check=False)


@contextmanager
def old_side(
    rev: str, envs: Sequence[str], slots: int, baseline_runs: int, confirm_top: int, wall_limit_s: float | None,
    budget_extra_s: float = 0.0, old_src: Path | None = None,
) -> Iterator[OldSide]:
    """This script's side run, started now in a subprocess whose idealab is a checkout of `rev` (the two
    sides run at the same time, each with its own slots); `OldSide.wait()` gives its rows. `old_src`: an
    unpacked tree of `rev` to use instead (`git archive REV src | tar -x -C DIR`; where there is no git)."""
    with tempfile.TemporaryDirectory(prefix="idealab-oldguards-") as tmp:
        checkout = old_src if old_src is not None else old_checkout(rev, Path(tmp) / "old")
        try:
            out = Path(tmp) / "old.json"
            env = {**os.environ, "PYTHONPATH": str(checkout / "src")}
            options = {"--envs": ",".join(envs), "--slots": slots, "--baseline-runs": baseline_runs,
                       "--confirm-top": confirm_top}  # fmt: skip
            if wall_limit_s is not None:
                options["--wall-limit"] = wall_limit_s
            if budget_extra_s:
                options["--budget-extra"] = budget_extra_s
            command = [sys.executable, __file__, "--side-json", str(out)]
            command += [str(part) for option in options.items() for part in option]
            with subprocess.Popen(command, env=env) as process:
                yield OldSide(process, out)
        finally:
            if old_src is None:
                remove_checkout(checkout)


@dataclass
class OldSide:
    process: subprocess.Popen[bytes]
    out: Path

    def wait(self) -> list[Ended]:
        if self.process.wait() != 0:
            raise RuntimeError(f"the old side failed (exit {self.process.returncode})")
        return [Ended(**{**row, "flags": tuple(row["flags"])}) for row in json.loads(self.out.read_text())]


# ------------------------------------------------------------------------------------------- report


def caught(row: Ended | None) -> bool:
    return row is not None and row.caught


def report(new: Mapping[str, Ended], old: Mapping[str, Ended]) -> None:
    hacks = [c for c in corpus.load("hacks") if c.name in new or c.name in old]
    legit = [c for c in corpus.load("legit") if c.name in new or c.name in old]
    print(f"{'hack':<34} {'class':<16} {'old guards':<26} {'new guards':<26}")
    for case in hacks:
        print(f"{case.name:<34} {case.klass:<16} {describe(old.get(case.name)):<26} {describe(new.get(case.name)):<26}")
    print()
    print(f"{'class':<16} {'caught (old)':>12} {'caught (new)':>12}")
    by_class: dict[str, list[corpus.Case]] = defaultdict(list)
    for case in hacks:
        by_class[case.klass or "?"].append(case)
    for klass, cases in by_class.items():
        n = len(cases)
        print(
            f"{klass:<16} {sum(caught(old.get(c.name)) for c in cases):>10}/{n} "
            f"{sum(caught(new.get(c.name)) for c in cases):>10}/{n}"
        )
    n = len(hacks)
    print(
        f"{'all hacks':<16} {sum(caught(old.get(c.name)) for c in hacks):>10}/{n} "
        f"{sum(caught(new.get(c.name)) for c in hacks):>10}/{n}"
    )
    for side, rows in (("old", old), ("new", new)):
        best = [c.name for c in hacks if rows.get(c.name) and rows[c.name].best]
        print(f"hacks reported as a run's best ({side} guards): {', '.join(best) or 'none'}")
    print()
    for side, rows in (("old", old), ("new", new)):
        bad = [f"{c.name} ({describe(rows.get(c.name))})" for c in legit if not _clean(rows.get(c.name))]
        print(
            f"legitimate changes ({side} guards): {len(legit) - len(bad)}/{len(legit)} ok without flags; "
            f"refused or flagged: {', '.join(bad) or 'none'}"
        )


def _clean(row: Ended | None) -> bool:
    return row is not None and row.clean_ok


def describe(row: Ended | None) -> str:
    if row is None:
        return "-"
    text = row.status
    if row.metric is not None:
        text += f" {row.metric:.3f}"
    if row.flags:
        text += f" [{','.join(row.flags)}]"
    if row.best:
        text += " BEST"
    return text


# ------------------------------------------------------------------------------------- verification


def mirror_data(target: Path) -> Path:
    """A data directory whose files link to the real one's, so a hack that writes next to the data writes
    here (two levels: <data>/<env dir>/<entry>)."""
    source = data_dir()
    for top in source.iterdir():
        if top.is_dir():
            (target / top.name).mkdir(parents=True)
            for entry in top.iterdir():
                (target / top.name / entry.name).symlink_to(entry)
        else:
            (target / top.name).symlink_to(top)
    return target


def run_direct(
    env_dir: Path, manifest: Manifest, data: Path, seed: int, extra: Mapping[str, str] | None = None
) -> tuple[float | None, str]:
    """The environment's command run in `env_dir` with nothing around it (the preset's variables, then
    `extra`): the metric it prints."""
    env = {
        **os.environ,
        **{k: os.path.expandvars(v) for k, v in manifest.run.env.items()},
        **(extra or {}),
        "IDEALAB_SEED": str(seed),
        "IDEALAB_DATA_DIR": str(data),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }  # this Python first
    done = subprocess.run(shlex.split(manifest.run.command), cwd=env_dir, env=env, capture_output=True, text=True,
                          timeout=1800)  # fmt: skip
    verdict = judge(extract_values(done.stdout, manifest.metric), manifest.metric)
    if verdict.ok:
        return verdict.metric, "ok"
    tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
    return None, f"exit {done.returncode}: {verdict.reason}; {tail}"


def verify(rev: str, envs: Sequence[str], seed: int, only: Sequence[str] = ()) -> None:
    """Each hack's printed metric beside the unmodified code's, run directly on `rev`'s environments."""
    hacks = [c for c in corpus.load("hacks") if c.env in envs and (not only or c.name in only)]
    with tempfile.TemporaryDirectory(prefix="idealab-verify-") as tmp:
        checkout = old_checkout(rev, Path(tmp) / "old")
        try:
            envs_dir = checkout / "src" / "idealab" / "envs"
            baselines: dict[tuple[str, tuple[tuple[str, str], ...]], float | None] = {}
            print(f"{'hack':<34} {'metric':>9} {'baseline':>9}  effect (run directly on {rev}, seed {seed})")
            for case in hacks:
                manifest = load_manifest(envs_dir / case.env, case.preset)
                extra = dict(case.verify_env)  # the unmodified code runs with the hack's variables too
                key = (case.env, case.verify_env)
                if key not in baselines:
                    work = Path(tmp) / f"base-{case.env}-{len(baselines)}"
                    shutil.copytree(envs_dir / case.env, work)
                    data = mirror_data(Path(tmp) / f"data-base-{case.env}-{len(baselines)}")
                    baselines[key], _ = run_direct(work, manifest, data, seed, extra)
                work = Path(tmp) / case.name
                shutil.copytree(envs_dir / case.env, work)
                corpus.apply(case, work)
                data = mirror_data(Path(tmp) / f"data-{case.name}")
                runs = 2 if case.klass == "cache" else 1  # a cache pays off in the run after the one that filled it
                for _ in range(runs):
                    value, how = run_direct(work, manifest, data, seed, extra)
                base = baselines[key]
                better = value is not None and base is not None and manifest.metric.goal.better(value, base)
                effect = "moves the metric the right way" if better else f"NO EFFECT ({how})"
                shown = f"{value:.4f}" if value is not None else "-"
                base_shown = f"{base:.4f}" if base is not None else "-"
                with_vars = f" (with {' '.join(f'{k}={v}' for k, v in case.verify_env)})" if extra else ""
                print(f"{case.name:<34} {shown:>9} {base_shown:>9}  {effect}{with_vars}", flush=True)
        finally:
            remove_checkout(checkout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default=",".join(ENVS), help="comma-separated environments")
    parser.add_argument("--slots", type=int, default=2, help="jobs at once")
    parser.add_argument("--baseline-runs", type=int, default=3, help="runs of the unmodified code (as idealab run)")
    parser.add_argument("--confirm-top", type=int, default=3, help="ideas confirmed with 3 seeds (as idealab run)")
    parser.add_argument("--old-rev", default=OLD_REV)
    parser.add_argument("--old-src", type=Path, help="an unpacked tree of --old-rev (holding src/), not a worktree")
    parser.add_argument("--wall-limit", type=float, help="raise wall-clock limits to this (s) on a busy machine")
    parser.add_argument("--budget-extra", type=float, default=0.0,
                        help="seconds added to training budgets measured by the executor (slow start-up)")
    parser.add_argument("--verify", action="store_true", help="each hack's effect without any guard")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", default="", help="--verify: only these hacks (comma-separated names)")
    parser.add_argument("--side-json", type=Path, help=argparse.SUPPRESS)  # internal: one side, as JSON
    args = parser.parse_args()
    envs = [e for e in args.envs.split(",") if e]
    if args.verify:
        verify(args.old_rev, envs, args.seed, [c for c in args.cases.split(",") if c])
        return
    if args.side_json is not None:
        rows = run_side(envs, args.slots, args.baseline_runs, args.confirm_top, args.wall_limit, args.budget_extra)
        args.side_json.write_text(json.dumps([row.__dict__ for row in rows]))
        return
    started = time.perf_counter()
    sides = (envs, args.slots, args.baseline_runs, args.confirm_top, args.wall_limit, args.budget_extra)
    with old_side(args.old_rev, *sides, old_src=args.old_src) as running:
        new = {row.case: row for row in run_side(*sides)}
        old = {row.case: row for row in running.wait()}
    print(
        f"red-team corpus, environments {', '.join(envs)} (cpu-smoke presets), {args.slots} job slots; "
        f"old guards = {args.old_rev}; wall-clock limits raised to {args.wall_limit or 0:g} s; "
        f"executor-measured budgets raised by {args.budget_extra:g} s"
    )
    report(new, old)
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()

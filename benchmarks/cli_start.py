"""How long does the CLI take to start, before and after the lazy ideator registry and SDK imports?

"Before" is a commit's tree (default 6c93cf9, the code the change started from) exported with `git archive`
into a temporary directory; "after" is this checkout. Each case runs as a fresh interpreter with PYTHONPATH
pointing at one tree, the two trees alternating; the medians of the repetitions are printed, CPU time of
the child (user + system) with the ratio before / after, and wall-clock time beside it:

    help          `idealab --help`
    status        `idealab status --workdir W` on a finished one-idea run of the toy environment
    mutate run    what `idealab run --ideator mutate` does before its first job: the CLI, opening (and
                  migrating) the run's database, building the ideator
    llm run       the imports of `idealab run --ideator llm --model vllm:...`: the LLM ideator plus one client
    llm types     `import idealab.llm.types`, what any module (or test) that names an LLM type pays

    python benchmarks/cli_start.py [--before 6c93cf9] [--repeat 7]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUAD = "tests/envs/quad"
# what `idealab run` does before its first job, less the job: the CLI, the run's database, the ideator
MUTATE = (
    "import sys\nfrom pathlib import Path\nimport idealab.cli\nfrom idealab.ideators import registry\n"
    "from idealab.store import Store\nStore.open(Path(sys.argv[1])).close()\nregistry.build('mutate', None)"
)
LLM = (
    "import idealab.cli, idealab.ideators.llm\nfrom idealab.llm import make_client\n"
    "make_client('vllm:some-model', base_url='http://127.0.0.1:9/v1')"
)


def export_tree(commit: str, dest: Path) -> Path:
    """`src/` and the test environments of `commit`, as files under `dest`."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit, "src", "tests/envs"], capture_output=True, check=True
    ).stdout
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def python(tree: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, check=False)


def timed(tree: Path, args: list[str], cwd: Path) -> tuple[float, float]:
    """(CPU seconds, wall-clock seconds) of one run. CPU time (user + system of the child) is the figure
    to compare on a shared machine: other work stretches the wall clock, not the work done."""
    cpu_before = _children_cpu()
    started = time.perf_counter()
    done = python(tree, args, cwd)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{tree}: {' '.join(args)} failed:\n{done.stderr.decode()[-2000:]}")
    return _children_cpu() - cpu_before, elapsed


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def check_imports_from(tree: Path, cwd: Path) -> None:
    """PYTHONPATH must win over an installed idealab, or both columns would time the same code."""
    done = python(tree, ["-c", "import idealab; print(idealab.__file__)"], cwd)
    where = Path(done.stdout.decode().strip()).resolve()
    if not where.is_relative_to((tree / "src").resolve()):
        raise SystemExit(f"with PYTHONPATH={tree / 'src'}, idealab is imported from {where}")


def small_run(tree: Path, workdir: Path) -> None:
    """A finished one-idea run of the toy environment, made by `tree`'s own code (its own schema)."""
    args = ["-m", "idealab", "run", "--env", str(tree / QUAD), "--epochs", "1", "--ideas-per-epoch", "1"]
    timed(tree, [*args, "--workdir", str(workdir), "--quiet"], tree)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="6c93cf9", help="commit to compare with (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=7, help="runs of each case and tree (default: %(default)s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="idealab-cli-start-") as tmp:
        work = Path(tmp)
        trees = {"before": export_tree(args.before, work / "before"), "after": ROOT}
        for name, tree in trees.items():
            check_imports_from(tree, work)
            small_run(tree, work / f"run-{name}")
        cases = {
            "help": lambda name: ["-m", "idealab", "--help"],
            "status": lambda name: ["-m", "idealab", "status", "--workdir", str(work / f"run-{name}")],
            "mutate run": lambda name: ["-c", MUTATE, str(work / f"run-{name}")],
            "llm run": lambda name: ["-c", LLM],
            "llm types": lambda name: ["-c", "import idealab.llm.types"],
        }
        times: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for _ in range(args.repeat):
            for case, argv in cases.items():
                for name, tree in trees.items():  # alternate, so that load on the machine hits both alike
                    times.setdefault((case, name), []).append(timed(tree, argv(name), work))
    print(f"machine: {platform.platform()}, python {platform.python_version()}, {os.cpu_count()} CPUs")
    print(f"before = {args.before}, after = this checkout; medians of {args.repeat} runs, seconds\n")
    print("| case        | CPU before | CPU after | CPU before / after | wall before | wall after |")
    print("|-------------|-----------:|----------:|-------------------:|------------:|-----------:|")
    for case in cases:
        cpu_b, wall_b = (statistics.median(t[i] for t in times[(case, "before")]) for i in (0, 1))
        cpu_a, wall_a = (statistics.median(t[i] for t in times[(case, "after")]) for i in (0, 1))
        ratio = f"{cpu_b / cpu_a:.2f}x"
        print(f"| {case:<11} | {cpu_b:10.2f} | {cpu_a:9.2f} | {ratio:>18} | {wall_b:11.2f} | {wall_a:10.2f} |")


if __name__ == "__main__":
    main()

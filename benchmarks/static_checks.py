"""What the static checks cost, and how often they refuse an honest change.

Two measurements, side by side in one run:

- false refusals: every change of the diff-application corpus (benchmarks/diff_corpus: idea-style edits of
  training scripts, schedules, optimisers, evaluation helpers) is checked under the rules of each built-in
  environment (charlm, nanogpt, grpo: their protected files, variables, metric, allow_processes); a
  refusal of one of these changes is a false refusal;
- cost: the static checks' time per change of charlm's real train.py, against compiling the changed file
  (the check every change already paid), as a ratio.

    python benchmarks/static_checks.py [--repeats 50]
"""

from __future__ import annotations

import argparse
import platform
import time
import tomllib
from pathlib import Path

from idealab.manifest import load_manifest, resolve_env
from idealab.patching import FileChange
from idealab.static_checks import check_static, new_findings, scan_python, scan_text, surface_of

CORPUS = Path(__file__).resolve().parent / "diff_corpus"


def corpus_changes() -> list[tuple[str, FileChange]]:
    found = []
    for case in sorted((CORPUS / "cases").iterdir()):
        if not (case / "expected").is_dir():
            continue  # a must-refuse malformed diff: no change to check
        spec = tomllib.loads((case / "case.toml").read_text())
        for path, base in spec["files"].items():
            old = (CORPUS / "bases" / base).read_text()
            found.append((f"{case.name}/{path}", FileChange(path, old, (case / "expected" / path).read_text())))
    return found


def false_refusals(env: str, changes: list[tuple[str, FileChange]]) -> list[str]:
    surface = surface_of(load_manifest(resolve_env(env)))
    refused = []
    for name, change in changes:
        scan = scan_python if change.path.endswith(".py") else scan_text
        added = new_findings(scan(change.old_text or "", surface), scan(change.new_text or "", surface))
        refused += [f"{name}: {f.reason}" for f in added]
    return refused


def seconds_per_check(repeats: int) -> tuple[float, float]:
    """(compiling the changed file, the static checks of the change): seconds per change of charlm's
    train.py. Compiling is what the guards already paid for every change; the original file's scan is
    cached across candidate changes, as in a run."""
    manifest = load_manifest(resolve_env("charlm"))
    text = (manifest.root / "train.py").read_text()
    change = FileChange("train.py", text, text.replace("LEARNING_RATE = ", "LEARNING_RATE = 0.5 * ", 1))
    start = time.perf_counter()
    for _ in range(repeats):
        compile(change.new_text or "", "train.py", "exec", dont_inherit=True)
    compiled = (time.perf_counter() - start) / repeats
    start = time.perf_counter()
    for _ in range(repeats):
        assert check_static(manifest, [change]) == []
    return compiled, (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=50, help="checks timed per variant")
    args = parser.parse_args()
    changes = corpus_changes()
    print(f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(f"corpus: {len(changes)} changed files")
    for env in ("charlm", "nanogpt", "grpo"):
        refused = false_refusals(env, changes)
        print(f"  {env:8s} false refusals: {len(refused)} / {len(changes)}")
        for line in refused:
            print(f"    {line}")
    compiled, static = seconds_per_check(args.repeats)
    print(f"per change of charlm's train.py: compiling it {compiled * 1e3:.2f} ms, the static checks "
          f"{static * 1e3:.2f} ms ({static / compiled:.1f}x)")


if __name__ == "__main__":
    main()

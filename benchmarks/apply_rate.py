"""How often does each applier turn a model-style response into exactly the intended files?

Runs every case of benchmarks/diff_corpus/cases/ through idealab's `apply_edit`, plain `patch`, plain
`git apply`, and a lenient `git apply --recount --ignore-whitespace`, each on a fresh copy of the case's
base files, and prints one table:

    exact   the resulting files equal the expected ones (for a must-refuse case: the tool refused)
    wrong   the tool applied something and the files differ from the expected ones, or it applied a
            must-refuse case (the dangerous outcome: a job would run code nobody asked for)
    refused the tool reported failure on a case that should apply (a lost idea, but a safe one)

The baselines get what a minimal harness would give them: the response's fenced diff blocks (or the whole
response when it has none), with -p1 when the headers carry a/ b/ prefixes and -p0 otherwise.

    python benchmarks/apply_rate.py [--show-failures]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from idealab.patching import apply_edit, write_changes
from idealab.patching.parse import diff_source

CORPUS = Path(__file__).resolve().parent / "diff_corpus"
Tool = Callable[[Path, str], bool]  # applies a response inside a directory; True when it reports success


@dataclass(frozen=True)
class Case:
    name: str
    kind: str
    refuse: bool
    files: dict[str, str]  # path in the environment -> base file name
    response: str
    expected: dict[str, bytes]  # every file of the environment after the edit


def load_cases() -> list[Case]:
    cases = []
    for folder in sorted((CORPUS / "cases").iterdir()):
        meta = tomllib.loads((folder / "case.toml").read_text())
        files = dict(meta["files"])
        refuse = meta["expect"] == "refuse"
        expected: dict[str, bytes] = {}
        if not refuse:
            root = folder / "expected"
            changed = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
            expected = {path: (CORPUS / "bases" / name).read_bytes() for path, name in files.items()}
            expected.update(changed)
        response = (folder / "response.md").read_bytes().decode("utf-8")
        cases.append(Case(folder.name, meta["kind"], refuse, files, response, expected))
    return cases


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def idealab_tool(root: Path, response: str) -> bool:
    result = apply_edit(root, response)
    if result.ok:
        write_changes(root, result.changes)
    return result.ok


def _diff_input(response: str) -> tuple[str, int]:
    text = diff_source(response)
    prefixed = any(line.startswith(("--- a/", "+++ b/")) for line in text.split("\n"))
    if not text.endswith("\n"):
        text += "\n"
    return text, 1 if prefixed else 0


def _run(command: list[str], root: Path, stdin: str) -> bool:
    env = dict(os.environ, GIT_CEILING_DIRECTORIES=str(root.parent), LC_ALL="C")
    done = subprocess.run(
        command, cwd=root, input=stdin.encode("utf-8"), capture_output=True, env=env, timeout=60, check=False
    )
    return done.returncode == 0


def patch_tool(root: Path, response: str) -> bool:
    text, strip = _diff_input(response)
    return _run(["patch", f"-p{strip}", "--batch", "--forward", "--no-backup-if-mismatch", "-r", "-"], root, text)


def git_tool(root: Path, response: str) -> bool:
    text, strip = _diff_input(response)
    return _run(["git", "apply", f"-p{strip}"], root, text)


def git_lenient_tool(root: Path, response: str) -> bool:
    text, strip = _diff_input(response)
    return _run(["git", "apply", f"-p{strip}", "--recount", "--ignore-whitespace", "--unidiff-zero"], root, text)


TOOLS: dict[str, Tool] = {
    "idealab apply_edit": idealab_tool,
    "patch -p0/-p1": patch_tool,
    "git apply": git_tool,
    "git apply --recount --ignore-whitespace": git_lenient_tool,
}


def judge(tool: Tool, case: Case, work: Path) -> str:
    root = work / "env"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir()
    for path, name in case.files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(CORPUS / "bases" / name, root / path)
    before = snapshot(root)
    ok = tool(root, case.response)
    after = snapshot(root)
    if case.refuse:
        return "wrong" if ok or after != before else "exact"
    if not ok:
        return "refused"
    return "exact" if after == case.expected else "wrong"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--show-failures", action="store_true", help="list the cases each tool got wrong")
    args = parser.parse_args()
    if shutil.which("patch") is None:
        sys.exit("GNU patch is needed for the baseline (apt-get install patch)")
    cases = load_cases()
    n_refuse = sum(case.refuse for case in cases)
    print(f"corpus: {len(cases)} cases ({len(cases) - n_refuse} to apply, {n_refuse} must be refused)")
    print(
        f"machine: {platform.platform()}, python {platform.python_version()}, "
        f"{_version(['git', '--version'])}, {_version(['patch', '--version'])}"
    )
    print()
    print(f"| {'applier':<42} | {'exact':>12} | {'wrong':>5} | {'refused':>7} |")
    print(f"|{'-' * 44}|{'-' * 13}:|{'-' * 6}:|{'-' * 8}:|")
    outcomes: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="apply-rate-") as tmp:
        for label, tool in TOOLS.items():
            outcome = {case.name: judge(tool, case, Path(tmp)) for case in cases}
            outcomes[label] = outcome
            exact = sum(v == "exact" for v in outcome.values())
            wrong = sum(v == "wrong" for v in outcome.values())
            refused = sum(v == "refused" for v in outcome.values())
            share = f"{100 * exact / len(cases):.1f}%"
            print(f"| {label:<42} | {exact:>4} {share:>7} | {wrong:>5} | {refused:>7} |")
    kinds = sorted({case.kind for case in cases})
    short = ["idealab", "patch", "git apply", "git lenient"]
    print(f"\nexact results by malformation kind (cases of that kind)\n\n| {'kind':<24} |", end="")
    print("".join(f" {name:>11} |" for name in short))
    print(f"|{'-' * 26}|" + "".join(f"{'-' * 12}:|" for _ in short))
    for kind in kinds:
        names = [case.name for case in cases if case.kind == kind]
        cells = "".join(f" {sum(outcomes[label][n] == 'exact' for n in names):>6}/{len(names):<4} |" for label in TOOLS)
        print(f"| {kind:<24} |{cells}")
    failures = {
        label: [f"{n} ({v})" for n, v in outcome.items() if v != "exact"] for label, outcome in outcomes.items()
    }
    if args.show_failures:
        for label, names in failures.items():
            print(f"\n{label}: {', '.join(names) or 'none'}")


def _version(command: list[str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    return done.stdout.splitlines()[0].strip() if done.stdout else command[0]


if __name__ == "__main__":
    main()

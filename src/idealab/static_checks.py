"""Static checks of a change's editable files: refuse code that reaches for the evaluation's internals.

Run by `guards.check_changes` before any compute is spent. Every changed Python file is parsed and scanned
for what an honest idea never needs: importing the scorer or a hidden module, patching `sys.modules` or
builtins, writing to objects of the protected (read-only or hidden) modules, setting protected environment
variables, naming protected files, exiting early, printing lines that look like the metric, reaching into
frames, starting processes where the manifest does not allow them. A finding counts only when the change
adds it: the file as it was (including its protected regions) is scanned the same way and its findings
are subtracted, so the baseline's own `from prepare import ...` or `sys.exit(1)` never refuse a change.

Each finding carries a sentence for the implementer saying what to do instead. This is a filter against
cheap hacks, not a proof: what it cannot see (docs/reward_hacking.md) is left to out-of-process scoring,
the suspect flags and the auditor.
"""

from __future__ import annotations

import ast
import functools
import re
import shlex
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import PurePosixPath

from idealab.manifest import Manifest
from idealab.patching import FileChange
from idealab.static_scan import Finding, Scan, Surface, env_reason, names_path, path_reason

REFUSAL = "the change reaches for the evaluation's internals"  # begins every static refusal


def surface_of(manifest: Manifest) -> Surface:
    score = getattr(manifest, "score", None)  # the [score] table of the scoring contract, where present
    score_command = getattr(score, "command", None)
    private = tuple(getattr(score, "private_data", ()) or ())
    scorer = set(_command_modules(score_command)) if isinstance(score_command, str) else set()
    hidden = {_module_of(p) for p in manifest.files.hidden if p.endswith(".py")} | scorer
    readonly = {_module_of(p) for p in manifest.files.readonly if p.endswith(".py")}
    env = {*manifest.run.env, "IDEALAB_*", *manifest.run.allow_env}
    if manifest.run.seed_env:
        env.add(manifest.run.seed_env)
    return Surface(
        hidden_modules=frozenset(hidden),
        protected_modules=frozenset(hidden | readonly),
        protected_paths=(*manifest.files.hidden, *manifest.files.readonly, *private),
        protected_env=tuple(sorted(env)),
        metric=manifest.metric,
        allow_processes=manifest.run.allow_processes,
    )


def check_static(manifest: Manifest, changes: Sequence[FileChange]) -> list[str]:
    """The refusals of a change's files, each naming the file, the line and what to do instead."""
    surface = surface_of(manifest)
    problems: list[str] = []
    for change in changes:
        if change.new_text is None:
            continue
        scan = scan_python if change.path.endswith(".py") else scan_text
        old = _scan_original(change.path, change.old_text or "", surface)
        added = new_findings(old, scan(change.new_text, surface))
        for text in dict.fromkeys(f"{change.path} line {f.line}: {f.reason}" for f in added):
            problems.append(text)
    return problems


def new_findings(old: Iterable[Finding], new: Iterable[Finding]) -> list[Finding]:
    """The findings of `new` beyond those `old` already had (counted per key)."""
    budget = Counter(f.key for f in old)
    added: list[Finding] = []
    for finding in new:
        if budget[finding.key] > 0:
            budget[finding.key] -= 1
        else:
            added.append(finding)
    return added


@functools.lru_cache(maxsize=64)  # the original files: scanned once for every candidate change of them
def _scan_original(path: str, source: str, surface: Surface) -> tuple[Finding, ...]:
    return tuple((scan_python if path.endswith(".py") else scan_text)(source, surface))


def scan_python(source: str, surface: Surface) -> list[Finding]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []  # the compile check reports it
    scan = Scan(surface)
    scan.prepare(tree)
    scan.visit(tree)
    return scan.findings


def scan_text(text: str, surface: Surface) -> list[Finding]:
    """A non-Python file (shell script, config): the protected names it mentions, line by line."""
    found: list[Finding] = []
    for number, line in enumerate(text.splitlines(), 1):
        for path in surface.protected_paths:
            if names_path(line, path):
                found.append(Finding(f"path:{path}", number, path_reason(path)))
        for pattern in surface.protected_env:
            name = re.escape(pattern[:-1]) + r"\w*" if pattern.endswith("*") else re.escape(pattern)
            if re.search(rf"(^|[\s;]|export\s+)({name})\s*=", line):
                found.append(Finding(f"env:{pattern}", number, env_reason(pattern)))
    return found


# ------------------------------------------------------------------------------------------- helpers


def _module_of(path: str) -> str:
    return ".".join(PurePosixPath(path).with_suffix("").parts)


def _command_modules(command: str) -> list[str]:
    """The Python modules a command runs: `python evaluate.py` -> evaluate, `python -m pkg.score` -> pkg.score."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    modules = [_module_of(w) for w in words if w.endswith(".py")]
    modules += [words[i + 1] for i, w in enumerate(words[:-1]) if w == "-m"]
    return modules

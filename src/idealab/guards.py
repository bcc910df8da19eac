"""Checks a code change must pass before any compute is spent on it.

Protection is enforced here, in code, not only asked for in a prompt: a change may not touch `readonly`
or `hidden` files, nor the protected regions of editable files, every changed Python file must compile,
and what the change adds may not reach for the evaluation's internals (`static_checks`). Each refusal is
a model-readable sentence, fed back to an implementer for revision.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath

from idealab.manifest import PROTECT_BEGIN, PROTECT_END, Manifest
from idealab.metrics import METRIC_LINE_PREFIX
from idealab.patching import FileChange
from idealab.static_checks import REFUSAL, check_static

METRIC_MARKER = METRIC_LINE_PREFIX.strip()


def protected_regions(text: str) -> list[str]:
    """The text of every protected region (marker lines included), in order."""
    regions: list[str] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if current is None and PROTECT_BEGIN in line:
            current = [line]
        elif current is not None:
            current.append(line)
            if PROTECT_END in line:
                regions.append("\n".join(current))
                current = None
    if current is not None:  # an unterminated region protects the rest of the file
        regions.append("\n".join(current))
    return regions


def check_changes(manifest: Manifest, changes: Sequence[FileChange]) -> str | None:
    """None when the change is acceptable, else the reason it is refused."""
    if not changes:
        return "the change is empty: it modifies no file"
    problems: list[str] = []
    for change in changes:
        path = change.path
        if PurePosixPath(path).is_absolute() or ".." in PurePosixPath(path).parts:
            problems.append(f"{path}: paths must stay inside the environment directory")
            continue
        if path in manifest.files.hidden:
            problems.append(f"{path}: this file is part of the protected evaluation and may not be changed")
            continue
        if path in manifest.files.readonly:
            problems.append(f"{path}: this file is read-only (it may be read, never changed)")
            continue
        exists = (manifest.root / path).exists()
        if exists and path not in manifest.files.editable:
            problems.append(f"{path}: not an editable file (editable: {', '.join(manifest.files.editable)})")
            continue
        if change.new_text is None:
            problems.append(f"{path}: deleting files is not allowed")
            continue
        old_regions = protected_regions(change.old_text or "")
        if old_regions != protected_regions(change.new_text):
            problems.append(
                f"{path}: the change edits a protected region (lines between '{PROTECT_BEGIN}' and "
                f"'{PROTECT_END}'), which must stay exactly as it is"
            )
            continue
        if (change.new_text or "").count(METRIC_MARKER) > (change.old_text or "").count(METRIC_MARKER):
            problems.append(
                f"{path}: the change adds a '{METRIC_MARKER}' metric line; only the protected evaluation may "
                "report the metric"
            )
            continue
        if path.endswith(".py"):
            try:
                compile(change.new_text, path, "exec", dont_inherit=True)
            except SyntaxError as exc:
                problems.append(f"{path}: the changed file does not compile: {exc.msg} (line {exc.lineno})")
    if not problems:
        static = check_static(manifest, changes)
        if static:
            return f"{REFUSAL}: " + "; ".join(static)
    return "; ".join(problems) if problems else None


def is_static_refusal(reason: str) -> bool:
    """Whether a guard's refusal came from the static checks (a reach for the evaluation's internals)."""
    return REFUSAL in reason

"""Clean unified diffs (git-style a/ b/ headers) from texts or from two directory trees."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path

from idealab.patching.parse import DEV_NULL

NO_NEWLINE = "\\ No newline at end of file\n"


def diff_texts(old: Mapping[str, str], new: Mapping[str, str]) -> str:
    """A unified diff turning `old` into `new` (path -> text; a path missing on one side is created or
    deleted). Files are in path order; lines keep their endings; a missing final newline gets git's
    marker line, so the diff applies back exactly."""
    out: list[str] = []
    for path in sorted(set(old) | set(new)):
        before, after = old.get(path), new.get(path)
        if before == after:
            continue
        from_name = f"a/{path}" if before is not None else DEV_NULL
        to_name = f"b/{path}" if after is not None else DEV_NULL
        diff = difflib.unified_diff(_split(before), _split(after), from_name, to_name, n=3)
        for line in diff:
            if line.endswith("\n"):
                out.append(line)
            else:
                out.append(line + "\n" + NO_NEWLINE)
    return "".join(out)


def _split(text: str | None) -> list[str]:
    """Lines with their endings, split on "\\n" only (str.splitlines would also split on \\f, \\x1c, ...)."""
    if not text:
        return []
    pieces = text.split("\n")
    lines = [piece + "\n" for piece in pieces[:-1]]
    if pieces[-1]:
        lines.append(pieces[-1])
    return lines


def diff_trees(a: Path, b: Path, paths: Iterable[str]) -> str:
    """The diff from tree `a` to tree `b` over the given relative paths (e.g. a job's copy vs the env)."""
    old: dict[str, str] = {}
    new: dict[str, str] = {}
    for path in paths:
        for root, texts in ((a, old), (b, new)):
            target = root / path
            if target.is_file():
                texts[path] = target.read_bytes().decode("utf-8")
    return diff_texts(old, new)

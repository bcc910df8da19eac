"""git's own applier as the first tier: `git apply`, then `git apply --recount`, on a temporary copy.

The parsed diff is written back out in canonical form (bare paths with a/ b/ prefixes, blank context
lines with their space), the files it touches are copied into a fresh directory outside any repository,
and git applies it there. git places a hunk at the nearest position where it fits, even when its context
occurs elsewhere too, so this tier is used only when every hunk's old block sits at its stated line or
occurs exactly once; anything else goes to the fuzzy matcher, which refuses ambiguity with a reason.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from idealab.patching.lines import find_block, split_text
from idealab.patching.parse import DEV_NULL, Hunk

GIT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ResolvedPatch:
    """A file section with its paths resolved against the environment root (None: /dev/null)."""

    old_path: str | None
    new_path: str | None
    hunks: tuple[Hunk, ...]


def git_check(patches: Sequence[ResolvedPatch], texts: Mapping[str, str | None]) -> tuple[bool, list[str]]:
    """Whether git cannot place any hunk differently from the fuzzy matcher (see the module doc), and
    notes on hunks that sit away from their stated line."""
    seen: set[str] = set()
    notes: list[str] = []
    for patch in patches:
        key = patch.old_path or patch.new_path or ""
        if key in seen:  # a second section for the same file applies to the first one's result
            return False, []
        seen.add(key)
        text = texts.get(patch.old_path) if patch.old_path else ""
        if text is None:
            return False, []
        contents = split_text(text).contents
        moved = inserts = False
        for hunk in patch.hunks:
            if hunk.old_start is None or hunk.old_len is None or hunk.new_start is None:
                return False, []
            block = hunk.old_block
            if not block:
                inserts = True
                continue
            starts = find_block(contents, block, loose=False)
            if hunk.old_start - 1 in starts:
                continue
            if len(starts) != 1:
                return False, []
            moved = True
            notes.append(f"hunk {hunk.number} of {key} applied at line {starts[0] + 1} instead of {hunk.old_start}")
        if moved and inserts and contents:  # line numbers proven wrong: insertions have nothing else
            return False, []
    return True, notes


def render_patch(patches: Sequence[ResolvedPatch], recount: bool) -> str:
    out: list[str] = []
    for patch in patches:
        out.append(f"--- {'a/' + patch.old_path if patch.old_path else DEV_NULL}\n")
        out.append(f"+++ {'b/' + patch.new_path if patch.new_path else DEV_NULL}\n")
        for hunk in patch.hunks:
            old_len, new_len = hunk.old_len, hunk.new_len
            if recount:  # git --recount ignores the numbers after the comma; write the true ones anyway
                old_len = sum(1 for line in hunk.lines if line.kind != "+")
                new_len = sum(1 for line in hunk.lines if line.kind != "-")
            out.append(f"@@ -{hunk.old_start},{old_len} +{hunk.new_start},{new_len} @@\n")
            for line in hunk.lines:
                out.append(f"{line.kind}{line.text}{chr(13) if line.cr else ''}\n")
                if line.no_newline:
                    out.append("\\ No newline at end of file\n")
    return "".join(out)


def git_apply(
    patches: Sequence[ResolvedPatch], texts: Mapping[str, str | None], recount: bool
) -> dict[str, str | None] | str:
    """Apply with git on a temporary copy. Returns every touched file's new text (None: deleted) or git's
    error message."""
    zero_context = any(
        hunk.lines and all(line.kind != " " for line in hunk.lines) for patch in patches for hunk in patch.hunks
    )
    with tempfile.TemporaryDirectory(prefix="idealab-apply-") as tmp:
        work = Path(tmp) / "tree"
        work.mkdir()
        touched: set[str] = set()
        for patch in patches:
            for path in (patch.old_path, patch.new_path):
                if path is None:
                    continue
                touched.add(path)
                text = texts.get(path)
                if text is not None:
                    target = work / path
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(text.encode("utf-8"))
        patch_file = Path(tmp) / "change.patch"
        patch_file.write_bytes(render_patch(patches, recount).encode("utf-8"))
        command = ["git", "apply", "-p1", "--whitespace=nowarn"]
        if recount:
            command.append("--recount")
        if zero_context:
            command.append("--unidiff-zero")
        command.append(str(patch_file))
        env = dict(os.environ, GIT_CEILING_DIRECTORIES=tmp, GIT_CONFIG_NOSYSTEM="1", LC_ALL="C")
        env.pop("GIT_DIR", None)
        env.pop("GIT_WORK_TREE", None)
        done = subprocess.run(
            command, cwd=work, env=env, capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False
        )
        if done.returncode != 0:
            return done.stderr.strip() or f"git apply exited with {done.returncode}"
        result: dict[str, str | None] = {}
        for path in sorted(touched):
            target = work / path
            result[path] = target.read_bytes().decode("utf-8") if target.is_file() else None
        return result

"""Placing hunks by their content: exact first, then ignoring whitespace; never an ambiguous or wrong place.

Each hunk's old block (context and removed lines) is searched in the file's original text. A hunk goes
where its block matches at the stated line (or the stated line shifted by the drift of the hunk before
it), else where the block occurs exactly once. Several matches and none at the stated line is an error
naming the hunk; so is a block that only matches after ignoring anything but whitespace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from idealab.patching.lines import IndentMap, Line, Text, closest_mismatch, find_block, indent_of, split_text
from idealab.patching.parse import Hunk, HunkLine


@dataclass(frozen=True)
class Placement:
    hunk: Hunk
    start: int  # 0-based index of the first old-block line in the original file
    loose: bool  # matched only after ignoring whitespace differences


@dataclass(frozen=True)
class Patched:
    text: str
    notes: tuple[str, ...]


class HunkErrors(Exception):
    """Every hunk of a file that could not be placed, each message naming the file and the hunk."""

    def __init__(self, messages: Sequence[str]) -> None:
        super().__init__("; ".join(messages))
        self.messages = tuple(messages)


def apply_hunks(path: str, text: str, hunks: Sequence[Hunk], crlf_transport: bool) -> Patched:
    """Apply all hunks of one file section to `text` (the file's text before this section)."""
    original = split_text(text)
    contents = original.contents
    placements: list[Placement] = []
    errors: list[str] = []
    notes: list[str] = []
    drift = 0
    for hunk in hunks:
        result = _place(path, contents, hunk, drift)
        if isinstance(result, str):
            errors.append(result)
            continue
        placements.append(result)
        if hunk.old_start is not None and hunk.old_block:
            stated = hunk.old_start - 1
            drift = result.start - stated
            if result.start != stated:
                notes.append(f"hunk {hunk.number} of {path} applied at line {result.start + 1} instead of {stated + 1}")
        if result.loose:
            notes.append(f"hunk {hunk.number} of {path} matched ignoring whitespace differences")
    moved = [
        p for p in placements if p.hunk.old_block and p.hunk.old_start is not None and p.start != p.hunk.old_start - 1
    ]
    if moved and contents:
        for p in placements:
            if not p.hunk.old_block:
                errors.append(
                    f"hunk {p.hunk.number} of {path} has only added lines, so only its line number places "
                    f"it, and the line numbers are off (hunk {moved[0].hunk.number} was found at line "
                    f"{moved[0].start + 1}, not {moved[0].hunk.old_start}); add context lines"
                )
    placements.sort(key=lambda p: (p.start, len(p.hunk.old_block)))
    for before, after in zip(placements, placements[1:], strict=False):
        if before.start + len(before.hunk.old_block) > after.start:
            errors.append(
                f"hunks {before.hunk.number} and {after.hunk.number} of {path} overlap (both change line "
                f"{after.start + 1}); merge them into one hunk"
            )
    if errors:
        raise HunkErrors(errors)
    if [p.hunk.number for p in placements] != sorted(p.hunk.number for p in placements):
        notes.append(f"{path}: hunks were out of order; applied by position")
    return Patched(_build(original, placements, crlf_transport), tuple(notes))


def _place(path: str, contents: list[str], hunk: Hunk, drift: int) -> Placement | str:
    name = f"hunk {hunk.number} of {path} (`{hunk.header.strip()}`)"
    block = hunk.old_block
    if not block:
        return _place_insertion(name, contents, hunk)
    stated = hunk.old_start - 1 if hunk.old_start is not None else None
    preferred = [] if stated is None else [stated, stated + drift]
    for loose in (False, True):
        starts = find_block(contents, block, loose)
        if not starts:
            continue
        for want in preferred:
            if want in starts:
                return Placement(hunk, want, loose)
        if len(starts) == 1:
            return Placement(hunk, starts[0], loose)
        where = ", ".join(str(s + 1) for s in starts[:6])
        at = f"none at the stated line {stated + 1}" if stated is not None else "the header gives no line"
        return (
            f"{name}: its context and removed lines occur {len(starts)} times (lines {where}) and {at}; "
            "refusing to guess - add context lines that occur only once"
        )
    return f"{name}: its context and removed lines are not in {path}: {closest_mismatch(contents, block)}"


def _place_insertion(name: str, contents: list[str], hunk: Hunk) -> Placement | str:
    """A hunk with only added lines: placed by its line number alone (`--unidiff-zero` semantics)."""
    if not contents:
        return Placement(hunk, 0, False)
    if hunk.old_start is None or hunk.old_len != 0:
        return f"{name}: has no context or removed lines, so there is nothing to locate it by; add context lines"
    if hunk.old_start > len(contents):
        return f"{name}: inserts after line {hunk.old_start} but the file has {len(contents)} lines"
    return Placement(hunk, hunk.old_start, False)


def _build(original: Text, placements: Sequence[Placement], crlf_transport: bool) -> str:
    source = original.lines
    out: list[Line] = []
    final_newline = original.final_newline
    cursor = 0
    for placement in placements:
        hunk, start = placement.hunk, placement.start
        out.extend(source[cursor:start])
        cursor = start
        indents = IndentMap(_indent_pairs(hunk.lines, source, start) if placement.loose else ())
        for line in hunk.lines:
            if line.kind == " ":
                out.append(source[cursor])
                cursor += 1
            elif line.kind == "-":
                cursor += 1
            else:
                eol = "\r\n" if line.cr and not crlf_transport else original.newline
                out.append((indents.apply(line.text), eol))
        if cursor == len(source):
            final_newline = _final_newline(hunk.lines, final_newline)
    out.extend(source[cursor:])
    fixed = [(content, eol or original.newline) for content, eol in out]
    if fixed and not final_newline:
        fixed[-1] = (fixed[-1][0], "")
    return "".join(content + eol for content, eol in fixed)


def _indent_pairs(lines: Sequence[HunkLine], source: Sequence[Line], start: int) -> list[tuple[str, str]]:
    pairs = []
    cursor = start
    for line in lines:
        if line.kind == "+":
            continue
        if line.text.strip():
            pairs.append((indent_of(line.text), indent_of(source[cursor][0])))
        cursor += 1
    return pairs


def _final_newline(lines: Sequence[HunkLine], current: bool) -> bool:
    """A hunk that reaches the end of the file may say how the file ends; without markers it stays as is."""
    if any(line.no_newline and line.kind != "-" for line in lines):
        return False
    if any(line.no_newline and line.kind == "-" for line in lines):
        return True
    return current

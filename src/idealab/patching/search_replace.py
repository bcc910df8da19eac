"""SEARCH/REPLACE blocks, the second edit format:

    path/to/file.py
    <<<<<<< SEARCH
    exact old lines
    =======
    new lines
    >>>>>>> REPLACE

The search text must occur exactly once (whole lines); failing that, exactly once ignoring whitespace
differences. An empty search text creates the file, which must not exist yet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from idealab.patching.lines import IndentMap, closest_mismatch, find_block, indent_of, split_text

_SEARCH = re.compile(r"^\s*<{5,9} ?SEARCH\s*$")
_DIVIDER = re.compile(r"^\s*={5,9}\s*$")
_REPLACE = re.compile(r"^\s*>{5,9} ?REPLACE\s*$")
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
_LABEL = re.compile(r"^(?:#+\s*)?(?:\*\*)?(?:(?:file(?:name)?|path)\s*:)?\s*", re.IGNORECASE)


@dataclass(frozen=True)
class SearchReplace:
    number: int  # 1-based, in the order of the response
    path: str | None  # as written; None when no file name precedes the block
    search: tuple[str, ...]
    replace: tuple[str, ...]


class BlockError(Exception):
    """A block that cannot be applied; the message names the block and the file."""


def parse_blocks(response: str) -> tuple[list[SearchReplace], list[str]]:
    """All SEARCH/REPLACE blocks and the problems found reading them (e.g. a block never closed)."""
    lines = [line.rstrip("\r") for line in response.split("\n")]
    blocks: list[SearchReplace] = []
    problems: list[str] = []
    last_path: str | None = None
    i = 0
    while i < len(lines):
        if not _SEARCH.match(lines[i]):
            i += 1
            continue
        number = len(blocks) + 1
        path = _path_before(lines, i) or last_path
        j = i + 1
        while j < len(lines) and not _DIVIDER.match(lines[j]):
            j += 1
        k = j + 1
        while k < len(lines) and not _REPLACE.match(lines[k]):
            k += 1
        if k >= len(lines):
            problems.append(f"SEARCH/REPLACE block {number} is not closed with `=======` and `>>>>>>> REPLACE`")
            break
        blocks.append(SearchReplace(number, path, tuple(lines[i + 1 : j]), tuple(lines[j + 1 : k])))
        last_path = path
        i = k + 1
    return blocks, problems


def _path_before(lines: list[str], i: int) -> str | None:
    j = i - 1
    while j >= 0 and (not lines[j].strip() or _FENCE.match(lines[j])):
        j -= 1
    if j < 0:
        return None
    candidate = lines[j].strip().strip("`*").strip()
    candidate = _LABEL.sub("", candidate, count=1).strip().strip("`*:").strip()
    if not candidate or " " in candidate or _REPLACE.match(candidate):
        return None
    return candidate


def apply_block(path: str, text: str | None, block: SearchReplace) -> tuple[str, tuple[str, ...]]:
    """The file's text after the block, and notes. Raises BlockError with a model-readable reason."""
    name = f"SEARCH/REPLACE block {block.number} for {path}"
    search = list(block.search)
    while search and not search[-1].strip():
        search.pop()
    while search and not search[0].strip():
        search.pop(0)
    if not search:
        if text is not None:
            raise BlockError(f"{name}: the SEARCH part is empty but {path} exists; quote the lines to replace")
        return "".join(line + "\n" for line in block.replace), ()
    if text is None:
        raise BlockError(f"{name}: {path} does not exist")
    original = split_text(text)
    contents = original.contents
    notes: tuple[str, ...] = ()
    for loose in (False, True):
        starts = find_block(contents, search, loose)
        if len(starts) > 1:
            where = ", ".join(str(s + 1) for s in starts[:6])
            raise BlockError(
                f"{name}: the SEARCH text occurs {len(starts)} times (lines {where}); "
                "include more lines so that it matches exactly once"
            )
        if starts:
            break
    else:
        raise BlockError(f"{name}: the SEARCH text is not in {path}: {closest_mismatch(contents, search)}")
    start = starts[0]
    replace = list(block.replace)
    if loose:
        indents = IndentMap(
            (indent_of(want), indent_of(contents[start + k])) for k, want in enumerate(search) if want.strip()
        )
        replace = [indents.apply(line) for line in replace]
        notes = (f"{name} matched ignoring whitespace differences",)
    source = original.lines
    end = start + len(search)
    new_lines = [(line, original.newline) for line in replace]
    merged = list(source[:start]) + new_lines + list(source[end:])
    if merged and end == len(source) and not original.final_newline:
        merged[-1] = (merged[-1][0], "")
    fixed = [(content, eol or original.newline) for content, eol in merged[:-1]] + merged[-1:]
    return "".join(content + eol for content, eol in fixed), notes

"""Reading unified diffs out of model responses: fences, prose, loose headers and miscounted hunks.

The parser is lenient about form and strict about content: it repairs what can be read one way only
(a blank context line that lost its leading space, hunk counts that disagree with the body, `a/` `b/`
prefixes, a missing `---` header) and records every repair as a note; it never guesses content.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HUNK_HEADER = re.compile(r"^@@+ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@+")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_DIFF_TAGS = {"diff", "patch", "udiff"}
_LIST_ITEM = re.compile(r"^[-*] [A-Za-z`*]")
DEV_NULL = "/dev/null"


@dataclass(frozen=True)
class HunkLine:
    kind: str  # " " context, "-" removed, "+" added
    text: str  # without line ending
    cr: bool = False  # the line ended with CRLF in the response
    no_newline: bool = False  # followed by "\ No newline at end of file"


@dataclass(frozen=True)
class Hunk:
    number: int  # 1-based position within its file section, as the model wrote it
    header: str
    old_start: int | None  # None when the header carries no line numbers
    old_len: int | None
    new_start: int | None
    new_len: int | None
    lines: tuple[HunkLine, ...]

    @property
    def old_block(self) -> list[str]:
        return [line.text for line in self.lines if line.kind != "+"]

    @property
    def counts_match(self) -> bool:
        old = sum(1 for line in self.lines if line.kind != "+")
        new = sum(1 for line in self.lines if line.kind != "-")
        return (old, new) == (self.old_len, self.new_len)


@dataclass(frozen=True)
class FilePatch:
    old_path: str | None  # as written in the header (prefixes kept); None for /dev/null
    new_path: str | None
    hunks: tuple[Hunk, ...]


@dataclass(frozen=True)
class ParsedDiff:
    files: tuple[FilePatch, ...]
    notes: tuple[str, ...]  # repairs made while reading
    problems: tuple[str, ...]  # things that could not be read (hunks without a file, ...)
    crlf_transport: bool  # every line of the response ended in CRLF: the CRs carry no meaning


def diff_source(response: str) -> str:
    """The text holding the diff: the fenced blocks that hold a diff, joined, else the whole response."""
    blocks = _diff_blocks(response)
    return "\n".join("\n".join(block) for block in blocks) if blocks else response


def _diff_source(response: str) -> tuple[str, bool]:
    """Like diff_source, but with a fence line between blocks so that no hunk runs across two of them."""
    blocks = _diff_blocks(response)
    if not blocks:
        return response, False
    boundary = "```\r" if response.split("\n", 1)[0].endswith("\r") else "```"
    return f"\n{boundary}\n".join("\n".join(block) for block in blocks), True


def _diff_blocks(response: str) -> list[list[str]]:
    """Fenced blocks tagged diff/patch or holding diff syntax (an unclosed fence runs to the end)."""
    blocks: list[tuple[str, list[str]]] = []
    current: list[str] | None = None
    opener = info = ""
    for line in response.split("\n"):
        match = _FENCE.match(line.rstrip("\r"))
        if current is None:
            if match:
                current, opener, info = [], match.group(1), match.group(2).strip().lower()
            continue
        if (
            match
            and match.group(1)[0] == opener[0]
            and len(match.group(1)) >= len(opener)
            and not match.group(2).strip()
        ):
            blocks.append((info, current))
            current = None
            continue
        current.append(line)
    if current is not None:
        blocks.append((info, current))
    return [lines for info, lines in blocks if info.split(" ")[0] in _DIFF_TAGS or _looks_like_diff(lines)]


def _looks_like_diff(lines: list[str]) -> bool:
    return any(line.startswith("@@") for line in lines) or any(
        a.startswith("--- ") and b.startswith("+++ ") for a, b in zip(lines, lines[1:], strict=False)
    )


def parse_diff(response: str) -> ParsedDiff:
    text, fenced = _diff_source(response)
    raw_lines = text.split("\n")
    if raw_lines and raw_lines[-1] == "":
        raw_lines.pop()
    crlf_transport = bool(raw_lines) and all(line.endswith("\r") for line in raw_lines)
    lines = [line.rstrip("\r") for line in raw_lines]
    crs = [line.endswith("\r") for line in raw_lines]
    reader = _Reader(lines, crs, fenced)
    reader.run()
    return ParsedDiff(tuple(reader.files), tuple(reader.notes), tuple(reader.problems), crlf_transport)


def _header_path(field: str) -> str | None:
    path = field.split("\t")[0].strip()
    if len(path) >= 2 and path[0] == path[-1] and path[0] in "\"'`":
        path = path[1:-1]
    return None if path == DEV_NULL else path


def _bare(path: str) -> str:
    return path[2:] if path.startswith(("a/", "b/")) else path


def _is_body_line(line: str) -> bool:
    return line[:1] in " +-" and not line.startswith(("+++ ", "--- "))


def _is_file_header(lines: list[str], i: int) -> bool:
    return lines[i].startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ ")


class _Reader:
    def __init__(self, lines: list[str], crs: list[bool], fenced: bool) -> None:
        self.lines, self.crs, self.fenced = lines, crs, fenced
        self.files: list[FilePatch] = []
        self.notes: list[str] = []
        self.problems: list[str] = []
        self.old: str | None = None
        self.new: str | None = None
        self.have_file = False
        self.hunks: list[Hunk] = []
        self.header_end = -1  # index of the line right after the last file header

    def run(self) -> None:
        i, lines = 0, self.lines
        while i < len(lines):
            line = lines[i]
            if line.startswith("diff --git "):
                self._flush()
                parts = line[len("diff --git ") :].split()
                if len(parts) == 2:
                    self.old, self.new, self.have_file = parts[0], parts[1], True
            elif line.startswith("new file mode") and self.have_file and not self.hunks:
                self.old = None
            elif line.startswith("deleted file mode") and self.have_file and not self.hunks:
                self.new = None
            elif _is_file_header(lines, i):
                if self.hunks or not self.have_file:  # else: the "---"/"+++" of a `diff --git` section
                    self._flush()
                self.old, self.new = _header_path(line[4:]), _header_path(lines[i + 1][4:])
                self.have_file = True
                i += 2
                self.header_end = i
                continue
            elif line.startswith("+++ ") and not self.hunks:
                # a "+++" header without its "---" line
                self._flush()
                self.new = _header_path(line[4:])
                self.old = self.new
                self.have_file = True
                self.header_end = i + 1
                self.notes.append(f"{_bare(line[4:].strip())}: file header has no `---` line; took `+++` for both")
            elif line.startswith("@@"):
                i = self._read_hunk(i)
                continue
            elif _is_body_line(line) and self.have_file and (self.fenced or i == self.header_end):
                # hunk lines with no `@@` line before them (in a diff fence, or right after a file header)
                i = self._read_hunk(i, implicit=True)
                continue
            elif self.fenced and line[:1] in "+-" and _is_body_line(line):
                self.problems.append(
                    f"line `{line.strip()}` comes before any file header; start each file's part with "
                    "`--- a/PATH` and `+++ b/PATH` lines"
                )
            i += 1
        self._flush()

    def _flush(self) -> None:
        if self.have_file and (self.hunks or self.old is None or self.new is None):
            self.files.append(FilePatch(self.old, self.new, tuple(self.hunks)))
        self.old = self.new = None
        self.have_file = False
        self.hunks = []

    def _read_hunk(self, i: int, implicit: bool = False) -> int:
        header = "@@ @@" if implicit else self.lines[i]
        match = _HUNK_HEADER.match(header)
        numbers: list[int | None] = [None, None, None, None]
        if match:
            numbers = [int(g) if g is not None else 1 for g in match.groups()]
        number = len(self.hunks) + 1
        label = _bare(self.new or self.old or "?")
        body, end, blanks, unprefixed = self._read_body(i if implicit else i + 1, numbers[1], numbers[3])
        hunk = Hunk(number, header, numbers[0], numbers[1], numbers[2], numbers[3], tuple(body))
        if not self.have_file:
            self.problems.append(
                f"hunk `{header}` has no file header before it; start each file with "
                "`--- a/PATH` and `+++ b/PATH` lines"
            )
            return end
        if implicit:
            self.notes.append(f"{label} hunk {number}: no `@@` line before it; placed by its content")
        elif not match:
            self.notes.append(f"{label} hunk {number}: header `{header}` has no line numbers")
        elif not hunk.counts_match:
            old = sum(1 for line in body if line.kind != "+")
            new = sum(1 for line in body if line.kind != "-")
            self.notes.append(
                f"{label} hunk {number}: header says -{hunk.old_len} +{hunk.new_len} lines, body has "
                f"-{old} +{new}; counted from the body"
            )
        if unprefixed:
            self.notes.append(f"{label} hunk {number}: {unprefixed} line(s) without a leading space read as context")
        if blanks:
            self.notes.append(f"{label} hunk {number}: {blanks} empty line(s) read as blank context lines")
        self.hunks.append(hunk)
        return end

    def _read_body(self, i: int, old_len: int | None, new_len: int | None) -> tuple[list[HunkLine], int, int, int]:
        lines, body = self.lines, []
        blanks = unprefixed = 0
        old = new = 0
        while i < len(lines):
            line = lines[i]
            if line.startswith("@@") or line.startswith("diff --git ") or _is_file_header(lines, i):
                break
            if _FENCE.match(line):
                break
            if self._prose_follows(i, old, new, old_len, new_len):
                break
            if line == "":
                # A blank context line that lost its leading space, or the gap before prose: taken as
                # context; trailing ones are dropped below. (Stopping here by the header's counts could
                # cut a miscounted hunk short and apply half of it; reading on can only cause a refusal.)
                body.append(HunkLine(" ", "", self.crs[i]))
                blanks += 1
                old, new = old + 1, new + 1
            elif line[0] in " +-":
                body.append(HunkLine(line[0], line[1:], self.crs[i]))
                old, new = old + (line[0] != "+"), new + (line[0] != "-")
            elif line.startswith("\\"):
                if body:
                    body[-1] = HunkLine(body[-1].kind, body[-1].text, body[-1].cr, True)
            elif self._hunk_goes_on(i + 1):
                # a context line that lost its leading space (the hunk continues after it); if it is really
                # prose, it will not match the file and the hunk is refused rather than applied in part
                body.append(HunkLine(" ", line, self.crs[i]))
                unprefixed += 1
                old, new = old + 1, new + 1
            else:
                break
            i += 1
        # trailing empty lines are separators, not context
        while body and body[-1] == HunkLine(" ", "", body[-1].cr) and lines[i - 1] == "":
            body.pop()
            blanks -= 1
            i -= 1
        return body, i, blanks, unprefixed

    def _prose_follows(self, i: int, old: int, new: int, old_len: int | None, new_len: int | None) -> bool:
        """Outside fences, once the header's counts are used up, a markdown list item (`- Word`, `* Word`; a
        removed code line rarely starts with one space), after blank lines or not, ends the hunk."""
        if self.fenced or old_len is None or (old, new) != (old_len, new_len):
            return False
        while i < len(self.lines) and self.lines[i] == "":
            i += 1
        return i < len(self.lines) and _LIST_ITEM.match(self.lines[i]) is not None

    def _hunk_goes_on(self, i: int) -> bool:
        """Whether a hunk body line follows soon (over empty and unprefixed lines) before anything else."""
        lines = self.lines
        for j in range(i, min(i + 6, len(lines))):
            line = lines[j]
            if _is_file_header(lines, j) or _FENCE.match(line) or line.startswith(("@@", "diff --git ")):
                return False
            if line and line[0] in " +-":
                return _is_body_line(line)
        return False

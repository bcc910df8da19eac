"""Text as lines with their own line endings, and the whitespace rules every matcher shares.

A file is held as (content, eol) pairs so that an edit touches only the lines it changes: untouched and
context lines keep their exact bytes (CRLF, a missing final newline), and added lines take the file's
dominant line ending.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Line = tuple[str, str]  # (content without its line ending, the line ending: "\n", "\r\n" or "")


@dataclass(frozen=True)
class Text:
    lines: tuple[Line, ...]
    newline: str  # the dominant line ending, used for added lines

    @property
    def contents(self) -> list[str]:
        return [content for content, _ in self.lines]

    @property
    def final_newline(self) -> bool:
        return not self.lines or self.lines[-1][1] != ""


def split_text(text: str) -> Text:
    lines: list[Line] = []
    for piece in text.split("\n"):
        lines.append((piece, "\n"))
    # the piece after the last "\n" is either empty (the text ends with a newline) or an unterminated line
    last, _ = lines.pop()
    if last:
        lines.append((last, ""))
    fixed: list[Line] = []
    for content, eol in lines:
        if eol == "\n" and content.endswith("\r"):
            fixed.append((content[:-1], "\r\n"))
        else:
            fixed.append((content, eol))
    crlf = sum(1 for _, eol in fixed if eol == "\r\n")
    lf = sum(1 for _, eol in fixed if eol == "\n")
    return Text(tuple(fixed), "\r\n" if crlf > lf else "\n")


def join_lines(lines: Iterable[Line]) -> str:
    return "".join(content + eol for content, eol in lines)


def squash(line: str) -> str:
    """A line with every whitespace run reduced to one space and the ends stripped."""
    return " ".join(line.split())


def indent_of(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def find_block(haystack: Sequence[str], block: Sequence[str], loose: bool) -> list[int]:
    """Start indices where `block` occurs as consecutive lines (loose: ignoring whitespace differences)."""
    if not block:
        return []
    if loose:
        hay = [squash(s) for s in haystack]
        needle = [squash(s) for s in block]
    else:
        hay, needle = list(haystack), list(block)
    width = len(needle)
    first = needle[0]
    return [i for i in range(len(hay) - width + 1) if hay[i] == first and hay[i : i + width] == needle]


def closest_mismatch(haystack: Sequence[str], block: Sequence[str]) -> str:
    """Describe the window that agrees with `block` on most lines, naming its first differing line."""
    if not block or not haystack:
        return "the file is empty" if not haystack else "the block is empty"
    hay = [squash(s) for s in haystack]
    needle = [squash(s) for s in block]
    best_start, best_score = 0, -1
    for start in range(-len(needle) + 1, len(hay)):
        score = sum(1 for k, want in enumerate(needle) if 0 <= start + k < len(hay) and hay[start + k] == want and want)
        if score > best_score:
            best_start, best_score = start, score
    if best_score <= 0:
        return f"not even its first line `{block[0].strip()}` is in the file"
    for k, want in enumerate(needle):
        pos = best_start + k
        have = hay[pos] if 0 <= pos < len(hay) else None
        if have != want:
            if have is None:
                return f"the best partial match runs past the end of the file before `{block[k].strip()}`"
            return (
                f"best partial match near line {best_start + 1}: line {pos + 1} of the file is "
                f"`{haystack[pos].strip()}` where the diff expects `{block[k].strip()}`"
            )
    return "the block matches only in part"


class IndentMap:
    """Carries the indentation a loose match found (diff indent -> file indent) over to added lines.

    When a model writes context indented with a tab (or two spaces) where the file has four spaces, its
    added lines are indented the same wrong way; mapping them like the context keeps Python consistent.
    """

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self.table: dict[str, str] = {}
        for theirs, ours in pairs:
            self.table.setdefault(theirs, ours)
        self.file_uses_tabs = any("\t" in ours for ours in self.table.values())
        self.tab_width = 4
        for theirs, ours in self.table.items():
            tabs = theirs.count("\t")
            if tabs and not self.file_uses_tabs and theirs.strip("\t") == "" and len(ours) % tabs == 0:
                self.tab_width = len(ours) // tabs or 4
                break
        # a constant ratio of widths (2-space context for a 4-space file) scales indents not seen in context
        widths = [(self._width(theirs), self._width(ours)) for theirs, ours in self.table.items()]
        ratios = {ours / theirs for theirs, ours in widths if theirs}
        consistent = len(ratios) == 1 and all(ours == 0 for theirs, ours in widths if not theirs)
        self.ratio = ratios.pop() if consistent else None

    @property
    def identity(self) -> bool:
        return all(theirs == ours for theirs, ours in self.table.items())

    def apply(self, line: str) -> str:
        if self.identity or not line.strip():
            return line
        indent = indent_of(line)
        body = line[len(indent) :]
        if indent in self.table:
            return self.table[indent] + body
        if self.ratio is not None:
            scaled = self._width(indent) * self.ratio
            if scaled == int(scaled):
                return self._render(int(scaled)) + body
        # relative indentation: the longest known prefix, the rest converted to the file's style
        prefixes = [theirs for theirs in self.table if indent.startswith(theirs)]
        base_theirs = max(prefixes, key=len) if prefixes else ""
        base_ours = self.table.get(base_theirs, "")
        return base_ours + self._render(self._width(indent[len(base_theirs) :])) + body

    def _width(self, indent: str) -> int:
        return sum(self.tab_width if char == "\t" else 1 for char in indent)

    def _render(self, width: int) -> str:
        if self.file_uses_tabs:
            return "\t" * (width // self.tab_width) + " " * (width % self.tab_width)
        return " " * width

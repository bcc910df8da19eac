"""Metric values read from a job's stdout as a stream, with a cap on how many are kept.

A run reports a value either through the manifest's `regex` or by printing a line
`@metric {"name": "...", "value": ..., "step": ...}` (JSON). A job may print millions of them, so the
stream keeps the first and the last `max_values // 2` values, plus, for the manifest's metric, the values
that decide its verdict (its minimum, its maximum and its first non-finite value): judging the kept values
gives the same verdict as judging all of them, whatever the reduction.

The per-job supervisor runs this in a process of its own, started for every job: so only a few cheap
standard modules are imported, and a value is a plain tuple (`metrics.MetricValue` is built from it).
"""

from __future__ import annotations

import json
import math
import re
from collections import deque

METRIC_LINE_PREFIX = "@metric "
DEFAULT_MAX_METRIC_VALUES = 10_000
MAX_LINE_BYTES = 1 << 20  # a longer line is not a metric line: it is skipped, not buffered
_PREFIX_BYTES = METRIC_LINE_PREFIX.strip().encode()

Reported = tuple[str, float, int | None, str]  # (name, value, step, source: "line" or "regex")


def parse_metric_line(line: str) -> Reported | None:
    """The value of one stripped `@metric {...}` line, or None when it is malformed."""
    payload = line[len(METRIC_LINE_PREFIX) :].strip()
    try:
        data = json.loads(payload)  # accepts NaN / Infinity, which judging then rejects
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    raw = data.get("value")
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    step = data.get("step")
    return (data["name"], value, step if isinstance(step, int) else None, "line")


def values_in_line(line: str, name: str, regex: re.Pattern[str] | None) -> list[Reported]:
    """The values one line of output reports: an `@metric` line (any name), else the regex's matches."""
    stripped = line.strip()
    if stripped.startswith(METRIC_LINE_PREFIX):
        parsed = parse_metric_line(stripped)
        return [] if parsed is None else [parsed]
    if regex is None:
        return []
    found: list[Reported] = []
    for match in regex.finditer(line):
        group = match.group("value") if "value" in regex.groupindex else match.group(1)
        try:
            found.append((name, float(group), None, "regex"))
        except (TypeError, ValueError):
            continue
    return found


class MetricStream:
    """Feed it a job's stdout in chunks of bytes; `values()` gives what was kept, in the order printed.

    `name` and `regex` are the manifest's metric; `max_values` bounds the values kept (at least 2).
    """

    def __init__(self, name: str, regex: re.Pattern[str] | None, max_values: int = DEFAULT_MAX_METRIC_VALUES):
        if max_values < 2:
            raise ValueError(f"max_values must be at least 2, got {max_values}")
        self.name = name
        self.regex = regex
        self.seen = 0  # values reported, kept or not
        self._head: list[tuple[int, Reported]] = []
        self._head_size = max_values // 2
        self._tail: deque[tuple[int, Reported]] = deque(maxlen=max_values - self._head_size)
        # the values that decide the verdict of `name`, by role, and those of them that left the tail
        self._deciding: dict[str, tuple[int, Reported]] = {}
        self._rescued: dict[int, Reported] = {}
        self._partial = b""
        self._skipping = False  # inside an over-long line: drop bytes until its end

    @property
    def dropped(self) -> int:
        return self.seen - len(self.values())

    def feed(self, chunk: bytes) -> None:
        data = self._partial + chunk
        end = data.rfind(b"\n")
        if end < 0:
            self._keep_partial(data)
            return
        complete, rest = data[: end + 1], data[end + 1 :]
        if self._skipping:
            cut = complete.find(b"\n")
            complete = complete[cut + 1 :]
            self._skipping = False
        self._scan(complete)
        self._keep_partial(rest)

    def finish(self) -> None:
        """The output ended: a last line without a newline still counts."""
        if self._partial and not self._skipping:
            self._scan(self._partial)
        self._partial = b""

    def values(self) -> list[Reported]:
        head_end = self._head[-1][0] if self._head else -1
        tail_start = self._tail[0][0] if self._tail else self.seen
        middle = sorted((seq, v) for seq, v in self._rescued.items() if head_end < seq < tail_start)
        return [v for _, v in self._head] + [v for _, v in middle] + [v for _, v in self._tail]

    # --------------------------------------------------------------------------------------- internals

    def _keep_partial(self, data: bytes) -> None:
        if len(data) > MAX_LINE_BYTES:
            self._partial, self._skipping = b"", True
        else:
            self._partial = data

    def _scan(self, data: bytes) -> None:
        if self.regex is None:  # fast path: only lines that hold the @metric marker are decoded
            start = data.find(_PREFIX_BYTES)
            while start >= 0:
                line_start = data.rfind(b"\n", 0, start) + 1
                line_end = data.find(b"\n", start)
                line_end = len(data) if line_end < 0 else line_end
                self._line(data[line_start:line_end])
                start = data.find(_PREFIX_BYTES, line_end)
            return
        for line in data.split(b"\n"):
            self._line(line)

    def _line(self, raw: bytes) -> None:
        for value in values_in_line(raw.decode(errors="replace"), self.name, self.regex):
            self._add(value)

    def _add(self, value: Reported) -> None:
        seq = self.seen
        self.seen += 1
        if value[0] == self.name:
            self._track(seq, value)
        if len(self._head) < self._head_size:
            self._head.append((seq, value))
            return
        if len(self._tail) == self._tail.maxlen:
            old_seq, old = self._tail[0]
            if any(held[0] == old_seq for held in self._deciding.values()):
                self._rescued[old_seq] = old
        self._tail.append((seq, value))

    def _track(self, seq: int, value: Reported) -> None:
        """Remember the value that decides each role; drop a rescued value no role holds any more."""
        roles = self._deciding
        v = value[1]
        if not math.isfinite(v):
            roles.setdefault("non-finite", (seq, value))
        else:
            if "min" not in roles or v < roles["min"][1][1]:
                self._replace("min", seq, value)
            if "max" not in roles or v > roles["max"][1][1]:
                self._replace("max", seq, value)

    def _replace(self, role: str, seq: int, value: Reported) -> None:
        old = self._deciding.get(role)
        self._deciding[role] = (seq, value)
        if old is not None and all(held[0] != old[0] for held in self._deciding.values()):
            self._rescued.pop(old[0], None)

"""Reading metric values from a job's stdout and judging them.

A run reports a value either through the manifest's `regex` or by printing a line
`@metric {"name": "...", "value": ..., "step": ...}` (JSON). No idealab import is needed in the
environment, so this works through any backend that captures stdout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from idealab.manifest import MetricSpec, Reduce
from idealab.metric_stream import METRIC_LINE_PREFIX, MetricStream, values_in_line

__all__ = [
    "METRIC_LINE_PREFIX", "Judgement", "MetricStream", "MetricValue", "extract_values", "judge", "reduce_values",
    "stream_values",
]


@dataclass(frozen=True)
class MetricValue:
    name: str
    value: float
    step: int | None = None
    source: str = "line"  # "line" (an @metric line) or "regex"


@dataclass(frozen=True)
class Judgement:
    """The metric-level verdict of a finished run: `ok` with a value, or `invalid` with a reason."""

    ok: bool
    metric: float | None
    reason: str | None


def extract_values(text: str, spec: MetricSpec) -> list[MetricValue]:
    """All values a run reported, in the order printed: `@metric` lines (any name) and regex matches."""
    return [MetricValue(*value) for line in text.splitlines() for value in values_in_line(line, spec.name, spec.regex)]


def stream_values(stream: MetricStream) -> list[MetricValue]:
    """What a finished stream kept."""
    return [MetricValue(*value) for value in stream.values()]


def reduce_values(values: list[float], mode: Reduce) -> float:
    if not values:
        raise ValueError("no values to reduce")
    if mode is Reduce.LAST:
        return values[-1]
    if any(math.isnan(v) for v in values):
        return math.nan
    return min(values) if mode is Reduce.MIN else max(values)


def judge(values: list[MetricValue], spec: MetricSpec) -> Judgement:
    """Reduce the run's values of the manifest's metric; anything unusable is `invalid` with a reason."""
    mine = [v.value for v in values if v.name == spec.name]
    if not mine:
        return Judgement(False, None, f"no value of metric {spec.name!r} was reported")
    bad = [v for v in mine if not math.isfinite(v)]
    if bad:
        return Judgement(False, None, f"metric {spec.name!r} was not finite ({bad[0]!r}): the run diverged")
    value = reduce_values(mine, spec.reduce)
    if not spec.in_range(value):
        assert spec.valid_range is not None
        low, high = spec.valid_range
        return Judgement(
            False,
            value,
            f"metric {spec.name}={value:g} is outside the valid range [{low:g}, {high:g}] "
            "(suspected reward hacking or a broken evaluation)",
        )
    return Judgement(True, value, None)

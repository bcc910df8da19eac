"""Reading metric values from a job's stdout and judging them.

A run reports a value either through the manifest's `regex` or by printing a line
`@metric {"name": "...", "value": ..., "step": ...}` (JSON). No idealab import is needed in the
environment, so this works through any backend that captures stdout.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from idealab.manifest import MetricSpec, Reduce

METRIC_LINE_PREFIX = "@metric "


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


def _parse_metric_line(line: str) -> MetricValue | None:
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
    return MetricValue(data["name"], value, step if isinstance(step, int) else None, "line")


def extract_values(text: str, spec: MetricSpec) -> list[MetricValue]:
    """All values a run reported, in the order printed: `@metric` lines (any name) and regex matches."""
    values: list[MetricValue] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(METRIC_LINE_PREFIX):
            parsed = _parse_metric_line(stripped)
            if parsed is not None:
                values.append(parsed)
            continue
        if spec.regex is not None:
            for match in spec.regex.finditer(line):
                group = match.group("value") if "value" in spec.regex.groupindex else match.group(1)
                try:
                    values.append(MetricValue(spec.name, float(group), None, "regex"))
                except (TypeError, ValueError):
                    continue
    return values


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

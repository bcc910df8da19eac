"""Reading metric values from stdout (`@metric` lines and regex) and judging them."""

from __future__ import annotations

import math
import re

import pytest

from idealab.manifest import Goal, MetricSpec, Reduce
from idealab.metrics import MetricValue, extract_values, judge, reduce_values


def spec(
    reduce: Reduce = Reduce.LAST,
    regex: re.Pattern[str] | None = None,
    valid_range: tuple[float, float] | None = None,
) -> MetricSpec:
    return MetricSpec("val_loss", Goal.MINIMIZE, reduce, regex, None, valid_range)


def test_metric_lines_are_read_in_order_with_steps() -> None:
    out = "\n".join(
        [
            "step 1 loss 9.0",
            '@metric {"name": "val_loss", "value": 3.5, "step": 10}',
            '  @metric {"name": "tokens_per_s", "value": 1200}',
            '@metric {"name": "val_loss", "value": 3.25, "step": 20}',
        ]
    )
    values = extract_values(out, spec())
    assert values == [
        MetricValue("val_loss", 3.5, 10, "line"),
        MetricValue("tokens_per_s", 1200.0, None, "line"),
        MetricValue("val_loss", 3.25, 20, "line"),
    ]


def test_malformed_metric_lines_are_ignored() -> None:
    out = "\n".join(
        [
            "@metric not json",
            '@metric {"value": 1.0}',
            '@metric {"name": "val_loss", "value": true}',
            '@metric {"name": "val_loss", "value": "abc"}',
            '@metric ["val_loss", 1.0]',
        ]
    )
    assert extract_values(out, spec()) == []


def test_regex_with_named_group_or_single_group() -> None:
    out = "step:10 val_loss:3.4000\nstep:20 val_loss:3.2810 train_time:1500ms\n"
    named = spec(regex=re.compile(r"val_loss:(?P<value>[0-9.]+)"))
    single = spec(regex=re.compile(r"val_loss:([0-9.]+)"))
    for s in (named, single):
        values = extract_values(out, s)
        assert [(v.name, v.value, v.source) for v in values] == [
            ("val_loss", 3.4, "regex"),
            ("val_loss", 3.281, "regex"),
        ]


def test_regex_does_not_read_metric_lines_twice() -> None:
    s = spec(regex=re.compile(r'"value": ([0-9.]+)'))
    assert len(extract_values('@metric {"name": "val_loss", "value": 3.0}', s)) == 1


@pytest.mark.parametrize(("mode", "expected"), [(Reduce.LAST, 3.3), (Reduce.MIN, 3.1), (Reduce.MAX, 3.5)])
def test_reduce_modes(mode: Reduce, expected: float) -> None:
    assert reduce_values([3.5, 3.1, 3.3], mode) == expected
    values = [MetricValue("val_loss", v) for v in (3.5, 3.1, 3.3)]
    verdict = judge(values, spec(reduce=mode))
    assert verdict.ok and verdict.metric == expected


def test_reduce_of_nothing_raises() -> None:
    with pytest.raises(ValueError):
        reduce_values([], Reduce.MAX)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_invalid(bad: float) -> None:
    verdict = judge([MetricValue("val_loss", 3.0), MetricValue("val_loss", bad)], spec(reduce=Reduce.MIN))
    assert not verdict.ok and verdict.metric is None
    assert verdict.reason is not None and "not finite" in verdict.reason


def test_nan_written_as_json_is_read_then_rejected() -> None:
    values = extract_values('@metric {"name": "val_loss", "value": NaN}', spec())
    assert len(values) == 1 and math.isnan(values[0].value)
    assert not judge(values, spec()).ok


def test_out_of_valid_range_is_invalid_but_keeps_the_value() -> None:
    s = spec(valid_range=(2.5, 12.0))
    low = judge([MetricValue("val_loss", 2.1)], s)
    assert not low.ok and low.metric == 2.1
    assert low.reason is not None and "outside the valid range [2.5, 12]" in low.reason
    assert judge([MetricValue("val_loss", 2.5)], s).ok  # bounds are inclusive


def test_missing_metric_is_invalid_and_other_names_do_not_count() -> None:
    verdict = judge([MetricValue("train_loss", 3.0)], spec())
    assert not verdict.ok and verdict.reason is not None and "no value of metric 'val_loss'" in verdict.reason

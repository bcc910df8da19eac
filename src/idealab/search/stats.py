"""Small-sample statistics for comparing an idea's repeated runs with the baseline's.

Student's t distribution (CDF through the regularised incomplete beta function, quantiles by bisection),
95% intervals of a mean, and Welch's one-sided t-test. Written out here (about a hundred lines) rather than
pulling in SciPy for four functions; tests check them against known table values.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

ALPHA = 0.05  # one-sided level of the "beats the baseline" test
LEVEL = 0.95  # two-sided level of the reported intervals


def mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def sample_sd(values: Sequence[float]) -> float | None:
    """The sample standard deviation (n - 1 in the denominator); None for fewer than two values."""
    if len(values) < 2:
        return None
    m = mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (len(values) - 1))


def _beta_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` (possibly fractional, as Welch's) degrees of freedom."""
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * _incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


@functools.lru_cache(maxsize=1024)  # the same few (level, n - 1) pairs are asked for again and again
def t_quantile(q: float, df: float) -> float:
    """The t value below which a fraction q of Student's t distribution lies."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must lie in (0, 1), got {q}")
    low, high = -1e4, 1e4
    for _ in range(80):  # bisection: t_cdf is monotone; 80 halvings of 2e4 reach 1e-20
        mid = (low + high) / 2.0
        if t_cdf(mid, df) < q:
            low = mid
        else:
            high = mid
    return (low + high) / 2.0


def mean_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float] | None:
    """The t interval of the mean at `level`; None for fewer than two values (no spread known)."""
    sd = sample_sd(values)
    if sd is None:
        return None
    m = mean(values)
    half = t_quantile(0.5 + level / 2.0, len(values) - 1) * sd / math.sqrt(len(values))
    return m - half, m + half


def prediction_band(values: Sequence[float], level: float = LEVEL) -> tuple[float, float] | None:
    """Where one more run of the same code lands with probability `level` (the noise floor)."""
    sd = sample_sd(values)
    if sd is None:
        return None
    m, n = mean(values), len(values)
    half = t_quantile(0.5 + level / 2.0, n - 1) * sd * math.sqrt(1.0 + 1.0 / n)
    return m - half, m + half


def welch_p(better: Sequence[float], baseline: Sequence[float], given: float | None, higher: bool) -> float | None:
    """One-sided p-value of H1 "`better` has a better mean than the baseline" (Welch's t-test).

    `baseline` holds measured repeats; with none, `given` is a fixed value and the test is the one-sample
    t-test against it. `higher`: a higher metric is better. None when the test cannot be made (fewer than
    two runs of the idea, or no baseline at all).
    """
    if len(better) < 2 or (len(baseline) == 0 and given is None):
        return None
    sign = 1.0 if higher else -1.0
    s_i = sample_sd(better)
    assert s_i is not None
    var_i = s_i**2 / len(better)
    if baseline:
        s_b = sample_sd(baseline) or 0.0  # a single baseline run: its spread unknown, counted as none
        var_b = s_b**2 / len(baseline) if len(baseline) > 1 else 0.0
        base_mean = mean(baseline)
    else:
        assert given is not None  # checked above
        var_b, base_mean = 0.0, given
    diff = sign * (mean(better) - base_mean)
    se2 = var_i + var_b
    if se2 == 0.0:  # both deterministic: any real difference is certain
        return 0.0 if diff > 0 else 1.0
    df_terms = var_i**2 / (len(better) - 1) + (var_b**2 / (len(baseline) - 1) if len(baseline) > 1 else 0.0)
    df = se2**2 / df_terms if df_terms > 0 else float(len(better) - 1)
    return 1.0 - t_cdf(diff / math.sqrt(se2), df)

"""Student's t distribution and Welch's t-test, as ganrun-report uses them.

ganrun-report needs two numbers per cell and per pair of rows: the half-width of a
95% confidence interval over a handful of seeds, and whether two rows' seeds tell
them apart. scipy computes both (it is installed with scikit-learn in any case);
this module fixes the conventions: NaN where one value measures no spread, and a
certain answer where Welch's test has no variance to divide by.
"""

from __future__ import annotations

import math
import statistics
import warnings

from scipy import special
from scipy import stats as scipy_stats


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), for a, b > 0 and 0 <= x <= 1."""
    return float(special.betainc(a, b, x))


def t_two_sided(t: float, dof: float) -> float:
    """P(|T| >= |t|) for Student's T with `dof` (not necessarily whole) degrees of freedom."""
    return float(2.0 * scipy_stats.t.sf(abs(t), dof))


def t_cdf(t: float, dof: float) -> float:
    """P(T <= t)."""
    return float(scipy_stats.t.cdf(t, dof))


def t_ppf(q: float, dof: float) -> float:
    """The t with P(T <= t) = q."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"t_ppf: q={q} is not in (0, 1)")
    return float(scipy_stats.t.ppf(q, dof))


def ci95_half_width(values: list[float]) -> float:
    """Half-width of the 95% confidence interval of the mean of `values` (Student t,
    t_{0.975, n-1} · s / √n); NaN for fewer than two values, which measure no spread,
    and where a value is not finite (an infinite reverse KL has no spread to measure)."""
    n = len(values)
    if n < 2 or not all(math.isfinite(v) for v in values):
        return math.nan
    return t_ppf(0.975, n - 1) * statistics.stdev(values) / math.sqrt(n)


def welch_p(a: list[float], b: list[float]) -> float:
    """Two-sided p-value of Welch's t-test (unequal variances) that `a` and `b` have the
    same mean: scipy.stats.ttest_ind(a, b, equal_var=False).pvalue. Each needs two
    values or more. Where neither varies (scipy's NaN) the answer is certain: 1 for
    equal means, 0 for different ones."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError("welch_p: each sample needs two values or more")
    if statistics.variance(a) == 0.0 and statistics.variance(b) == 0.0:
        return 1.0 if statistics.fmean(a) == statistics.fmean(b) else 0.0
    with warnings.catch_warnings():  # seeds equal but for rounding: scipy warns, the
        warnings.simplefilter("ignore", RuntimeWarning)  # p-value stands (near 0 or 1)
        return float(scipy_stats.ttest_ind(a, b, equal_var=False).pvalue)

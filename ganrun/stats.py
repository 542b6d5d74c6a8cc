"""Student's t distribution and Welch's t-test, in plain Python.

ganrun-report needs two numbers per cell and per pair of rows: the half-width of a
95% confidence interval over a handful of seeds, and whether two rows' seeds tell
them apart. Both rest on the t distribution, whose CDF is a regularized incomplete
beta function; this is it, by its continued fraction (Numerical Recipes, 2nd ed.,
section 6.4), so that the package does not depend on scipy for a few lines.
"""

from __future__ import annotations

import math
import statistics

_EPS = 1e-15     # relative accuracy of the continued fraction
_TINY = 1e-300   # keeps Lentz's method off a division by zero


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b), by the modified Lentz method; converges
    fast for x < (a + 1) / (a + b + 2)."""
    def guard(value: float) -> float:
        return value if abs(value) > _TINY else _TINY

    c, d = 1.0, 1.0 / guard(1.0 - (a + b) * x / (a + 1.0))
    fraction = d
    for m in range(1, 1000):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),           # even
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):  # odd
            d = 1.0 / guard(1.0 + numerator * d)
            c = guard(1.0 + numerator / c)
            fraction *= d * c
        if abs(d * c - 1.0) < _EPS:
            return fraction
    raise ArithmeticError(f"incomplete beta: no convergence for a={a}, b={b}, x={x}")


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b  # I_x(a,b) = 1 - I_{1-x}(b,a)


def t_two_sided(t: float, dof: float) -> float:
    """P(|T| >= |t|) for Student's T with `dof` (not necessarily whole) degrees of freedom."""
    return betainc(dof / 2.0, 0.5, dof / (dof + t * t)) if math.isfinite(t) else 0.0


def t_cdf(t: float, dof: float) -> float:
    """P(T <= t)."""
    tail = t_two_sided(t, dof) / 2.0
    return 1.0 - tail if t > 0 else tail


def t_ppf(q: float, dof: float) -> float:
    """The t with P(T <= t) = q: bisection on the upper tail, computed directly (not as
    1 - CDF, which would lose the digits of a small tail)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"t_ppf: q={q} is not in (0, 1)")
    if q < 0.5:
        return -t_ppf(1.0 - q, dof)
    tail = 1.0 - q
    lo, hi = 0.0, 1.0
    while t_two_sided(hi, dof) / 2.0 > tail:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_two_sided(mid, dof) / 2.0 > tail:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-14 * hi:
            break
    return (lo + hi) / 2.0


def ci95_half_width(values: list[float]) -> float:
    """Half-width of the 95% confidence interval of the mean of `values` (Student t,
    t_{0.975, n-1} · s / √n); NaN for fewer than two values, which measure no spread."""
    n = len(values)
    if n < 2:
        return math.nan
    return t_ppf(0.975, n - 1) * statistics.stdev(values) / math.sqrt(n)


def welch_p(a: list[float], b: list[float]) -> float:
    """Two-sided p-value of Welch's t-test (unequal variances) that `a` and `b` have the
    same mean: scipy.stats.ttest_ind(a, b, equal_var=False).pvalue. Each needs two
    values or more. Where neither varies (scipy's NaN) the answer is certain: 1 for
    equal means, 0 for different ones."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError("welch_p: each sample needs two values or more")
    var_a, var_b = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    difference = statistics.fmean(a) - statistics.fmean(b)
    se2 = var_a + var_b
    if se2 == 0.0:
        return 1.0 if difference == 0.0 else 0.0
    dof = se2 * se2 / (var_a * var_a / (len(a) - 1) + var_b * var_b / (len(b) - 1))
    return t_two_sided(difference / math.sqrt(se2), dof)

"""Agreement statistics shared by the 2D (DSCA area) and 3D (foramen measurement) evaluations.

- :func:`ratio`: a quotient that is NaN where the denominator is 0 (precision, recall, ICC terms ...);
- :func:`bland_altman`: differences ``a − b``; bias = their mean, SD with ``ddof=1``, 95 % limits of agreement =
  bias ± 1.96 SD (Bland JM, Altman DG. Lancet 1986;i:307–310);
- :func:`pearson`: Pearson r and its two-sided p (``scipy.stats.pearsonr``), NaN where undefined.

NaN, never an exception, where a statistic is undefined (too few values, a constant side): callers report it as
missing.
"""

from __future__ import annotations

import math

import numpy as np

#: z of the 95 % limits of agreement
LOA_Z = 1.96


def ratio(num: float, den: float) -> float:
    """``num / den`` as a float, NaN when ``den`` is 0."""
    return float(num) / float(den) if den != 0 else math.nan


def bland_altman(a, b) -> dict:
    """Bland–Altman statistics of paired values ``a`` (e.g. automatic) and ``b`` (e.g. reference).

    Returns
    -------
    dict
        ``n``; ``bias`` (mean of ``a − b``, NaN without pairs); ``sd`` (SD of the differences, ``ddof=1``, NaN
        below 2 pairs); ``loa_low`` / ``loa_high`` (bias ∓ 1.96 SD); ``mean`` ((a + b) / 2) and ``diff`` (a − b)
        arrays for a plot.
    """
    x, y = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"Bland–Altman needs paired values, got {x.size} and {y.size}")
    d = x - y
    n = int(d.size)
    bias = float(np.mean(d)) if n else math.nan
    sd = float(np.std(d, ddof=1)) if n > 1 else math.nan
    return {"n": n, "bias": bias, "sd": sd, "loa_low": bias - LOA_Z * sd, "loa_high": bias + LOA_Z * sd,
            "mean": (x + y) / 2, "diff": d}


def pearson(a, b) -> tuple[float, float]:
    """Pearson r and two-sided p of paired values; ``(nan, nan)`` below 2 pairs or when a side is constant."""
    from scipy import stats

    x, y = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"Pearson r needs paired values, got {x.size} and {y.size}")
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan
    res = stats.pearsonr(x, y)
    return float(res[0]), float(res[1])

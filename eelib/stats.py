"""The statistics behind the claims' verdicts (eelib/claims.py): one-sided paired t-tests over
seeds, with a hand-written Student-t tail (scipy is not a dependency) and an exact sign test.

    holds           the one-sided p < ALPHA, over at least MIN_SEEDS seeds
    does not hold   the reversed test's p < ALPHA
    not shown       tested, neither direction significant
    inconclusive    not testable (too few seeds, or a non-finite difference)
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

MIN_SEEDS = 3
ALPHA = 0.05         # one-sided level of the paired t-test that decides holds / does not hold
HOLDS, NOT_SHOWN, NOT_HOLD, INCONCLUSIVE = "holds", "not shown", "does not hold", "inconclusive"


def t_sf(t: float, dof: int) -> float:
    """P(T > t) for Student's t with integer dof >= 1 (closed form, Abramowitz & Stegun 26.7.3-4)."""
    if dof < 1:
        return float("nan")
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    th = math.atan(abs(t) / math.sqrt(dof))
    c2, s = math.cos(th) ** 2, math.sin(th)
    if dof % 2 == 1:   # A = 2/π (θ + sinθ cosθ (1 + 2/3 c² + 2·4/(3·5) c⁴ + ...)), dof−3 terms
        term, acc = 1.0, 1.0 if dof > 1 else 0.0
        for k in range(1, (dof - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            acc += term
        a = 2 / math.pi * (th + s * math.cos(th) * acc)
    else:              # A = sinθ (1 + 1/2 c² + 1·3/(2·4) c⁴ + ...)
        term, acc = 1.0, 1.0
        for k in range(1, dof // 2):
            term *= c2 * (2 * k - 1) / (2 * k)
            acc += term
        a = s * acc
    p = (1 - a) / 2
    return p if t >= 0 else 1 - p


def sign_test_p(diffs: Sequence[float]) -> float:
    """One-sided exact sign test: P(at least this many positives | fair coin); zeros dropped."""
    d = [x for x in diffs if x != 0]
    n, k = len(d), sum(x > 0 for x in d)
    if n == 0:
        return 1.0
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2 ** n


def paired_summary(diffs: Sequence[float]) -> dict:
    """mean, std (ddof=1), SE, t, one-sided t p-value and sign-test p of per-seed differences."""
    d = np.asarray(diffs, float)
    n = len(d)
    out = {"n": n, "diffs": [round(float(x), 6) for x in d]}
    if n == 0 or not np.isfinite(d).all():  # a NaN/inf difference: no test (verdict_of: inconclusive)
        return out | {"mean": None, "std": None, "se": None, "t": None, "p_t": None, "p_sign": None,
                      "nonfinite": int((~np.isfinite(d)).sum())}
    mean = float(d.mean())
    std = float(d.std(ddof=1)) if n > 1 else float("nan")
    se = std / math.sqrt(n) if n > 1 else float("nan")
    if n > 1 and se > 0:
        t = mean / se
    elif n > 1:
        t = math.copysign(math.inf, mean) if mean else 0.0
    else:
        t = float("nan")
    return out | {"mean": mean, "std": std, "se": se, "t": t,
                  "p_t": t_sf(t, n - 1) if n > 1 and not math.isnan(t) else None,
                  "p_sign": sign_test_p(d)}


def verdict_of(s: dict) -> str:
    """holds if the one-sided p < ALPHA; does not hold if the reversed test's p < ALPHA; else not
    shown; inconclusive under MIN_SEEDS seeds. A zero-variance effect counts by its sign."""
    if s["n"] < MIN_SEEDS or s["p_t"] is None:  # too few seeds, or a non-finite difference
        return INCONCLUSIVE
    if s["p_t"] < ALPHA:
        return HOLDS
    return NOT_HOLD if 1 - s["p_t"] < ALPHA else NOT_SHOWN

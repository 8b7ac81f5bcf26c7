"""The statistics behind the claims' verdicts (eelib/claims.py): one-sided paired t-tests over
seeds, with a hand-written Student-t tail (scipy is not a dependency) and an exact sign test.

    holds           the one-sided p < ALPHA, over at least MIN_SEEDS seeds
    does not hold   the reversed test's p < ALPHA
    not shown       tested, neither direction significant
    inconclusive    not testable (too few seeds, or a non-finite difference)

Below the tests, the record every claim and part is (`claim`), the settings a claim is tested in
one at a time (`by_setting`), and how parts' verdicts combine into a claim's (`combine`).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

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


def verdict_of(s: dict, alpha: float = ALPHA) -> str:
    """holds if the one-sided p < alpha; does not hold if the reversed test's p < alpha; else not
    shown; inconclusive under MIN_SEEDS seeds. A zero-variance effect counts by its sign."""
    if s["n"] < MIN_SEEDS or s["p_t"] is None:  # too few seeds, or a non-finite difference
        return INCONCLUSIVE
    if s["p_t"] < alpha:
        return HOLDS
    return NOT_HOLD if 1 - s["p_t"] < alpha else NOT_SHOWN


# ---------------------------------------------------------------------------------------------
# Claim records, settings, and parts combined (eelib/claims.py, eelib/claims_fig3.py)

def fmt(x, nd=4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float) and math.isinf(x):
        return "∞" if x > 0 else "−∞"
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def stats_line(s: dict) -> str:
    return f"t = {fmt(s['t'], 2)}, p = {fmt(s['p_t'], 3)}, n = {s['n']}"


def claim(cid: str, text: str, paper: str, verdict: str, reason: str, test: str,
          numbers: dict | None = None, parts: list | None = None) -> dict:
    return {"id": cid, "claim": text, "paper": paper, "verdict": verdict, "reason": reason,
            "test": test, "numbers": numbers or {}, "parts": parts or []}


def setting_label(keys: tuple, values: tuple, varying: set) -> str:
    """'music->chem, post_tokens=200000' with only the fields that vary across the groups."""
    shown = [(k, v) for k, v in zip(keys, values) if k in varying] or list(zip(keys, values))[:1]
    return ", ".join(str(v) if k == "pipeline" else f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in shown)


def by_setting(rows: pd.DataFrame, keys: tuple) -> list[tuple[str, pd.DataFrame]]:
    """Rows split by the setting columns `keys` that are present: (label, rows) per setting."""
    keys = tuple(k for k in keys if k in rows.columns)
    if not keys or rows.empty:
        return [("all", rows)]
    groups = list(rows.groupby(list(keys), sort=True, dropna=False))  # a missing value is a setting too
    varying = {k for k in keys if rows[k].nunique(dropna=False) > 1}
    return [(setting_label(keys, v if isinstance(v, tuple) else (v,), varying), g) for v, g in groups]


def combine(cid, text, paper, parts, test, numbers) -> dict:
    """Holds if every part holds; else does not hold if a part does not; else not shown if a part
    is not shown; else (only inconclusive, or inconclusive beside holds) inconclusive.

    "Holds in every part" needs no correction for the number of parts (each part must pass at
    ALPHA; the chance that all do under no effect is at most ALPHA). "Does not hold in some part"
    does: with K tested parts, a part's reversed test counts only at p < ALPHA / K (Bonferroni),
    else that part reads "not shown" here (without this, 4 settings under no effect gave "does
    not hold" 19% of the time, not 5%; tests/test_claims_review.py). Parts whose "does not hold" comes
    from a rule rather than a test (claim c's flatness) count as they are.

    A part marked `counted: False` (a setting where the paper itself claims no such effect, or an
    extension beyond the paper's setting; its reason says which) is tested and shown but left out
    of the verdict; with no counted part the claim is inconclusive, and is itself marked not
    counted, so a claim built of claims (`claims._all_parts`) leaves it out in turn."""
    counted = [p for p in parts if p.get("counted", True)]
    k = sum(p["verdict"] != INCONCLUSIVE for p in counted)
    for p in counted:
        if p["verdict"] == NOT_HOLD and k > 1 and p.get("p_reverse") is not None and p["p_reverse"] >= ALPHA / k:
            p["verdict"], p["reason"] = NOT_SHOWN, (
                f"{p['reason']}; reversed at p = {fmt(p['p_reverse'], 3)} in this setting alone, above "
                f"{ALPHA:g}/{k} = {fmt(ALPHA / k, 4)} (Bonferroni over {k} settings), so not shown")
    vs = [p["verdict"] for p in counted]
    if vs and all(v == HOLDS for v in vs):
        v = HOLDS
    elif NOT_HOLD in vs:
        v = NOT_HOLD
    elif NOT_SHOWN in vs:
        v = NOT_SHOWN
    else:
        v = INCONCLUSIVE
    reason = "; ".join(f"{p['part']}: {p['verdict']} ({p['reason']})" for p in parts) or "no parts"
    if parts and not counted:
        reason = "no part counts toward this claim (see each part); " + reason
    out = claim(cid, text, paper, v, reason, test, numbers, parts)
    return out | {"counted": False} if parts and not counted else out


def not_counted(part: dict, note: str | None) -> dict:
    """`part` shown but left out of its claim's verdict (`combine`), its reason saying why; as it is
    when `note` is None."""
    return part if note is None else part | {"counted": False, "reason": f"not counted: {note}; measured: {part['reason']}"}


def any_of(cid, text, paper, parts, test, numbers) -> dict:
    """For a method swept over K values (dropout rates): holds if some value's part holds, each
    part having been tested at ALPHA / K (Bonferroni), so "holds at some of K values" is still a
    level-ALPHA test; does not hold if every tested part does not; else not shown; inconclusive
    if no part could be tested. Pooling the K values into one frontier instead would give it K
    times the sweep points and a lower frontier by chance alone (13% false "holds" at K = 2 in a
    review's simulation). Parts not counted (`combine`) are shown and left out, as there."""
    live = [p for p in parts if p.get("counted", True)]
    vs = [p["verdict"] for p in live if p["verdict"] != INCONCLUSIVE]
    if HOLDS in vs:
        v = HOLDS
    elif vs and all(x == NOT_HOLD for x in vs):
        v = NOT_HOLD
    elif vs:
        v = NOT_SHOWN
    else:
        v = INCONCLUSIVE
    reason = "; ".join(f"{p['part']}: {p['verdict']} ({p['reason']})" for p in parts) or "no parts"
    out = claim(cid, text, paper, v, reason, test, numbers, parts)
    return out | {"counted": False} if parts and not live else out

"""Pareto frontiers of (loss, loss) points and their comparison (paper §4.3; notes §5, "Evaluation").

The paper plots, per method, the Pareto-optimal checkpoints of a sweep (stage-2 hyperparameters ×
stage-3 learning rates) in two 2-D views, lower being better on both axes:

    "L_ret vs L_ft"   x = L_ft  (downstream),  y = L_ret (retained post-training loss)   Figs 2, 8, 9 (left)
    "L_pre vs L_ret"  x = L_ret,               y = L_pre (retained C4 loss)              Figs 2, 9 (right), 5, 11

Figs 4, 6, 7, 10 and 12 plot the first view with its axes swapped (x = L_ret, y = L_ft).

Design choices (docs/frontiers.md):
* Dominance: p dominates q if p.x <= q.x and p.y <= q.y with at least one strict. A point is on the
  frontier if no other point of the same method dominates it.
* Ties: two points with the same x and different y -> only the lower y survives (it dominates).
  Exact duplicates (same x and y) dominate neither; the frontier keeps them once.
* A frontier is a sequence sorted by x with strictly decreasing y. The paper joins frontier points
  with straight lines and reads values off those lines (Fig 2), so `interpolate` is
  linear between frontier points and undefined (NaN) outside the frontier's x-range; `as_steps`
  gives the staircase (attainable region) for plots that prefer it.
* Comparisons happen only where both frontiers are defined: `compare_at` returns NaN outside the
  common x-range, and `signed_area` integrates (y_a - y_b) over that range exactly (the difference
  of two piecewise-linear functions is piecewise linear between the union of their breakpoints).
  Positive area / gap = frontier b lies below a = b is better.
* NaN or infinite losses are refused with a ValueError: a diverged run must be handled explicitly,
  not silently dropped from (or dominating) a frontier.

Everything here is a pure function on arrays, lists of rows or pandas DataFrames.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

# view name -> (x column, y column); the paper's titles put y first ("L_ret vs L_ft").
VIEWS: dict[str, tuple[str, str]] = {
    "L_ret vs L_ft": ("L_ft", "L_ret"),
    "L_pre vs L_ret": ("L_ret", "L_pre"),
}
# Figs 4, 6, 7, 10 and 12 swap the axes of the first view (x = L_ret, y = L_ft); the Pareto *set* is the same.
FIG4_VIEW = ("L_ret", "L_ft")

ROW_KEYS = ("experiment", "run", "pipeline", "allocation", "method", "seed", "lam", "post_tokens",
            "stage2_lr", "stage2_batch", "dropout", "replay", "lora_r", "stage3_lr")


def _finite(values: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = np.flatnonzero(bad)[:5].tolist()
        raise ValueError(f"{name}: non-finite value(s) {arr[bad][:5].tolist()} at index {idx}; "
                         "a diverged run cannot enter a frontier: drop or fix those rows explicitly")
    return arr


def view_axes(view: str | tuple[str, str]) -> tuple[str, str]:
    """(x, y) column names for a view name from VIEWS, or an explicit (x, y) pair."""
    if isinstance(view, tuple):
        return view
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; use one of {list(VIEWS)} or an (x, y) tuple")
    return VIEWS[view]


def pareto_mask(x: Sequence[float], y: Sequence[float]) -> np.ndarray:
    """Boolean mask of the Pareto-optimal points (lower is better on both axes).

    Duplicate points are all left True here (none dominates another); `pareto_front` keeps one.
    Raises ValueError on NaN/inf or mismatched lengths.
    """
    x = _finite(x, "x")
    y = _finite(y, "y")
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D of equal length, got {x.shape} and {y.shape}")
    n = len(x)
    if n == 0:
        return np.zeros(0, dtype=bool)
    # sweep in x order (ties: lower y first); a point survives if its y is below every earlier y,
    # or it equals the running best exactly (a duplicate of a frontier point).
    order = np.lexsort((y, x))
    mask = np.zeros(n, dtype=bool)
    best_y, best_x = np.inf, None
    for i in order:
        if y[i] < best_y:
            mask[i] = True
            best_y, best_x = y[i], x[i]
        elif y[i] == best_y and x[i] == best_x:
            mask[i] = True  # exact duplicate of the current frontier point
    return mask


def pareto_front(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The frontier as (xs, ys): sorted by x ascending, y strictly decreasing, duplicates once."""
    x = _finite(x, "x")
    y = _finite(y, "y")
    m = pareto_mask(x, y)
    pts = sorted(set(zip(x[m].tolist(), y[m].tolist())))
    if not pts:
        return np.zeros(0), np.zeros(0)
    xs, ys = map(np.asarray, zip(*pts))
    return xs.astype(float), ys.astype(float)


def as_steps(xs: Sequence[float], ys: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Staircase through frontier points (x_i, y_i) -> (x_{i+1}, y_i) -> (x_{i+1}, y_{i+1}).

    The region above/right of the staircase is what the sweep attains; the straight-line version
    (`xs, ys` themselves) is what the paper draws.
    """
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    if len(xs) <= 1:
        return xs.copy(), ys.copy()
    sx, sy = [xs[0]], [ys[0]]
    for i in range(1, len(xs)):
        sx += [xs[i], xs[i]]
        sy += [ys[i - 1], ys[i]]
    return np.asarray(sx), np.asarray(sy)


def interpolate(xs: Sequence[float], ys: Sequence[float], xq: float | Sequence[float]) -> np.ndarray:
    """y of the frontier line at xq, linear between frontier points; NaN outside [xs[0], xs[-1]]."""
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    q = np.atleast_1d(np.asarray(xq, dtype=float))
    out = np.full(q.shape, np.nan)
    if len(xs) == 0:
        return out
    inside = (q >= xs[0]) & (q <= xs[-1])
    if len(xs) == 1:
        out[inside] = ys[0]
    else:
        out[inside] = np.interp(q[inside], xs, ys)
    return out


def common_range(a: tuple[Sequence[float], Sequence[float]],
                 b: tuple[Sequence[float], Sequence[float]]) -> tuple[float, float] | None:
    """[lo, hi] where both frontiers are defined, or None if their x-ranges do not overlap."""
    ax, bx = np.asarray(a[0], float), np.asarray(b[0], float)
    if len(ax) == 0 or len(bx) == 0:
        return None
    lo, hi = max(ax[0], bx[0]), min(ax[-1], bx[-1])
    return (float(lo), float(hi)) if lo <= hi else None


def compare_at(a: tuple[Sequence[float], Sequence[float]], b: tuple[Sequence[float], Sequence[float]],
               xq: float | Sequence[float]) -> pd.DataFrame:
    """Frontier a and b read at matched x (as the paper reads Figs 2 and 4).

    Columns x, y_a, y_b, diff = y_a - y_b (positive: b lower = better). Rows outside either
    frontier's x-range carry NaN, never an extrapolated value.
    """
    q = np.atleast_1d(np.asarray(xq, dtype=float))
    ya, yb = interpolate(*a, q), interpolate(*b, q)
    return pd.DataFrame({"x": q, "y_a": ya, "y_b": yb, "diff": ya - yb})


def signed_area(a: tuple[Sequence[float], Sequence[float]],
                b: tuple[Sequence[float], Sequence[float]]) -> tuple[float, float]:
    """(∫ (y_a - y_b) dx over the common x-range, the range's width).

    Positive: b lies below a on average (b better). Exact for piecewise-linear frontiers. Returns
    (nan, 0.0) when the ranges do not overlap, (0.0, 0.0) for a single shared x (area of a point);
    divide by the width for the mean vertical gap (`mean_gap`).
    """
    rng = common_range(a, b)
    if rng is None:
        return float("nan"), 0.0
    lo, hi = rng
    if hi == lo:
        return 0.0, 0.0
    knots = np.concatenate([[lo, hi], np.asarray(a[0], float), np.asarray(b[0], float)])
    knots = np.unique(knots[(knots >= lo) & (knots <= hi)])
    d = interpolate(*a, knots) - interpolate(*b, knots)
    area = float(np.sum((d[1:] + d[:-1]) / 2 * np.diff(knots)))
    return area, float(hi - lo)


def mean_gap(a: tuple[Sequence[float], Sequence[float]],
             b: tuple[Sequence[float], Sequence[float]]) -> float:
    """Average vertical gap y_a - y_b over the common x-range (positive: b better).

    With a single shared x (zero width) it is the gap at that x; NaN if there is no overlap.
    """
    area, width = signed_area(a, b)
    if width > 0:
        return area / width
    rng = common_range(a, b)
    if rng is None:
        return float("nan")
    return float(compare_at(a, b, rng[0])["diff"].iloc[0])


def dominated_fraction(a: tuple[Sequence[float], Sequence[float]],
                       b: tuple[Sequence[float], Sequence[float]]) -> float:
    """Share of frontier a's points dominated by some point of frontier b (NaN if a is empty).

    A range-free comparison for frontiers whose x-ranges do not overlap (where `mean_gap` is
    undefined): 1.0 means b is at least as good everywhere a was measured.
    """
    ax, ay = np.asarray(a[0], float), np.asarray(a[1], float)
    bx, by = np.asarray(b[0], float), np.asarray(b[1], float)
    if len(ax) == 0:
        return float("nan")
    dom = [bool(np.any((bx <= x) & (by <= y) & ((bx < x) | (by < y)))) for x, y in zip(ax, ay)]
    return float(np.mean(dom))


# ---------------------------------------------------------------------------------------------
# Rows (eelib.pipeline.collect) -> points -> per-method frontiers.

def points(rows: Iterable[dict] | pd.DataFrame, trajectory: bool = False) -> pd.DataFrame:
    """One point per (row, [trajectory step]) with the run's swept fields and all four losses.

    `trajectory=False`: only each stage-3 run's final point (L_ft, L_ret, L_pre of the row; L_im is
    carried along). `trajectory=True`: also every evaluated stage-3 step (the paper's frontiers
    use checkpoints along fine-tuning, notes §5); column `step` is -1 for the final point.
    """
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if df.empty:
        return pd.DataFrame(columns=[*ROW_KEYS, "step", "L_im", "L_ret", "L_ft", "L_pre"])
    keep = [k for k in ROW_KEYS if k in df.columns]
    out = df[keep + [c for c in ("L_im", "L_ret", "L_ft", "L_pre") if c in df.columns]].copy()
    out["step"] = -1
    if trajectory and "trajectory" in df.columns:
        extra = []
        for _, r in df.iterrows():
            for t in r["trajectory"] or []:
                e = {k: r[k] for k in keep}
                e.update(L_im=r.get("L_im"), L_ret=t["L_ret"], L_ft=t["L_ft"], L_pre=t["L_pre"],
                         step=t["step"])
                extra.append(e)
        if extra:
            out = pd.concat([out, pd.DataFrame(extra)], ignore_index=True)
    return out.reset_index(drop=True)


def frontiers(rows: Iterable[dict] | pd.DataFrame, view: str | tuple[str, str] = "L_ret vs L_ft",
              by: str | Sequence[str] = "method", trajectory: bool = False) -> pd.DataFrame:
    """Pareto frontier of every group (default: per method) in one view.

    Returns the frontier points (all their columns) plus `x`, `y`, sorted by group then x; a
    duplicated frontier point appears once. Raises ValueError on NaN/inf in the view's columns.
    """
    xcol, ycol = view_axes(view)
    pts = rows if isinstance(rows, pd.DataFrame) and "step" in rows.columns else points(rows, trajectory)
    by = [by] if isinstance(by, str) else list(by)
    if pts.empty:
        return pts.assign(x=[], y=[])
    _finite(pts[xcol], xcol)
    _finite(pts[ycol], ycol)
    parts = []
    for _, g in pts.groupby(by, sort=True, dropna=False):
        m = pareto_mask(g[xcol].to_numpy(float), g[ycol].to_numpy(float))
        f = g[m].assign(x=g[xcol][m].astype(float), y=g[ycol][m].astype(float))
        parts.append(f.drop_duplicates(subset=["x", "y"]).sort_values("x"))
    return pd.concat(parts, ignore_index=True)


def front_of(df: pd.DataFrame, view: str | tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """(xs, ys) frontier of all points in `df` (any one group) in `view`."""
    xcol, ycol = view_axes(view)
    if df.empty:
        return np.zeros(0), np.zeros(0)
    return pareto_front(df[xcol].to_numpy(float), df[ycol].to_numpy(float))

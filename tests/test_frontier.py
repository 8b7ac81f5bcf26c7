"""Frontier math on hand-made point sets (eelib.frontier; paper §5 'Frontiers')."""
import math

import numpy as np
import pandas as pd
import pytest

from eelib import frontier as F


def test_dominance_simple():
    x = [1.0, 2.0, 3.0, 2.5, 1.5]
    y = [3.0, 2.0, 1.0, 2.5, 3.5]   # (2.5, 2.5) dominated by (2, 2); (1.5, 3.5) by (1, 3)
    assert F.pareto_mask(x, y).tolist() == [True, True, True, False, False]
    xs, ys = F.pareto_front(x, y)
    assert xs.tolist() == [1.0, 2.0, 3.0] and ys.tolist() == [3.0, 2.0, 1.0]


def test_ties_same_x_or_same_y():
    # same x: the lower y dominates; same y: the lower x dominates
    assert F.pareto_mask([1, 1], [2, 3]).tolist() == [True, False]
    assert F.pareto_mask([1, 2], [2, 2]).tolist() == [True, False]


def test_same_x_ties_do_not_depend_on_the_input_order():
    """Same x with the higher y listed first is still dominated: the sweep must sort ties by y
    (an x-only sort keeps both, and the frontier then goes up and down at that x)."""
    assert F.pareto_mask([1, 1], [3, 2]).tolist() == [False, True]
    xs, ys = F.pareto_front([2, 1, 1], [1, 3, 2])
    assert xs.tolist() == [1.0, 2.0] and ys.tolist() == [2.0, 1.0]


def test_duplicates_kept_once():
    x, y = [1, 1, 2, 2], [2, 2, 1, 5]
    assert F.pareto_mask(x, y).tolist() == [True, True, True, False]
    xs, ys = F.pareto_front(x, y)
    assert list(zip(xs, ys)) == [(1.0, 2.0), (2.0, 1.0)]


def test_one_point_and_empty():
    xs, ys = F.pareto_front([2.0], [3.0])
    assert xs.tolist() == [2.0] and ys.tolist() == [3.0]
    assert F.interpolate(xs, ys, [2.0, 2.1]).tolist()[0] == 3.0
    assert math.isnan(F.interpolate(xs, ys, 2.1)[0])
    assert F.pareto_front([], [])[0].size == 0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_refused(bad):
    with pytest.raises(ValueError, match="non-finite"):
        F.pareto_mask([1.0, bad], [1.0, 2.0])
    rows = [{"method": "m", "seed": 0, "lam": 0.0, "L_ft": 1.0, "L_ret": bad, "L_pre": 1.0, "L_im": 1.0}]
    with pytest.raises(ValueError, match="L_ret"):
        F.frontiers(rows, "L_ret vs L_ft")


def test_interpolation_inside_only():
    xs, ys = np.array([1.0, 3.0]), np.array([4.0, 2.0])
    got = F.interpolate(xs, ys, [0.5, 1.0, 2.0, 3.0, 3.5])
    assert np.isnan(got[0]) and np.isnan(got[4])
    assert got[1:4].tolist() == [4.0, 3.0, 2.0]


def test_compare_at_matched_x_nan_outside_common_range():
    a = (np.array([1.0, 3.0]), np.array([4.0, 2.0]))
    b = (np.array([2.0, 4.0]), np.array([3.0, 1.0]))
    cmp = F.compare_at(a, b, [1.5, 2.5, 3.5])
    assert np.isnan(cmp["diff"][0]) and np.isnan(cmp["diff"][2])
    assert cmp["y_a"][1] == pytest.approx(2.5) and cmp["y_b"][1] == pytest.approx(2.5)
    assert F.common_range(a, b) == (2.0, 3.0)


def test_signed_area_sign_and_value():
    a = (np.array([0.0, 2.0]), np.array([3.0, 1.0]))
    b = (np.array([0.0, 2.0]), np.array([2.0, 0.0]))    # b is 1 below a everywhere
    area, width = F.signed_area(a, b)
    assert area == pytest.approx(2.0) and width == 2.0
    assert F.signed_area(b, a)[0] == pytest.approx(-2.0)
    assert F.mean_gap(a, b) == pytest.approx(1.0)
    # crossing frontiers: exact area with knots from both
    c = (np.array([0.0, 1.0, 2.0]), np.array([3.0, 1.0, 0.5]))
    area, _ = F.signed_area(a, c)   # a - c: 0 at 0, +1 at 1, +0.5 at 2 -> 0.5 + 0.75
    assert area == pytest.approx(1.25)
    # and the kinks of the first frontier count as much as those of the second
    assert F.signed_area(c, a)[0] == pytest.approx(-1.25)


def test_no_overlap():
    a = (np.array([0.0, 1.0]), np.array([2.0, 1.0]))
    b = (np.array([2.0, 3.0]), np.array([0.5, 0.2]))
    assert F.common_range(a, b) is None
    assert math.isnan(F.signed_area(a, b)[0]) and math.isnan(F.mean_gap(a, b))
    assert F.dominated_fraction((np.array([2.5]), np.array([1.0])), b) == 1.0


def test_frontiers_touching_at_one_x_are_compared_there():
    """A shared end point is a common range of width zero (documented): the gap at that x, not
    NaN, which claims would report as 'frontiers do not overlap' and skip the seed."""
    a = (np.array([0.0, 1.0]), np.array([2.0, 1.0]))
    b = (np.array([1.0, 2.0]), np.array([0.5, 0.2]))
    assert F.common_range(a, b) == (1.0, 1.0)
    assert F.signed_area(a, b) == (0.0, 0.0)
    assert F.mean_gap(a, b) == pytest.approx(0.5)


def test_dominated_fraction_counts_strict_dominance_on_both_axes():
    """claims reports this share when the frontiers do not overlap: an equal point, or one lower
    on one axis only, dominates nothing."""
    a = (np.array([1.0, 3.0]), np.array([3.0, 1.0]))
    assert F.dominated_fraction(a, a) == 0.0
    assert F.dominated_fraction(a, (np.array([2.0]), np.array([2.0]))) == 0.0
    assert F.dominated_fraction(a, (np.array([1.0]), np.array([2.0]))) == 0.5


def test_steps():
    sx, sy = F.as_steps([1, 2, 3], [3, 2, 1])
    assert sx.tolist() == [1, 2, 2, 3, 3] and sy.tolist() == [3, 3, 2, 2, 1]


def _row(method, seed, lft, lret, lpre=3.0, traj=None):
    return {"method": method, "seed": seed, "lam": 0.0 if method == "unmixed" else 1.0, "run": f"{method}{seed}",
            "stage3_lr": 1e-3, "L_im": 1.0, "L_ft": lft, "L_ret": lret, "L_pre": lpre, "trajectory": traj or []}


def test_frontiers_per_method_and_trajectory():
    rows = [_row("unmixed", 0, 2.0, 3.0), _row("unmixed", 0, 3.0, 2.0), _row("unmixed", 0, 3.5, 2.5),
            _row("mixed", 0, 2.0, 2.0, traj=[{"step": 0, "L_ft": 4.0, "L_ret": 1.0, "L_pre": 3.0},
                                             {"step": 5, "L_ft": 2.0, "L_ret": 2.0, "L_pre": 3.0}])]
    fr = F.frontiers(rows, "L_ret vs L_ft")
    assert set(fr["method"]) == {"unmixed", "mixed"}
    assert fr[fr.method == "unmixed"]["x"].tolist() == [2.0, 3.0]
    fr_t = F.frontiers(rows, "L_ret vs L_ft", trajectory=True)
    m = fr_t[fr_t.method == "mixed"]
    assert list(zip(m["x"], m["y"])) == [(2.0, 2.0), (4.0, 1.0)]   # the trajectory duplicate kept once
    assert fr_t[fr_t.method == "unmixed"]["x"].tolist() == [2.0, 3.0]  # final points stay in
    assert isinstance(F.points(pd.DataFrame(rows), trajectory=True), pd.DataFrame)

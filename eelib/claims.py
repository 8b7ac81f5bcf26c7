"""The paper's claims, tested on an experiment's rows (eelib/report.py writes claims.md + .json).

Each claim gets a verdict computed from the rows, never written by hand:

    holds           the effect is in the claimed direction, significantly: one-sided paired t-test
                    across seeds, p < ALPHA = 0.05 (t above the Student-t critical value for n−1
                    degrees of freedom; hand-written CDF, no scipy). An exact sign-test p is
                    reported alongside
    does not hold   the effect is significantly in the *opposite* direction (the same test, reversed)
    not shown       the test ran (>= 3 seeds with the needed rows) and neither direction is
                    significant: the data do not show the effect (with 3 seeds the test has little
                    power, so this is what a small effect usually gets)
    inconclusive    the test could not be run: the needed rows are missing (e.g. no allocation=split
                    runs, no +replay method, no λ = 1) or fewer than 3 seeds have them; the reason is stated

Each claim is tested within one pipeline (D_post→D_ft), |D_post| and model, never across them (L_ret
of music→chem and of flan→chem are losses on different corpora); with several, each is a part and
the claim holds only if every part does, and does not hold if a part is reversed at p < ALPHA / K
over its K tested parts (`stats.combine`). A part is shown but not counted where the paper itself
reports no such effect (PAPER_NO_EFFECT: 1B FLAN→Chem on claim a's view, Fig 9) and, for c and d,
where an experiment sweeps several stage-2 configurations (Fig 3 fixes one). The frontier claims
(a, b, e, f) compare full post-training runs (allocation=added); Fig 3b's split runs are not such a
comparison.

Claims (paper section -> statistic per seed, then the threshold across seeds):
    a  mixing improves the L_ret-vs-L_ft frontier (§4.3, Fig 2): mean vertical gap between the
       unmixed and mixed frontiers over their common L_ft range (frontier.mean_gap), per seed
    b  the same for the L_pre-vs-L_ret frontier (Fig 2, right panels)
    c  Fig 3a (allocation=added): L_ret improves with λ while L_im stays flat: per seed and post
       size, ΔL_ret = L_ret(λ=0) − L_ret(λ_max) must pass the threshold and L_im is "flat":
       |mean ΔL_im| <= FLAT_RATIO · mean ΔL_ret (the paper's own digitized values give ratios
       0.01–0.24, see docs/frontiers.md)
    d  Fig 3b (allocation=split): interior optimum of L_ret over λ: λ* = argmin of the seed-mean
       curve is neither end of the λ grid, and both endpoint gaps L_ret(end) − L_ret(λ*) pass the
       threshold (λ* is picked on the same data: a mild optimistic bias, stated in the report)
    e  replay and dropout add to mixing (§4.4, Fig 4): mean gap of mixed+replay (resp.
       mixed+dropout) below mixed on the L_ret-vs-L_ft frontier; holds if both parts hold.
       Dropout is tested one swept rate at a time (equal sweeps), at ALPHA / rates, and holds if
       some rate does (`_method_claim`, `stats.any_of`)
    f  mixing helps LoRA too (App., Fig 7): as (a) for LoRA-unmixed vs LoRA-mixed
    g  Fig 3b's other half (§4.2): with one pass split, L_im worsens as λ grows: per seed
       L_im(λ_max) − L_im(0) > 0 (eelib/claims_fig3.py)
    h  replay and dropout on top of mixing also lower C4 loss at matched L_ret (§4.4, Fig 5): e's
       parts on the L_pre-vs-L_ret frontier; 1B dropout not counted (Fig 11 reports the opposite)
    i  without mixing, replay and dropout help, but less than mixing (§4.4, Fig 6): unmixed+X
       below unmixed, and mixed below unmixed+X, for X = replay, dropout; at 1B only "dropout
       helps" counts (Fig 12: replay alone does little; no comparison with mixing)
    j  full fine-tuning in stage 2 beats LoRA (App., Fig 7): unmixed below LoRA-unmixed and mixed
       below LoRA-mixed, on the L_ret-vs-L_ft frontier

"Mixed" means the largest λ among the mixed runs (the paper's mixed pretraining is very likely
λ = 1: the main text names no λ for it, and the 1B dropout ablation mixes at λ ∈ {0, 1}), so both frontiers come from the same number of sweep points: pooling all
λ > 0 would give the mixed frontier more points and bias it downward. Fig 3 claims read one
stage-3 LR (the smallest swept, as the paper uses one small LR, 5e-5), unless told otherwise.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import pandas as pd

from eelib import frontier as F
from eelib.claims_fig3 import claim_fig3a, claim_fig3b, claim_fig3b_im
from eelib.stats import (ALPHA, INCONCLUSIVE, MIN_SEEDS, any_of, by_setting, claim, combine, fmt,
                         not_counted, paired_summary, stats_line, verdict_of)


# ---------------------------------------------------------------------------------------------
# Frontier claims (a, b, e, f, h, i, j)

def _is_mixed(method: str) -> bool:
    return method.replace("LoRA-", "").startswith("mixed")


def _lam_of(pts: pd.DataFrame, base: str, other: str) -> dict | None:
    """The λ each method's frontier is read at: unmixed at 0; a mixed method at its largest λ, or,
    when both are mixed (mixed vs mixed+replay), at the largest λ both have, so they differ only
    in the method; None when they share none."""
    lams = {m: sorted(set(pts.loc[(pts.method == m) & (pts.lam > 0), "lam"])) for m in (base, other)}
    if _is_mixed(base) and _is_mixed(other):
        common = set(lams[base]) & set(lams[other])
        return {base: max(common), other: max(common)} if common else None
    return {m: (max(lams[m]) if lams[m] else None) if _is_mixed(m) else None for m in (base, other)}


def frontier_gap_test(rows: pd.DataFrame, base: str, other: str, view: str,
                      trajectory: bool = True) -> dict:
    """Per seed: mean gap (base frontier − other frontier, positive = other better) over the
    common x-range of the view, then the paired summary across seeds. Rows of one pipeline and
    one |D_post| (`_frontier_claim` groups them). Mixed methods are read at λ as `_lam_of` says."""
    pts = F.points(rows, trajectory=trajectory)
    per_seed, skipped, dominated = {}, {}, {}
    have = set(pts["method"]) if len(pts) else set()
    missing = [m for m in (base, other) if m not in have]
    if missing:
        return {"missing": missing, "per_seed": {}, "skipped": {}, "summary": paired_summary([])}
    lams = _lam_of(pts, base, other)
    if lams is None:
        return {"missing": [], "no_common_lam": True, "per_seed": {}, "skipped": {}, "summary": paired_summary([])}
    by_method = {m: set(pts.loc[pts.method == m, "seed"]) for m in (base, other)}
    seeds = sorted(by_method[base] & by_method[other])
    xcol, ycol = F.view_axes(view)
    # sweep points per seed (final points: one per run and stage-3 LR), the most any seed has
    final = pts[pts["step"] == -1]
    sweep = {}
    for m in (base, other):
        g = final[final.method == m]
        if lams[m] is not None:
            g = g[g["lam"] == lams[m]]
        sweep[m] = int(g.groupby("seed").size().max()) if len(g) else 0
    for seed in seeds:
        fr, empty = {}, []
        for m in (base, other):
            g = pts[(pts.method == m) & (pts.seed == seed)]
            if lams[m] is not None:
                g = g[g["lam"] == lams[m]]
            if g.empty:
                empty.append(f"no {m} rows at λ={lams[m]:g}")
                continue
            bad = g[~np.isfinite(g[[xcol, ycol]].astype(float)).all(axis=1)]
            if len(bad):  # a diverged run: this seed cannot be compared; the reason names the run
                who = sorted(set(bad["run"])) if "run" in bad.columns else f"{len(bad)} point(s)"
                empty.append(f"non-finite {xcol}/{ycol} in {m} run(s) {who}")
                continue
            fr[m] = F.front_of(g, view)
        if empty:
            skipped[int(seed)] = "; ".join(empty)
            continue
        gap = F.mean_gap(fr[base], fr[other])
        dominated[int(seed)] = F.dominated_fraction(fr[base], fr[other])
        if math.isnan(gap):
            skipped[int(seed)] = "frontiers do not overlap in x"
        else:
            per_seed[int(seed)] = gap
    return {"missing": [], "lams": lams, "per_seed": per_seed, "skipped": skipped, "dominated": dominated,
            "seeds": by_method, "sweep": sweep, "summary": paired_summary(list(per_seed.values()))}


def _frontier_part(cid, text, paper, rows, base, other, view, trajectory, test, alpha=ALPHA) -> dict:
    r = frontier_gap_test(rows, base, other, view, trajectory)
    s = r["summary"]
    if r["missing"]:
        return claim(cid, text, paper, INCONCLUSIVE, f"no rows of method(s) {r['missing']}", test)
    if r.get("no_common_lam"):
        return claim(cid, text, paper, INCONCLUSIVE, f"{base} and {other} share no λ > 0", test)
    v = verdict_of(s, alpha)
    if v == INCONCLUSIVE:
        only = {m: sorted(int(x) for x in seeds) for m, seeds in r["seeds"].items()}
        reason = (f"only {s['n']} seed(s) with overlapping {base}/{other} frontiers (need {MIN_SEEDS})"
                  + ("" if only[base] == only[other] else
                     f"; seeds with runs: {base} {only[base]}, {other} {only[other]}")
                  + (f"; skipped {r['skipped']}" if r["skipped"] else "")
                  + f"; descriptive only: share of the {base} frontier dominated by {other}'s, per seed: "
                  + ", ".join(f"{k}: {v:.2f}" for k, v in r["dominated"].items()))
    else:
        reason = f"mean gap {fmt(s['mean'])} ± {fmt(s['se'])} (SE), {stats_line(s)}" + (
            "" if alpha == ALPHA else f", tested at p < {alpha:.4g}")
    at = {m: lam for m, lam in r["lams"].items() if lam is not None}
    if at:  # which λ "mixed" was read at: a missing λ = 1 run must not pass unnoticed
        reason += "; " + ", ".join(f"{m} at λ = {lam:g}" for m, lam in at.items())
    if len(set(r["sweep"].values())) > 1:  # more sweep points lower a frontier by chance
        reason += ("; unequal sweeps: " + ", ".join(f"{m} {n} points per seed" for m, n in r["sweep"].items())
                   + " (the larger sweep's frontier is lower by chance alone; compare equal sweeps)")
    nums = {"per_seed": r["per_seed"], "skipped": r["skipped"], "lam": r.get("lams"),
            "dominated_fraction": r.get("dominated"), "sweep_points": r["sweep"],
            **{k: s[k] for k in ("n", "mean", "std", "se", "t", "p_t", "p_sign")}}
    out = claim(cid, text, paper, v, reason, test, nums)
    out["p_reverse"] = None if s["p_t"] is None else 1 - s["p_t"]  # for combine's correction
    return out


SETTING = ("pipeline", "post_tokens", "model")  # never pooled: L_ret of another pipeline is another loss

# Settings where the paper itself reports no such effect: the part is tested and shown, and left
# out of the claim's verdict, so a faithful reproduction does not read as a failed one.
# (claim id, pipeline, model preset) -> what the paper says there.
# A pipeline of "*": every pipeline of that model.
PAPER_NO_EFFECT = {
    ("a", "flan->chem", "paper-1b"): "the paper reports no noticeable improvement on this view for "
                                     "1B FLAN→Chem (Fig 9; it does on the C4 view, claim b)",
    ("h.dropout", "*", "paper-1b"): "at 1B the paper reports that dropout at the rate it swept degrades "
                                    "C4 retention (Fig 11), which it attributes to too little tuning",
    ("i.replay", "*", "paper-1b"): "at 1B the paper reports that replay without mixing does little (Fig 12)",
    ("i.replay<mixed", "*", "paper-1b"): "the paper makes this comparison at 135M only (Fig 6; Fig 12 does not)",
    ("i.dropout<mixed", "*", "paper-1b"): "the paper makes this comparison at 135M only (Fig 6; Fig 12 does not)",
}


def _paper_no_effect(cid: str, g: pd.DataFrame) -> str | None:
    if not {"pipeline", "model"} <= set(g.columns) or g.empty:
        return None
    pipeline, model = g["pipeline"].iloc[0], g["model"].iloc[0]
    return PAPER_NO_EFFECT.get((cid, pipeline, model)) or PAPER_NO_EFFECT.get((cid, "*", model))


def _frontier_claim(cid, text, paper, rows, base, other, view, trajectory, alpha=ALPHA, needs=None) -> dict:
    test = (f"per pipeline and |D_post|, allocation=added runs, per seed: mean vertical gap {base} − {other} "
            f"frontier over their common x-range ({view}; {'final + trajectory' if trajectory else 'final'} "
            f"points; positive = {other} better); holds if one-sided paired t-test p < {alpha:.4g} over "
            f"≥ {MIN_SEEDS} seeds, in every setting the paper claims it for")
    if "allocation" in rows.columns and len(rows):
        rows = rows[rows["allocation"] == "added"]
        if rows.empty:
            return claim(cid, text, paper, INCONCLUSIVE,
                          "no allocation=added runs (Fig 3b's split runs do not compare full post-training)", test)
    # a setting where the method under test (`needs`, by default `other`) was not run is not part
    # of this claim (e.g. replay runs for one pipeline only); one with it but without the method it
    # is compared with stays, as inconclusive
    needs = needs or other
    settings = by_setting(rows, SETTING)
    if "method" in rows.columns:
        settings = [(label, g) for label, g in settings if (g["method"] == needs).any()] or settings
    parts = []
    for label, g in settings:
        part = _frontier_part(cid, text, paper, g, base, other, view, trajectory, test, alpha) | {"part": label}
        parts.append(not_counted(part, _paper_no_effect(cid, g)))
    if len(parts) == 1 and parts[0].get("counted", True):
        return parts[0]
    return combine(cid, text, paper, parts, test, {"settings": [p["part"] for p in parts]})


def _method_claim(cid, text, paper, df, base, other, view, trajectory, needs=None) -> dict:
    """`other` against `base` as `_frontier_claim` tests it; where one of them is a +dropout method
    swept over several rates, one rate at a time, from equal sweeps, at ALPHA / (rates), holding if
    some rate holds (stats.any_of). Table 7 sweeps dropout {0.02, 0.05} as one method; pooled, that
    frontier would have twice the other's points and lie lower by chance alone."""
    m = next((x for x in (other, base) if "+dropout" in x), None)
    has = m is not None and "dropout" in df.columns and len(df) and (df["method"] == m).any()
    rates = sorted(set(df.loc[df["method"] == m, "dropout"].astype(float))) if has else []
    if len(rates) <= 1:
        return _frontier_claim(cid, text, paper, df, base, other, view, trajectory, needs=needs)
    alpha = ALPHA / len(rates)
    parts = []
    for r in rates:
        keep = (df["method"] != m) | np.isclose(df["dropout"].astype(float), r)
        part = _frontier_claim(cid, text, paper, df[keep], base, other, view, trajectory, alpha, needs)
        parts.append(part | {"part": f"dropout {r:g}"})
    test = (f"per dropout rate ({', '.join(f'{r:g}' for r in rates)}), as claim a, {base} vs {other} at that "
            f"rate (equal sweeps), each at p < {ALPHA:g}/{len(rates)} = {alpha:.4g} (Bonferroni); holds if "
            "some rate holds")
    return any_of(cid, text, paper, parts, test, {"rates": rates, "alpha": alpha})


def _all_parts(cid, text, paper, df, trajectory, specs) -> dict:
    """A claim made of several method comparisons (`_method_claim`), holding if every part does.
    specs: (part id, part text, base, other, view, the method a setting needs to be tested)."""
    parts = []
    for pid, ptext, base, other, view, needs in specs:
        p = _method_claim(f"{cid}.{pid}", ptext, paper, df, base, other, view, trajectory, needs)
        parts.append(p | {"part": p["id"]})
    test = "every part (" + ", ".join(p["id"] for p in parts) + ") as in claim a: " + "; ".join(
        ptext for _, ptext, *_ in specs)
    return combine(cid, text, paper, parts, test, {})


# ---------------------------------------------------------------------------------------------
# All claims (Fig 3's, c and d, in eelib/claims_fig3.py)

def evaluate(rows: Iterable[dict] | pd.DataFrame, trajectory: bool = True,
             stage3_lr: float | None = None) -> list[dict]:
    """All the claims (a–j) on an experiment's rows (eelib.pipeline.collect)."""
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if df.empty:
        empty = pd.DataFrame(columns=["method", "seed", "lam", "allocation", "stage3_lr", "post_tokens",
                                      "L_im", "L_ret", "L_ft", "L_pre"])
        df = empty
    df = df.astype({"method": str}) if len(df) else df
    if len(df):  # rows written without the field predate Fig 3b's split: the default, added
        df["allocation"] = df["allocation"].fillna("added") if "allocation" in df.columns else "added"
    if "lam" in df.columns and len(df):  # λ grids written as sums (0.1 * 10) still meet 0 and 1 exactly
        df["lam"] = df["lam"].astype(float).round(9)
    out = [
        _frontier_claim("a", "Mixing improves the L_ret-vs-L_ft frontier", "§4.3, Fig 2 (left)",
                        df, "unmixed", "mixed", "L_ret vs L_ft", trajectory),
        _frontier_claim("b", "Mixing improves the L_pre-vs-L_ret frontier", "§4.3, Fig 2 (right)",
                        df, "unmixed", "mixed", "L_pre vs L_ret", trajectory),
        claim_fig3a(df, stage3_lr) if len(df) else claim("c", "Fig 3a", "§4.1", INCONCLUSIVE, "no rows", ""),
        claim_fig3b(df, stage3_lr) if len(df) else claim("d", "Fig 3b", "§4.2", INCONCLUSIVE, "no rows", ""),
    ]
    RET_FT, PRE_RET = "L_ret vs L_ft", "L_pre vs L_ret"
    out.insert(4, _all_parts("e", "Replay and dropout each add to mixing", "§4.4, Fig 4", df, trajectory, [
        ("replay", "mixed+replay improves on mixed (L_ret-vs-L_ft frontier)", "mixed", "mixed+replay", RET_FT, None),
        ("dropout", "mixed+dropout improves on mixed (L_ret-vs-L_ft frontier)", "mixed", "mixed+dropout", RET_FT,
         None)]))
    out.append(_frontier_claim("f", "Mixing helps LoRA stage-2 too (LoRA-mixed beats LoRA-unmixed)",
                               "App., Fig 7", df, "LoRA-unmixed", "LoRA-mixed", RET_FT, trajectory))
    out.append(claim_fig3b_im(df, stage3_lr) if len(df) else claim("g", "Fig 3b, L_im", "§4.2", INCONCLUSIVE,
                                                                    "no rows", ""))
    out.append(_all_parts("h", "Replay and dropout on top of mixing also lower C4 loss at matched L_ret",
                          "§4.4, Fig 5", df, trajectory, [
        ("replay", "mixed+replay improves on mixed (L_pre-vs-L_ret frontier)", "mixed", "mixed+replay", PRE_RET, None),
        ("dropout", "mixed+dropout improves on mixed (L_pre-vs-L_ret frontier)", "mixed", "mixed+dropout", PRE_RET,
         None)]))
    # Fig 6: without mixing (λ = 0), each helps, but less than mixing alone
    out.append(_all_parts("i", "Without mixing, replay and dropout help, but less than mixing does",
                          "§4.4, Fig 6", df, trajectory, [
        ("replay", "unmixed+replay improves on unmixed", "unmixed", "unmixed+replay", RET_FT, None),
        ("dropout", "unmixed+dropout improves on unmixed", "unmixed", "unmixed+dropout", RET_FT, None),
        ("replay<mixed", "mixed improves on unmixed+replay", "unmixed+replay", "mixed", RET_FT, "unmixed+replay"),
        ("dropout<mixed", "mixed improves on unmixed+dropout", "unmixed+dropout", "mixed", RET_FT,
         "unmixed+dropout")]))
    # Fig 7: full fine-tuning in stage 2 beats LoRA, mixed or not. LoRA's frontier also pools Table
    # 9's LoRA dropouts (3x full fine-tuning's distinct points), which favours LoRA: a conservative test.
    out.append(_all_parts("j", "Full fine-tuning in stage 2 beats LoRA (L_ret-vs-L_ft frontier)", "App., Fig 7",
                          df, trajectory, [
        ("unmixed", "unmixed improves on LoRA-unmixed", "LoRA-unmixed", "unmixed", RET_FT, "LoRA-unmixed"),
        ("mixed", "mixed improves on LoRA-mixed", "LoRA-mixed", "mixed", RET_FT, "LoRA-mixed")]))
    return out

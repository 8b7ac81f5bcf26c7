"""The paper's claims, tested on an experiment's rows; written as claims.md + claims.json.

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
over its K tested parts (`_combine`). The frontier claims (a, b, e, f) compare full
post-training runs (allocation=added); Fig 3b's split runs are not such a comparison.

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
       mixed+dropout) below mixed on the L_ret-vs-L_ft frontier; holds if both parts hold
    f  mixing helps LoRA too (App., Fig 7): as (a) for LoRA-unmixed vs LoRA-mixed

"Mixed" means the largest λ among the mixed runs (the paper's mixed pretraining is very likely
λ = 1, paper-notes §3), so both frontiers come from the same number of sweep points: pooling all
λ > 0 would give the mixed frontier more points and bias it downward. Fig 3 claims read one
stage-3 LR (the smallest swept, as the paper uses one small LR, 5e-5), unless told otherwise.
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from eelib import frontier as F
from eelib.io import atomic_write_json, atomic_write_text
from eelib.stats import ALPHA, HOLDS, INCONCLUSIVE, MIN_SEEDS, NOT_HOLD, NOT_SHOWN, paired_summary, verdict_of

FLAT_RATIO = 1 / 3   # claim c: |ΔL_im| at most a third of ΔL_ret


def _stats(s: dict) -> str:
    return f"t = {_fmt(s['t'], 2)}, p = {_fmt(s['p_t'], 3)}, n = {s['n']}"


def _fmt(x, nd=4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float) and math.isinf(x):
        return "∞" if x > 0 else "−∞"
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def _claim(cid: str, text: str, paper: str, verdict: str, reason: str, test: str,
           numbers: dict | None = None, parts: list | None = None) -> dict:
    return {"id": cid, "claim": text, "paper": paper, "verdict": verdict, "reason": reason,
            "test": test, "numbers": numbers or {}, "parts": parts or []}


# ---------------------------------------------------------------------------------------------
# Frontier claims (a, b, e, f)

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


def _frontier_part(cid, text, paper, rows, base, other, view, trajectory, test) -> dict:
    r = frontier_gap_test(rows, base, other, view, trajectory)
    s = r["summary"]
    if r["missing"]:
        return _claim(cid, text, paper, INCONCLUSIVE, f"no rows of method(s) {r['missing']}", test)
    if r.get("no_common_lam"):
        return _claim(cid, text, paper, INCONCLUSIVE, f"{base} and {other} share no λ > 0", test)
    v = verdict_of(s)
    if v == INCONCLUSIVE:
        only = {m: sorted(int(x) for x in seeds) for m, seeds in r["seeds"].items()}
        reason = (f"only {s['n']} seed(s) with overlapping {base}/{other} frontiers (need {MIN_SEEDS})"
                  + ("" if only[base] == only[other] else
                     f"; seeds with runs: {base} {only[base]}, {other} {only[other]}")
                  + (f"; skipped {r['skipped']}" if r["skipped"] else "")
                  + f"; descriptive only: share of the {base} frontier dominated by {other}'s, per seed: "
                  + ", ".join(f"{k}: {v:.2f}" for k, v in r["dominated"].items()))
    else:
        reason = f"mean gap {_fmt(s['mean'])} ± {_fmt(s['se'])} (SE), {_stats(s)}"
    at = {m: lam for m, lam in r["lams"].items() if lam is not None}
    if at:  # which λ "mixed" was read at: a missing λ = 1 run must not pass unnoticed
        reason += "; " + ", ".join(f"{m} at λ = {lam:g}" for m, lam in at.items())
    if len(set(r["sweep"].values())) > 1:  # more sweep points lower a frontier by chance
        reason += ("; unequal sweeps: " + ", ".join(f"{m} {n} points per seed" for m, n in r["sweep"].items())
                   + " (the larger sweep's frontier is lower by chance alone; compare equal sweeps)")
    nums = {"per_seed": r["per_seed"], "skipped": r["skipped"], "lam": r.get("lams"),
            "dominated_fraction": r.get("dominated"), "sweep_points": r["sweep"],
            **{k: s[k] for k in ("n", "mean", "std", "se", "t", "p_t", "p_sign")}}
    out = _claim(cid, text, paper, v, reason, test, nums)
    out["p_reverse"] = None if s["p_t"] is None else 1 - s["p_t"]  # for _combine's correction
    return out


def _setting_label(keys: tuple, values: tuple, varying: set) -> str:
    """'music->chem, post_tokens=200000' with only the fields that vary across the groups."""
    shown = [(k, v) for k, v in zip(keys, values) if k in varying] or list(zip(keys, values))[:1]
    return ", ".join(str(v) if k == "pipeline" else f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in shown)


def _by_setting(rows: pd.DataFrame, keys: tuple) -> list[tuple[str, pd.DataFrame]]:
    """Rows split by the setting columns `keys` that are present: (label, rows) per setting."""
    keys = tuple(k for k in keys if k in rows.columns)
    if not keys or rows.empty:
        return [("all", rows)]
    groups = list(rows.groupby(list(keys), sort=True, dropna=False))  # a missing value is a setting too
    varying = {k for k in keys if rows[k].nunique(dropna=False) > 1}
    return [(_setting_label(keys, v if isinstance(v, tuple) else (v,), varying), g) for v, g in groups]


SETTING = ("pipeline", "post_tokens", "model")  # never pooled: L_ret of another pipeline is another loss


def _frontier_claim(cid, text, paper, rows, base, other, view, trajectory) -> dict:
    test = (f"per pipeline and |D_post|, allocation=added runs, per seed: mean vertical gap {base} − {other} "
            f"frontier over their common x-range ({view}; {'final + trajectory' if trajectory else 'final'} "
            f"points; positive = {other} better); holds if one-sided paired t-test p < {ALPHA:g} over "
            f"≥ {MIN_SEEDS} seeds, in every setting")
    if "allocation" in rows.columns and len(rows):
        rows = rows[rows["allocation"] == "added"]
        if rows.empty:
            return _claim(cid, text, paper, INCONCLUSIVE,
                          "no allocation=added runs (Fig 3b's split runs do not compare full post-training)", test)
    # a setting where the method under test (`other`) was not run is not part of this claim (e.g.
    # replay runs for one pipeline only); one with `other` but no `base` stays, as inconclusive
    settings = _by_setting(rows, SETTING)
    if "method" in rows.columns:
        settings = [(label, g) for label, g in settings if (g["method"] == other).any()] or settings
    parts = [_frontier_part(cid, text, paper, g, base, other, view, trajectory, test) | {"part": label}
             for label, g in settings]
    if len(parts) == 1:
        return parts[0]
    return _combine(cid, text, paper, parts, test, {"settings": [p["part"] for p in parts]})


# ---------------------------------------------------------------------------------------------
# Fig 3 claims (c, d)

def _fig3_rows(rows: pd.DataFrame, allocation: str) -> pd.DataFrame:
    return rows[(rows["allocation"] == allocation) & ~rows["method"].str.contains(r"\+|LoRA", regex=True)]


def _at_lr(g: pd.DataFrame, stage3_lr: float | None) -> tuple[pd.DataFrame, float]:
    """One setting's rows at one stage-3 LR: the given one, else the smallest this setting swept
    (settings may sweep different LR grids)."""
    lr = float(g["stage3_lr"].min()) if stage3_lr is None else float(stage3_lr)
    return g[np.isclose(g["stage3_lr"], lr)], lr


def claim_fig3a(rows: pd.DataFrame, stage3_lr: float | None = None) -> dict:
    text = "Fig 3a: with λ·|D_post| added to stage 1, L_im stays flat while L_ret improves as λ grows"
    test = (f"per seed, pipeline, post size and stage-2 config: ΔL_ret = L_ret(λ=0) − L_ret(λ_max), ΔL_im "
            f"likewise (one stage-3 LR); holds if ΔL_ret > 0 by a one-sided paired t-test at p < {ALPHA:g} "
            f"and |mean ΔL_im| ≤ {FLAT_RATIO:.2f}·mean ΔL_ret, in every setting with ≥ {MIN_SEEDS} seeds")
    sub = _fig3_rows(rows, "added")
    if sub.empty:
        return _claim("c", text, "§4.1, Fig 3a", INCONCLUSIVE, "no allocation=added rows of plain unmixed/mixed runs", test)
    parts = []
    for label, g in _by_setting(sub, FIG3_SETTING):
        g, lr = _at_lr(g, stage3_lr)
        lam_lo, lam_hi = float(g["lam"].min()), float(g["lam"].max())
        if lam_lo != 0 or lam_hi == 0:
            parts.append({"part": label, "stage3_lr": lr, "verdict": INCONCLUSIVE,
                          "reason": f"needs λ=0 and some λ>0 runs, have λ ∈ {sorted(set(g['lam']))}"})
            continue
        d_ret, d_im = [], []
        for seed, gs in g.groupby("seed"):
            a, b = gs[gs["lam"] == lam_lo], gs[gs["lam"] == lam_hi]
            if len(a) and len(b):
                d_ret.append(float(a["L_ret"].mean() - b["L_ret"].mean()))
                d_im.append(float(a["L_im"].mean() - b["L_im"].mean()))
        sr, si = paired_summary(d_ret), paired_summary(d_im)
        part = {"part": label, "stage3_lr": lr, "lam_max": lam_hi, "dL_ret": sr, "dL_im": si,
                "p_reverse": None if sr["p_t"] is None else 1 - sr["p_t"]}
        if sr["n"] < MIN_SEEDS:
            part |= {"verdict": INCONCLUSIVE, "reason": f"{sr['n']} paired seed(s), need {MIN_SEEDS}"}
        elif sr["p_t"] is None or si["mean"] is None:
            part |= {"verdict": INCONCLUSIVE, "reason": "a non-finite L_ret or L_im in some seed"}
        else:
            ret = verdict_of(sr)
            improves = ret == HOLDS
            flat = improves and abs(si["mean"]) <= FLAT_RATIO * sr["mean"]
            part |= {"improves": improves, "flat": flat,
                     "im_over_ret": abs(si["mean"]) / sr["mean"] if sr["mean"] > 0 else None,
                     # "does not hold" here is also L_im moving more than FLAT_RATIO of ΔL_ret (a ratio of
                     # means, no test): the flatness half of the claim, stated in the reason
                     "verdict": (HOLDS if flat else NOT_HOLD) if improves else ret,
                     "reason": (f"ΔL_ret {_fmt(sr['mean'])} ± {_fmt(sr['se'])} ({_stats(sr)}), ΔL_im "
                                f"{_fmt(si['mean'])} ± {_fmt(si['se'])}"
                                + {HOLDS: "", NOT_SHOWN: "; L_ret improvement not significant",
                                   NOT_HOLD: "; L_ret significantly worse at λ_max"}[ret]
                                + ("; L_im not flat (|ΔL_im| above "
                                   f"{FLAT_RATIO:.2f}·ΔL_ret, a ratio of means, not a test)" if improves and not flat else "")
                                + f"; λ_max = {lam_hi:g}")}
            if improves and not flat:
                part["p_reverse"] = None  # a rule, not a reversed test: no correction applies
        parts.append(part)
    nums = {"stage3_lr": sorted({p["stage3_lr"] for p in parts})}
    if "stage2_stopped_early" in sub.columns:
        tested = sub[(sub["lam"] == 0) | (sub["lam"] == sub["lam"].max())]  # the runs compared
        runs = tested.drop_duplicates("run") if "run" in tested.columns else tested
        early = int(runs["stage2_stopped_early"].fillna(False).astype(bool).sum())
        nums["stage2_stopped_early"] = f"{early} of {len(runs)}"
        if early < len(runs):  # the paper's L_im is converged; say when ours is not
            for p in parts:
                if p["verdict"] != INCONCLUSIVE:
                    p["reason"] += (f"; stage 2 stopped early in {early} of {len(runs)} runs (the rest ran "
                                    "to the token cap: L_im trained to the cap, not converged)")
    return _combine("c", text, "§4.1, Fig 3a", parts, test, nums)


def claim_fig3b(rows: pd.DataFrame, stage3_lr: float | None = None) -> dict:
    text = "Fig 3b: with one pass over D_post split λ / (1−λ), L_ret is best at an interior λ"
    test = (f"per pipeline, post size and stage-2 config, λ grid with 0 and 1: λ* = argmin of the seed-mean "
            f"L_ret curve (one stage-3 LR); per seed L_ret(λ_end) − L_ret(λ*) for λ_end = 0 and 1; holds if λ* "
            f"is interior and both gaps > 0 at p < {ALPHA:g} (one-sided paired t) over ≥ {MIN_SEEDS} seeds "
            f"(λ* chosen on the same data); does not hold if λ* is an end that beats the best interior λ "
            f"at p < {ALPHA:g}")
    sub = _fig3_rows(rows, "split")
    if sub.empty:
        return _claim("d", text, "§4.2, Fig 3b", INCONCLUSIVE,
                      "no allocation=split (compute-matched) runs; run a params file with allocation: split", test)
    parts = []
    for label, g in _by_setting(sub, FIG3_SETTING):
        g, lr = _at_lr(g, stage3_lr)
        lams = sorted(set(g["lam"]))
        curve = g.groupby(["seed", "lam"])["L_ret"].mean().unstack("lam")
        curve = curve.dropna()  # seeds with every λ
        if len(lams) < 3 or lams[0] != 0 or lams[-1] != 1:
            # "interior" is about (0, 1): a grid without both ends cannot show it
            parts.append({"part": label, "stage3_lr": lr, "verdict": INCONCLUSIVE,
                          "reason": f"needs λ = 0, λ = 1 and one λ between, have {lams}"})
            continue
        if len(curve) < MIN_SEEDS:
            parts.append({"part": label, "stage3_lr": lr, "verdict": INCONCLUSIVE,
                          "reason": f"{len(curve)} seed(s) with every λ, need {MIN_SEEDS}"})
            continue
        mean_curve = curve.mean()
        lam_star = float(mean_curve.idxmin())
        ends = {"lo": lams[0], "hi": lams[-1]}
        gaps = {k: paired_summary((curve[e] - curve[lam_star]).tolist()) for k, e in ends.items()}
        interior = lam_star not in (lams[0], lams[-1])
        p_rev = None
        if interior:
            v = HOLDS if all(verdict_of(g_) == HOLDS for g_ in gaps.values()) else NOT_SHOWN
            why = ""
        else:  # the best λ is an end: does not hold if that end beats the best interior λ significantly
            inner = float(mean_curve.loc[lams[1:-1]].idxmin())
            vs_inner = paired_summary((curve[inner] - curve[lam_star]).tolist())
            v = NOT_HOLD if verdict_of(vs_inner) == HOLDS else NOT_SHOWN
            p_rev = vs_inner["p_t"]
            why = f"; best interior λ = {inner:g} is worse by {_fmt(vs_inner['mean'])} ± {_fmt(vs_inner['se'])} ({_stats(vs_inner)})"
        parts.append({"part": label, "stage3_lr": lr, "lam_star": lam_star, "interior": interior,
                      "mean_curve": {str(k): float(v_) for k, v_ in mean_curve.items()},
                      "gap_lo": gaps["lo"], "gap_hi": gaps["hi"], "verdict": v, "p_reverse": p_rev,
                      "reason": (f"λ* = {lam_star:g} ({'interior' if interior else 'an endpoint'}); "
                                 + ", ".join(f"gap to λ={e:g}: {_fmt(gaps[k]['mean'])} ± {_fmt(gaps[k]['se'])} "
                                             f"(p = {_fmt(gaps[k]['p_t'], 3)})" for k, e in ends.items() if e != lam_star)
                                 + why)})
    return _combine("d", text, "§4.2, Fig 3b", parts, test, {"stage3_lr": sorted({p["stage3_lr"] for p in parts})})


# Fig 3's settings: pipeline, |D_post| and the stage-2 configuration (one Fig 3 curve each).
FIG3_SETTING = ("pipeline", "post_tokens", "stage2_lr", "stage2_batch", "model")


def _combine(cid, text, paper, parts, test, numbers) -> dict:
    """Holds if every part holds; else does not hold if a part does not; else not shown if a part
    is not shown; else (only inconclusive, or inconclusive beside holds) inconclusive.

    "Holds in every part" needs no correction for the number of parts (each part must pass at
    ALPHA; the chance that all do under no effect is at most ALPHA). "Does not hold in some part"
    does: with K tested parts, a part's reversed test counts only at p < ALPHA / K (Bonferroni),
    else that part reads "not shown" here (without this, 4 settings under no effect gave "does
    not hold" 19% of the time, not 5%; tests/test_claims.py). Parts whose "does not hold" comes
    from a rule rather than a test (claim c's flatness) count as they are."""
    k = sum(p["verdict"] != INCONCLUSIVE for p in parts)
    for p in parts:
        if p["verdict"] == NOT_HOLD and k > 1 and p.get("p_reverse") is not None and p["p_reverse"] >= ALPHA / k:
            p["verdict"], p["reason"] = NOT_SHOWN, (
                f"{p['reason']}; reversed at p = {_fmt(p['p_reverse'], 3)} in this setting alone, above "
                f"{ALPHA:g}/{k} = {_fmt(ALPHA / k, 4)} (Bonferroni over {k} settings), so not shown")
    vs = [p["verdict"] for p in parts]
    if vs and all(v == HOLDS for v in vs):
        v = HOLDS
    elif NOT_HOLD in vs:
        v = NOT_HOLD
    elif NOT_SHOWN in vs:
        v = NOT_SHOWN
    else:
        v = INCONCLUSIVE
    reason = "; ".join(f"{p['part']}: {p['verdict']} ({p['reason']})" for p in parts) or "no parts"
    return _claim(cid, text, paper, v, reason, test, numbers, parts)


# ---------------------------------------------------------------------------------------------

def evaluate(rows: Iterable[dict] | pd.DataFrame, trajectory: bool = True,
             stage3_lr: float | None = None) -> list[dict]:
    """All six claims (a–f) on an experiment's rows (eelib.pipeline.collect)."""
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
        claim_fig3a(df, stage3_lr) if len(df) else _claim("c", "Fig 3a", "§4.1", INCONCLUSIVE, "no rows", ""),
        claim_fig3b(df, stage3_lr) if len(df) else _claim("d", "Fig 3b", "§4.2", INCONCLUSIVE, "no rows", ""),
    ]
    parts = [_frontier_claim("e." + m.split("+")[1], f"{m} improves on mixed (L_ret-vs-L_ft frontier)",
                             "§4.4, Fig 4", df, "mixed", m, "L_ret vs L_ft", trajectory)
             for m in ("mixed+replay", "mixed+dropout")]
    for p in parts:
        p["part"] = p["id"]
    out.insert(4, _combine("e", "Replay and dropout each add to mixing", "§4.4, Fig 4", parts,
                           "both parts (e.replay, e.dropout) as in claim a, mixed vs mixed+X", {}))
    out.append(_frontier_claim("f", "Mixing helps LoRA stage-2 too (LoRA-mixed beats LoRA-unmixed)",
                               "App., Fig 7", df, "LoRA-unmixed", "LoRA-mixed", "L_ret vs L_ft", trajectory))
    return out


def pooled_markdown(pooled: dict, n_rows: int) -> list[str]:
    """The report's "Runs pooled here" section from pipeline.pooled_runs."""
    from eelib.pipeline import HOW_FIELDS, ROW_FIELDS, spread_line, unrecorded
    spread, by_design = pooled["spread"], set(pooled["by_design"])
    lines = ["", "## Runs pooled here", ""]
    if not n_rows:
        return lines + ["No finished runs."]
    if not spread and not pooled["duplicates"]:
        return lines + ["All finished runs were made by the same config."]
    rec = [f for f in spread if f in ROW_FIELDS]
    how = [f for f in spread if f in HOW_FIELDS]
    by_grid = [f for f in spread if f in by_design and f not in ROW_FIELDS and f not in HOW_FIELDS]
    odd = unrecorded(spread, by_design)
    if rec:
        lines.append("Recorded in each row (so the claims keep these apart or test them): "
                     + ", ".join(f"`{f}` ({len(spread[f])} values)" for f in rec) + ".")
    if by_grid:
        lines.append("Swept by the grid that made the runs but not recorded in the rows, so pooled on one "
                     "frontier as a hyperparameter grid is (e.g. Table 9's LoRA dropout): "
                     + ", ".join(f"`{f}` ({len(spread[f])} values)" for f in by_grid) + ".")
    if how:
        lines.append("How runs executed (same numbers up to floating-point order): "
                     + ", ".join(f"`{f}`" for f in how) + ".")
    if odd:
        lines += ["", "**Differ beyond what the grids that made these runs swept, and not recorded in the rows**: "
                  "runs that differ only here share a frontier, so the frontiers mix configs (say, a stage-3 "
                  "budget changed between runs an older params file made under other names). Move the odd runs "
                  "out of `runs/` or rename the experiment. " + spread_line(odd, limit=4) + "."]
    for group in pooled["duplicates"]:
        lines += ["", f"Duplicates: runs {', '.join(f'`{r}`' for r in group)} were made by the same config "
                  "(e.g. `--seeds` renamed a grid's runs), so results.jsonl holds their rows twice; the tests "
                  "above work per seed (frontiers, per-seed means), so equal rows change nothing. Move all but "
                  "one out of `runs/` to keep one."]
    return lines


def to_markdown(claims: list[dict], experiment: str, n_rows: int, pooled: dict | None = None,
                unfinished: list[str] | None = None) -> str:
    lines = [f"# Claims report: `{experiment}`", "",
             f"Computed by `eelib.claims` from {n_rows} row(s) of outputs/{experiment}/results.jsonl. "
             f"Verdicts: **holds** = the effect in the claimed direction, one-sided paired t-test across "
             f"≥ {MIN_SEEDS} seeds at p < {ALPHA:g}; **does not hold** = significantly the opposite way; "
             "**not shown** = tested, neither direction significant (3 seeds have little power); "
             "**inconclusive** = not testable (reason given). Claim c also does not hold when L_im moves by more "
             f"than {FLAT_RATIO:.2f} of ΔL_ret (a ratio of means). Each pipeline and |D_post| (for c and d also "
             "each stage-2 LR and batch) is tested on its own. "
             "Losses are nats/token; the paper's scale (135M/1B) differs from a CPU run's, so compare signs, "
             "not magnitudes.", "",
             "| claim | paper | verdict | numbers |", "|---|---|---|---|"]
    for c in claims:
        lines.append(f"| {c['id']}. {c['claim']} | {c['paper']} | **{c['verdict']}** | {c['reason']} |")
    lines += ["", "## Tests used", ""]
    for c in claims:
        lines.append(f"* **{c['id']}**: {c['test']}")
        for p in c.get("parts", []):
            if "id" in p:
                lines.append(f"  * {p.get('part', p['id'])}: **{p['verdict']}**: {p['reason']}")
    if pooled is not None:
        lines += pooled_markdown(pooled, n_rows)
    if unfinished:  # their absence changes what is tested (e.g. "mixed" read at a smaller λ)
        lines += ["", "## Runs without results", "",
                  f"{len(unfinished)} run director{'y' if len(unfinished) == 1 else 'ies'} under runs/ "
                  "hold no result.json (unfinished, failed, or stopped by the NaN guard), so the claims above "
                  "were tested without them: " + ", ".join(f"`{r}`" for r in unfinished[:20])
                  + (f" and {len(unfinished) - 20} more" if len(unfinished) > 20 else "")
                  + ". Rerun the params file to finish them (finished runs are reused)."]
    return "\n".join(lines) + "\n"


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (float, np.floating)):
        f = float(o)
        return None if math.isnan(f) else (str(f) if math.isinf(f) else f)
    return o


def write(claims: list[dict], out_dir: str | Path, experiment: str, n_rows: int,
          pooled: dict | None = None, unfinished: list[str] | None = None) -> dict[str, Path]:
    """claims.md and claims.json in out_dir, written atomically; returns their paths.
    `pooled`: pipeline.pooled_runs of the runs, reported when given; `unfinished`: run
    directories without a result.json."""
    out_dir = Path(out_dir)
    md, js = out_dir / "claims.md", out_dir / "claims.json"
    atomic_write_text(md, to_markdown(claims, experiment, n_rows, pooled, unfinished))
    extra = {} if pooled is None else {"pooled_runs": pooled}
    if unfinished is not None:
        extra["unfinished_runs"] = unfinished
    atomic_write_json(js, {"experiment": experiment, "n_rows": n_rows, "min_seeds": MIN_SEEDS,
                           "alpha": ALPHA, "flat_ratio": FLAT_RATIO, "claims": _jsonable(claims), **extra})
    return {"claims_md": md, "claims_json": js}


def report(experiment: str, root: str | Path = "outputs", figures: bool = True,
           trajectory: bool = True) -> dict[str, Path]:
    """`eelib report <experiment>`: collect rows, write claims.md/.json and the figures.

    Returns {name: path} of everything written under <root>/<experiment>/ (figures in figures/).
    """
    from eelib.pipeline import collect, pooled_runs
    root = Path(root)
    if not (root / experiment / "runs").is_dir():
        raise FileNotFoundError(f"no runs under {root / experiment}: run its params file first "
                                f"(`eelib run <params.yaml> --out {root}`), or name the outputs root it "
                                "was run with (--out, or $EELIB_OUTPUTS)")
    rows = collect(experiment, root)
    claims = evaluate(rows, trajectory=trajectory)
    unfinished = sorted(d.name for d in (root / experiment / "runs").iterdir()
                        if d.is_dir() and not (d / "result.json").exists())
    paths = write(claims, root / experiment, experiment, len(rows), pooled_runs(experiment, root), unfinished)
    if figures and rows:
        from eelib import figures as FG
        paths |= FG.save_all(rows, root / experiment / "figures")
    return paths


def main_report(argv: list[str] | None = None) -> int:
    """CLI hook: `eelib report <experiment> [--root outputs] [--no-figures] [--final-only]`."""
    import argparse
    ap = argparse.ArgumentParser(prog="eelib report", description=report.__doc__)
    ap.add_argument("experiment")
    ap.add_argument("--root", "--out", dest="root", default=os.environ.get("EELIB_OUTPUTS") or "outputs")
    ap.add_argument("--no-figures", action="store_true")
    ap.add_argument("--final-only", action="store_true", help="frontiers from final points only")
    a = ap.parse_args(argv)
    try:
        paths = report(a.experiment, a.root, figures=not a.no_figures, trajectory=not a.final_only)
    except FileNotFoundError as e:
        print(f"eelib: error: {e}", file=sys.stderr)
        return 2
    print(paths["claims_md"].read_text())
    for k, p in paths.items():
        print(f"{k}: {p}")
    return 0

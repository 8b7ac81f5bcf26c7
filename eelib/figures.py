"""The paper's figures reproduced from an experiment's rows (altair), with the paper's numbers beside.

    fig2   mixed vs unmixed frontiers, views "L_ret vs L_ft" and "L_pre vs L_ret"   (§4.3, Fig 2)
    fig3a  L_im and L_ret vs λ, λ·|D_post| added to stage 1, one line per |D_post|  (§4.1, Fig 3a)
    fig3b  the same, compute-matched (one pass split λ / 1−λ)                        (§4.2, Fig 3b)
    fig4   unmixed / mixed / mixed+dropout / mixed+replay, x = L_ret, y = L_ft       (§4.4, Fig 4)
    fig5   the same methods, C4 view (x = L_ret, y = L_pre)                           (Fig 5)
    fig6   dropout / replay without mixing                                            (Fig 6)
    fig7   full fine-tuning vs LoRA in stage 2, mixed and unmixed                     (App., Fig 7)

Each figure is two rows: our run on top, and below it a separate panel titled
"paper (digitized, 135M/1B)" drawn from eelib/paper_values.json (values read off the paper's
vector figures in the project's paper notes, which the repository does not ship). The panels keep their own axes because the paper's
models (135M/1B, SmolLM2 tokenizer) and a CPU run's losses are on different scales: compare
shapes and orderings, not numbers. Frontier lines are Pareto sets (eelib.frontier); in the paper
panel the digitized matched-x readings are joined by lines.

`save(chart, stem)` writes stem.png, stem.svg and a self-contained stem.html (inline JS),
each atomically.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import altair as alt
import numpy as np
import pandas as pd

from eelib import frontier as F
from eelib.claims_fig3 import FIG3_SETTING
from eelib.io import atomic_path

PAPER_LABEL = "paper (digitized, {scale})"
COLORS = {"unmixed": "#222222", "mixed": "#7b3fb5", "mixed+dropout": "#e07b00", "mixed+replay": "#1b9e5a",
          "unmixed+dropout": "#f2b36b", "unmixed+replay": "#8fd1a9", "LoRA-unmixed": "#888888",
          "LoRA-mixed": "#c39be8", "mixed+dropout+replay": "#1f78b4"}
FIG_METHODS = {
    "fig2": ["unmixed", "mixed"],
    "fig4": ["unmixed", "mixed", "mixed+dropout", "mixed+replay"],
    "fig5": ["unmixed", "mixed", "mixed+dropout", "mixed+replay"],
    "fig6": ["unmixed", "mixed", "unmixed+dropout", "unmixed+replay"],
    "fig7": ["unmixed", "mixed", "LoRA-unmixed", "LoRA-mixed"],
}
# paper figures with the same content at 1B (drawn in the same paper panel, dashed)
PAPER_1B = {"fig2": ["fig8", "fig9"], "fig4": ["fig10"], "fig6": ["fig12"]}
PAPER_METHOD = {"fft-unmixed": "unmixed", "fft-mixed": "mixed", "lora-unmixed": "LoRA-unmixed",
                "lora-mixed": "LoRA-mixed"}
W, H = 260, 200


@lru_cache(maxsize=1)
def paper_values() -> dict:
    """The digitized numbers of the paper's figures (eelib/paper_values.json)."""
    return json.loads((Path(__file__).with_name("paper_values.json")).read_text())


def _color(methods: list[str]) -> alt.Color:
    return alt.Color("method:N", title="method", sort=methods,
                     scale=alt.Scale(domain=methods, range=[COLORS.get(m, "#1f77b4") for m in methods]))


def _df(rows) -> pd.DataFrame:
    return rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))


def mixed_at_max_lam(pts: pd.DataFrame) -> pd.DataFrame:
    """Keep each mixed method (λ > 0) at one λ: within a family (full fine-tuning: mixed,
    mixed+replay, mixed+dropout; LoRA: LoRA-mixed), the largest λ every mixed method of the family
    drawn has, so they differ only in the method, as claim e compares mixed with mixed+X (the claims
    pair methods: a figure draws one λ per method); with none shared, each at its own largest.
    The paper's 'mixed' is very likely λ = 1 (docs/decisions.md)."""
    if pts.empty:
        return pts
    pts = pts.assign(lam=pts["lam"].astype(float).round(9))  # as claims.evaluate: 0.1·3 meets 0.3
    mixed = {m: set(g.loc[g["lam"] > 0, "lam"]) for m, g in pts.groupby("method") if (g["lam"] > 0).any()}
    at = {}
    for family in (True, False):
        ms = [m for m in mixed if m.startswith("LoRA-") == family]
        common = set.intersection(*(mixed[m] for m in ms)) if ms else set()
        at |= {m: max(common) if common else max(mixed[m]) for m in ms}
    keep = [g[g["lam"] == at[m]] if m in at else g for m, g in pts.groupby("method")]
    return pd.concat(keep, ignore_index=True)


# ---------------------------------------------------------------------------------------------
# Our panels

def frontier_panel(rows, methods: list[str], xcol: str, ycol: str, title: str,
                   trajectory: bool = True) -> alt.Chart | None:
    """Sweep points (faint: trajectory; solid: final) and each method's Pareto line in (xcol, ycol)."""
    pts = F.points(_df(rows), trajectory=trajectory)
    pts = mixed_at_max_lam(pts[pts["method"].isin(methods)]) if len(pts) else pts
    if pts.empty:
        return None
    methods = [m for m in methods if m in set(pts["method"])]
    front = F.frontiers(pts, (xcol, ycol), by="method")
    pts = pts.assign(kind=["final" if s == -1 else "trajectory" for s in pts["step"]])
    tip = ["method", "lam", "seed", "stage3_lr", "step", xcol, ycol]
    base = alt.Chart(pts).encode(
        x=alt.X(f"{xcol}:Q", title=xcol, scale=alt.Scale(zero=False)),
        y=alt.Y(f"{ycol}:Q", title=ycol, scale=alt.Scale(zero=False)), color=_color(methods))
    dots = base.mark_point(filled=True).encode(
        opacity=alt.Opacity("kind:N", scale=alt.Scale(domain=["final", "trajectory"], range=[0.9, 0.2]),
                            legend=None),
        size=alt.Size("kind:N", scale=alt.Scale(domain=["final", "trajectory"], range=[40, 12]), legend=None),
        tooltip=[t for t in tip if t in pts.columns])
    line = alt.Chart(front).mark_line(point=True, strokeWidth=2).encode(
        x="x:Q", y="y:Q", color=_color(methods), order="x:Q")
    # The line is one frontier through every seed's points (what the sweep reaches at best); the
    # claims test each seed's own frontier (eelib.claims), so the subtitle says which this is.
    return (dots + line).properties(title=alt.TitleParams(title, subtitle="line: Pareto frontier of all seeds' points"),
                                    width=W, height=H)


def fig3_panel(rows, allocation: str, stage3_lr: float | None = None) -> alt.Chart | None:
    """L_im and L_ret vs λ: mean over seeds, error bars ± 1 std, one line per |D_post|."""
    df = _df(rows)
    if df.empty:
        return None
    df = df[(df["allocation"] == allocation) & ~df["method"].astype(str).str.contains(r"\+|LoRA", regex=True)]
    if df.empty:
        return None
    # one curve per pipeline, |D_post| and stage-2 config, as eelib.claims tests them: never pooled;
    # each at its own smallest stage-3 LR unless one is given (settings may sweep different grids)
    keys = [k for k in FIG3_SETTING if k != "post_tokens" and k in df.columns and df[k].nunique(dropna=False) > 1]
    df = df.assign(curve=df[keys].astype(str).agg(", ".join, axis=1) if keys else "all")
    lr_of = df.groupby(["curve", "post_tokens"])["stage3_lr"].transform("min") if stage3_lr is None else stage3_lr
    df = df[np.isclose(df["stage3_lr"], lr_of)]
    lr = "/".join(f"{x:g}" for x in sorted(set(df["stage3_lr"])))
    long = df.melt(id_vars=["curve", "post_tokens", "lam", "seed"], value_vars=["L_im", "L_ret"], var_name="loss")
    # one value per seed first (several stage-2 configs of a seed are averaged), then across seeds
    long = long.groupby(["loss", "curve", "post_tokens", "lam", "seed"], as_index=False)["value"].mean()
    g = long.groupby(["loss", "curve", "post_tokens", "lam"])["value"]
    agg = g.mean().rename("mean").to_frame().join(g.std(ddof=1).fillna(0).rename("std")) \
        .join(g.count().rename("n_seeds")).reset_index()
    agg["lo"], agg["hi"] = agg["mean"] - agg["std"], agg["mean"] + agg["std"]
    several = agg["curve"].nunique() > 1
    agg["post size"] = [f"{c}, {t:,} tok" if several else f"{t:,} tok" for c, t in zip(agg["curve"], agg["post_tokens"])]
    enc = dict(x=alt.X("lam:Q", title="λ"), color=alt.Color("post size:N"))
    ln = alt.Chart().mark_line(point=True).encode(
        y=alt.Y("mean:Q", title="loss (mean ± 1 std over seeds)", scale=alt.Scale(zero=False)),
        tooltip=["post size", "lam", "mean", "std", "n_seeds"], **enc)
    eb = alt.Chart().mark_errorbar().encode(y=alt.Y("lo:Q", title="loss (mean ± 1 std over seeds)"),
                                            y2="hi:Q", **enc)
    return alt.layer(ln, eb, data=agg).properties(width=W, height=H).facet(
        column=alt.Column("loss:N", title=f"ours ({allocation}, stage-3 LR {lr})")
    ).resolve_scale(y="independent")


# ---------------------------------------------------------------------------------------------
# Paper panels

def paper_frontier_df(fig: str, pipeline: str | None = None, view: tuple[str, str] | None = None) -> pd.DataFrame:
    """Long table (fig, scale, pipeline, xname, yname, x, method, y) of a digitized frontier figure."""
    pv = paper_values()
    out = []
    for f in [fig] + PAPER_1B.get(fig, []):
        for e in pv.get(f, []):
            if pipeline and e["pipeline"] != pipeline:
                continue
            xname, yname = e["x"], e["y"]
            if view and (xname, yname) != view:
                continue
            for p in e["points"]:
                for k, v in p.items():
                    if k in ("x",):
                        continue
                    out.append({"fig": f, "scale": pv["model_scale"].get(f, "?"), "pipeline": e["pipeline"],
                                "xname": xname, "yname": yname, "x": p["x"],
                                "method": PAPER_METHOD.get(k, k), "y": v})
    return pd.DataFrame(out)


def paper_frontier_panel(fig: str, methods: list[str], view: tuple[str, str],
                         pipeline: str | None = None) -> alt.Chart | None:
    df = paper_frontier_df(fig, pipeline, view)
    if df.empty:
        return None
    df = df[df["method"].isin(methods)]
    scales = "/".join(sorted(set(df["scale"]), key=lambda s: s != "135M"))
    df["source"] = df.apply(lambda r: f"{PAPER_LABEL.format(scale=r['scale'])} Fig {r['fig'][3:]}", axis=1)
    return alt.Chart(df).mark_line(point=True, strokeWidth=1.5).encode(
        x=alt.X("x:Q", title=f"{view[0]} (paper)", scale=alt.Scale(zero=False)),
        y=alt.Y("y:Q", title=f"{view[1]} (paper)", scale=alt.Scale(zero=False)),
        color=_color(methods), strokeDash=alt.StrokeDash("source:N", title="paper source",
                                                      legend=alt.Legend(symbolType="stroke")),
        detail="source:N", tooltip=["source", "pipeline", "method", "x", "y"],
    ).properties(title=PAPER_LABEL.format(scale=scales) + f": {pipeline or 'all pipelines'}",
                 width=W, height=H)


PAPER_FIG3_PIPELINE = "music->chem"  # Fig 3a/3b are MusicPile -> ChemPile at 135M (§4.1-4.2)


def paper_fig3_panel(which: str) -> alt.Chart:
    pv = paper_values()[which]
    out = []
    for size, d in pv["by_post_size"].items():
        for loss in ("L_im", "L_ret"):
            for lam, v in zip(pv["lams"], d[loss]):
                out.append({"post size": size, "loss": loss, "lam": lam, "value": v})
    label = PAPER_LABEL.format(scale=paper_values()["model_scale"][which])
    return alt.Chart(pd.DataFrame(out)).mark_line(point=True, strokeDash=[4, 2]).encode(
        x=alt.X("lam:Q", title="λ"), y=alt.Y("value:Q", title="loss (paper)", scale=alt.Scale(zero=False)),
        color=alt.Color("post size:N", title="paper |D_post|", sort=list(pv["by_post_size"])), tooltip=["post size", "lam", "value"],
    ).properties(width=W, height=H).facet(
        column=alt.Column("loss:N", title=f"{label}, Fig {which[3:]}, stage-3 LR {pv['stage3_lr']:g}")
    ).resolve_scale(y="independent")


# ---------------------------------------------------------------------------------------------
# Whole figures

def _stack(ours: list, paper: list, title: str) -> alt.VConcatChart | None:
    ours = [c for c in ours if c is not None]
    paper = [c for c in paper if c is not None]
    if not ours:
        return None
    rows = [alt.hconcat(*ours)]
    if paper:
        rows.append(alt.hconcat(*paper))
    return alt.vconcat(*rows).resolve_scale(color="independent", strokeDash="independent").properties(
        title=alt.TitleParams(title, anchor="start"))


def fig2(rows, pipeline: str, trajectory: bool = True, setting: str = "") -> alt.VConcatChart | None:
    """Fig 2: unmixed vs mixed frontiers in both views for one pipeline (`setting`: which |D_post|
    and model, in the title, where a pipeline has several)."""
    df = _df(rows)
    df = df[df["pipeline"] == pipeline] if len(df) else df
    ms = FIG_METHODS["fig2"]
    ours = [frontier_panel(df, ms, *F.view_axes(v), f"ours: {pipeline}, {v}", trajectory) for v in F.VIEWS]
    paper = [paper_frontier_panel("fig2", ms, F.view_axes(v), pipeline) for v in F.VIEWS]
    where = f"{pipeline}, {setting}" if setting else pipeline
    return _stack(ours, paper, f"Fig 2: mixing and the frontiers ({where}); lower-left is better")


def fig3(rows, allocation: str = "added") -> alt.VConcatChart | None:
    """Fig 3a (allocation='added') or 3b ('split'): L_im and L_ret vs λ, per post size."""
    which = "fig3a" if allocation == "added" else "fig3b"
    ours = fig3_panel(rows, allocation)
    if ours is None:
        return None
    what = "λ·|D_post| added to stage 1" if allocation == "added" else "compute-matched λ / (1−λ) split"
    title = alt.TitleParams(f"Fig {which[3:]}: immediate vs retained loss over λ ({what})", anchor="start")
    if PAPER_FIG3_PIPELINE not in set(_df(rows)["pipeline"]):  # own data: no paper curve to compare
        return alt.vconcat(ours).properties(title=title)
    return alt.vconcat(ours, paper_fig3_panel(which)).resolve_scale(color="independent").properties(title=title)


def fig_methods(rows, fig: str, pipeline: str, trajectory: bool = True, setting: str = "") -> alt.VConcatChart | None:
    """Figs 4–7 (at 1B: 10, 12): several methods' frontiers; x = L_ret, y = L_ft (Fig 5: y = L_pre)."""
    view = ("L_ret", "L_pre") if fig == "fig5" else F.FIG4_VIEW
    ms = FIG_METHODS[fig]
    df = _df(rows)
    df = df[df["pipeline"] == pipeline] if len(df) else df
    present = set(df["method"]) if len(df) else set()
    if not (present & (set(ms) - {"unmixed", "mixed"})):
        return None  # nothing beyond Fig 2 to show
    ours = [frontier_panel(df, ms, *view, f"ours: {pipeline}", trajectory)]
    paper = [paper_frontier_panel(fig, ms, view, pipeline)]
    titles = {"fig4": "Fig 4: replay and dropout on top of mixing", "fig5": "Fig 5: C4 retention",
              "fig6": "Fig 6: dropout / replay without mixing", "fig7": "Fig 7: full fine-tuning vs LoRA"}
    return _stack(ours, paper, f"{titles[fig]} ({setting})" if setting else titles[fig])


def methods_figures(rows, figs: tuple[str, ...], trajectory: bool = True) -> alt.VConcatChart | None:
    """Frontier figures (those of "fig2", "fig4" … "fig7" named in `figs`) stacked, drawn as
    `all_figures` draws them and the claims test them: allocation=added runs, one pipeline,
    |D_post| and model at a time (None if no figure applies). What the experiment notebooks show."""
    charts = list(all_figures(rows, trajectory, only=figs).values())
    return alt.vconcat(*charts) if charts else None


def save(chart: alt.TopLevelMixin, stem: str | Path) -> dict[str, Path]:
    """stem.png, stem.svg and a self-contained stem.html (inline=True), each written atomically."""
    stem = Path(stem)
    out = {}
    with alt.data_transformers.disable_max_rows():
        for fmt in ("png", "svg", "html"):
            path = stem.with_suffix(f".{fmt}")
            with atomic_path(path) as tmp:
                kw = {"inline": True} if fmt == "html" else ({"scale_factor": 1.5} if fmt == "png" else {})
                chart.save(str(tmp), format=fmt, **kw)
            out[f"{stem.name}.{fmt}"] = path
    return out


def all_figures(rows, trajectory: bool = True, only: tuple[str, ...] | None = None) -> dict[str, alt.TopLevelMixin]:
    """Every figure the rows allow, keyed by file stem (e.g. 'fig2_music-chem', 'fig3a'); `only`:
    just these figures ("fig2", "fig3a", ...)."""
    want = set(only or ("fig2", "fig3a", "fig3b", "fig4", "fig5", "fig6", "fig7"))
    df = _df(rows)
    figs: dict[str, alt.TopLevelMixin | None] = {}
    if df.empty:
        return {}
    # Frontier figures draw what the claims test (eelib.claims): full post-training runs only
    # (allocation added; Fig 3b's split runs are not such a comparison), one |D_post| and model
    # at a time (a stem suffix says which when a pipeline has several).
    added = df[df["allocation"].fillna("added") == "added"] if "allocation" in df.columns else df
    for pipe in sorted(set(added["pipeline"])):
        tag = pipe.replace("->", "-")
        by = [k for k in ("model", "post_tokens") if k in added.columns]
        rows_p = added[added["pipeline"] == pipe]
        groups = rows_p.groupby(by, dropna=False) if by else [((), rows_p)]
        several = len(groups) > 1
        for values, g in groups:
            values = values if isinstance(values, tuple) else (values,)
            suffix = "".join(f"_{'post' if k == 'post_tokens' else ''}{v}" for k, v in zip(by, values)) if several else ""
            setting = ", ".join(f"{'|D_post|' if k == 'post_tokens' else k} {v}" for k, v in zip(by, values)) if several else ""
            if "fig2" in want:
                figs[f"fig2_{tag}{suffix}"] = fig2(g, pipe, trajectory, setting)
            for f in sorted(want & {"fig4", "fig5", "fig6", "fig7"}):
                figs[f"{f}_{tag}{suffix}"] = fig_methods(g, f, pipe, trajectory, setting)
    for f, alloc in (("fig3a", "added"), ("fig3b", "split")):
        if f in want:
            figs[f] = fig3(df, alloc)
    return {k: v for k, v in figs.items() if v is not None}


def save_all(rows: Iterable[dict] | pd.DataFrame, out_dir: str | Path, trajectory: bool = True) -> dict[str, Path]:
    """Save every available figure as PNG/SVG/HTML under out_dir; returns {file name: path}."""
    out: dict[str, Path] = {}
    for stem, chart in all_figures(rows, trajectory).items():
        out |= save(chart, Path(out_dir) / stem)
    return out

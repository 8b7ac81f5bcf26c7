"""Figures from synthetic rows: saved as PNG/SVG/HTML, with the paper's digitized panel present."""
import json

from eelib import figures as FG
from test_claims import fig3_rows, frontier_rows


def rows():
    out = []
    for s in range(3):
        out += frontier_rows("unmixed", 0.0, s, 0, 0.01) + frontier_rows("mixed", 1.0, s, -0.3, 0.01)
        out += frontier_rows("mixed+replay", 1.0, s, -0.4, 0.01)
    return out + fig3_rows("added", [2.2, 2.1, 2.08, 2.07, 2.06], [1.8] * 5)


def test_paper_values_copied_with_source():
    pv = FG.paper_values()
    assert "2605.12705" in pv["provenance"] and pv["fig3a"]["by_post_size"]["300M"]["L_ret"][-1] == 1.682


def test_figures_save_and_overlay(tmp_path):
    figs = FG.all_figures(rows())
    assert {"fig2_music-chem", "fig3a", "fig4_music-chem", "fig5_music-chem"} <= set(figs)
    assert not {"fig3b", "fig6_music-chem", "fig7_music-chem"} & set(figs)   # no split, unmixed+X, LoRA rows
    spec = json.dumps(figs["fig2_music-chem"].to_dict())
    assert "paper (digitized, 135M" in spec and "ours: music->chem" in spec
    assert "paper (digitized, 135M)" in json.dumps(figs["fig3a"].to_dict())
    paths = FG.save(figs["fig2_music-chem"], tmp_path / "fig2")
    png, svg, html = (tmp_path / f"fig2.{e}" for e in ("png", "svg", "html"))
    assert set(paths.values()) == {png, svg, html}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in svg.read_text()[:500] and "paper (digitized" in svg.read_text()
    h = html.read_text()
    assert "paper (digitized" in h and "cdn.jsdelivr" not in h   # inline: works offline
    assert not list(tmp_path.glob(".*tmp"))


def test_no_rows_no_figures():
    assert FG.all_figures([]) == {}


def test_fig3_shows_the_paper_curves_only_for_the_paper_pipeline():
    """Fig 3 is Music→Chem in the paper; under own data (legal->medical) there is nothing to compare."""
    own = [dict(r, pipeline="legal->medical") for r in fig3_rows("added", [2.2, 2.1, 2.08, 2.07, 2.06], [1.8] * 5)]
    spec = json.dumps(FG.fig3(own, "added").to_dict())
    assert "paper (digitized" not in spec and "ours (added" in spec


def test_methods_figures_cover_every_pipeline():
    """replay_dropout.ipynb drew Figs 4–6 for the first pipeline only."""
    two = rows() + [dict(r, pipeline="music->flan") for r in rows() if r["allocation"] == "added"]
    spec = json.dumps(FG.methods_figures(two, ("fig4",)).to_dict())
    assert "ours: music->chem" in spec and "ours: music->flan" in spec
    assert FG.methods_figures([], ("fig4",)) is None
    # the notebooks' frontier figures are all_figures': added runs only, one |D_post| at a time
    two_sizes = two + [dict(r, post_tokens=2 * r.get("post_tokens", 1)) for r in two]
    assert len(FG.methods_figures(two_sizes, ("fig2",)).vconcat) == len(FG.all_figures(two_sizes, only=("fig2",))) == 4
    titles = json.dumps(FG.methods_figures(two_sizes, ("fig2",)).to_dict())
    assert "|D_post| 1000" in titles and "|D_post| 2000" in titles  # the stacked charts say which


def test_mixed_methods_are_drawn_at_the_lambda_the_claims_compare_them_at():
    """Fig 4 draws mixed and mixed+replay at the largest λ both have, as claim e compares them;
    it drew each at its own largest (mixed at 1 beside mixed+replay at 0.5)."""
    import pandas as pd
    pts = pd.DataFrame([{"method": m, "lam": lam, "x": 1.0, "y": 1.0}
                        for m, lams in (("unmixed", [0.0]), ("mixed", [0.5, 1.0]), ("mixed+replay", [0.5]))
                        for lam in lams])
    got = FG.mixed_at_max_lam(pts).groupby("method")["lam"].apply(set).to_dict()
    assert got == {"unmixed": {0.0}, "mixed": {0.5}, "mixed+replay": {0.5}}
    alone = FG.mixed_at_max_lam(pts[pts["method"] != "mixed+replay"])  # one mixed method: its largest
    assert set(alone.loc[alone["method"] == "mixed", "lam"]) == {1.0}
    apart = pts.assign(lam=[0.0, 0.5, 1.0, 0.25])  # no λ shared: each at its own largest
    got = FG.mixed_at_max_lam(apart).groupby("method")["lam"].apply(set).to_dict()
    assert got == {"unmixed": {0.0}, "mixed": {1.0}, "mixed+replay": {0.25}}
    lora = pd.concat([pts[pts["method"] != "mixed+replay"],   # Fig 7: LoRA-mixed only at 0.5
                      pd.DataFrame([{"method": "LoRA-mixed", "lam": 0.5, "x": 1.0, "y": 1.0}])])
    got = FG.mixed_at_max_lam(lora).groupby("method")["lam"].apply(set).to_dict()
    assert got["mixed"] == {1.0} and got["LoRA-mixed"] == {0.5}  # each family on its own, as claims a and f
    sums = pd.DataFrame([{"method": "mixed", "lam": 0.1 * 3, "x": 1.0, "y": 1.0},
                         {"method": "mixed+replay", "lam": 0.3, "x": 1.0, "y": 1.0}])
    assert set(FG.mixed_at_max_lam(sums)["lam"]) == {0.3}  # λ written as a sum meets its value


def test_the_drawn_frontier_is_the_pareto_set_of_the_points_drawn():
    """The line's data is each method's Pareto frontier in the panel's (x, y): lower is better in
    both, so every drawn point is undominated and every other point is dominated by one of them."""
    from eelib import frontier as F
    rs = [r for s in range(2) for r in frontier_rows("unmixed", 0.0, s, 0.0, 0.05) + frontier_rows("mixed", 1.0, s, -0.3, 0.05)]
    chart = FG.frontier_panel(rs, ["unmixed", "mixed"], "L_ft", "L_ret", "t")
    line = chart.layer[1].data
    pts = F.points(FG._df(rs), trajectory=True)
    for m, g in line.groupby("method"):
        mine = pts[pts["method"] == m]
        drawn = list(zip(g["x"], g["y"]))
        for x, y in zip(mine["L_ft"], mine["L_ret"]):
            assert any(dx <= x and dy <= y for dx, dy in drawn)  # on or behind the line
        for dx, dy in drawn:  # nothing in the cloud beats a drawn point in both coordinates
            assert not ((mine["L_ft"] < dx) & (mine["L_ret"] < dy)).any()
        assert sorted(drawn) == drawn and all(a[1] > b[1] for a, b in zip(drawn, drawn[1:]))

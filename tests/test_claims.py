"""Claims on synthetic rows (eelib.claims): verdicts, thresholds, missing data, files written."""
import json

import numpy as np
import pandas as pd
import pytest

from eelib import claims as CL
from eelib import report as RP
from eelib import stats as ST
from eelib.claims_fig3 import FLAT_RATIO

LRS = (1e-3, 3e-3)


def frontier_rows(method, lam, seed, shift=0.0, noise=0.0, allocation="added", post=1000, pipeline="music->chem"):
    """Rows whose (L_ft, L_ret) lie on L_ret = 5 - L_ft (+ shift, + per-seed noise); L_pre likewise."""
    rng = np.random.default_rng(seed * 1000 + int(lam * 100) + len(method))
    out = []
    for lr in LRS:
        for s2lr in (1e-3, 2e-3):
            lft = 2.0 + 1000 * lr + 100 * s2lr
            e = noise * rng.standard_normal()
            lret = 5.0 - lft + shift + e
            traj = [{"step": k, "tokens": k, "L_ft": lft + 0.2 * (3 - k), "L_ret": lret - 0.2 * (3 - k),
                     "L_pre": 4.0 - 0.5 * lret + shift} for k in range(4)]
            out.append({"experiment": "syn", "run": f"{method}-{lam}-{seed}-{s2lr}", "pipeline": pipeline,
                        "allocation": allocation, "method": method, "seed": seed, "lam": lam,
                        "post_tokens": post, "stage2_lr": s2lr, "stage2_batch": 8, "dropout": 0.0,
                        "replay": 0.0, "lora_r": 0, "stage3_lr": lr, "L_im": 2.0, "L_ret": lret, "L_ft": lft,
                        "L_pre": 4.0 - 0.5 * lret + shift, "trajectory": traj})
    return out


def by_id(cl):
    return {c["id"]: c for c in cl}


def test_t_sf_known_values():
    assert ST.t_sf(1.0, 1) == pytest.approx(0.25)
    assert ST.t_sf(2.919986, 2) == pytest.approx(0.05, abs=1e-5)
    assert ST.t_sf(2.015048, 5) == pytest.approx(0.05, abs=1e-5)
    assert ST.t_sf(1.812461, 10) == pytest.approx(0.05, abs=1e-5)
    assert ST.t_sf(-1.0, 3) == pytest.approx(1 - ST.t_sf(1.0, 3))
    assert ST.sign_test_p([1, 1, 1]) == pytest.approx(1 / 8)


def test_clear_effect_holds():
    rows = [r for s in range(3) for r in frontier_rows("unmixed", 0.0, s, 0.0, 0.01)
            + frontier_rows("mixed", 1.0, s, -0.3, 0.01)]
    c = by_id(CL.evaluate(rows))
    assert c["a"]["verdict"] == ST.HOLDS
    assert c["a"]["numbers"]["mean"] == pytest.approx(0.3, abs=0.05)
    assert c["b"]["verdict"] == ST.HOLDS
    assert c["d"]["verdict"] == ST.INCONCLUSIVE and "split" in c["d"]["reason"]
    assert c["e"]["verdict"] == ST.INCONCLUSIVE and c["f"]["verdict"] == ST.INCONCLUSIVE


def test_no_effect_is_not_shown():
    rows = [r for s in range(4) for r in frontier_rows("unmixed", 0.0, s) + frontier_rows("mixed", 1.0, s)]
    c = by_id(CL.evaluate(rows))
    assert c["a"]["verdict"] == ST.NOT_SHOWN  # tested, neither direction significant
    assert c["a"]["numbers"]["mean"] == pytest.approx(0.0, abs=1e-12)


def test_holds_needs_p_below_alpha_not_two_standard_errors():
    """t = 2.89 on 3 seeds passed the old 2·SE bar but is p = 0.051 one-sided: not shown."""
    s = ST.paired_summary([1.0, 2.0, 3.0])  # mean 2, SE 0.577: t = 3.46
    assert ST.verdict_of(s) == ST.HOLDS
    d = [0.2, 0.5, 0.8]
    s = ST.paired_summary(d)  # mean 0.5, SE 0.173: t = 2.89 < 2.92
    assert s["t"] > 2 and ST.verdict_of(s) == ST.NOT_SHOWN
    assert ST.verdict_of(ST.paired_summary([-x for x in (1.0, 2.0, 3.0)])) == ST.NOT_HOLD


def test_pipelines_are_tested_apart_not_pooled():
    """L_ret of music→chem and of flan→chem are losses on different corpora: each pipeline is a
    part, and mixing that helps in one and hurts in the other cannot pool into one verdict."""
    rows = []
    for s in range(3):
        rows += frontier_rows("unmixed", 0.0, s, 0.0, 0.01) + frontier_rows("mixed", 1.0, s, -0.3, 0.01)
        rows += frontier_rows("unmixed", 0.0, s, -1.0, 0.01, pipeline="flan->chem")
        rows += frontier_rows("mixed", 1.0, s, -0.7, 0.01, pipeline="flan->chem")
    a = by_id(CL.evaluate(rows))["a"]
    parts = {p["part"]: p["verdict"] for p in a["parts"]}
    assert parts == {"music->chem": ST.HOLDS, "flan->chem": ST.NOT_HOLD}
    assert a["verdict"] == ST.NOT_HOLD and "music->chem: holds" in a["reason"]


def test_split_runs_are_not_a_frontier_comparison():
    """Fig 3b's split rows: λ = 1 has no stage 2, so 'mixed' vs 'unmixed' there is not Fig 2's test."""
    rows = [r for s in range(3) for r in frontier_rows("unmixed", 0.0, s, 0, 0.01, allocation="split")
            + frontier_rows("mixed", 1.0, s, -0.3, 0.01, allocation="split")]
    c = by_id(CL.evaluate(rows))
    assert c["a"]["verdict"] == c["b"]["verdict"] == ST.INCONCLUSIVE
    assert "allocation=added" in c["a"]["reason"]


def test_replay_is_compared_with_mixed_at_a_common_lambda():
    rows = []
    for s in range(3):
        rows += frontier_rows("mixed", 0.5, s, 0, 0.01) + frontier_rows("mixed", 1.0, s, -1.0, 0.01)
        rows += frontier_rows("mixed+replay", 0.5, s, -0.2, 0.01)
    e = by_id(CL.evaluate(rows))["e"]
    replay = next(p for p in e["parts"] if p["id"] == "e.replay")
    assert replay["numbers"]["lam"] == {"mixed": 0.5, "mixed+replay": 0.5}
    assert replay["verdict"] == ST.HOLDS  # at λ = 1 mixed alone would have looked better


def test_opposite_effect_does_not_hold():
    rows = [r for s in range(3) for r in frontier_rows("unmixed", 0.0, s, 0, 0.01) + frontier_rows("mixed", 1.0, s, 0.2, 0.01)]
    assert by_id(CL.evaluate(rows))["a"]["verdict"] == ST.NOT_HOLD


def test_too_few_seeds_inconclusive():
    rows = [r for s in range(2) for r in frontier_rows("unmixed", 0.0, s) + frontier_rows("mixed", 1.0, s, -0.3)]
    c = by_id(CL.evaluate(rows))
    assert c["a"]["verdict"] == ST.INCONCLUSIVE and "2 seed" in c["a"]["reason"]


def test_mixed_uses_largest_lambda():
    rows = [r for s in range(3) for r in frontier_rows("unmixed", 0.0, s, 0, 0.01)
            + frontier_rows("mixed", 0.5, s, +0.5, 0.01) + frontier_rows("mixed", 1.0, s, -0.3, 0.01)]
    c = by_id(CL.evaluate(rows))
    assert c["a"]["verdict"] == ST.HOLDS and c["a"]["numbers"]["lam"]["mixed"] == 1.0


def test_replay_dropout_and_lora():
    rows = []
    for s in range(3):
        rows += frontier_rows("mixed", 1.0, s, 0, 0.01) + frontier_rows("mixed+replay", 1.0, s, -0.2, 0.01)
        rows += frontier_rows("mixed+dropout", 1.0, s, -0.1, 0.01)
        rows += frontier_rows("LoRA-unmixed", 0.0, s, 0, 0.01) + frontier_rows("LoRA-mixed", 1.0, s, -0.2, 0.01)
    c = by_id(CL.evaluate(rows))
    assert c["e"]["verdict"] == ST.HOLDS and len(c["e"]["parts"]) == 2
    assert c["f"]["verdict"] == ST.HOLDS
    rows = [r for r in rows if r["method"] != "mixed+dropout"]
    assert by_id(CL.evaluate(rows))["e"]["verdict"] == ST.INCONCLUSIVE


def fig3_rows(allocation, curve_ret, curve_im, seeds=3, noise=0.005):
    rows = []
    for s in range(seeds):
        rng = np.random.default_rng(s)
        for lam, lr_, li in zip((0.0, 0.25, 0.5, 0.75, 1.0), curve_ret, curve_im):
            for r in frontier_rows("mixed" if lam else "unmixed", lam, s, allocation=allocation)[:1]:
                r.update(L_ret=lr_ + noise * rng.standard_normal(), L_im=li + noise * rng.standard_normal(),
                         stage3_lr=1e-3)
                rows.append(r)
    return rows


def test_fig3a_flat_im_improving_ret():
    rows = fig3_rows("added", [2.2, 2.1, 2.08, 2.07, 2.06], [1.80, 1.79, 1.80, 1.79, 1.795])
    assert by_id(CL.evaluate(rows))["c"]["verdict"] == ST.HOLDS
    rows = fig3_rows("added", [2.2, 2.1, 2.08, 2.07, 2.06], [1.80, 1.75, 1.70, 1.65, 1.60])  # L_im moves too
    c = by_id(CL.evaluate(rows))["c"]
    assert c["verdict"] == ST.NOT_HOLD and "not flat" in c["reason"]
    assert by_id(CL.evaluate(fig3_rows("added", [2.2] * 5, [1.8] * 5, seeds=2)))["c"]["verdict"] == ST.INCONCLUSIVE


def test_paper_fig3a_numbers_pass_flat_rule():
    """The rule is calibrated so the paper's own digitized Fig 3a counts as 'flat L_im'."""
    from eelib.figures import paper_values
    for d in paper_values()["fig3a"]["by_post_size"].values():
        d_ret, d_im = d["L_ret"][0] - d["L_ret"][-1], d["L_im"][0] - d["L_im"][-1]
        assert d_ret > 0 and abs(d_im) <= FLAT_RATIO * d_ret


def test_fig3b_interior_optimum():
    rows = fig3_rows("split", [2.3, 2.2, 2.25, 2.35, 2.33], [2.0, 2.03, 2.1, 2.2, 2.1])
    c = by_id(CL.evaluate(rows))["d"]
    assert c["verdict"] == ST.HOLDS and c["parts"][0]["lam_star"] == 0.25
    rows = fig3_rows("split", [2.3, 2.25, 2.2, 2.15, 2.1], [2.0] * 5)   # monotone: optimum at the end
    assert by_id(CL.evaluate(rows))["d"]["verdict"] == ST.NOT_HOLD
    rows = fig3_rows("split", [2.3, 2.2, 2.2, 2.2, 2.2], [2.0] * 5)   # flat after λ=0: no interior optimum shown
    assert by_id(CL.evaluate(rows))["d"]["verdict"] == ST.NOT_SHOWN
    # a grid without λ = 1 (or 0) cannot show an interior optimum of [0, 1]
    rows = [r for r in fig3_rows("split", [2.3, 2.2, 2.25, 2.35, 2.33], [2.0] * 5) if r["lam"] < 1]
    d = by_id(CL.evaluate(rows))["d"]
    assert d["verdict"] == ST.INCONCLUSIVE and "λ = 1" in d["reason"]


def test_empty_rows_all_inconclusive():
    assert {c["verdict"] for c in CL.evaluate([])} == {ST.INCONCLUSIVE}


def test_written_files(tmp_path):
    rows = [r for s in range(3) for r in frontier_rows("unmixed", 0.0, s, 0, 0.01) + frontier_rows("mixed", 1.0, s, -0.3, 0.01)]
    paths = RP.write(CL.evaluate(rows), tmp_path, "syn", len(rows))
    md = paths["claims_md"].read_text()
    js = json.loads(paths["claims_json"].read_text())
    assert "| a. Mixing improves" in md and "**holds**" in md
    assert [c["id"] for c in js["claims"]] == list("abcdefghij") and js["min_seeds"] == 3
    assert not list(tmp_path.glob(".*tmp"))


def test_report_end_to_end(tmp_path):
    rows = [r for s in range(3) for r in frontier_rows("unmixed", 0.0, s, 0, 0.01) + frontier_rows("mixed", 1.0, s, -0.3, 0.01)]
    rdir = tmp_path / "syn" / "runs" / "all"
    rdir.mkdir(parents=True)
    (rdir / "result.json").write_text(json.dumps({"rows": rows}))
    paths = RP.report("syn", tmp_path, figures=False)
    js = json.loads(paths["claims_json"].read_text())
    want = {c["id"]: c["verdict"] for c in CL.evaluate(rows)}
    assert {c["id"]: c["verdict"] for c in js["claims"]} == want and want["a"] == ST.HOLDS
    md = paths["claims_md"].read_text()
    assert all(f"| {k}. " in md and f"**{v}**" in md for k, v in want.items())
    assert js["n_rows"] == len(rows) == len((tmp_path / "syn" / "results.jsonl").read_text().splitlines())
    assert RP.main_report(["nope", "--root", str(tmp_path)]) == 2


def test_report_final_only_reaches_the_figures_too(tmp_path, monkeypatch):
    """`eelib report --final-only` draws the frontiers from final points, as its claims use them
    (the figures were drawn with trajectory points whatever the flag said)."""
    from eelib import figures as FG
    rows = [r for s in range(3) for r in frontier_rows("unmixed", 0.0, s, 0, 0.01) + frontier_rows("mixed", 1.0, s, -0.3, 0.01)]
    (tmp_path / "syn" / "runs" / "all").mkdir(parents=True)
    (tmp_path / "syn" / "runs" / "all" / "result.json").write_text(json.dumps({"rows": rows}))
    seen = []
    monkeypatch.setattr(FG, "save_all", lambda rows, out, trajectory=True: seen.append(trajectory) or {})
    assert RP.main_report(["syn", "--root", str(tmp_path), "--final-only"]) == 0
    RP.report("syn", tmp_path)
    assert seen == [False, True]


def test_settings_edge_cases():
    """Per-setting stage-3 LR, a missing setting value, replay run for one pipeline only, a NaN."""
    # two pipelines sweeping different stage-3 LRs: each read at its own smallest
    music = fig3_rows("added", [2.2, 2.1, 2.08, 2.07, 2.06], [1.8] * 5)
    flan = fig3_rows("added", [2.2, 2.1, 2.08, 2.07, 2.06], [1.8] * 5)
    for r in flan:
        r.update(pipeline="flan->chem", stage3_lr=3e-4)
    c = by_id(CL.evaluate(music + flan))["c"]
    assert {p["part"]: p["stage3_lr"] for p in c["parts"]} == {"music->chem": 1e-3, "flan->chem": 3e-4}
    assert c["verdict"] == ST.HOLDS
    # rows without a stage-2 LR are a setting of their own, not dropped; two stage-2 configs in one
    # pipeline are a sweep, not Fig 3a's one fixed config: shown as extensions, not counted
    for r in flan:
        r.update(pipeline="music->chem", stage2_lr=None, L_ret=5.0 - 0.1 * r["lam"])
    c = by_id(CL.evaluate(music + flan))["c"]
    assert len(c["parts"]) == 2 and all(p["verdict"] == ST.HOLDS and p["counted"] is False for p in c["parts"])
    assert c["verdict"] == ST.INCONCLUSIVE and "no part counts" in c["reason"]
    # a NaN loss makes its setting inconclusive, never a significant effect
    bad = fig3_rows("added", [2.2, 2.1, 2.08, 2.07, 2.3], [1.8] * 5)
    bad[-1]["L_ret"] = float("nan")  # (evaluate refuses it in the frontier claims; claim c on its own)
    c = CL.claim_fig3a(pd.DataFrame(bad))
    assert c["verdict"] == ST.INCONCLUSIVE and "non-finite" in c["reason"]
    assert ST.verdict_of(ST.paired_summary([-0.1, float("nan"), -0.2])) == ST.INCONCLUSIVE
    # replay run for music->chem only: flan->chem (no replay runs at all) is not part of claim e
    rows = []
    for s in range(3):
        rows += frontier_rows("mixed", 1.0, s, 0, 0.01) + frontier_rows("mixed+replay", 1.0, s, -0.2, 0.01)
        rows += frontier_rows("mixed+dropout", 1.0, s, -0.1, 0.01)
        rows += frontier_rows("mixed", 1.0, s, 0, 0.01, pipeline="flan->chem")
    assert by_id(CL.evaluate(rows))["e"]["verdict"] == ST.HOLDS
    # a λ grid written as a float sum still has its end at 1
    rows = fig3_rows("split", [2.3, 2.2, 2.25, 2.35, 2.33], [2.0] * 5)
    for r in rows:
        r["lam"] = sum([r["lam"] / 10] * 10)
    assert by_id(CL.evaluate(rows))["d"]["verdict"] == ST.HOLDS


def _fake_run(root, name, cfg, rows, swept=None, data_digest=None):
    from eelib import config as C
    rdir = root / cfg.name / "runs" / name
    rdir.mkdir(parents=True)
    (rdir / "config.yaml").write_text(C.dump(cfg))
    (rdir / "result.json").write_text(json.dumps({"rows": rows}))
    if swept is not None:
        (rdir / "swept.json").write_text(json.dumps(swept))
    if data_digest is not None:
        (rdir / "data.digest").write_text(data_digest + "\n")


def _rows(lam):
    return [r for s in range(3) for r in frontier_rows("mixed" if lam else "unmixed", lam, s)]


def test_pooled_runs_that_differ_outside_the_grid_are_reported(tmp_path, capsys):
    """collect() pools every finished run of an experiment, including runs an earlier version of
    the params file made under other names; the report and the runner say where they differ."""
    from eelib import config as C
    from eelib import pipeline as P
    base = C.load("params/quick.yaml")
    base.name = "syn"
    runs = {r: c for r, c in P.grid_runs(base)}
    _fake_run(tmp_path, "lam0.0", runs["lam0.0"], _rows(0.0), swept=list(base.grid))
    _fake_run(tmp_path, "lam1.0", runs["lam1.0"], _rows(1.0), swept=list(base.grid))
    # Only the swept λ differs: nothing to warn about.
    assert set(P.config_spread("syn", tmp_path)) == {"stage1.lam"}
    assert P.warn_unswept(base, tmp_path) == {} and capsys.readouterr().err == ""
    # An older version of the file ran λ = 0.9 with a longer stage 3, under a name this grid lacks.
    old = C.expand(base)[0]
    old.stage1.lam, old.stage3.tokens, old.threads = 0.9, 2 * base.stage3.tokens, 2
    _fake_run(tmp_path, "lam0.9", old, _rows(0.9))
    spread = P.config_spread("syn", tmp_path)
    assert spread["stage3.tokens"] == {str(base.stage3.tokens): ["lam0.0", "lam1.0"],
                                       str(2 * base.stage3.tokens): ["lam0.9"]}
    assert set(P.unrecorded(spread, base.grid)) == {"stage3.tokens"}  # threads changes no number
    assert set(P.warn_unswept(base, tmp_path)) == {"stage3.tokens"}
    err = capsys.readouterr().err
    assert "stage3.tokens" in err and "lam0.9" in err and "threads" not in err
    assert len(P.collect("syn", tmp_path)) == 3 * len(_rows(0.0))  # pooled, never dropped
    paths = RP.report("syn", tmp_path, figures=False)
    md = paths["claims_md"].read_text()
    assert "## Runs pooled here" in md and "**Differ beyond what the grids" in md
    assert f"stage3.tokens: {base.stage3.tokens} (lam0.0, lam1.0), {2 * base.stage3.tokens} (lam0.9)" in md
    assert "`stage1.lam` (3 values)" in md and "`threads`" in md
    js = json.loads(paths["claims_json"].read_text())
    assert js["pooled_runs"]["spread"]["stage3.tokens"][str(2 * base.stage3.tokens)] == ["lam0.9"]
    # A run whose config.yaml cannot be read is named, and compared on nothing
    (tmp_path / "syn" / "runs" / "lam0.9" / "config.yaml").write_text(":\n  - [")
    spread = P.config_spread("syn", tmp_path)
    assert spread == {"stage1.lam": {"0.0": ["lam0.0"], "1.0": ["lam1.0"]}, "config.yaml": {'"unreadable"': ["lam0.9"]}}


def test_fields_a_grid_swept_are_not_flagged_and_duplicates_are(tmp_path, capsys):
    """The explorer's "run λ now" runs a one-λ grid into an experiment whose grid swept more
    (LoRA dropout, Table 9): swept.json records what each run's grid swept, so no false warning.
    Two runs made by one config (`--seeds` renames a grid's runs) are flagged: their rows count twice."""
    from eelib import config as C
    from eelib import pipeline as P
    base = C.load("params/quick.yaml")
    base.name = "syn"
    base.grid = {"stage1.lam": [0.0, 1.0], "stage2.lora_dropout": [0.0, 0.05]}
    for run, c in P.grid_runs(base):
        _fake_run(tmp_path, run, c, _rows(c.stage1.lam), swept=list(base.grid))
    one = C.expand(C.from_dict({**C.to_dict(base), "grid": {"stage1.lam": [0.5]}}))[0]
    _fake_run(tmp_path, "lam0.5", one, _rows(0.5), swept=["stage1.lam"])
    assert P.warn_unswept(C.from_dict({**C.to_dict(base), "grid": {"stage1.lam": [0.5]}}), tmp_path) == {}
    assert capsys.readouterr().err == ""
    md = RP.report("syn", tmp_path, figures=False)["claims_md"].read_text()
    assert "Swept by the grid that made the runs" in md and "`stage2.lora_dropout` (2 values)" in md
    assert "Differ beyond" not in md and "Duplicates" not in md
    # the same config again under another name
    _fake_run(tmp_path, "lam0.5-seed0", one, _rows(0.5), swept=["stage1.lam", "seed"])
    assert P.duplicate_runs("syn", tmp_path) == [["lam0.5", "lam0.5-seed0"]]
    P.warn_unswept(base, tmp_path)
    assert "lam0.5, lam0.5-seed0" in capsys.readouterr().err
    md = RP.report("syn", tmp_path, figures=False)["claims_md"].read_text()
    assert "Duplicates: runs `lam0.5`, `lam0.5-seed0`" in md and "equal rows change nothing" in md


def test_a_field_is_by_design_only_where_a_grid_swept_its_values(tmp_path, capsys):
    """Runs made before swept.json existed are judged by their names; a value no grid swept is
    flagged even when another grid swept the same field."""
    from eelib import config as C
    from eelib import pipeline as P
    base = C.load("params/quick.yaml")
    base.name = "syn"
    base.grid = {"stage1.lam": [0.0, 1.0], "stage2.lora_dropout": [0.0, 0.05]}
    for run, c in P.grid_runs(base):  # older outputs: no swept.json
        _fake_run(tmp_path, run, c, _rows(c.stage1.lam))
    assert P.pooled_runs("syn", tmp_path)["by_design"] == ["stage1.lam", "stage2.lora_dropout"]
    assert P.warn_unswept(base, tmp_path) == {} and capsys.readouterr().err == ""
    # another grid swept stage3.tokens at two values; a third run holds a value neither swept
    tok = C.from_dict({**C.to_dict(base), "grid": {"stage3.tokens": [8000, 6400]}})
    for run, c in P.grid_runs(tok):
        _fake_run(tmp_path, run, c, _rows(c.stage1.lam), swept=["stage3.tokens"])
    # the first grid's runs hold stage3.tokens 100000, a value the second grid did not sweep
    assert "stage3.tokens" not in P.pooled_runs("syn", tmp_path)["by_design"]
    assert set(P.warn_unswept(base, tmp_path)) == {"stage3.tokens"}
    assert "stage3.tokens" in capsys.readouterr().err
    # had the second grid swept the first one's value too, the spread would be by design
    other = tmp_path / "other"
    for run, c in P.grid_runs(base):
        _fake_run(other, run, c, _rows(c.stage1.lam))
    tok.grid = {"stage3.tokens": [base.stage3.tokens, 6400]}
    for run, c in P.grid_runs(tok):
        _fake_run(other, run, c, _rows(c.stage1.lam), swept=["stage3.tokens"])
    pooled = P.pooled_runs("syn", other)
    assert "stage3.tokens" in pooled["by_design"]
    # (its run at the first grid's value repeats lam0.0-lora_dropout0.0's config)
    assert pooled["duplicates"] == [["lam0.0-lora_dropout0.0", f"tokens{base.stage3.tokens}"]]



def test_runs_from_different_local_files_are_told_apart(tmp_path):
    """Local data paths may move, so configs compare without them; the files' identity
    (runs/<run>/data.digest) still tells runs that read different D_post files apart."""
    from eelib import config as C
    from eelib import pipeline as P
    base = C.expand(C.load("params/quick.yaml"))[0]
    base.name = "syn"
    _fake_run(tmp_path, "a", base, _rows(0.0), data_digest="aaaa")
    _fake_run(tmp_path, "b", base, _rows(0.0), data_digest="bbbb")
    assert P.config_spread("syn", tmp_path) == {"data.digest": {'"aaaa"': ["a"], '"bbbb"': ["b"]}}
    assert "data.digest" in P.unrecorded(P.config_spread("syn", tmp_path))
    assert P.duplicate_runs("syn", tmp_path) == []
    # and a report over no finished run says so
    (tmp_path / "empty" / "runs").mkdir(parents=True)
    assert "No finished runs." in RP.report("empty", tmp_path, figures=False)["claims_md"].read_text()


def test_cli_outputs_root_defaults_to_eelib_outputs_as_the_notebooks_do(tmp_path):
    """A review ran a study with $EELIB_OUTPUTS set (the notebooks' root): `eelib report` looked
    in ./outputs and suggested the offline quick run. --out still wins over the variable."""
    from conftest import child_env, run_cli
    env = child_env(EELIB_OUTPUTS=str(tmp_path / "mine"))
    p = run_cli(tmp_path, "report", "legal-medical", env=env)
    assert p.returncode == 2 and p.stdout == "", p.stdout
    assert f"no runs under {tmp_path / 'mine' / 'legal-medical'}: run its params file first" in p.stderr
    p = run_cli(tmp_path, "report", "legal-medical", "--out", "elsewhere", env=env)
    assert "no runs under elsewhere/legal-medical" in p.stderr
    assert "$EELIB_OUTPUTS if set" in run_cli(tmp_path, "run", "--help", env=env).stdout


def test_check_takes_seeds_like_run_and_batch(tmp_path):
    """`eelib check --seeds` lists the runs `eelib run --seeds` would make (it was refused)."""
    from conftest import ROOT, run_cli
    p = run_cli(tmp_path, "check", str(ROOT / "params" / "quick.yaml"), "--seeds", "3", "4")
    assert p.returncode == 0, p.stderr
    runs = [l.strip() for l in p.stdout.splitlines()[1:]]
    assert len(runs) == 10 and all(r.endswith(("-seed3", "-seed4")) for r in runs), runs


def test_fig3_claims_catch_what_a_looser_rule_would_pass():
    """Cases a review's mutations passed: an L_im that worsens with λ is not "flat" (|ΔL_im|,
    not ΔL_im); an interior λ* needs both endpoint gaps significant, not one; Fig 3 reads one
    stage-3 LR (the smallest), never pooling the others; +replay/+dropout/LoRA rows stay out."""
    ret, flat = [2.2, 2.1, 2.08, 2.07, 2.06], [1.80, 1.79, 1.80, 1.79, 1.795]
    worse_im = fig3_rows("added", ret, [1.80, 1.85, 1.90, 1.95, 2.00])
    c = by_id(CL.evaluate(worse_im))["c"]
    assert c["verdict"] == ST.NOT_HOLD and "not flat" in c["reason"]
    one_end = fig3_rows("split", [2.3, 2.2, 2.25, 2.35, 2.205], [2.0] * 5)  # λ = 1 within noise of λ*
    d = by_id(CL.evaluate(one_end))["d"]
    assert d["parts"][0]["lam_star"] == 0.25 and d["verdict"] != ST.HOLDS
    good = fig3_rows("added", ret, flat)
    other_lr = [dict(r, stage3_lr=3e-3, L_ret=r["L_ret"] + 2 * r["lam"]) for r in good]  # reversed there
    c = by_id(CL.evaluate(good + other_lr))["c"]
    assert c["verdict"] == ST.HOLDS and c["numbers"]["stage3_lr"] == [1e-3]
    replay = [dict(r, method="mixed+replay", L_ret=3.0, run=r["run"] + "-replay") for r in good if r["lam"] == 1.0]
    assert by_id(CL.evaluate(good + replay))["c"]["verdict"] == ST.HOLDS


def test_mixed_vs_mixed_plus_x_is_read_at_the_largest_lambda_both_have():
    """Replay helps at λ = 1 and not at 0.5: claim e.replay compares the two at λ = 1."""
    rows = [r for s in range(3) for lam, shift in ((0.0, 0.0), (0.5, -0.1), (1.0, -0.2))
            for r in frontier_rows("mixed" if lam else "unmixed", lam, s, shift, 0.01)]
    rows += [dict(r, run=r["run"] + "r") for s in range(3) for lam, shift in ((0.5, -0.1), (1.0, -0.5))
             for r in frontier_rows("mixed+replay", lam, s, shift, 0.01)]
    e = by_id(CL.evaluate(rows))["e"]
    part = next(p for p in e["parts"] if p["id"] == "e.replay")
    assert part["verdict"] == ST.HOLDS and "λ = 1" in part["reason"]

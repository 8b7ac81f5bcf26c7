"""Claims g–j on synthetic rows: Fig 3b's L_im (g), replay/dropout on the C4 view (h, Fig 5), replay
and dropout without mixing (i, Fig 6), full fine-tuning against LoRA (j, Fig 7)."""
import numpy as np

from eelib import claims as CL
from eelib import stats as ST
from test_claims import by_id, fig3_rows, frontier_rows


def _seeds(n=3, **methods):
    """Rows of each method (name with '_' for '+', '-': 'mixed_replay' = 'mixed+replay') at its
    (λ, shift, extra fields) for n seeds."""
    rows = []
    for s in range(n):
        for name, (lam, shift, extra) in methods.items():
            method = name.replace("__", "-").replace("_", "+")
            for r in frontier_rows(method, lam, s, shift, 0.01):
                rows.append(r | extra)
    return rows


def test_g_fig3b_l_im_worsening_with_lambda_holds_and_its_reverse_does_not():
    im_up = [2.00, 2.03, 2.10, 2.28, 2.13]  # the paper's 30M curve (notes §6.2): worst at an interior λ, 1 > 0
    g = by_id(CL.evaluate(fig3_rows("split", [2.3, 2.2, 2.3, 2.4, 2.3], im_up)))["g"]
    assert g["verdict"] == ST.HOLDS and "λ_max = 1" in g["reason"]
    g = by_id(CL.evaluate(fig3_rows("split", [2.3] * 5, im_up[::-1])))["g"]
    assert g["verdict"] == ST.NOT_HOLD
    g = by_id(CL.evaluate(fig3_rows("split", [2.3] * 5, [2.0] * 5)))["g"]
    assert g["verdict"] == ST.NOT_SHOWN
    # added runs are Fig 3a's: g needs split ones
    g = by_id(CL.evaluate(fig3_rows("added", [2.3] * 5, im_up)))["g"]
    assert g["verdict"] == ST.INCONCLUSIVE and "split" in g["reason"]


def test_h_fig5_reads_the_c4_view_apart_from_fig4():
    rows = _seeds(mixed=(1.0, 0, {}), mixed_replay=(1.0, -0.2, {}), mixed_dropout=(1.0, -0.1, {}))
    c = by_id(CL.evaluate(rows))
    assert c["e"]["verdict"] == c["h"]["verdict"] == ST.HOLDS
    assert [p["id"] for p in c["h"]["parts"]] == ["h.replay", "h.dropout"]
    assert c["h"]["parts"][0]["numbers"]["mean"] > 0
    # replay better on L_ft-vs-L_ret (Fig 4) but worse on C4 at matched L_ret: h does not hold, e still does
    for r in rows:
        if r["method"] == "mixed+replay":
            r["L_pre"] += 0.3
            for t in r["trajectory"]:
                t["L_pre"] += 0.3
    c = by_id(CL.evaluate(rows))
    assert c["e"]["verdict"] == ST.HOLDS and c["h"]["verdict"] == ST.NOT_HOLD
    assert c["h"]["parts"][0]["verdict"] == ST.NOT_HOLD


def test_h_dropout_at_1b_is_shown_not_counted():
    """Fig 11: at 1B the paper's dropout degrades C4 retention; a rerun that finds so is faithful."""
    rows = _seeds(mixed=(1.0, 0, {}), mixed_replay=(1.0, -0.2, {}), mixed_dropout=(1.0, 0.2, {}))
    for r in rows:
        r["model"], r["pipeline"] = "paper-1b", "music->flan"
    h = by_id(CL.evaluate(rows))["h"]
    dropout = next(p for p in h["parts"] if p["id"] == "h.dropout")
    assert dropout["counted"] is False and "Fig 11" in dropout["reason"] and "does not hold" in dropout["reason"]
    assert h["verdict"] == ST.HOLDS  # replay's part alone decides
    for r in rows:
        r["model"] = "smollm2-135m"
    assert by_id(CL.evaluate(rows))["h"]["verdict"] == ST.NOT_HOLD  # at 135M it counts


def test_i_fig6_without_mixing_helps_but_less_than_mixing():
    base = dict(unmixed=(0.0, 0, {}), mixed=(1.0, -0.3, {}))
    rows = _seeds(**base, unmixed_replay=(0.0, -0.1, {}), unmixed_dropout=(0.0, -0.1, {"dropout": 0.05}))
    i = by_id(CL.evaluate(rows))["i"]
    assert i["verdict"] == ST.HOLDS
    assert [p["id"] for p in i["parts"]] == ["i.replay", "i.dropout", "i.replay<mixed", "i.dropout<mixed"]
    # replay alone beating mixing (as notes §6.6 reads Fig 6b): "less than mixing" does not hold
    rows = _seeds(**base, unmixed_replay=(0.0, -0.5, {}), unmixed_dropout=(0.0, -0.1, {"dropout": 0.05}))
    i = by_id(CL.evaluate(rows))["i"]
    assert i["verdict"] == ST.NOT_HOLD
    assert {p["id"]: p["verdict"] for p in i["parts"]}["i.replay<mixed"] == ST.NOT_HOLD
    # no unmixed+X runs at all (a Fig 2 experiment): inconclusive, not a failure
    i = by_id(CL.evaluate(_seeds(**base)))["i"]
    assert i["verdict"] == ST.INCONCLUSIVE


def test_i_dropout_rates_are_tested_one_at_a_time():
    rows = _seeds(unmixed=(0.0, 0, {}), mixed=(1.0, -0.3, {}), unmixed_replay=(0.0, -0.1, {}),
                  unmixed_dropout=(0.0, -0.1, {"dropout": 0.02}))
    rows += [r | {"dropout": 0.05, "run": r["run"] + "-d05"}
             for r in _seeds(unmixed_dropout=(0.0, 0.0, {}))]  # the second rate: no effect
    i = by_id(CL.evaluate(rows))["i"]
    dropout = next(p for p in i["parts"] if p["id"] == "i.dropout")
    assert [p["part"] for p in dropout["parts"]] == ["dropout 0.02", "dropout 0.05"]
    assert dropout["verdict"] == ST.HOLDS and dropout["numbers"]["alpha"] == ST.ALPHA / 2  # some rate holds


def test_i_at_1b_counts_only_what_fig_12_claims():
    """Fig 12 (1B): dropout without mixing helps; replay alone does little; no "less than mixing"."""
    rows = _seeds(unmixed=(0.0, 0, {}), mixed=(1.0, -0.1, {}), unmixed_replay=(0.0, 0.0, {}),
                  unmixed_dropout=(0.0, -0.15, {"dropout": 0.05}))
    for r in rows:
        r["model"], r["pipeline"] = "paper-1b", "music->flan"
    i = by_id(CL.evaluate(rows))["i"]
    counted = {p["id"]: p.get("counted", True) for p in i["parts"]}
    assert counted == {"i.replay": False, "i.dropout": True, "i.replay<mixed": False, "i.dropout<mixed": False}
    assert i["verdict"] == ST.HOLDS


def test_j_fig7_full_fine_tuning_beats_lora():
    ffts = dict(unmixed=(0.0, 0, {}), mixed=(1.0, -0.3, {}))
    rows = _seeds(**ffts, LoRA__unmixed=(0.0, 0.2, {}), LoRA__mixed=(1.0, -0.1, {}))
    c = by_id(CL.evaluate(rows))
    assert c["j"]["verdict"] == ST.HOLDS and c["f"]["verdict"] == ST.HOLDS
    assert [p["numbers"]["mean"] > 0 for p in c["j"]["parts"]] == [True, True]
    rows = _seeds(**ffts, LoRA__unmixed=(0.0, 0.2, {}), LoRA__mixed=(1.0, -0.5, {}))
    assert by_id(CL.evaluate(rows))["j"]["verdict"] == ST.NOT_HOLD
    # full fine-tuning run for a second pipeline without LoRA runs there: j tests music->chem only
    rows = _seeds(**ffts, LoRA__unmixed=(0.0, 0.2, {}), LoRA__mixed=(1.0, -0.1, {}))
    rows += [r | {"pipeline": "flan->chem"} for r in _seeds(**ffts)]
    j = by_id(CL.evaluate(rows))["j"]
    assert j["verdict"] == ST.HOLDS
    assert all("flan->chem" not in str(p.get("part", "")) for p in j["parts"])
    assert np.isfinite(j["parts"][0]["numbers"]["mean"])

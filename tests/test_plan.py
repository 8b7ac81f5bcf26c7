"""`eelib plan` (eelib/plan.py): its token counts are what the stages actually train."""
from __future__ import annotations

import json

import pytest

from conftest import TINY, run_cli, write_params
from eelib import config as C, plan


def _stage_records(root, name="tiny"):
    return {(int(p.parent.parent.name[-1]), p.parent.name): json.loads(p.read_text())
            for p in (root / "outputs" / name).glob("stage*/*/stage.json")}


def _trained(rec) -> int:
    return sum(src["tokens"] for src in rec["mixture"].values())


def test_plan_counts_equal_the_baseline_runs_tokens(baseline):
    cfg = C.from_dict(json.loads(json.dumps(TINY)))
    stages = {(s["stage"], s["key"]): s for s in plan.run_stages(cfg)}
    recs = _stage_records(baseline["dir"])
    assert set(stages) == set(recs)  # the same distinct stages, by key
    for k, s in stages.items():
        got = _trained(recs[k])
        if s["upper_bound"]:  # stage 2 under "added": early stopping may end it before the cap
            assert 0 < got <= s["train_tokens"], k
        else:
            assert got == s["train_tokens"], k
    # held-out evaluations: stage 1 at its end (C4, D_post), stage 2 along its trajectory (D_post)
    # and at its end (C4, D_post), stage 3 along its trajectory (all three; its last point is the result)
    val = (TINY["data"]["val_tokens"] // 64) * 64
    for (stage, key), s in stages.items():
        n = len(recs[(stage, key)].get("trajectory", []))
        if stage == 1:
            assert s["eval_tokens"] == 2 * val  # TINY mixes λ = 0.5
        elif stage == 2:
            assert 0 < n * val <= s["eval_tokens"] - 2 * val  # early stopping may end it sooner
        else:
            assert s["eval_tokens"] == 3 * val * n, (stage, n)


def test_plan_of_the_split_and_a_grid(tmp_path):
    raw = json.loads(json.dumps(TINY))
    raw.update(allocation="split", grid={"stage1.lam": [0.0, 0.5, 1.0], "seed": [0, 1]})
    raw["stage2"]["replay"] = 0.2
    cfg = C.from_dict(raw)
    p = plan.plan([cfg], tok_s=1000.0)
    (e,) = p["experiments"]
    seq, post_w, gen_w = 64, 8000 // 64, 40000 // 64
    assert e["runs"] == 6 and e["stage1_runs"] == 6 and e["stage3_runs"] == 6 * 2
    ks = [round(lam * post_w) for lam in (0.0, 0.5, 1.0)]
    assert e["stage1_tokens"] == 2 * sum((gen_w + k) * seq for k in ks)
    # stage 2 gets the remaining 1−λ of the pass once, plus replay at 0.2/(1−0.2) of it
    assert e["stage2_tokens"] == 2 * sum((post_w - k + round(0.25 * (post_w - k))) * seq for k in ks)
    assert e["upper_bound"] is False
    # a split stage 2 evaluates along its one pass (the λ = 1, no-replay stage 2 is skipped)
    assert plan._evals(16, 2) == 9 and plan._evals(15, 5) == 4 and plan._evals(17, 5) == 5
    assert plan._evals(0, 5) == 0 and plan._evals(10, 0) == 0
    assert e["gpu_hours"] == pytest.approx(e["equivalent_tokens"] / 1000 / 3600)
    assert p["total"]["gpu_hours"] == pytest.approx(e["gpu_hours"])
    # a fixed cost per distinct stage of a compiled config: 6 stage 1s, 6 stage 2s, 12 stage 3s
    assert plan.plan([cfg], tok_s=1000.0, stage_s=90.0)["total"]["gpu_hours"] == pytest.approx(e["gpu_hours"])
    q = plan.plan([C.from_dict(dict(raw, compile=True))], tok_s=1000.0, stage_s=90.0)
    assert q["experiments"][0]["stages"] == 24
    assert q["total"]["gpu_hours"] == pytest.approx(e["gpu_hours"] + 24 * 90 / 3600)


def test_stages_shared_between_experiments_are_reported(tmp_path):
    a = C.from_dict(dict(json.loads(json.dumps(TINY)), name="a"))
    b = C.from_dict(dict(json.loads(json.dumps(TINY)), name="b", allocation="split"))
    p = plan.plan([a, b])
    # Fig 3a and 3b share stage 1 (allocation is not in its key); stage 2 differs.
    assert p["experiments"][1]["shared_across"] == p["experiments"][1]["stage1_tokens"] > 0
    assert p["experiments"][0]["shared_across"] == 0
    (s1,) = [s for s in plan.run_stages(b) if s["stage"] == 1]
    saved = p["total"]["equivalent_tokens"] - p["total"]["equivalent_tokens_reused"]
    assert saved == pytest.approx(s1["train_tokens"] + s1["eval_tokens"] / 3)
    # with a fixed cost per compiled stage, the shared stage 1 pays it once when reused
    a.compile = b.compile = True
    q = plan.plan([a, b], tok_s=1000.0, stage_s=60.0)
    assert q["total"]["stages"] == 8 and q["total"]["stages_reused"] == 7
    assert q["total"]["gpu_hours_reused"] == pytest.approx(
        (q["total"]["equivalent_tokens_reused"] / 1000 + 7 * 60) / 3600)


def test_cli_plan_with_a_throughput_file_and_bad_input(tmp_path, cli):
    write_params(tmp_path / "tiny.yaml", dict(TINY, compile=True))
    tp = tmp_path / "tp.json"
    tp.write_text(json.dumps({"preset": "smollm2-135m", "device": "cuda", "device_name": "H100",
                              "results": [{"mode": "plain-eager", "status": "failed"},
                                          {"mode": "eelib-compiled", "status": "ok", "tokens_per_s": 5e5,
                                           "warmup_s": 81.5}]}))
    p = run_cli(tmp_path, "plan", "tiny.yaml", "--throughput", "tp.json", "--json", "plan.json")
    assert p.returncode == 0, p.stderr
    assert "500,000 tok/s (eelib-compiled smollm2-135m on H100)" in p.stdout
    assert "include 82 s of fixed cost (compile warm-up) per distinct compiled stage: 0.1 GPU-h over " \
        "the experiments' 4 stages" in p.stdout
    saved = json.loads((tmp_path / "plan.json").read_text())
    assert saved["tok_s"] == 5e5 and saved["stage_s"] == 81.5
    # the rest in this process (the CLI's own entry point; a subprocess each cost ≈ 9 s of start-up)
    def plan(*args):
        p = cli(tmp_path, "plan", "tiny.yaml", *args)
        return p.returncode, p.stdout, p.stderr
    rc, out, _ = plan("--throughput", "tp.json", "--stage-s", "0")
    assert rc == 0 and "fixed cost" not in out
    rc, _, err = plan("--tok-s", "1e5", "--stage-s", "-1")
    assert rc == 2 and err.strip().splitlines() == [
        "eelib: error: --stage-s: must be a number >= 0 (fixed seconds per stage, e.g. compile warm-up)"]
    rc, _, err = plan("--tok-s", "0")
    assert rc == 2 and err.strip().splitlines() == ["eelib: error: --tok-s: must be > 0 (training tokens per second)"]
    rc, _, err = plan("--throughput", "tp.json", "--mode", "plain-eager")
    assert rc == 2 and "no successful result for mode plain-eager" in err


def test_plan_counts_equal_a_split_runs_tokens_with_replay(tmp_path):
    """The split's stage-2 arithmetic (the remaining 1−λ once, replay at r/(1−r) of it) is written
    in the stages, the validation and the plan: here the plan is held to what a run trains."""
    from eelib import pipeline as P
    raw = json.loads(json.dumps(TINY))
    raw.update(allocation="split", name="split")
    raw["data"]["cache_dir"] = str(tmp_path / "cache")
    raw["stage2"]["replay"] = 0.2
    cfg = C.from_dict(raw)
    P.run_pipeline(cfg, "r", root=tmp_path / "outputs", progress=False)
    stages = {(s["stage"], s["key"]): s for s in plan.run_stages(cfg)}
    recs = _stage_records(tmp_path, "split")
    assert set(stages) == set(recs)
    for k, s in stages.items():
        assert not s["upper_bound"] and _trained(recs[k]) == s["train_tokens"], k

"""Stages shared between experiments (eelib/stagedir.py `adopt_twin`): a stage another experiment
finished with the same key is reused, not retrained, and gives the same numbers."""
from __future__ import annotations

import json
import shutil

import pytest
from conftest import TINY, compared, read_rows, run_tiny, write_params

from eelib import keys, train as T


def _copy_baseline(baseline, tmp_path):
    shutil.copytree(baseline["dir"] / "outputs", tmp_path / "outputs")
    shutil.copytree(baseline["dir"] / "cache", tmp_path / "cache")


def test_same_config_under_another_name_adopts_every_stage(tmp_path, baseline, cli):
    _copy_baseline(baseline, tmp_path)
    write_params(tmp_path / "twin.yaml", dict(TINY, name="twin"))
    p = cli(tmp_path, "run", "twin.yaml", "--out", "outputs", "--no-progress")
    assert p.returncode == 0, p.stderr[-2000:]
    assert compared(read_rows(tmp_path, "twin")) == compared(baseline["rows"])
    recs = sorted((tmp_path / "outputs" / "twin").glob("stage*/*/stage.json"))
    assert len(recs) == 1 + 1 + 2
    for r in recs:
        rec = json.loads(r.read_text())
        assert rec["reused_from"] == f"tiny/{r.parent.parent.name}/{r.parent.name}"
        assert not (r.parent / "ckpt").exists()
    # final weights are hard links of the original's files, not copies
    (s1,) = (tmp_path / "outputs" / "twin" / "stage1").iterdir()
    for f in (s1 / "final").iterdir():
        orig = tmp_path / "outputs" / "tiny" / "stage1" / s1.name / "final" / f.name
        assert f.stat().st_ino == orig.stat().st_ino
    # the adopted stages stay whole when the experiment they came from is deleted
    shutil.rmtree(tmp_path / "outputs" / "tiny")
    shutil.rmtree(tmp_path / "outputs" / "twin" / "runs")
    (tmp_path / "outputs" / "twin" / "results.jsonl").unlink()
    p = cli(tmp_path, "run", "twin.yaml", "--out", "outputs", "--no-progress")
    assert p.returncode == 0, p.stderr[-2000:]
    assert compared(read_rows(tmp_path, "twin")) == compared(baseline["rows"])


def test_fig3b_reuses_the_fig3a_stage1_and_trains_its_own_stage2(tmp_path, baseline, cli):
    _copy_baseline(baseline, tmp_path)
    split = dict(TINY, name="split", allocation="split")
    write_params(tmp_path / "split.yaml", split)
    p = cli(tmp_path, "run", "split.yaml", "--out", "outputs", "--no-progress")
    assert p.returncode == 0, p.stderr[-2000:]
    (s1,) = (tmp_path / "outputs" / "split" / "stage1").glob("*/stage.json")
    assert json.loads(s1.read_text())["reused_from"].startswith("tiny/stage1/")
    (s2,) = (tmp_path / "outputs" / "split" / "stage2").glob("*/stage.json")
    assert "reused_from" not in json.loads(s2.read_text())
    # the same numbers as the split experiment run from nothing
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    write_params(fresh / "tiny.yaml", split)
    p = run_tiny(fresh)
    assert p.returncode == 0, p.stderr[-2000:]
    assert compared(read_rows(fresh, "split")) == compared(read_rows(tmp_path, "split"))


def test_split_stage2_warmup_takes_at_most_a_third_of_the_stage(tmp_path, monkeypatch):
    """Fig 3b's stage 2 is one pass over (1−λ)·|D_post|, shorter as λ grows: its warmup is capped
    at a third of its steps, so the LR reaches its peak and decays at every λ (decisions.md)."""
    from eelib import config as C
    from eelib import stages
    seen = {}

    class Stop(Exception):
        pass

    def fake_train(model, mix, spec, **kw):
        seen[kw["desc"]] = spec
        raise Stop
    raw = json.loads(json.dumps(TINY))
    raw["data"]["cache_dir"] = str(tmp_path / "cache")
    raw["stage2"]["warmup_steps"] = 500  # Table 7's value, far above this stage's steps
    for alloc in ("split", "added"):
        cfg = C.from_dict(dict(raw, allocation=alloc, name=alloc))
        stage1 = stages.pretrain(cfg, root=tmp_path / "out", progress=False)
        monkeypatch.setattr(stages, "train", fake_train)
        with pytest.raises(Stop):
            stages.posttrain(cfg, stage1, root=tmp_path / "out", progress=False)
        monkeypatch.undo()
        spec = seen.pop(f"stage2 λ={cfg.stage1.lam}")
        if alloc == "split":  # 125 windows of D_post, 62 in stage 1: 63 left, 8 steps of 8
            assert spec.max_steps == 8 and spec.warmup_steps == 2
            assert T.lr_at(spec.warmup_steps, spec) == spec.lr  # the peak is reached
        else:  # Fig 3a keeps the configured warmup
            assert spec.warmup_steps == 500
    assert stages._stage2_key(C.from_dict(dict(raw, allocation="split")))["warmup"] == keys.SPLIT_WARMUP_RULE
    assert "warmup" not in stages._stage2_key(C.from_dict(dict(raw, allocation="added")))


def test_stage_table_blanks_stage1_losses_taken_on_another_held_out_set(tmp_path):
    """Stage 1 is shared by runs that differ only in data.val_tokens (its key leaves it out), so a
    reused stage 1 carries losses on the held-out set of the run that trained it."""
    import pandas as pd

    from eelib.notebook import stage_table
    from eelib.stages import StageResult
    s1 = StageResult(1, tmp_path / "a", {"steps": 5, "val_tokens": 2048,
                                         "losses": {"L_pre_val": 3.0, "L_post_val": 2.0}})
    s2 = StageResult(2, tmp_path / "b", {"steps": 7, "key": {"val_tokens": 4096},
                                         "losses": {"L_pre_val": 3.5, "L_post_val": 1.5}})
    t = stage_table(s1, s2)
    assert pd.isna(t.loc[0, "L_pre (C4)"]) and "val_tokens 2048, here 4096" in t.loc[0, "note"]
    assert t.loc[1, "L_post"] == 1.5 and t.loc[1, "note"] == ""
    s1.record["val_tokens"] = 4096  # the same held-out set: shown
    assert stage_table(s1, s2).loc[0, "L_pre (C4)"] == 3.0
    assert stage_table(s1).loc[0, "L_pre (C4)"] == 3.0  # alone, nothing to compare with


def test_lora_stage2_does_not_depend_on_what_the_process_drew_before(tmp_path):
    """The adapters are initialised from the run's seed: the same stage-2 key gives the same
    numbers whether or not something (stage 1, an earlier run of a grid) drew random numbers
    first. Before, peft drew them from the global state and L_im moved by ~4e-3."""
    pytest.importorskip("peft")
    import torch
    from eelib import config as C
    from eelib import stages
    raw = json.loads(json.dumps(TINY))
    raw["data"]["cache_dir"] = str(tmp_path / "cache")
    raw["stage2"].update(lora_r=4, lora_alpha=8, max_tokens=6000)
    cfg = C.from_dict(dict(raw, name="lora"))
    losses = []
    for i, root in enumerate(("a", "b")):
        stage1 = stages.pretrain(cfg, root=tmp_path / root, progress=False)
        torch.rand(1000 * (i + 1))  # what an earlier run in this process would have drawn
        losses.append(stages.posttrain(cfg, stage1, root=tmp_path / root, progress=False)["losses"])
    assert losses[0] == losses[1]


def test_stage2_key_lora_fields_and_min_lr_ratio(tmp_path, monkeypatch):
    from eelib import config as C
    from eelib import stages
    raw = json.loads(json.dumps(TINY))
    key = lambda **s2: stages._stage2_key(C.from_dict(dict(raw, stage2={**raw["stage2"], **s2})))
    # full fine-tuning: LoRA fields key nothing, so FFT runs of a LoRA grid reuse plain stages
    assert key(lora_alpha=32, lora_dropout=0.05) == key()
    assert "lora_init" not in key() and key(lora_r=4)["lora_init"] == keys.LORA_INIT_RULE
    assert key(lora_r=4, lora_alpha=32) != key(lora_r=4)
    split = lambda **s2: stages._stage2_key(C.from_dict(dict(raw, allocation="split",
                                                              stage2={**raw["stage2"], **s2})))
    assert split(replay=0.01)["replay_draw"] == keys.SPLIT_REPLAY_RULE and "replay_draw" not in split()
    # min_lr_ratio is keyed only when set (older keys stay valid); min_lr stays keyed, since it
    # is the target wherever it is below the peak
    assert "min_lr_ratio" not in key()["stage2"] and key(min_lr_ratio=0.1) != key()
    assert key(min_lr_ratio=0.1, min_lr=2e-5) != key(min_lr_ratio=0.1)
    # Table 8: min LR 5e-5 printed for peaks {1e-5 … 2e-4}; kept where below the peak, else 0.1 × peak
    s2 = lambda lr, **kw: C.Stage2Config(lr=lr, min_lr=5e-5, **kw)
    got = [stages.stage2_min_lr(s2(lr, min_lr_ratio=0.1)) for lr in (1e-5, 2e-5, 5e-5, 1e-4, 2e-4)]
    assert got == pytest.approx([1e-6, 2e-6, 5e-6, 5e-5, 5e-5])
    assert stages.stage2_min_lr(s2(1e-4)) == 5e-5  # no ratio: min_lr as given
    seen = {}

    class Stop(Exception):
        pass

    def fake_train(model, mix, spec, **kw):
        seen["spec"] = spec
        raise Stop
    raw["data"]["cache_dir"] = str(tmp_path / "cache")
    cfg = C.from_dict(dict(raw, stage2={**raw["stage2"], "lr": 2e-3, "min_lr": 5e-3, "min_lr_ratio": 0.1}))
    stage1 = stages.pretrain(cfg, root=tmp_path / "out", progress=False)
    monkeypatch.setattr(stages, "train", fake_train)
    with pytest.raises(Stop):
        stages.posttrain(cfg, stage1, root=tmp_path / "out", progress=False)
    assert seen["spec"].min_lr == pytest.approx(2e-4)


def _unmixed(tmp_path, **over):
    from eelib import config as C
    raw = json.loads(json.dumps(TINY))
    raw["data"]["cache_dir"] = str(tmp_path / "cache")
    raw["stage1"]["lam"] = 0.0
    raw["data"].update(over.pop("data", {}))
    return C.from_dict({**raw, **over})


def test_unmixed_stage1_is_one_for_every_d_post(tmp_path, monkeypatch):
    """At λ = 0 stage 1 reads no D_post, so its key leaves D_post out: one C4-only θ_pre serves
    every D_post and |D_post|, and it equals what a run with another D_post trains by itself."""
    import torch
    from eelib import config as C
    from eelib import stages
    music = _unmixed(tmp_path, name="music", pipeline="music->chem")
    flan = _unmixed(tmp_path, name="flan", pipeline="flan->chem", data={"post_tokens": 16000})
    key = lambda c, s: stages.stage_dir(c, s).name  # the experiment names differ; the keys need not
    assert key(music, 1) == key(flan, 1)
    assert key(music, 2) != key(flan, 2)
    mixed = lambda c: C.from_dict({**C.to_dict(c), "stage1": {**C.to_dict(c)["stage1"], "lam": 0.5}})
    assert key(mixed(music), 1) != key(mixed(flan), 1)
    # stage 2 keys name stage 1 as before, so finished stage-2 and stage-3 directories stay valid
    for c in (music, flan, mixed(music)):
        assert stages._stage2_key(c)["stage1"] == C.digest(stages._stage1_identity(c))
    assert C.digest(stages._stage1_key(mixed(music))) == C.digest(stages._stage1_identity(mixed(music)))

    a = stages.pretrain(music, root=tmp_path / "out", progress=False)
    assert set(a["losses"]) == {"L_pre_val"}  # no D_post loss: the stage serves every D_post
    alone = stages.pretrain(flan, root=tmp_path / "alone", progress=False)  # trained by itself
    wa = torch.load(a.dir / "final" / "model.pt", weights_only=True)
    wb = torch.load(alone.dir / "final" / "model.pt", weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

    def no_training(*a, **k):
        raise AssertionError("stage 1 trained again")
    monkeypatch.setattr(stages, "train", no_training)
    b = stages.pretrain(flan, root=tmp_path / "out", progress=False)  # the other experiment adopts it
    assert b["digest"] == a["digest"] and b["reused_from"] == f"music/stage1/{a.dir.name}"
    # its stage 2 trains on flan from that θ_pre, and the stage table takes L_post from its step 0
    monkeypatch.undo()
    s2 = stages.posttrain(flan, b, root=tmp_path / "out", progress=False)
    from eelib.notebook import stage_table
    t = stage_table(b, s2).set_index("stage")
    assert t.loc[1, "L_post"] == s2["trajectory"][0]["L_post_val"] and "step-0" in t.loc[1, "note"]


def test_unmixed_stage1_finished_under_the_older_key_is_adopted(tmp_path, monkeypatch):
    """Outputs made while the λ = 0 key still named D_post: their stage 1 is adopted (hard links,
    the record restated under the new key), not trained again; stage 2 keys are unchanged."""
    import os
    from eelib import config as C
    from eelib import stagedir, stages
    music = _unmixed(tmp_path, name="old", pipeline="music->chem")
    with monkeypatch.context() as m:  # the older eelib: its key names the directory and the record
        m.setattr(keys, "_stage1_key", keys._stage1_identity)
        m.setattr(stages, "_stage1_key", keys._stage1_identity)
        old = stages.pretrain(music, root=tmp_path / "out", progress=False)
    assert old.dir.name == C.digest(stages._stage1_identity(music)) != stages.stage_dir(music, 1).name
    rec = json.loads((old.dir / "stage.json").read_text())  # older records held a D_post loss
    (old.dir / "stage.json").write_text(json.dumps(dict(rec, losses={**rec["losses"], "L_post_val": 9.0})))

    def no_training(*a, **k):
        raise AssertionError("stage 1 trained again")
    monkeypatch.setattr(stages, "train", no_training)
    for name in ("old", "new"):  # the same experiment, and another one under the same root
        cfg = C.from_dict({**C.to_dict(music), "name": name})
        new = stages.pretrain(cfg, root=tmp_path / "out", progress=False)
        assert new.dir == stages.stage_dir(cfg, 1, root=tmp_path / "out")
        assert new["key"] == json.loads(stagedir.json_dumps(stages._stage1_key(cfg)))
        assert new["digest"] == new.dir.name and set(new["losses"]) == {"L_pre_val"}
        assert json.loads((new.dir / "key.json").read_text()) == new["key"]  # not the linked older one
        assert "post" in json.loads((old.dir / "key.json").read_text())  # which stays as it was
        # "old" adopts the older directory; "new" the same-key twin that adoption made in "old"
        assert new["reused_from"] == f"old/stage1/{old.dir.name if name == 'old' else new.dir.name}"
        f = new.dir / "final" / "model.pt"
        assert os.stat(f).st_ino == os.stat(old.dir / "final" / "model.pt").st_ino
        # a second call finds it finished
        assert stages.pretrain(cfg, root=tmp_path / "out", progress=False)["digest"] == new.dir.name


# What each preset builds, at its revision (eelib/presets.py PRESET_REVISIONS). Stage keys name the
# preset and its revision, not its contents: change a preset and this fails until its revision is
# bumped (and this table updated), so no stage trained with the old contents is reused.
PRESET_CONTENTS = {("smollm2-135m", 1): "42344e12c453", ("paper-1b", 0): "1155dc4e5935",
                   ("cpu-tiny", 0): "156a6ec35bf3", ("cpu-small", 0): "4a5018e3c682",
                   ("test-micro", 0): "7cad6d82d9fd"}


def test_a_preset_whose_contents_change_gets_a_new_revision_in_the_stage_keys():
    from eelib import config as C
    from eelib import stages
    from eelib.model import llama_config
    from eelib.presets import PRESET_REVISIONS, PRESETS, preset_key
    for name in PRESETS:
        d = llama_config(name, 258).to_dict()
        d.pop("transformers_version", None)
        rev = PRESET_REVISIONS.get(name, 0)
        assert PRESET_CONTENTS.get((name, rev)) == C.digest(d), (
            f"preset {name!r} builds another model than at revision {rev}: bump PRESET_REVISIONS[{name!r}] "
            "and PRESET_CONTENTS here")
    # the revision is what the key names; unrevised presets keep the keys they always had
    cfg = C.from_dict(json.loads(json.dumps(TINY)))
    assert stages._stage1_key(cfg)["model"] == "test-micro" == preset_key("test-micro")
    assert preset_key("smollm2-135m") == "smollm2-135m@r1"


def test_a_finished_run_from_stages_keyed_otherwise_is_refused_not_kept(tmp_path, monkeypatch):
    """A rule change moves a stage's key (e.g. the split stage 2's replay draw): rerunning a
    finished run then retrained its stages under the new key and kept the old rows, silently. Now
    the run is refused before anything trains, naming the stage, and its result stays as it was;
    a run whose stages match is reused as before."""
    from eelib import config as C
    from eelib import pipeline as P
    from eelib import stages
    raw = json.loads(json.dumps(TINY))
    raw["data"]["cache_dir"] = str(tmp_path / "cache")
    cfg = C.from_dict(raw)
    rows = P.run_pipeline(cfg, "r", root=tmp_path / "out", progress=False)
    monkeypatch.setattr(stages, "train", lambda *a, **k: pytest.fail("trained again"))
    assert P.run_pipeline(cfg, "r", root=tmp_path / "out", progress=False) == rows  # reused
    done = tmp_path / "out" / cfg.name / "runs" / "r" / "result.json"
    shutil.copytree(done.parent, done.parent.with_name("twin"))  # the same config, today's stages
    stored = json.loads(done.read_text())
    for r in stored["rows"]:  # as if stage 2 had been computed under an older rule's key
        r["stage_dirs"][1] = str(tmp_path / "out" / cfg.name / "stage2" / "0123456789ab")
    done.write_text(json.dumps(stored))
    before = done.read_bytes()
    with pytest.raises(RuntimeError, match=r"keys otherwise \(stage 2: 0123456789ab -> [0-9a-f]{12}\).*never "
                                           r"replaced.*new experiment name"):
        P.run_pipeline(cfg, "r", root=tmp_path / "out", progress=False)
    assert done.read_bytes() == before
    # the batch runner lists such a run as failed with the same line, instead of "reused"
    why = P.stale_message(cfg, done.parent, tmp_path / "out")
    assert "keys otherwise (stage 2: 0123456789ab" in why
    assert "a local tokenizer or data file) was edited in place" in why  # the other cause a user can have made
    # and its rows stay out of results.jsonl and the claims, which name it (they pooled it before)
    from eelib import report as RP
    assert P.collect(cfg.name, tmp_path / "out") == rows and list(P.stale_runs(cfg.name, tmp_path / "out")) == ["r"]
    md = RP.report(cfg.name, tmp_path / "out", figures=False)["claims_md"].read_text()
    assert "## Runs left out" in md and "`r`" in md and "0123456789ab" in md and "edited in place" in md
    assert "Duplicates" not in md  # nor counted among the pooled runs (twin and r share a config)
    # a run that cannot be checked (its stored config no longer loads) is pooled as before, and named
    shutil.copytree(done.parent, done.parent.with_name("old"))
    (done.parent.with_name("old") / "config.yaml").write_text("stage1: {lamda: 0.5}\n")  # a field since renamed
    checks = P.run_checks(cfg.name, tmp_path / "out")
    assert list(checks["stale"]) == ["r"] and "stage1.lamda" in checks["unchecked"]["old"]
    assert len(P.collect(cfg.name, tmp_path / "out")) == 2 * len(rows)
    md = RP.report(cfg.name, tmp_path / "out", figures=False)["claims_md"].read_text()
    assert "## Runs pooled unchecked" in md and "`old` (ConfigError: stage1.lamda: unknown field" in md


def test_a_rule_that_moves_a_shard_key_moves_the_keys_of_the_stages_that_read_it(monkeypatch):
    """Shard-key markers (val read shuffled, C4's validation folder) used to stop at the shard:
    a stage trained on the old shard was reused. Now hub/local stage keys carry the keys of the
    shards they read; offline keys (fixed generators) are unchanged."""
    from pathlib import Path

    from eelib import config as C
    from eelib import stages
    from eelib.corpora import hub
    fx = Path(__file__).parent / "fixtures" / "hub"
    raw = json.loads(json.dumps(TINY))
    raw["data"] |= {"source": "local", "data_files": {c: str(fx / c) for c in ("c4", "musicpile", "chempile")}}
    local = C.from_dict(raw)
    offline = C.from_dict(json.loads(json.dumps(TINY)))
    keys = lambda cfg: [stages.stage_dir(cfg, 1).name, stages.stage_dir(cfg, 2).name,
                        stages.stage_dir(cfg, 3, cfg.stage3.lrs[0]).name]
    before, off = keys(local), keys(offline)
    monkeypatch.setattr(hub, "VAL_SEED", 7)  # a rule for how held-out sets are read
    after = keys(local)
    assert after[0] == before[0]  # stage 1 reads no held-out set
    assert after[1] != before[1] and after[2] != before[2]  # stage 2 stops on D_post's val; 3 measures
    assert keys(offline) == off


def test_the_checkpoint_interval_changes_no_number_and_keys_no_stage(tmp_path):
    """stage1.ckpt_interval only says how often stage 1 writes a resume point: two intervals train
    bit-identical weights, so they share one stage directory (decisions.md)."""
    import torch

    from eelib import config as C
    from eelib import stages
    raw = json.loads(json.dumps(TINY))
    raw["data"]["cache_dir"] = str(tmp_path / "cache")
    raw["stage1"]["lam"] = 0.5
    weights = []
    for i, interval in enumerate((2, 1000)):
        cfg = C.from_dict(dict(raw, stage1=dict(raw["stage1"], ckpt_interval=interval)))
        assert stages.stage_dir(cfg, 1, root=tmp_path / "shared") == \
            stages.stage_dir(C.from_dict(raw), 1, root=tmp_path / "shared")
        res = stages.pretrain(cfg, root=tmp_path / f"out{i}", progress=False)
        weights.append(torch.load(res.dir / "final" / "model.pt", weights_only=True))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_a_stage_reused_by_a_run_that_would_compute_it_otherwise_is_named(tmp_path, capsys):
    """ce_chunk keys no stage: a run with another chunk reuses the finished stage 1 and says on
    stderr how that stage was computed; a reuse computed the same way says nothing."""
    from eelib import config as C
    from eelib import stages
    raw = json.loads(json.dumps(TINY))
    raw["data"]["cache_dir"] = str(tmp_path / "cache")
    first = stages.pretrain(C.from_dict(raw), root=tmp_path / "out", progress=False)
    capsys.readouterr()
    again = stages.pretrain(C.from_dict(raw), root=tmp_path / "out", progress=False)
    assert again.dir == first.dir and "reused" not in capsys.readouterr().err
    chunked = stages.pretrain(C.from_dict(dict(raw, ce_chunk=16)), root=tmp_path / "out", progress=False)
    assert chunked.dir == first.dir and chunked.record == first.record  # reused, not retrained
    err = capsys.readouterr().err
    assert "stage 1 is reused" in err and "ce_chunk 0" in err and "this run would use ce_chunk 16" in err


def test_computed_otherwise_compares_the_stream_under_autocast_only():
    from eelib.stagedir import computed_otherwise
    gpu = {"precision": "bf16 autocast", "compile": True, "ce_chunk": 0, "residual_stream": "fp32"}
    cpu = dict(gpu, precision="fp32", compile=False)
    assert computed_otherwise({"computed": [gpu]}, gpu) == {}
    assert computed_otherwise({"computed": [gpu]}, dict(gpu, residual_stream="bf16")) == {"residual_stream": ["fp32"]}
    # a CPU stage: no autocast, so the stream changed nothing; precision and compile did
    assert computed_otherwise({"computed": [cpu]}, dict(gpu, residual_stream="bf16")) == \
        {"precision": ["fp32"], "compile": [False]}
    assert computed_otherwise({"computed": [cpu]}, dict(cpu, residual_stream="bf16")) == {}
    # a stage resumed on another machine has two segments; a record from before a field names none
    old = {k: v for k, v in gpu.items() if k != "residual_stream"}
    assert computed_otherwise({"computed": [cpu, old]}, gpu) == {"precision": ["fp32"], "compile": [False]}
    assert computed_otherwise({"computed": []}, gpu) == {}


def test_a_stage_directory_admits_one_process_at_a_time(tmp_path):
    """Parallel runs that share a stage (a grid's stage 1) must not train it side by side: each
    would remove the other's checkpoint temp dirs as stale (checkpoint._write_dir) and both would
    swap final/ in. The second waits on the stage's lock, then finds the stage finished."""
    import threading
    from eelib import stagedir
    sdir = tmp_path / "out" / "exp" / "stage1" / "abc"
    entered = threading.Event()

    def second():
        with stagedir.locked(sdir):
            entered.set()
    with stagedir.locked(sdir):
        t = threading.Thread(target=second)
        t.start()
        assert not entered.wait(1.0), "a second process entered a locked stage directory"
    t.join(10)
    assert entered.is_set()


def test_adoption_links_the_twin_but_keeps_its_own_lock_and_skips_a_misnamed_one(tmp_path):
    """adopt_twin (unit level): a twin whose record names another digest (a directory moved by hand)
    is not reused; the one adopted is hard-linked, except its dot files: linking its .lock over ours
    would put this directory's lock on another inode than the one held, letting a second process in."""
    from eelib import stagedir
    root = tmp_path / "out"

    def finished(exp: str, digest: str):
        d = root / exp / "stage1" / "abc"
        (d / "final").mkdir(parents=True)
        (d / "final" / "model.pt").write_bytes(b"weights of " + exp.encode())
        (d / ".lock").write_text("")
        (d / "stage.json").write_text(json.dumps({"digest": digest, "key": {"k": 1}, "losses": {}}))
        return d
    finished("a", "another-digest")
    twin = finished("b", "abc")
    sdir = root / "c" / "stage1" / "abc"
    with stagedir.locked(sdir):
        assert json.loads((sdir / "stage.json").read_text())["reused_from"] == "b/stage1/abc"
        assert (sdir / "final" / "model.pt").stat().st_ino == (twin / "final" / "model.pt").stat().st_ino
        assert (sdir / ".lock").stat().st_ino != (twin / ".lock").stat().st_ino

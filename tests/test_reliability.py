"""Issue 7, guard rails and determinism: NaN/inf stops the run, free disk is checked before any
checkpoint byte is written, a run directory made by another config is never reused, writes are
atomic, and the same params + seed give identical losses on CPU."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, TINY, child_env, compared, write_params
from eelib import checkpoint, config as C, io, pipeline, rundir, stages
from eelib import train as T
from eelib.mixture import Mixture, Source


def _cfg(tmp_path: Path, **overrides) -> C.ExperimentConfig:
    raw = json.loads(json.dumps(TINY))
    raw["data"]["cache_dir"] = str(tmp_path / "cache")
    for k, v in overrides.items():
        C.set_dotted(raw, k, v)
    return C.from_dict(raw)


# ---------------------------------------------------------------------------------------------
# Determinism

def test_same_params_and_seed_give_identical_rows(baseline, offline_run):
    """Two fresh runs (different outputs dirs, different token caches, one with the network
    blocked) give bit-identical losses and trajectories on CPU."""
    assert offline_run["rows"] is not None, offline_run["proc"].stderr[-3000:]
    assert compared(offline_run["rows"]) == compared(baseline["rows"])
    assert baseline["dir"] != offline_run["dir"]  # really two fresh outputs dirs and caches
    assert (baseline["dir"] / "cache").is_dir() and (offline_run["dir"] / "cache").is_dir()


# ---------------------------------------------------------------------------------------------
# NaN / inf

def test_huge_lr_stops_with_step_and_hint(tmp_path):
    cfg = _cfg(tmp_path, **{"stage1.lr": 1e6, "stage1.min_lr": 1e5, "stage1.warmup_steps": 0})
    with pytest.raises(T.NonFiniteLoss, match=r"stage1 .*: .* is nan at step \d+ \(lr .*\); lower the learning rate"):
        stages.pretrain(cfg, root=tmp_path / "out", progress=False)
    sdir = stages.stage_dir(cfg, 1, root=tmp_path / "out")
    assert not (sdir / "stage.json").exists() and not (sdir / "final").exists()


def _micro_loop(tmp_path, evaluator=None, micro_batch=0):
    from eelib.model import build_model
    model = build_model("test-micro", 258, seed=0)
    windows = np.random.default_rng(0).integers(0, 256, size=(40, 16))
    mix = Mixture([Source("x", windows, 1.0, once=True, quota=40)], seed=0)
    spec = T.LoopSpec(lr=1e-3, min_lr=1e-4, warmup_steps=0, weight_decay=0.0, batch_size=4,
                      micro_batch=micro_batch, max_steps=10, eval_interval=2 if evaluator else 0)

    def run():
        return T.train(model, mix, spec, stage_dir=tmp_path / "stage3" / "k", config_digest="d",
                       device=torch.device("cpu"), seed=0, evaluator=evaluator, progress=False)
    run.model = model
    return run


@pytest.mark.parametrize("micro", [0, 2])  # one micro-batch a step, and two (the NaN in the 2nd)
def test_nan_training_loss_stops_the_run_before_the_update(tmp_path, monkeypatch, micro):
    real = T.lm_loss
    calls = {"n": 0}
    before = {}

    def flaky(model, tokens):
        calls["n"] += 1
        loss = real(model, tokens)
        if calls["n"] == (4 if micro == 0 else 8):  # step 3's (last) micro-batch
            before.update({k: v.detach().clone() for k, v in model.state_dict().items()})
            return loss * float("nan")
        return loss
    monkeypatch.setattr(T, "lm_loss", flaky)
    run = _micro_loop(tmp_path, micro_batch=micro)
    with pytest.raises(T.NonFiniteLoss, match=r"loss is nan at step 3 .*lower the learning rate"):
        run()
    # The check runs once per step, after backward; the update that would write NaN never runs.
    after = run.model.state_dict()
    assert before and all(torch.equal(before[k], after[k]) for k in before)


def test_inf_eval_loss_stops_the_run(tmp_path):
    evals = iter([{"L_x_val": 3.0}, {"L_x_val": float("inf")}])
    with pytest.raises(T.NonFiniteLoss, match=r"evaluation at step 2 gave \{'L_x_val': inf\}"):
        _micro_loop(tmp_path, evaluator=lambda m: next(evals))()


def test_cli_nan_run_exits_nonzero_with_the_step(tmp_path, cli):
    cfg = json.loads(json.dumps(TINY))
    cfg["stage1"].update(lr=1e6, min_lr=1e5, warmup_steps=0)
    write_params(tmp_path / "nan.yaml", cfg)
    p = cli(tmp_path, "run", "nan.yaml", "--out", "outputs", "--no-progress")
    assert p.returncode == 1
    (line,) = p.stderr.strip().splitlines()  # one line, no traceback (EELIB_DEBUG=1 gives it)
    assert line.startswith("eelib: error: stage1 ") and "is nan at step" in line and "lower the learning rate" in line
    assert not list((tmp_path / "outputs").glob("tiny/stage1/*/stage.json"))


# ---------------------------------------------------------------------------------------------
# Free disk

Usage = namedtuple("Usage", "total used free")


def _warm_token_cache(cfg):
    from eelib.data import corpus_windows
    d = cfg.data
    for corpus, split, n in [("c4", "train", d.general_tokens), (cfg.post_corpus, "train", d.post_tokens),
                             ("c4", "val", d.val_tokens), (cfg.post_corpus, "val", d.val_tokens),
                             (cfg.ft_corpus, "val", d.val_tokens), (cfg.ft_corpus, "train", cfg.stage3.tokens)]:
        corpus_windows(corpus, split, n, d)


def test_low_disk_refuses_a_token_shard_before_writing_it(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(10**9, 10**9 - 1000, 1000))
    cfg = _cfg(tmp_path)
    with pytest.raises(io.InsufficientDisk, match="not enough free disk for the tokenized"):
        stages.pretrain(cfg, root=tmp_path / "out", progress=False)
    tokens = Path(cfg.data.cache_dir) / "tokens"
    assert not tokens.exists() or not list(tokens.rglob("*.npy"))


def test_low_disk_refuses_a_checkpoint_before_writing_it(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path)
    _warm_token_cache(cfg)  # the shards exist; now the disk "fills up"
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(io.InsufficientDisk, match="not enough free disk for a checkpoint .* free space"):
        stages.pretrain(cfg, root=tmp_path / "out", progress=False)
    ck = stages.stage_dir(cfg, 1, root=tmp_path / "out") / "ckpt"
    assert not ck.exists() or list(ck.iterdir()) == []  # not one byte of the checkpoint


def test_low_disk_refuses_final_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(10**9, 10**9, 0))
    dest = tmp_path / "stage1" / "k" / "final"
    with pytest.raises(io.InsufficientDisk, match="model weights"):
        checkpoint.save_model(dest, {"w": torch.ones(1000)}, {"stage": 1})
    assert not dest.exists() and not list(dest.parent.glob(".final.*"))


def test_enough_disk_passes(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(10**12, 0, 10**12))
    io.check_free_disk(tmp_path / "x", 10**9, "a checkpoint")


# ---------------------------------------------------------------------------------------------
# Run directories are never silently reused by another config

def test_run_dir_of_another_config_is_refused(tmp_path):
    root = tmp_path / "out"
    a, b = _cfg(tmp_path), _cfg(tmp_path, **{"stage1.lam": 0.25})
    rdir = pipeline.claim_run_dir(a, "run", root)
    (rdir / "result.json").write_text('{"rows": [], "seconds": 1.0}')  # a finished run
    before = {p.name: p.read_bytes() for p in rdir.iterdir()}
    assert pipeline.claim_run_dir(a, "run", root) == rdir  # the same config re-enters it
    with pytest.raises(RuntimeError, match=r"results of a different config \(stage1.lam: 0.5 -> 0.25\)"
                                           r".* never overwritten"):
        pipeline.claim_run_dir(b, "run", root)
    assert {p.name: p.read_bytes() for p in rdir.iterdir()} == before


def test_unfinished_run_dir_is_taken_over_by_a_corrected_config(tmp_path, capsys):
    """A run that failed before its result (e.g. a budget its corpus cannot give) holds no
    results, so the corrected rerun may use its directory; it says so, naming the change."""
    root = tmp_path / "out"
    a, b = _cfg(tmp_path), _cfg(tmp_path, **{"data.general_tokens": 30000})
    rdir = pipeline.claim_run_dir(a, "run", root)
    assert pipeline.claim_run_dir(b, "run", root) == rdir
    assert "taking over an unfinished run directory" in capsys.readouterr().err
    assert C.load(rdir / "config.yaml").data.general_tokens == 30000
    assert (rdir / "config.digest").read_text().strip() == C.digest(C.to_dict(b))


def _holder(tmp_path: Path, cfg: C.ExperimentConfig, run: str, root: Path) -> subprocess.Popen:
    """Another process that claims `run` of `cfg` and holds it until its stdin closes."""
    path = tmp_path / f"holder-{run}.yaml"
    path.write_text(C.dump(cfg))
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys; from pathlib import Path; from eelib import pipeline, config as C\n"
        f"pipeline.claim_run_dir(C.load({str(path)!r}), {run!r}, Path({str(root)!r}))\n"
        "print('held', flush=True); sys.stdin.read()")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env())
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_run_dir_in_use_by_another_process_is_not_taken_over(tmp_path):
    """A review started a batch, then a second batch of another config under the same name: the
    second took the first's unfinished run directories over and rewrote config.yaml, which the
    first batch's next notebook read, so it reported the other config's numbers as its own. A
    process that uses runs of an experiment (a batch all its runs, a run while it trains) holds
    the experiment; another config may take an unfinished directory over only once none does."""
    root = tmp_path / "out"
    a, b = _cfg(tmp_path), _cfg(tmp_path, **{"stage3.tokens": 6400})
    rdir = pipeline.claim_run_dir(a, "run", root)
    pipeline.release_run(rdir)
    assert (rdir.parent.parent / ".in-use").stat().st_mode & 0o777 == io.FILE_MODE  # shared outputs
    for held_run in ("run", "other"):  # the run itself, or another run of the experiment
        holder = _holder(tmp_path, a, held_run, root)
        try:
            before = (rdir / "config.yaml").read_text()
            with pytest.raises(RuntimeError, match=r"is unfinished, made by another config \(stage3.tokens: "
                                                   r"8000 -> 6400\), and another process \(a batch or run\) "
                                                   r"is using experiment tiny; wait for it"):
                pipeline.claim_run_dir(b, "run", root)
            assert (rdir / "config.yaml").read_text() == before
            assert pipeline.claim_run_dir(a, "run", root) == rdir  # the same config shares it
            pipeline.release_run(rdir)
        finally:
            holder.communicate("")  # the holder ends: its lock goes with it, however it ends
    assert pipeline.claim_run_dir(b, "run", root) == rdir
    assert C.load(rdir / "config.yaml").stage3.tokens == 6400
    pipeline.release_run(rdir)
    assert rdir.parent.parent.resolve() not in rundir._USERS


def _local_cfg(tmp_path: Path, data: Path) -> C.ExperimentConfig:
    return _cfg(tmp_path, **{"data.source": "local", "pipeline": "legal->medical",
                             "data.data_files": {n: str(data / f"{n}.jsonl") for n in ("c4", "legal", "medical")}})


def _local_files(data: Path, word: str) -> None:
    data.mkdir()
    for name in ("c4", "legal", "medical"):
        (data / f"{name}.jsonl").write_text("".join(json.dumps({"text": f"{name} {word} {i} " * 20}) + "\n"
                                                    for i in range(50)))


def test_claims_that_fail_hold_nothing_and_releases_match_their_claims(tmp_path, monkeypatch):
    """A third review found: a run held by another process was taken over when only its local
    files differed (the configs compare without paths); a claim that failed after taking the
    hold kept it; release_run of a relative path after a chdir, or of a run never claimed, missed
    or dropped the hold; a finished run left without config.digest was re-stamped by any config."""
    root = tmp_path / "out"
    a_data, b_data = tmp_path / "a", tmp_path / "b"
    _local_files(a_data, "alpha")
    _local_files(b_data, "beta")
    holder = _holder(tmp_path, _local_cfg(tmp_path, a_data), "run", root)
    try:
        with pytest.raises(RuntimeError, match=r"is unfinished, made from other data \(the data files of c4 "
                                               r"\(changed\), legal \(changed\), medical \(changed\)\), and another process"):
            rundir.claim_run_dir(_local_cfg(tmp_path, b_data), "run", root)
    finally:
        holder.communicate("")
    edir = (root / "tiny").resolve()

    real = rundir.atomic_write_json
    def full_disk(path, obj):
        if Path(path).name == "swept.json":
            raise OSError(28, "No space left on device")
        return real(path, obj)
    monkeypatch.setattr(rundir, "atomic_write_json", full_disk)
    with pytest.raises(OSError):
        rundir.claim_run_dir(_cfg(tmp_path), "other", root, swept=["stage1.lam"])
    assert edir not in rundir._USERS
    monkeypatch.setattr(rundir, "atomic_write_json", real)

    monkeypatch.chdir(tmp_path)
    rel = rundir.claim_run_dir(_cfg(tmp_path), "r1", Path("out"))
    kept = rundir.claim_run_dir(_cfg(tmp_path), "r2", Path("out"))
    assert rel.is_absolute()
    monkeypatch.chdir(root)
    rundir.release_run(root / "tiny" / "runs" / "never-claimed")  # not ours: no effect
    rundir.release_run(rel)
    assert edir in rundir._USERS
    rundir.release_run(kept)
    assert edir not in rundir._USERS

    done = rundir.claim_run_dir(_cfg(tmp_path), "done", root)
    rundir.release_run(done)
    (done / "result.json").write_text('{"rows": [], "seconds": 1.0}')
    (done / "config.digest").unlink()  # as a kill between an older eelib's unlink and rewrite left it
    with pytest.raises(RuntimeError, match="holds the results of a different config"):
        rundir.claim_run_dir(_cfg(tmp_path, **{"stage1.lam": 0.25}), "done", root)
    assert rundir.claim_run_dir(_cfg(tmp_path), "done", root) == done  # its own config re-enters it
    assert (done / "config.digest").read_text().strip() == C.digest(C.to_dict(_cfg(tmp_path)))


def test_two_configs_claiming_new_run_dirs_at_once_never_share_one(tmp_path):
    """The review also raced two processes of different configs over 40 new directories: both
    claimed some of them, leaving config.yaml of one config and config.digest of the other.
    Claims are serialised, so each directory is one config's, and the other is refused."""
    root = tmp_path / "out"
    script = ("import json, sys; from pathlib import Path; from eelib import pipeline, config as C\n"
              "cfg, won = C.load(sys.argv[1]), []\n"
              "for i in range(20):\n"
              "    try:\n"
              f"        pipeline.claim_run_dir(cfg, f'r{{i}}', Path({str(root)!r})); won.append(i)\n"
              "    except RuntimeError:\n"
              "        pass\n"
              "print(json.dumps(won), flush=True); sys.stdin.read()")
    procs = []
    for name, tokens in (("a", 8000), ("b", 6400)):
        (tmp_path / f"{name}.yaml").write_text(C.dump(_cfg(tmp_path, **{"stage3.tokens": tokens})))
        procs.append(subprocess.Popen([sys.executable, "-c", script, str(tmp_path / f"{name}.yaml")],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env()))
    won = [set(json.loads(p.stdout.readline())) for p in procs]  # both still hold what they won
    for p in procs:
        p.communicate("")
    assert not won[0] & won[1] and won[0] | won[1] == set(range(20)), won
    for i in range(20):
        rdir = root / "tiny" / "runs" / f"r{i}"
        cfg = C.load(rdir / "config.yaml")
        assert (rdir / "config.digest").read_text().strip() == C.digest(C.to_dict(cfg))
        assert cfg.stage3.tokens == (8000 if i in won[0] else 6400)


def test_a_claim_waits_for_the_experiment_claim_lock(tmp_path):
    """Claims are serialised by outputs/<experiment>/.claim: the race above can pass by luck when
    the two processes do not overlap, so hold the lock here and check a claim waits for it."""
    import fcntl
    import threading
    root = tmp_path / "out"
    edir = root / "tiny"
    edir.mkdir(parents=True)
    done = threading.Event()

    def claim():
        rundir.claim_run_dir(_cfg(tmp_path), "run", root)
        done.set()
    with open(edir / ".claim", "w") as held:  # another process is claiming
        fcntl.flock(held, fcntl.LOCK_EX)
        t = threading.Thread(target=claim)
        t.start()
        assert not done.wait(1.0), "claimed while another process held the experiment's claim lock"
        assert not (edir / "runs" / "run" / "config.yaml").exists()
    t.join(30)
    assert done.is_set()
    rundir.release_run(edir / "runs" / "run")


def test_a_claim_cut_between_its_writes_never_pairs_the_new_stamp_with_the_old_config(tmp_path, monkeypatch):
    """config.yaml is written before config.digest: a claim killed between the two leaves a stamp
    that differs, so the next claim writes config.yaml again. In the other order the new config's
    stamp would sit on the old config.yaml, which the run's notebooks read: the old config's
    numbers filed under the new one."""
    root = tmp_path / "out"
    a, b = _cfg(tmp_path), _cfg(tmp_path, **{"stage3.tokens": 6400})
    rdir = rundir.claim_run_dir(a, "run", root)
    rundir.release_run(rdir)
    real, written = rundir.atomic_write_text, []

    def killed_after_one_write(path, text):
        if written:
            raise KeyboardInterrupt("killed between the two writes")
        written.append(Path(path).name)
        real(path, text)
    monkeypatch.setattr(rundir, "atomic_write_text", killed_after_one_write)
    with pytest.raises(KeyboardInterrupt):
        rundir.claim_run_dir(b, "run", root)
    monkeypatch.setattr(rundir, "atomic_write_text", real)
    assert rundir.claim_run_dir(b, "run", root) == rdir
    rundir.release_run(rdir)
    assert C.load(rdir / "config.yaml").stage3.tokens == 6400
    assert (rdir / "config.digest").read_text().strip() == C.digest(C.to_dict(b))


def test_a_run_that_fails_releases_its_experiment(tmp_path, monkeypatch):
    """The review interrupted run_pipeline in a notebook kernel: the kernel kept the experiment
    held, so a corrected config was refused until the kernel restarted."""
    root = tmp_path / "out"

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(stages, "pretrain", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_pipeline(_cfg(tmp_path), "run", root, progress=False)
    assert (root / "tiny").resolve() not in rundir._USERS


def test_under_torchrun_only_rank_0_claims_and_every_rank_gets_its_refusal(tmp_path, monkeypatch):
    """The review ran `torchrun --nproc_per_node 2 eelib run-one` against a held directory:
    rank 0 refused, rank 1 took it over and rewrote config.yaml."""
    from eelib import distributed
    root = tmp_path / "out"

    class Rank:
        world, told = 2, []

        def __init__(self, rank, answer=None):
            self.is_main, self.answer = rank == 0, answer

        def broadcast(self, obj):
            Rank.told.append(obj)
            return obj if self.is_main else self.answer
    monkeypatch.setattr(distributed, "current", lambda: Rank(1, answer="refused on rank 0"))
    with pytest.raises(RuntimeError, match="^refused on rank 0$"):
        pipeline.claim_run_dir(_cfg(tmp_path), "run", root)
    assert not (root / "tiny" / "runs").exists()  # rank 1 wrote nothing
    monkeypatch.setattr(distributed, "current", lambda: Rank(1))
    assert pipeline.claim_run_dir(_cfg(tmp_path), "run", root) == root / "tiny" / "runs" / "run"
    assert not (root / "tiny" / "runs").exists() and (root / "tiny").resolve() not in rundir._USERS
    monkeypatch.setattr(distributed, "current", lambda: Rank(0))
    rdir = pipeline.claim_run_dir(_cfg(tmp_path), "run", root)
    assert (rdir / "config.yaml").exists() and Rank.told[-1] is None
    pipeline.release_run(rdir)
    (rdir / "result.json").write_text('{"rows": [], "seconds": 1.0}')
    with pytest.raises(RuntimeError, match="results of a different config"):
        pipeline.claim_run_dir(_cfg(tmp_path, **{"stage1.lam": 0.25}), "run", root)
    assert "results of a different config" in Rank.told[-1]  # the other ranks are told, not left waiting


def test_finished_run_on_changed_local_files_is_refused(tmp_path):
    """source: local stages are keyed by the files' identity, so edited data trains new stages;
    the finished run's results (and results.jsonl) must not be replaced by them silently."""
    root = tmp_path / "out"
    data = tmp_path / "data"
    data.mkdir()
    for name in ("c4", "legal", "medical"):
        (data / f"{name}.jsonl").write_text("".join(json.dumps({"text": f"{name} {i} " * 20}) + "\n"
                                                    for i in range(50)))
    cfg = _cfg(tmp_path, **{"data.source": "local", "pipeline": "legal->medical",
                            "data.data_files": {n: str(data / f"{n}.jsonl") for n in ("c4", "legal", "medical")}})
    rdir = pipeline.claim_run_dir(cfg, "run", root)
    assert (rdir / "data.digest").exists()
    (rdir / "result.json").write_text('{"rows": [], "seconds": 1.0}')
    assert pipeline.claim_run_dir(cfg, "run", root) == rdir  # unchanged files: re-entered
    moved = tmp_path / "moved"                                # the same files elsewhere: re-entered too
    shutil.copytree(data, moved)
    there = _cfg(tmp_path, **{"data.source": "local", "pipeline": "legal->medical",
                              "data.data_files": {n: str(moved / f"{n}.jsonl") for n in ("c4", "legal", "medical")}})
    assert pipeline.claim_run_dir(there, "run", root) == rdir
    assert str(moved) in (rdir / "config.yaml").read_text()   # its stored config now finds them
    with open(data / "legal.jsonl", "a") as f:
        f.write(json.dumps({"text": "one more record"}) + "\n")
    # The refusal names what changed (a review found it listed every corpus, whichever changed).
    with pytest.raises(RuntimeError, match=r"the data files of legal \(changed\) changed since this run "
                                           r"finished; its results are never overwritten"):
        pipeline.claim_run_dir(cfg, "run", root)
    extra = _cfg(tmp_path, **{"data.source": "local", "pipeline": "legal->medical",
                              "data.data_files": {n: str(data / f"{n}.jsonl") for n in ("c4", "legal", "medical")}
                              | {"spare": str(data / "c4.jsonl")}})
    with pytest.raises(RuntimeError, match=r"the data files of legal \(changed\), spare \(added\) changed"):
        pipeline.claim_run_dir(extra, "run", root)
    (rdir / "data.json").unlink()  # a run made before data.json: every corpus is named
    with pytest.raises(RuntimeError, match=r"the data files of c4, legal, medical changed since"):
        pipeline.claim_run_dir(cfg, "run", root)


def test_stage_dir_holding_another_stage_is_refused(tmp_path):
    root = tmp_path / "out"
    cfg = _cfg(tmp_path)
    sdir = stages.stage_dir(cfg, 1, root=root)
    sdir.mkdir(parents=True)
    foreign = {"stage": 1, "key": {"not": "this config"}, "losses": {}}
    (sdir / "stage.json").write_text(json.dumps(foreign))
    with pytest.raises(RuntimeError, match="different config; it is never overwritten"):
        stages.pretrain(cfg, root=root, progress=False)
    assert json.loads((sdir / "stage.json").read_text()) == foreign


def test_cli_refuses_to_reuse_a_run_made_by_another_config(tmp_path, baseline, cli):
    shutil.copytree(baseline["dir"] / "outputs", tmp_path / "outputs")
    before = (tmp_path / "outputs" / "tiny" / "results.jsonl").read_bytes()
    cfg = json.loads(json.dumps(TINY))
    cfg["stage1"]["lam"] = 0.25  # same experiment name and run name, different config
    write_params(tmp_path / "tiny.yaml", cfg)
    p = cli(tmp_path, "run", "tiny.yaml", "--out", "outputs", "--no-progress")
    assert p.returncode == 1
    (line,) = p.stderr.strip().splitlines()
    assert line.startswith("eelib: error: ") and "different config" in line
    assert (tmp_path / "outputs" / "tiny" / "results.jsonl").read_bytes() == before
    assert len(list((tmp_path / "outputs" / "tiny" / "stage1").iterdir())) == 1  # no stage-1 run started


# ---------------------------------------------------------------------------------------------
# Atomic writes

KILL_MID_WRITE = """
import os, signal, sys
from eelib import io
path = sys.argv[1]
io.atomic_write_json(path, {"version": 1})
with io.atomic_path(path) as tmp:
    with open(tmp, "w") as f:
        f.write('{"version": 2, "half')
        f.flush()
        os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_kill_mid_write_leaves_the_old_file_whole(tmp_path):
    target = tmp_path / "summary.json"
    p = subprocess.run([sys.executable, "-c", KILL_MID_WRITE, str(target)], env=child_env(),
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == -9, p.stderr
    assert json.loads(target.read_text()) == {"version": 1}


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "stage.json"
    io.atomic_write_json(target, {"ok": True})
    with pytest.raises(TypeError):
        io.atomic_write_json(target, {"bad": object()})
    assert json.loads(target.read_text()) == {"ok": True}
    assert [p.name for p in tmp_path.iterdir()] == ["stage.json"]
    # the same when the write itself fails after its temp file exists (json.dumps above fails first)
    with pytest.raises(OSError):
        with io.atomic_path(target) as tmp:
            tmp.write_text('{"half')
            raise OSError(28, "No space left on device")
    assert json.loads(target.read_text()) == {"ok": True}
    assert [p.name for p in tmp_path.iterdir()] == ["stage.json"]


def test_temp_files_of_killed_writers_are_removed_by_the_next_write(tmp_path):
    """kill -9 between a temp file's creation and its rename leaves `.<name>.<random>.tmp`
    (a review found such files next to figures and results after clean reruns). The next
    write of the same file removes those older than STALE_TEMP_S; a younger one may be
    another process's write in progress and stays, as do other files' temps."""
    target = tmp_path / "results.jsonl"
    stale, fresh, other = (tmp_path / n for n in (".results.jsonl.ab12cd.tmp", ".results.jsonl.ef34gh.tmp",
                                                  ".summary.md.ij56kl.tmp"))
    for f in (stale, fresh, other):
        f.write_text("half a file")
    old = time.time() - io.STALE_TEMP_S - 5
    for f in (stale, other):
        os.utime(f, (old, old))
    io.atomic_write_text(target, "rows\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, fresh.name, other.name])


def test_atomic_writes_fsync_the_bytes_then_the_directory(tmp_path, monkeypatch):
    """kill -9 keeps the page cache, a power cut does not: a file renamed in before its bytes were
    fsynced can come back empty (a stage.json that no longer parses, a result.json lost), and a
    rename whose directory was not fsynced can come back undone. No kill test sees either, so spy."""
    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        return real(fd)
    monkeypatch.setattr(os, "fsync", spy)
    io.atomic_write_text(tmp_path / "stage.json", "{}")
    assert synced[0].parent == tmp_path and synced[0].name.startswith(".stage.json.")  # the temp file
    assert synced[1:] == [tmp_path]                                                       # then its rename
    synced.clear()
    ck = checkpoint.save_checkpoint(tmp_path / "s" / "stage1" / "k", 10, {"w": torch.ones(2)},
                                    {"config_digest": "d"})
    assert "state.pt" in [p.name for p in synced]  # the payload, before its manifest records it
    assert synced[-1] == ck.parent                  # and the rename of the checkpoint dir


def test_atomic_files_get_normal_permissions(tmp_path):
    io.atomic_write_text(tmp_path / "a.txt", "x")
    checkpoint.save_model(tmp_path / "s" / "k" / "final", {"w": torch.ones(1)}, {})
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == io.FILE_MODE
    assert (tmp_path / "s" / "k" / "final").stat().st_mode & 0o777 == io.DIR_MODE


def test_run_of_an_older_eelib_or_with_moved_files_is_re_entered(tmp_path):
    """A finished run whose stored config.yaml lacks fields added since (they take their defaults)
    is the same config, not a different one: before, one new field refused every finished run and
    so every batch over an existing outputs root."""
    import yaml
    root = tmp_path / "out"
    cfg = _cfg(tmp_path)
    rdir = pipeline.claim_run_dir(cfg, "run", root)
    (rdir / "result.json").write_text('{"rows": [], "seconds": 1.0}')
    stored = yaml.safe_load((rdir / "config.yaml").read_text())
    del stored["stage2"]["min_lr_ratio"]           # written before the field existed
    (rdir / "config.yaml").write_text(yaml.safe_dump(stored))
    (rdir / "config.digest").write_text(C.digest(stored) + "\n")
    result = (rdir / "result.json").read_bytes()
    assert pipeline.claim_run_dir(cfg, "run", root) == rdir
    assert (rdir / "config.digest").read_text().strip() == C.digest(C.to_dict(cfg))
    assert (rdir / "result.json").read_bytes() == result
    # a real difference is still refused, named once, without the defaulted field
    with pytest.raises(RuntimeError, match=r"\(stage1.lam: 0.5 -> 0.25\); they are never overwritten"):
        pipeline.claim_run_dir(_cfg(tmp_path, **{"stage1.lam": 0.25}), "run", root)

"""Issue 7, resume: kill -9 a run anywhere, rerun the same command, get the uninterrupted results.

The kills are real SIGKILLs of an `eelib run` subprocess: either from inside, at a named point
(EELIB_FAULT, see eelib.io.fault_point), or from this process when a checkpoint appears on disk.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from conftest import (child_env, compared, eelib_cmd, max_abs_diff, read_rows, run_tiny,
                      write_params)
from eelib import checkpoint

TOL = 1e-6  # issue 7 asks for 1e-6 on CPU; in practice the rows are bit-identical


def _stage_dir(cwd: Path, stage: int, which: int = 0) -> Path:
    dirs = sorted((cwd / "outputs" / "tiny" / f"stage{stage}").glob("*"))
    assert dirs, f"no stage{stage} directory yet"
    # stage 3 has one directory per LR; the one being written has no stage.json
    if stage == 3:
        dirs = [d for d in dirs if not (d / "stage.json").exists()] or dirs
    return dirs[which]


def _steps(d: Path) -> list[str]:
    return sorted(p.name for p in (d / "ckpt").glob("step-*")) if (d / "ckpt").exists() else []


def _assert_killed(p: subprocess.CompletedProcess, where: str, resumed: str | None = None) -> None:
    """The run died by SIGKILL at `where`; if `resumed`, it had first resumed as that line says."""
    assert p.returncode == -signal.SIGKILL, f"{where}: expected SIGKILL, got rc={p.returncode}\n{p.stderr[-2000:]}"
    if resumed:
        assert resumed in p.stderr, f"{where}: expected {resumed!r} in stderr:\n{p.stderr[-2000:]}"


def _assert_same(rows: list[dict], baseline: list[dict]) -> float:
    assert [r["stage3_lr"] for r in rows] == [r["stage3_lr"] for r in baseline]
    diff = max_abs_diff(compared(rows), compared(baseline))
    assert diff <= TOL, f"resumed rows differ from the uninterrupted run by {diff}"
    return diff


@pytest.mark.slow
def test_kill_at_every_kind_of_point_then_resume(tmp_path, baseline):
    """Eight kills in one outputs dir (inside each stage, inside checkpoint and final-weight
    writes), each followed by the same command; the last rerun must match the baseline."""
    cwd = tmp_path
    write_params(cwd / "tiny.yaml")

    # 1. stage 1, inside the first checkpoint write: state.pt is in a hidden temp dir, no manifest.
    p = run_tiny(cwd, "stage1:ckpt:50")
    _assert_killed(p, "stage1:ckpt:50")
    assert "resuming" not in p.stderr
    s1 = _stage_dir(cwd, 1)
    assert _steps(s1) == []
    leftovers = list((s1 / "ckpt").glob(".step-0000050.*"))
    assert leftovers and (leftovers[0] / "state.pt").exists() and not (leftovers[0] / "manifest.json").exists()

    # 2. stage 1, between checkpoints: the rerun started from scratch, wrote step 50 (cleaning
    #    the half-written temp dir) and is killed at step 70.
    p = run_tiny(cwd, "stage1:step:70")
    _assert_killed(p, "stage1:step:70")
    assert "resuming" not in p.stderr  # nothing good to resume from: step 50 was never completed
    assert _steps(s1) == ["step-0000050"]
    assert checkpoint.verify(s1 / "ckpt" / "step-0000050", expect="state.pt") is not None
    assert not list((s1 / "ckpt").glob(".step-*"))

    # 3. stage 1, inside the final-weights write: resumed from step 50, killed with model.pt
    #    written to a temp dir; no final/ and no stage.json.
    _assert_killed(run_tiny(cwd, "stage1:final"), "stage1:final", "stage1 λ=0.5: resuming at step 50")
    assert not (s1 / "final").exists() and not (s1 / "stage.json").exists()

    # 4. stage 2, between checkpoints (every 10 steps).
    _assert_killed(run_tiny(cwd, "stage2:step:25"), "stage2:step:25")
    assert (s1 / "stage.json").exists() and not (s1 / "ckpt").exists()
    assert not list(s1.glob(".final.*")), "temp dir of the killed final write was not cleaned"
    s2 = _stage_dir(cwd, 2)
    assert _steps(s2) == ["step-0000010", "step-0000020"]

    # 5. stage 2, inside a checkpoint write after resuming from step 20.
    _assert_killed(run_tiny(cwd, "stage2:ckpt:40"), "stage2:ckpt:40", "stage2 λ=0.5: resuming at step 20")
    assert _steps(s2) == ["step-0000020", "step-0000030"]

    # 6. stage 2, inside the final-weights write.
    _assert_killed(run_tiny(cwd, "stage2:final"), "stage2:final", "stage2 λ=0.5: resuming at step 30")
    assert not (s2 / "stage.json").exists()

    # 7. stage 3 (first LR), between checkpoints.
    _assert_killed(run_tiny(cwd, "stage3:step:7"), "stage3:step:7")
    assert (s2 / "stage.json").exists()
    s3 = _stage_dir(cwd, 3)
    assert _steps(s3) == ["step-0000005"]

    # 8. stage 3, inside a checkpoint write.
    _assert_killed(run_tiny(cwd, "stage3:ckpt:10"), "stage3:ckpt:10", "stage3 lr=0.001: resuming at step 5")

    # The same command, uninterrupted, finishes the job.
    p = run_tiny(cwd)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "stage3 lr=0.001: resuming at step 5" in p.stderr  # step 10's write was killed
    diff = _assert_same(read_rows(cwd), baseline["rows"])
    print(f"max |resumed - uninterrupted| = {diff}")
    for stage in (1, 2, 3):  # finished stages keep no checkpoints
        assert not list((cwd / "outputs" / "tiny" / f"stage{stage}").glob("*/ckpt"))
    # stage.json lists one segment per process that trained the stage; the earlier segments
    # came back from the checkpoint each resume started at (eelib/provenance.py).
    spans = {n: [(g["from_step"], g["to_step"]) for g in json.loads((d / "stage.json").read_text())["computed"]]
             for n, d in (("s1", s1), ("s2", s2))}
    steps = {n: json.loads((d / "stage.json").read_text())["steps"] for n, d in (("s1", s1), ("s2", s2))}
    # Stage 2: killed at 25, resumed at 20 (killed writing 40), at 30 (killed writing final/ after
    # checkpointing 40 and 50), at 50.
    assert spans == {"s1": [(0, 50), (50, steps["s1"])],
                     "s2": [(0, 20), (20, 30), (30, 50), (50, steps["s2"])]}, spans


def test_corrupt_newest_checkpoint_falls_back_to_previous(tmp_path, baseline):
    cwd = tmp_path
    _assert_killed(run_tiny(cwd, "stage2:step:35"), "stage2:step:35")
    s2 = _stage_dir(cwd, 2)
    assert _steps(s2) == ["step-0000020", "step-0000030"]
    state = s2 / "ckpt" / "step-0000030" / "state.pt"
    size = state.stat().st_size
    with open(state, "r+b") as f:  # flip bytes in the middle; the size stays the same
        f.seek(size // 2)
        chunk = f.read(64)
        f.seek(size // 2)
        f.write(bytes(b ^ 0xFF for b in chunk))
    assert state.stat().st_size == size

    p = run_tiny(cwd)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "step-0000030 is corrupt or incomplete; falling back" in p.stderr
    assert "stage2 λ=0.5: resuming at step 20" in p.stderr
    _assert_same(read_rows(cwd), baseline["rows"])


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_external_kill_when_a_checkpoint_appears(tmp_path, baseline, sig):
    """kill -9 (or Ctrl-C) from outside (no hook): poll the outputs, kill as soon as stage 2 has
    written a checkpoint, rerun; the kill lands wherever the child happens to be. Ctrl-C ends
    with one line saying how to resume, not a traceback (a review found a 100-line one)."""
    cwd = tmp_path
    write_params(cwd / "tiny.yaml")
    child = subprocess.Popen(eelib_cmd("run", "tiny.yaml", "--out", "outputs", "--no-progress"),
                             cwd=cwd, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    deadline = time.time() + 240
    try:
        while time.time() < deadline and child.poll() is None:
            if list((cwd / "outputs" / "tiny").glob("stage2/*/ckpt/step-*/manifest.json")):
                os.kill(child.pid, sig)
                break
            time.sleep(0.02)
        rc = child.wait(timeout=60)
        err = child.stderr.read()
    finally:
        if child.poll() is None:
            child.kill()
    if sig == signal.SIGINT:
        assert rc == 130, f"the run finished before stage 2 wrote a checkpoint: {err[-2000:]}"
        assert "Traceback" not in err and err.strip().splitlines()[-1] == (
            "eelib: interrupted; the same command resumes from each stage's last checkpoint "
            "(finished stages and runs are kept)"), err[-2000:]
    else:
        assert rc == -signal.SIGKILL, "the run finished before stage 2 wrote a checkpoint"
    assert not (cwd / "outputs" / "tiny" / "results.jsonl").exists()

    p = run_tiny(cwd)
    assert p.returncode == 0, p.stderr[-3000:]
    _assert_same(read_rows(cwd), baseline["rows"])


# ---------------------------------------------------------------------------------------------
# In-process checks of the checkpoint files themselves (fast).

def _state(v: float) -> dict:
    return {"model": {"w": torch.full((4, 4), v)}, "step": int(v)}


def test_verify_detects_every_kind_of_damage(tmp_path):
    d = tmp_path / "s" / "stage1" / "k"
    dest = checkpoint.save_checkpoint(d, 10, _state(10), {"config_digest": "abc"})
    assert checkpoint.verify(dest, expect="state.pt")["step"] == 10
    assert checkpoint.verify(dest, expect="model.pt") is None  # manifest lacks the expected file

    state = dest / "state.pt"
    good = state.read_bytes()
    state.write_bytes(good[:-1])                      # truncated
    assert checkpoint.verify(dest) is None
    state.write_bytes(good[:10] + bytes([good[10] ^ 1]) + good[11:])  # one bit flipped
    assert checkpoint.verify(dest) is None
    state.write_bytes(good)
    assert checkpoint.verify(dest) is not None
    (dest / "manifest.json").write_text("{not json")  # torn manifest
    assert checkpoint.verify(dest) is None
    for wrong in ("[1]", '{"files": [1]}', '{"files": {"state.pt": 3}}'):  # valid JSON, wrong shape
        (dest / "manifest.json").write_text(wrong)
        assert checkpoint.verify(dest) is None, wrong
    (dest / "manifest.json").unlink()                 # missing manifest
    assert checkpoint.verify(dest) is None


def test_load_latest_falls_back_and_refuses_other_configs(tmp_path, capsys):
    d = tmp_path / "s" / "stage2" / "k"
    for step in (10, 20, 30):
        checkpoint.save_checkpoint(d, step, _state(step), {"config_digest": "abc"})
    assert sorted(p.name for p in (d / "ckpt").iterdir()) == ["step-0000020", "step-0000030"]  # keep=2
    assert checkpoint.load_latest(d, "abc")["step"] == 30

    (d / "ckpt" / "step-0000030" / "state.pt").write_bytes(b"garbage")
    assert checkpoint.load_latest(d, "abc")["step"] == 20
    assert "step-0000030 is corrupt or incomplete" in capsys.readouterr().err

    (d / "ckpt" / "step-0000020" / "manifest.json").unlink()
    assert checkpoint.load_latest(d, "abc") is None  # nothing good left: start over

    checkpoint.save_checkpoint(d, 40, _state(40), {"config_digest": "other"})
    with pytest.raises(RuntimeError, match="different config"):
        checkpoint.load_latest(d, "abc")


def test_prune_ignores_interrupted_swap_leftovers(tmp_path):
    d = tmp_path / "s" / "stage1" / "k"
    checkpoint.save_checkpoint(d, 10, _state(10), {"config_digest": "abc"})
    # a swap of step 20 interrupted between its two renames leaves step-0000020.old behind
    (d / "ckpt" / "step-0000020.old").mkdir()
    checkpoint.save_checkpoint(d, 30, _state(30), {"config_digest": "abc"})
    names = sorted(p.name for p in (d / "ckpt").iterdir())
    assert "step-0000010" in names and "step-0000030" in names  # .old did not displace step 10
    assert checkpoint.load_latest(d, "abc")["step"] == 30


def test_a_final_rewrite_cut_between_its_renames_leaves_no_model_sized_leftover(tmp_path):
    """Killed after `final` became `final.old` and before the new one took its name: the next
    write of `final` removes `final.old` (a model-sized copy nothing reads, which stage adoption
    would otherwise hard-link into twins)."""
    d = tmp_path / "s" / "stage2" / "k"
    checkpoint.save_model(d / "final", {"w": torch.ones(3)}, {})
    os.replace(d / "final", d / "final.old")  # the kill between the two renames
    checkpoint.save_model(d / "final", {"w": torch.full((3,), 2.0)}, {})
    assert sorted(os.listdir(d)) == ["final"]
    assert float(checkpoint.load_model(d / "final")["w"][0]) == 2.0


def test_rewriting_a_step_replaces_it_whole(tmp_path):
    d = tmp_path / "s" / "stage2" / "k"
    checkpoint.save_checkpoint(d, 10, _state(1), {"config_digest": "abc"})
    checkpoint.save_checkpoint(d, 10, _state(2), {"config_digest": "abc"})
    st = checkpoint.load_latest(d, "abc")
    assert float(st["model"]["w"][0, 0]) == 2.0
    assert sorted(p.name for p in (d / "ckpt").iterdir()) == ["step-0000010"]


def test_final_weights_are_verified_on_load(tmp_path):
    dest = tmp_path / "s" / "stage1" / "k" / "final"
    checkpoint.save_model(dest, {"w": torch.ones(3)}, {"stage": 1})
    assert torch.equal(checkpoint.load_model(dest)["w"], torch.ones(3))
    (dest / "model.pt").write_bytes((dest / "model.pt").read_bytes()[:-3])
    with pytest.raises(RuntimeError, match="missing or corrupt"):
        checkpoint.load_model(dest)


def test_resume_restores_rng_for_dropout(tmp_path, monkeypatch):
    """Stage-2 dropout draws from the torch RNG: a resumed loop must draw the same masks.
    (In-process: the loop is interrupted by an exception at a fault point, then a fresh model,
    mixture and loop resume from the checkpoint on disk, as a rerun would.)"""
    import numpy as np
    from eelib import train as T
    from eelib.mixture import Mixture, Source
    from eelib.model import build_model, set_dropout

    windows = np.random.default_rng(0).integers(0, 256, size=(120, 16))

    def loop(d: Path):
        model = build_model("test-micro", 258, seed=0)
        set_dropout(model, 0.3)
        mix = Mixture([Source("x", windows, 1.0, once=False)], seed=1)
        spec = T.LoopSpec(lr=3e-3, min_lr=3e-4, warmup_steps=2, weight_decay=0.1, batch_size=4,
                          micro_batch=2, max_steps=24, eval_interval=4, patience=50,
                          early_stop_key="L")
        ev = lambda m: {"L": T.heldout_loss(m, windows[:8], torch.device("cpu"))}
        out = T.train(model, mix, spec, stage_dir=d / "stage2" / "k", config_digest="d",
                      device=torch.device("cpu"), seed=1, evaluator=ev, progress=False)
        return model, out

    ref_model, ref = loop(tmp_path / "a")

    class Killed(BaseException):
        pass

    def fault(tag):
        if tag == "stage2:step:14":
            raise Killed
    monkeypatch.setattr(T, "fault_point", fault)
    with pytest.raises(Killed):
        loop(tmp_path / "b")
    monkeypatch.setattr(T, "fault_point", lambda tag: None)
    model, out = loop(tmp_path / "b")  # resumes at step 12
    assert out["trajectory"] == ref["trajectory"]
    for (k, a), (_, b) in zip(ref_model.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), k

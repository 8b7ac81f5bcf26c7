"""The batch runner (issue 3): grid expansion, reuse, failure isolation, disjoint parallel workers,
papermill execution of the stage notebooks, and resuming a batch killed with SIGKILL (issue 7)."""
from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from eelib import config as C
from eelib.pipeline import grid_runs
from conftest import TINY, child_env, compared, eelib_cmd, max_abs_diff, run_cli, write_params


def _cfg(grid: dict, **top) -> dict:
    cfg = copy.deepcopy(TINY)
    cfg["stage3"]["lrs"] = [3.0e-3]
    cfg.update(top)
    cfg["grid"] = grid
    return cfg


def test_grid_expansion_names_and_fields():
    cfg = C.from_dict(_cfg({"stage1.lam": [0.0, 0.5, 1.0], "seed": [0, 1]}))
    runs = grid_runs(cfg)
    assert [r for r, _ in runs] == ["lam0.0-seed0", "lam0.0-seed1", "lam0.5-seed0", "lam0.5-seed1",
                                    "lam1.0-seed0", "lam1.0-seed1"]
    assert [(c.stage1.lam, c.seed) for _, c in runs] == [(0.0, 0), (0.0, 1), (0.5, 0), (0.5, 1), (1.0, 0), (1.0, 1)]
    assert all(c.grid == {} for _, c in runs)


def test_grid_value_is_validated_with_its_coordinates():
    with pytest.raises(C.ConfigError, match=r"grid \(stage1.lam=1.5\).*stage1.lam"):
        C.expand(C.from_dict(_cfg({"stage1.lam": [0.0, 1.5]})))


def test_stage1_is_shared_across_stage2_variants(tmp_path):
    """A sweep over a stage-2 field builds stage 1 once (stage outputs are keyed by config)."""
    write_params(tmp_path / "p.yaml", _cfg({"stage2.lr": [1.0e-3, 2.0e-3]}, name="share"))
    p = run_cli(tmp_path, "run", "p.yaml", "--out", "outputs", "--no-progress")
    assert p.returncode == 0, p.stderr[-2000:]
    edir = tmp_path / "outputs" / "share"
    assert len(list((edir / "stage1").iterdir())) == 1
    assert len(list((edir / "stage2").iterdir())) == 2
    rows = [json.loads(l) for l in (edir / "results.jsonl").read_text().splitlines()]
    assert rows[0]["stage_dirs"][0] == rows[1]["stage_dirs"][0]
    assert rows[0]["stage_dirs"][1] != rows[1]["stage_dirs"][1]


def test_parallel_workers_failure_isolation_and_reuse(tmp_path):
    """Two workers, one run diverges (LR 1e6 → NaN): it fails alone, is listed, keeps its log; the
    other finishes. A rerun reuses the finished run untouched and retries only the failed one."""
    write_params(tmp_path / "p.yaml", _cfg({"stage1.lr": [3.0e-3, 1.0e6]}, name="iso"))
    p = run_cli(tmp_path, "run", "p.yaml", "--out", "outputs", "--workers", "2")
    assert p.returncode == 1, p.stdout + p.stderr
    edir = tmp_path / "outputs" / "iso"
    summary = json.loads((edir / "summary.json").read_text())
    status = {r["run"]: r["status"] for r in summary["runs"]}
    assert status == {"lr0.003": "done", "lr1000000.0": "failed"}
    assert summary["failed"] == ["lr1000000.0"]
    assert "is nan at step" in (edir / "runs" / "lr1000000.0" / "log.txt").read_text()  # the NaN guard
    assert "lr1000000.0" in (edir / "summary.md").read_text()
    rows = [json.loads(l) for l in (edir / "results.jsonl").read_text().splitlines()]
    assert {r["run"] for r in rows} == {"lr0.003"}
    # Disjoint run directories, each holding only its own config.
    for run in status:
        cfg = C.load(edir / "runs" / run / "config.yaml")
        assert f"lr{cfg.stage1.lr}" == run

    done = edir / "runs" / "lr0.003" / "result.json"
    before = done.stat().st_mtime_ns
    p2 = run_cli(tmp_path, "run", "p.yaml", "--out", "outputs", "--workers", "2")
    assert p2.returncode == 1
    summary2 = json.loads((edir / "summary.json").read_text())
    assert {r["run"]: r["status"] for r in summary2["runs"]} == {"lr0.003": "reused", "lr1000000.0": "failed"}
    assert done.stat().st_mtime_ns == before


def test_papermill_batch_keeps_executed_notebooks_and_tracebacks(tmp_path):
    """Through papermill: the executed stage notebooks land in the run dir; a failing run keeps the
    notebook holding the traceback."""
    write_params(tmp_path / "p.yaml", _cfg({"stage1.lr": [3.0e-3, 1.0e6]}, name="pm"))
    p = run_cli(tmp_path, "batch", "p.yaml", "--out", "outputs", "--workers", "2", "--no-report",
                timeout=600)
    assert p.returncode == 1, p.stdout + p.stderr
    ok, bad = tmp_path / "outputs" / "pm" / "runs" / "lr0.003", tmp_path / "outputs" / "pm" / "runs" / "lr1000000.0"
    for nb in ("pretrain.ipynb", "posttrain.ipynb", "finetune.ipynb"):
        assert (ok / nb).exists()
    assert (ok / "result.json").exists()
    failed_nb = json.loads((bad / "pretrain.ipynb").read_text())
    errors = [o for c in failed_nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors and errors[0]["ename"] == "NonFiniteLoss"
    assert not (bad / "posttrain.ipynb").exists()  # the run stopped at the failing stage


@pytest.mark.slow
def test_batch_killed_mid_run_resumes_to_the_same_losses(tmp_path):
    """kill -9 a papermill batch (the whole process group) once stage 1 is done; rerunning the same
    command finishes with the losses of an uninterrupted batch."""
    cfg = _cfg({"stage1.lam": [0.0, 1.0]}, name="kill")
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    for d in (ref, cut):
        d.mkdir()
        write_params(d / "p.yaml", cfg)
    args = ["batch", "p.yaml", "--out", "outputs", "--workers", "2", "--no-report"]
    p = run_cli(ref, *args, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr

    proc = subprocess.Popen(eelib_cmd(*args), cwd=cut, env=child_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    stage2 = cut / "outputs" / "kill" / "stage2"
    while time.time() < deadline and not any(stage2.glob("*/ckpt/step-*")):
        time.sleep(0.2)
    assert any(stage2.glob("*/ckpt/step-*")), "stage 2 never checkpointed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (cut / "outputs" / "kill" / "results.jsonl").exists() or \
        len((cut / "outputs" / "kill" / "results.jsonl").read_text().splitlines()) < 2

    p = run_cli(cut, *args, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    read = lambda d: [json.loads(l) for l in (d / "outputs" / "kill" / "results.jsonl").read_text().splitlines()]
    assert max_abs_diff(compared(read(ref)), compared(read(cut))) <= 1e-6

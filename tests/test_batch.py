"""The batch runner (issue 3): grid expansion, reuse, failure isolation, disjoint parallel workers,
papermill execution of the stage notebooks; stopping a batch (SIGKILL, interrupts) is in
tests/test_batch_interrupts.py."""
from __future__ import annotations

import ast
import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from eelib import config as C
from eelib.batch import KERNEL_START_TRIES, NOTEBOOKS, STAGE_NOTEBOOKS
from eelib.notebook import FIELDS
from eelib.pipeline import grid_runs
from conftest import TINY, child_env, run_cli, write_params


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


def test_stage1_is_shared_across_stage2_variants(tmp_path, cli):
    """A sweep over a stage-2 field builds stage 1 once (stage outputs are keyed by config)."""
    write_params(tmp_path / "p.yaml", _cfg({"stage2.lr": [1.0e-3, 2.0e-3]}, name="share"))
    p = cli(tmp_path, "run", "p.yaml", "--out", "outputs", "--no-progress")
    assert p.returncode == 0, p.stderr[-2000:]
    edir = tmp_path / "outputs" / "share"
    assert len(list((edir / "stage1").iterdir())) == 1
    assert len(list((edir / "stage2").iterdir())) == 2
    rows = [json.loads(l) for l in (edir / "results.jsonl").read_text().splitlines()]
    assert rows[0]["stage_dirs"][0] == rows[1]["stage_dirs"][0]
    assert rows[0]["stage_dirs"][1] != rows[1]["stage_dirs"][1]


def test_parallel_workers_failure_isolation_and_reuse(tmp_path, cli):
    """Two workers, one run diverges (LR 1e6 → NaN): it fails alone, is listed, keeps its log; the
    other finishes. A rerun reuses the finished run untouched and retries only the failed one."""
    write_params(tmp_path / "p.yaml", _cfg({"stage1.lr": [3.0e-3, 1.0e6]}, name="iso"))
    p = cli(tmp_path, "run", "p.yaml", "--out", "outputs", "--workers", "2")  # the parent here, its workers processes
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
    p2 = cli(tmp_path, "run", "p.yaml", "--out", "outputs", "--workers", "2")
    assert p2.returncode == 1
    summary2 = json.loads((edir / "summary.json").read_text())
    assert {r["run"]: r["status"] for r in summary2["runs"]} == {"lr0.003": "reused", "lr1000000.0": "failed"}
    assert done.stat().st_mtime_ns == before


PARENT_STEPS = """import sys
from eelib import batch, config as C, pipeline
cfg = C.load("p.yaml")  # every field and grid combination checked, model presets included
runs = pipeline.grid_runs(cfg)
rdir = pipeline.claim_run_dir(runs[0][1], runs[0][0], "outputs", list(cfg.grid))
pipeline.release_run(rdir)
batch.default_workers()
print(sorted({"torch", "transformers"} & set(sys.modules)))
"""


def test_the_batch_parent_imports_no_torch(tmp_path):
    """A batch's parent process checks the params, claims run directories and hands runs out; the
    runs train in their own processes. Importing torch and transformers there cost every
    `eelib batch` ≈ 8 s on the CI machine before a run started (the stages are now imported
    where a run trains, the presets are plain data, and no GPU driver means no GPU to count)."""
    write_params(tmp_path / "p.yaml", _cfg({"stage1.lam": [0.0, 0.5]}, name="parent"))
    p = subprocess.run([sys.executable, "-c", PARENT_STEPS], cwd=tmp_path, env=child_env(),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip() == "[]"
    assert (tmp_path / "outputs" / "parent" / "runs" / "lam0.0" / "config.yaml").exists()  # it did claim


def test_stage_notebooks_declare_every_config_field():
    """papermill -f config.yaml injects every ExperimentConfig field; each must be declared in the
    stage notebooks' parameters cell (else papermill warns "unknown parameter" and
    `papermill --help-notebook` does not list it)."""
    for nb in STAGE_NOTEBOOKS:
        cells = json.loads((NOTEBOOKS / nb).read_text())["cells"]
        params = next(c for c in cells if "parameters" in c["metadata"].get("tags", []))
        body = ast.parse("".join(params["source"])).body
        names = {t.id for node in body for t in getattr(node, "targets", None) or [node.target]}
        # typed, so `papermill --help-notebook` shows each parameter's type and help comment
        assert all(isinstance(node, ast.AnnAssign) for node in body), nb
        assert set(FIELDS) <= names, f"{nb} lacks {sorted(set(FIELDS) - names)}"


# A python3 kernelspec (found first through JUPYTER_PATH) whose first FLAKY_FAILS starts exit at
# once, as a kernel does that lost its ports to another starting at the same moment.
FLAKY_KERNEL = """import os, runpy, sys
count = os.environ["FLAKY_COUNT"]
n = int(open(count).read()) if os.path.exists(count) else 0
open(count, "w").write(str(n + 1))
if n < int(os.environ["FLAKY_FAILS"]):
    sys.exit(1)
sys.argv = ["ipykernel_launcher"] + sys.argv[1:]
runpy.run_module("ipykernel_launcher", run_name="__main__")
"""


def _flaky_kernel_env(tmp_path: Path, fails: int) -> dict:
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (tmp_path / "flaky_kernel.py").write_text(FLAKY_KERNEL)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, str(tmp_path / "flaky_kernel.py"), "-f", "{connection_file}"],
        "display_name": "flaky", "language": "python"}))
    return child_env(JUPYTER_PATH=str(tmp_path / "jupyter"), FLAKY_FAILS=str(fails),
                     FLAKY_COUNT=str(tmp_path / "starts"))


def test_papermill_batch_keeps_notebooks_tracebacks_and_restarts_a_dead_kernel(tmp_path):
    """Through papermill: the executed stage notebooks land in the run dir; a failing run keeps the
    notebook holding the traceback. A kernel that dies before running a cell (the port race of
    parallel kernel starts; here the batch's first start) is started again and its run finishes;
    a failure inside a cell is never retried; a kernel that never starts fails its run with that
    reason, after KERNEL_START_TRIES tries, not a bare exit code. (One batch for what two tests
    did in 200 s: CI's 20 minutes.)"""
    cfg = _cfg({"stage1.lr": [3.0e-3, 1.0e6]}, name="pm")
    write_params(tmp_path / "p.yaml", cfg)
    # one worker: the flaky kernel's one failed start goes to the first run (lr0.003), not by race
    args = ["batch", "p.yaml", "--out", "outputs", "--workers", "1", "--no-report"]
    p = run_cli(tmp_path, *args, env=_flaky_kernel_env(tmp_path, fails=1), timeout=600)
    assert p.returncode == 1, p.stdout + p.stderr
    ok, bad = tmp_path / "outputs" / "pm" / "runs" / "lr0.003", tmp_path / "outputs" / "pm" / "runs" / "lr1000000.0"
    for nb in STAGE_NOTEBOOKS:
        assert (ok / nb).exists()
    assert (ok / "result.json").exists()
    assert (ok / "log.txt").read_text().count("failed before running a cell") == 1
    failed_nb = json.loads((bad / "pretrain.ipynb").read_text())
    errors = [o for c in failed_nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors and errors[0]["ename"] == "NonFiniteLoss"
    assert not (bad / "posttrain.ipynb").exists()  # the run stopped at the failing stage
    # A failure inside a cell is not a kernel that failed to start: run once, never retried.
    log = (bad / "log.txt").read_text()
    assert sum(l.startswith("$ ") for l in log.splitlines()) == 1 and "failed before running a cell" not in log
    # kernel starts: the ok run's three notebooks + its one retry, the bad run's pretrain
    assert int((tmp_path / "starts").read_text()) == len(STAGE_NOTEBOOKS) + 2
    summary = json.loads((tmp_path / "outputs" / "pm" / "summary.json").read_text())
    assert {r["run"]: r["error"] for r in summary["runs"]}["lr1000000.0"].startswith("exit 1 in pretrain.ipynb")

    dead = tmp_path / "dead"
    dead.mkdir()
    write_params(dead / "p.yaml", _cfg({}, name="dead"))
    p = run_cli(dead, *args, env=_flaky_kernel_env(dead, fails=99), timeout=600)
    assert p.returncode == 1
    summary = json.loads((dead / "outputs" / "dead" / "summary.json").read_text())
    assert f"the kernel of pretrain.ipynb failed to start {KERNEL_START_TRIES} times" in summary["runs"][0]["error"]
    assert int((dead / "starts").read_text()) == KERNEL_START_TRIES

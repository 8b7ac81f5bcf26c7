"""executor="ray" (eelib/batch.py): a 2-run tiny grid as Ray tasks on a local Ray instance gives the
same outputs layout, summary and results as the plain python executor would."""
from __future__ import annotations

import json
import os

import pytest

ray = pytest.importorskip("ray", reason="ray is an optional extra: pip install 'eelib[ray]'")

from conftest import ROOT, TINY  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    os.environ["OMP_NUM_THREADS"] = "1"
    # Ray gives its local node a fixed 30 s to register; on 2 cores busy with the other pytest
    # worker it once took longer ("The current node timed out during startup"): try again.
    for attempt in range(3):
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
            break
        except Exception as e:  # noqa: BLE001  (ray raises a bare Exception here)
            ray.shutdown()
            if "timed out during startup" not in str(e) or attempt == 2:
                raise
    yield
    ray.shutdown()


def test_ray_executor_runs_a_two_run_grid(local_ray, tmp_path, monkeypatch):
    from eelib import batch, config as C
    raw = json.loads(json.dumps(TINY))
    raw.update(name="rayg", grid={"stage1.lam": [0.0, 1.0]})
    raw["data"].update(general_tokens=16384, post_tokens=4096, val_tokens=1024, cache_dir=str(tmp_path / "cache"))
    raw["stage2"].update(max_tokens=8192, eval_interval=8)
    raw["stage3"].update(lrs=[1.0e-3], tokens=4096, eval_interval=4)
    cfg = C.from_dict(raw)
    monkeypatch.chdir(tmp_path)
    summary = batch.execute(cfg, executor="ray", root="outputs", progress=False)
    assert summary["executor"] == "ray" and summary["workers"] == 2
    assert summary["failed"] == [], [r["error"] for r in summary["runs"]]
    assert [r["status"] for r in summary["runs"]] == ["done", "done"]
    edir = tmp_path / "outputs" / "rayg"
    for run in ("lam0.0", "lam1.0"):
        assert (edir / "runs" / run / "result.json").exists()
        assert "run-one" in (edir / "runs" / run / "log.txt").read_text()
    rows = [json.loads(x) for x in (edir / "results.jsonl").read_text().splitlines()]
    assert sorted(r["lam"] for r in rows) == [0.0, 1.0]
    assert (edir / "summary.md").exists()
    # A second execute reuses both finished runs without starting any task.
    again = batch.execute(cfg, executor="ray", root="outputs", progress=False)
    assert [r["status"] for r in again["runs"]] == ["reused", "reused"]

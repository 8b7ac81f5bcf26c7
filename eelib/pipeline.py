"""One pipeline run (stage 1 → stage 2 → stage 3 at each LR) and the experiment grid around it.

Records:
    outputs/<experiment>/runs/<run>/config.yaml   the resolved config of this run
    outputs/<experiment>/runs/<run>/result.json   one row per stage-3 LR (the table's rows)
    outputs/<experiment>/results.jsonl            every run's rows, rebuilt from the result.json files

A row carries the swept fields, the method label, L_im, L_ret, L_ft, L_pre and the stage-3
trajectory; frontiers, figures and the claims report read only these rows.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from eelib import config as C
from eelib.io import atomic_write_json, atomic_write_text
from eelib.stages import OUTPUTS, finetune, posttrain, pretrain


def method_label(cfg: C.ExperimentConfig) -> str:
    """The paper's method names (Figs 2, 4–7): unmixed / mixed, + dropout / + replay, LoRA."""
    m = "mixed" if cfg.stage1.lam > 0 else "unmixed"
    if cfg.stage2.lora_r:
        m = f"LoRA-{m}"
    if cfg.stage2.dropout > 0:
        m += "+dropout"
    if cfg.stage2.replay > 0:
        m += "+replay"
    return m


def run_dir(cfg: C.ExperimentConfig, run: str, root: Path | None = None) -> Path:
    return Path(root or OUTPUTS) / cfg.name / "runs" / run


def claim_run_dir(cfg: C.ExperimentConfig, run: str, root: Path | None = None) -> Path:
    """Create (or re-enter) a run directory; refuse one that a different config made (issue 7)."""
    rdir = run_dir(cfg, run, root)
    dig = C.digest(C.to_dict(cfg))
    stamp = rdir / "config.digest"
    if stamp.exists() and stamp.read_text().strip() != dig:
        raise RuntimeError(f"{rdir} was made by a different config (digest {stamp.read_text().strip()} "
                           f"!= {dig}); it is never overwritten. Rename the experiment (name:) or move it away.")
    rdir.mkdir(parents=True, exist_ok=True)
    if not stamp.exists():
        atomic_write_text(rdir / "config.yaml", C.dump(cfg))
        atomic_write_text(stamp, dig + "\n")
    return rdir


def rows_for(cfg: C.ExperimentConfig, run: str, s1, s2, s3s: list) -> list[dict]:
    rows = []
    for s3 in s3s:
        rows.append({
            "experiment": cfg.name, "run": run, "pipeline": cfg.pipeline,
            "allocation": cfg.allocation, "method": method_label(cfg), "seed": cfg.seed,
            "model": cfg.model, "lam": cfg.stage1.lam, "post_tokens": cfg.data.post_tokens,
            "stage2_lr": cfg.stage2.lr, "stage2_batch": cfg.stage2.batch_size,
            "dropout": cfg.stage2.dropout, "replay": cfg.stage2.replay, "lora_r": cfg.stage2.lora_r,
            "stage3_lr": s3["lr"],
            "L_im": s2["L_im"], "L_ret": s3["L_ret"], "L_ft": s3["L_ft"], "L_pre": s3["L_pre"],
            "L_pre_im": s2["losses"]["L_pre_val"],
            "stage2_steps": s2["steps"], "stage2_stopped_early": s2.record.get("stopped_early"),
            "trajectory": s3["trajectory"],
            "stage_dirs": [str(s1.dir), str(s2.dir), str(s3.dir)],
        })
    return rows


def run_pipeline(cfg: C.ExperimentConfig, run: str = "run", root: Path | None = None,
                 progress: bool = True) -> list[dict]:
    """Stages 1–3 for one config; reuses any stage already finished; returns its rows."""
    rdir = claim_run_dir(cfg, run, root)
    t0 = time.time()
    s1 = pretrain(cfg, root=root, progress=progress)
    s2 = posttrain(cfg, s1, root=root, progress=progress)
    s3s = [finetune(cfg, s2, lr, root=root, progress=progress) for lr in cfg.stage3.lrs]
    rows = rows_for(cfg, run, s1, s2, s3s)
    from eelib import distributed
    if distributed.is_main():  # under torchrun, rank 0 writes the run's result
        atomic_write_json(rdir / "result.json", {"rows": rows, "seconds": time.time() - t0})
    return rows


def grid_runs(cfg: C.ExperimentConfig) -> list[tuple[str, C.ExperimentConfig]]:
    keys = list(cfg.grid)
    runs = [(C.run_name(c, keys), c) for c in C.expand(cfg)]
    names = [r for r, _ in runs]
    if len(set(names)) != len(names):
        raise C.ConfigError("grid: two runs get the same name; sweep distinct values")
    return runs


def collect(experiment: str, root: Path | None = None) -> list[dict]:
    """Every finished run's rows, in run-name order; rewrites results.jsonl atomically."""
    edir = Path(root or OUTPUTS) / experiment
    rows = []
    for p in sorted((edir / "runs").glob("*/result.json")):
        rows.extend(json.loads(p.read_text())["rows"])
    atomic_write_text(edir / "results.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return rows


def run_experiment(cfg: C.ExperimentConfig, root: Path | None = None, progress: bool = True) -> list[dict]:
    """Every run of the grid, one after another, in this process (`eelib run`)."""
    for run, c in grid_runs(cfg):
        run_pipeline(c, run, root=root, progress=progress)
    return collect(cfg.name, root)

"""One pipeline run (stage 1 → stage 2 → stage 3 at each LR) and the experiment grid around it.

Records (the run directories themselves: eelib/rundir.py):
    outputs/<experiment>/runs/<run>/result.json   one row per stage-3 LR (the table's rows)
    outputs/<experiment>/results.jsonl            every run's rows, rebuilt from the result.json files

A row carries the swept fields, the method label, L_im, L_ret, L_ft, L_pre and the stage-3
trajectory; frontiers, figures and the claims report read only these rows.
"""
from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Iterable

from eelib import config as C
from eelib.io import CorruptRecord, atomic_write_json, atomic_write_text, read_json
from eelib.rundir import _comparable, _flat, _stored_config, claim_run_dir, release_run
from eelib.config import OUTPUTS


# What to do with a run's result.json that was cut or edited outside eelib (io.read_json).
RESULT_FIX = "restore it from a copy, or move its run directory away to recompute the run"


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
                 progress: bool = True, swept: list[str] | None = None) -> list[dict]:
    """Stages 1–3 for one config; reuses any stage already finished; returns its rows.
    `swept`: the keys of the grid this run belongs to (claim_run_dir)."""
    # stages (torch, transformers: ≈ 8 s of imports) only here, where a run trains: a batch's
    # parent process, which only hands runs out and collects them, never imports them
    from eelib import stages
    rdir = claim_run_dir(cfg, run, root, swept)
    try:
        _refuse_stale(cfg, rdir, root)
        t0 = time.time()
        s1 = stages.pretrain(cfg, root=root, progress=progress)
        s2 = stages.posttrain(cfg, s1, root=root, progress=progress)
        s3s = [stages.finetune(cfg, s2, lr, root=root, progress=progress) for lr in cfg.stage3.lrs]
        rows = rows_for(cfg, run, s1, s2, s3s)
        from eelib import distributed
        # Under torchrun rank 0 writes the run's result; a finished run's result is kept as it was
        # (its stages were reused, so the rows are the same, and its "seconds" stay the real ones).
        if distributed.is_main() and not (rdir / "result.json").exists():
            if (rdir / "config.digest").read_text().strip() != C.digest(C.to_dict(cfg)):
                # another config took the unfinished directory over while this run trained
                raise RuntimeError(f"{rdir} was taken over by another config while this run trained; its "
                                   f"stages are kept, its result is not written there. Rerun under a new name.")
            atomic_write_json(rdir / "result.json", {"rows": rows, "seconds": time.time() - t0})
    finally:  # also on an error or Ctrl-C, so a notebook kernel does not keep the run held
        release_run(rdir)
    return rows


def stale_stages(cfg: C.ExperimentConfig, rows: list[dict], root: Path | None = None) -> list[str]:
    """Where a finished run's rows name other stage directories than this code's keys give: a
    rule, preset or data marker changed since they were computed, or a local tokenizer or data
    file they read was edited in place ("stage 2: d857… -> fc81…").
    A λ = 0 stage 1 finished under the older key it is adopted from counts as the same."""
    from eelib import keys
    now = {1: keys.stage_dir(cfg, 1, root=root).name, 2: keys.stage_dir(cfg, 2, root=root).name}
    also = {C.digest(keys._stage1_identity(cfg))} if cfg.stage1.lam == 0 else set()
    out = []
    for r in rows:
        dirs = r.get("stage_dirs")
        if not dirs:  # rows written before they named their stages: nothing to compare
            continue
        want = {**now, 3: keys.stage_dir(cfg, 3, r["stage3_lr"], root=root).name}
        for k, d in enumerate(dirs, start=1):
            if Path(d).name != want[k] and not (k == 1 and Path(d).name in also):
                out.append(f"stage {k}: {Path(d).name} -> {want[k]}")
    return sorted(set(out))


def stale_message(cfg: C.ExperimentConfig, rdir: Path, root: Path | None) -> str | None:
    """Why a finished run must not be reused as it is, or None. Its rows came from stages this code
    keys otherwise (a rule changed, e.g. the split stage 2's replay draw): kept silently, they would
    disagree with the stages a rerun trains, and with what the experiment's other runs measure."""
    done = rdir / "result.json"
    if not done.exists():
        return None
    stale = stale_stages(cfg, read_json(done, RESULT_FIX).get("rows", []), root)
    if not stale:
        return None
    return (f"{done} was computed by stages this eelib keys otherwise ({'; '.join(stale[:3])}): a rule, "
            "a model preset or a data marker changed since, or a file the stages read (a local tokenizer or "
            "data file) was edited in place (docs/decisions.md). Results are never replaced: "
            f"rerun under a new experiment name (--set name=...), or move {done.name} away to recompute "
            "this run here")


def _refuse_stale(cfg: C.ExperimentConfig, rdir: Path, root: Path | None) -> None:
    if (why := stale_message(cfg, rdir, root)) is not None:
        raise RuntimeError(why)


def grid_runs(cfg: C.ExperimentConfig) -> list[tuple[str, C.ExperimentConfig]]:
    keys = list(cfg.grid)
    runs = [(C.run_name(c, keys), c) for c in C.expand(cfg)]
    names = [r for r, _ in runs]
    if len(set(names)) != len(names):
        for k, values in cfg.grid.items():  # a repeated value: name it
            parts = [C.run_name_part(k, v) for v in values]
            twice = next((v for v, part in zip(values, parts) if parts.count(part) > 1), None)
            if twice is not None:
                raise C.ConfigError(f"grid.{k}: {twice!r} is given twice (or two values name one run, "
                                    f"{C.run_name_part(k, twice)!r}); sweep distinct values")
        dup = next(n for n in names if names.count(n) > 1)
        raise C.ConfigError(f"grid: two runs would both be named {dup!r}; sweep distinct values")
    return runs


# The config fields each row records (rows_for), so runs that differ in them stay apart in results.jsonl.
ROW_FIELDS = ("pipeline", "allocation", "seed", "model", "stage1.lam", "data.post_tokens", "stage2.lr",
              "stage2.batch_size", "stage2.dropout", "stage2.replay", "stage2.lora_r", "stage3.lrs")


# Fields that choose how a run executes, not what it computes (up to floating-point order).
HOW_FIELDS = ("name", "device", "compile", "threads", "ce_chunk", "residual_stream", "data.cache_dir", "stage1.micro_batch",
              "stage2.micro_batch", "stage3.micro_batch", "stage1.ckpt_interval")


def _run_configs(edir: Path) -> dict[str, dict[str, str] | None]:
    """Each finished run's config, flattened, values as JSON (None: config.yaml unreadable). A
    source=local run's data files enter as `data.digest` (their paths may move; their content not)."""
    out: dict[str, dict[str, str] | None] = {}
    for p in sorted((edir / "runs").glob("*/result.json")):
        d = _stored_config(p.parent)
        if d is None:
            out[p.parent.name] = None
            continue
        flat = {k: json.dumps(v) for k, v in _flat(_comparable(d)).items()}
        if (p.parent / "data.digest").exists():
            flat["data.digest"] = json.dumps(p.parent.joinpath("data.digest").read_text().strip())
        out[p.parent.name] = flat
    return out


def config_spread(experiment: str, root: Path | None = None) -> dict[str, dict[str, list[str]]]:
    """The config fields whose values differ between the experiment's finished runs, read from each
    run's config.yaml with today's defaults: {field: {value (JSON): [run, ...]}}. collect() pools
    every finished run, including runs a changed params file no longer lists; this shows whether
    they were made alike (a grid's swept fields differ by design; a changed stage-3 budget would
    not). Runs whose config.yaml is unreadable are compared on nothing and listed under the field
    "config.yaml"."""
    return _spread(_run_configs(Path(root or OUTPUTS) / experiment))


def _spread(configs: dict[str, dict[str, str] | None]) -> dict[str, dict[str, list[str]]]:
    readable = {r: f for r, f in configs.items() if f is not None}
    spread: dict[str, dict[str, list[str]]] = {}
    for field in sorted({k for v in readable.values() for k in v}):
        by_value: dict[str, list[str]] = {}
        for run, flat in readable.items():
            by_value.setdefault(flat.get(field, "null"), []).append(run)
        if len(by_value) > 1:
            spread[field] = by_value
    unreadable = [r for r, f in configs.items() if f is None]
    if unreadable:
        spread["config.yaml"] = {'"unreadable"': unreadable}
    return spread


def duplicate_runs(experiment: str, root: Path | None = None) -> list[list[str]]:
    """Groups of finished runs made by the same config (up to HOW_FIELDS), e.g. `lam0.0` and
    `lam0.0-seed0` after `--seeds` renamed a grid's runs: results.jsonl holds their rows twice."""
    return _duplicates(_run_configs(Path(root or OUTPUTS) / experiment))


def _duplicates(configs: dict[str, dict[str, str] | None]) -> list[list[str]]:
    groups: dict[str, list[str]] = {}
    for run, flat in configs.items():
        if flat is not None:
            what = {k: v for k, v in flat.items() if k not in HOW_FIELDS}
            groups.setdefault(json.dumps(what, sort_keys=True), []).append(run)
    return [g for g in groups.values() if len(g) > 1]


def _run_swept(edir: Path) -> dict[str, set[str] | None]:
    """Each finished run's grid keys (runs/<run>/swept.json); None where a run predates the file."""
    out: dict[str, set[str] | None] = {}
    for p in sorted((edir / "runs").glob("*/result.json")):
        try:
            out[p.parent.name] = set(json.loads((p.parent / "swept.json").read_text()))
        except (OSError, ValueError, TypeError):
            out[p.parent.name] = None
    return out


def _by_design(field: str, by_value: dict[str, list[str]], swept: dict[str, set[str] | None]) -> bool:
    """Whether a field's spread is a grid's doing: some runs swept it (their swept.json says so, or,
    for runs older than swept.json, their name holds its part, e.g. 'lora_dropout0.05'), and every
    other run holds one of the values those runs swept (an explorer run at the base value, say)."""
    def sweeps(run: str, value: str) -> bool:
        if swept.get(run) is not None:
            return field in swept[run]
        part = re.escape(C.run_name_part(field, json.loads(value)))
        return re.search(rf"(^|-){part}(-|$)", run) is not None
    swept_values = {v for v, runs in by_value.items() if any(sweeps(r, v) for r in runs)}
    others = {v for v, runs in by_value.items() if any(not sweeps(r, v) for r in runs)}
    return bool(swept_values) and others <= swept_values


def pooled_runs(experiment: str, root: Path | None = None, skip: Iterable[str] = ()) -> dict:
    """What the claims report says of the runs it pools: {"spread", "by_design", "duplicates"};
    `by_design`: the fields of the spread that a grid swept (`_by_design`); `skip`: runs left out
    of the rows (stale ones), so left out here too."""
    edir = Path(root or OUTPUTS) / experiment
    configs, swept = _run_configs(edir), _run_swept(edir)  # read once
    configs = {r: c for r, c in configs.items() if r not in set(skip)}
    spread = _spread(configs)
    return {"spread": spread, "by_design": [f for f, v in spread.items() if _by_design(f, v, swept)],
            "duplicates": _duplicates(configs)}


def unrecorded(spread: dict[str, dict[str, list[str]]], by_design: Iterable[str] = ()) -> dict:
    """The part of a spread (pooled_runs' "spread", config_spread) that the rows do not record, no
    grid made (`by_design`: fields whose spread a grid swept), and that changes what a run
    computes: runs differing only there share one frontier."""
    skip = set(ROW_FIELDS) | set(HOW_FIELDS) | set(by_design)
    return {f: v for f, v in spread.items() if f not in skip}


def spread_line(fields: dict[str, dict[str, list[str]]], limit: int = 3) -> str:
    """'stage3.tokens: 1000000 (lam0, lam0.5), 2000000 (lam1)' for each field, shortened."""
    parts = []
    for f, by_value in fields.items():
        vals = [f"{v} ({', '.join(runs[:limit])}{', …' if len(runs) > limit else ''})"
                for v, runs in list(by_value.items())[:limit]]
        more = f", +{len(by_value) - limit} more values" if len(by_value) > limit else ""
        parts.append(f"{f}: {', '.join(vals)}{more}")
    return "; ".join(parts)


def warn_unswept(cfg: C.ExperimentConfig, root: Path | None = None, skip: Iterable[str] = ()) -> dict:
    """After a grid ran: one warning on stderr if the experiment's finished runs differ in a field
    the rows do not record beyond what the grids that made them swept (e.g. runs a previous version
    of the params file made under other names), and a note if two runs were made by the same config.
    They are kept and pooled (stale runs in `skip` excepted: their rows are left out); the claims
    report lists them too. Returns the fields."""
    pooled = pooled_runs(cfg.name, root, skip)
    odd = unrecorded(pooled["spread"], pooled["by_design"])
    runs = Path(root or OUTPUTS) / cfg.name / "runs"
    if odd:
        print(f"[eelib] warning: the finished runs of {cfg.name} differ in fields beyond what their "
              f"grids swept, and results.jsonl pools them: {spread_line(odd)}. If that is not intended, move "
              f"the odd runs out of {runs} or rename the experiment (name:).", file=sys.stderr)
    for group in pooled["duplicates"]:
        print(f"[eelib] note: runs {', '.join(group)} of {cfg.name} were made by the same config, so "
              f"results.jsonl holds their rows twice (the claims, computed per seed, take their mean: "
              f"equal rows change nothing); move all but one out of {runs} to keep one.", file=sys.stderr)
    return odd


def run_checks(experiment: str, root: Path | None = None) -> dict[str, dict[str, str]]:
    """The experiment's finished runs this code cannot pool as they are: {"stale": {run: why},
    "unchecked": {run: why}}. Stale: its rows came from stages this code keys otherwise
    (`stale_message`); `eelib run` refuses it, `batch` lists it as failed, `collect` leaves its rows
    out. Unchecked: its stored config does not load here (its local files moved, a field of an
    older eelib, a tokenizer that no longer reads), so its keys cannot be recomputed; its rows are
    pooled as before and the claims report names it, with the reason."""
    edir = Path(root or OUTPUTS) / experiment
    out: dict[str, dict[str, str]] = {"stale": {}, "unchecked": {}}
    for done in sorted((edir / "runs").glob("*/result.json")):
        run = done.parent.name
        try:
            cfg = C.load(done.parent / "config.yaml")
            why = stale_message(cfg, done.parent, root)
        except Exception as e:  # noqa: BLE001 -- reported, never silent: the report names the run and why
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            out["unchecked"][run] = f"{type(e).__name__}: {first}"[:300]
            continue
        if why:
            out["stale"][run] = why
    return out


def stale_runs(experiment: str, root: Path | None = None) -> dict[str, str]:
    """{run: why} of the finished runs computed by stages this code keys otherwise (`run_checks`)."""
    return run_checks(experiment, root)["stale"]


# What the claims and figures read of every row (rows_for writes more).
ROW_REQUIRED = ("run", "method", "seed", "lam", "stage3_lr", "L_im", "L_ret", "L_ft", "L_pre")


def collect(experiment: str, root: Path | None = None, checks: dict | None = None) -> list[dict]:
    """Every finished run's rows, in run-name order, but those of stale runs (`run_checks`, or the
    `checks` given); rewrites results.jsonl atomically."""
    edir = Path(root or OUTPUTS) / experiment
    stale = (checks if checks is not None else run_checks(experiment, root))["stale"]
    rows = []
    for p in sorted((edir / "runs").glob("*/result.json")):
        if p.parent.name not in stale:
            got = read_json(p, RESULT_FIX)
            got = got.get("rows") if isinstance(got, dict) else None
            bad = "no list of rows" if not isinstance(got, list) else next(
                (f"a row without {sorted(set(ROW_REQUIRED) - set(r))}" for r in got
                 if not isinstance(r, dict) or not set(ROW_REQUIRED) <= set(r)), None)
            if bad:
                raise CorruptRecord(f"{p}: {bad}; eelib writes whole rows, so it was edited since: {RESULT_FIX}")
            rows.extend(got)
    atomic_write_text(edir / "results.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return rows


def read_results(experiment: str, root: Path | None = None) -> list[dict]:
    """The rows `collect` last wrote to results.jsonl (no check of the runs again)."""
    path = Path(root or OUTPUTS) / experiment / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def run_experiment(cfg: C.ExperimentConfig, root: Path | None = None, progress: bool = True) -> list[dict]:
    """Every run of the grid, one after another, in this process (`eelib run`)."""
    for run, c in grid_runs(cfg):
        run_pipeline(c, run, root=root, progress=progress, swept=list(cfg.grid))
    warn_unswept(cfg, root)
    return collect(cfg.name, root)

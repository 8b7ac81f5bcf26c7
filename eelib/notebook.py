"""What the notebooks call: build a config from papermill parameters, resolve paths, show stages.

A stage notebook's `parameters` cell holds the ExperimentConfig fields as literals (papermill's
`-f params/x.yaml` injects a params file's top-level keys under the same names), plus a few
conveniences: `lam` overrides stage1.lam, `run` names the run, `out_dir` the outputs root.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING

from eelib import config as C

if TYPE_CHECKING:  # for the annotations only: pandas loads when a table is built
    import pandas

REPO = Path(__file__).resolve().parent.parent
FIELDS = [f.name for f in dataclasses.fields(C.ExperimentConfig)]


def resolve(path: str | Path) -> Path:
    """A path as given if it exists from here, else relative to the repo (works from any cwd)."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return REPO / p if (REPO / p).exists() else p


def outputs(out_dir: str | Path = "outputs") -> Path:
    """The outputs root of every notebook: $EELIB_OUTPUTS when set (tests point it at a temp dir,
    so they never write into a user's results); else `out_dir`, a relative one taken from the
    repository root when the kernel runs in the repository's notebooks/ folder (JupyterLab, nbval),
    so the notebooks and `make run` share outputs/; else from the working directory, as the CLI."""
    env = os.environ.get("EELIB_OUTPUTS")
    if env:
        return Path(env)
    p = Path(out_dir)
    if not p.is_absolute() and Path.cwd().resolve() == (REPO / "notebooks").resolve():
        return REPO / p
    return p


def experiment_config(params_file: str, seeds, injected: dict) -> C.ExperimentConfig:
    """An experiment notebook's config: its params file, with `seeds` (a list, or the string
    papermill's `-p seeds "[0, 1]"` gives) as the seed axis. `injected` is the notebook's
    globals(): config fields there mean `-f params.yaml` was given, which papermill would inject
    as unknown names and the notebook would ignore, so it is refused with the right form."""
    stray = sorted(k for k in FIELDS if k in injected)
    if stray:
        raise C.ConfigError(f"this notebook takes a params file by name, not its fields ({', '.join(stray)} "
                            f"were injected): use -p params_file <file.yaml>, not -f")
    cfg = C.load(resolve(params_file))
    if isinstance(seeds, str):
        import yaml
        seeds = yaml.safe_load(seeds)
    if seeds is not None and not isinstance(seeds, list):
        seeds = [seeds]
    return C.with_seeds(cfg, seeds) if seeds else cfg


def config(params: dict, lam: float | None = None, **overrides) -> C.ExperimentConfig:
    """ExperimentConfig from a notebook's variables (pass `globals()`); other names are ignored.

    The `grid` is dropped: a stage notebook runs one config (the batch runner expands grids).
    """
    raw = {k: params[k] for k in FIELDS if k in params and params[k] is not None}
    raw["grid"] = {}
    if lam is not None:
        C.set_dotted(raw, "stage1.lam", lam)
    for k, v in overrides.items():
        C.set_dotted(raw, k, v)
    return C.from_dict(raw)


def stage_table(*stages) -> "pandas.DataFrame":
    """One row per finished stage: held-out losses on D_pre / D_post / D_ft, steps, seconds.

    L_ft is blank for stages 1-2: they are shared by pipelines with the same D_post, so their
    records hold no D_ft loss; L_ft at θ_post is step 0 of the stage-3 trajectory."""
    import pandas as pd
    # Stage 1 is shared by runs that differ only in data.val_tokens, so its losses may be on
    # another run's held-out set: those are left blank, with a note, rather than shown beside
    # stage 2's as if comparable.
    val = next((s.record.get("key", {}).get("val_tokens") for s in stages if s.stage == 2), None)
    rows = []
    for s in stages:
        rec = s.record
        losses, note = rec.get("losses", {}), ""
        if s.stage == 1 and val is not None and rec.get("val_tokens") not in (None, val):
            losses, note = {}, f"losses on another run's held-out set (val_tokens {rec['val_tokens']}, here {val})"
        elif s.stage == 1 and "L_post_val" not in losses and "L_pre_val" in losses:
            # λ = 0: stage 1 serves every D_post and records no D_post loss; stage 2 evaluates
            # θ_pre on this run's D_post at its step 0
            s2 = next((t.record for t in stages if t.stage == 2), {})
            start = (s2.get("trajectory") or [{}])[0]
            if start.get("step") == 0 and "L_post_val" in start:
                losses = dict(losses, L_post_val=start["L_post_val"])
                note = "L_post from stage 2's step-0 evaluation (a λ = 0 stage 1 is shared by every D_post)"
            else:
                note = "no L_post: a λ = 0 stage 1 is shared by every D_post (stage 2's step 0 evaluates it)"
        rows.append({"stage": s.stage, "dir": s.dir.name, "steps": rec.get("steps"),
                     "L_pre (C4)": losses.get("L_pre_val", rec.get("L_pre")),
                     "L_post": losses.get("L_post_val", rec.get("L_ret")),
                     "L_ft": losses.get("L_ft_val", rec.get("L_ft")),
                     "seconds": round(rec.get("seconds", 0.0), 1), "note": note})
    return pd.DataFrame(rows)


def mixture_table(stage) -> "pandas.DataFrame":
    """The stage's mixture audit: windows and tokens delivered per source vs requested."""
    import pandas as pd
    return pd.DataFrame([{"source": k, **v} for k, v in stage.record.get("mixture", {}).items()])


def early_stopping_chart(stage2):
    """Stage-2 validation loss on D_post against steps, the chosen (best) step marked."""
    import altair as alt
    import pandas as pd
    traj = pd.DataFrame(stage2.record.get("trajectory", []))
    if traj.empty:
        return alt.Chart(pd.DataFrame({"note": ["stage 2 was skipped (λ=1 under the split)"]})).mark_text().encode(text="note")
    line = alt.Chart(traj).mark_line(point=True).encode(
        x=alt.X("step:Q", title="stage-2 step"), y=alt.Y("L_post_val:Q", title="L(θ; D_post val)", scale=alt.Scale(zero=False)))
    best = stage2.record.get("best_step", -1)
    rule = alt.Chart(pd.DataFrame({"step": [best]})).mark_rule(color="purple", strokeDash=[4, 3]).encode(x="step:Q")
    return (line + rule).properties(title="Stage 2: early stopping on D_post validation loss", width=420, height=220)


def trajectory_chart(stage3s):
    """Stage-3 forgetting: L_ret, L_ft and L_pre along fine-tuning, one line per learning rate."""
    import altair as alt
    import pandas as pd
    rows = []
    for s in stage3s:
        for r in s.record["trajectory"]:
            for m in ("L_ret", "L_ft", "L_pre"):
                rows.append({"lr": f"{s.record['lr']:g}", "tokens": r["tokens"], "loss": m, "value": r[m]})
    df = pd.DataFrame(rows)
    return alt.Chart(df).mark_line(point=True).encode(
        x=alt.X("tokens:Q", title="stage-3 tokens"), y=alt.Y("value:Q", scale=alt.Scale(zero=False), title="held-out loss"),
        color=alt.Color("lr:N", title="stage-3 LR"), column=alt.Column("loss:N", title=None),
    ).properties(width=220, height=200, title="Stage 3: loss trajectories")


def run_grid(cfg: C.ExperimentConfig, root: Path, workers: int = 1) -> None:
    """Every run of the grid: in this kernel (workers=1) or in worker processes (eelib.batch)."""
    if workers <= 1:
        from eelib.pipeline import run_experiment
        run_experiment(cfg, root=root, progress=False)
        return
    from eelib.batch import execute
    summary = execute(cfg, executor="python", workers=workers, root=root)
    if summary["failed"]:
        print("failed runs:", summary["failed"], "- see", root / cfg.name / "summary.md")


def rows_table(rows: list[dict]) -> "pandas.DataFrame":
    import pandas as pd
    cols = ["run", "pipeline", "method", "lam", "post_tokens", "seed", "stage2_lr", "stage3_lr",
            "L_im", "L_ret", "L_ft", "L_pre"]
    df = pd.DataFrame(rows)
    return df[[c for c in cols if c in df]] if len(df) else df


def claims_table(verdicts: list[dict]):
    """The verdicts as a Markdown table, numbers in full (a DataFrame cut them at 50 characters)."""
    from IPython.display import Markdown
    cell = lambda s: str(s).replace("|", "\\|")
    lines = ["| claim | paper | verdict | numbers |", "|---|---|---|---|"]
    lines += [f"| {cell(c['id'] + '. ' + c['claim'])} | {cell(c['paper'])} | **{c['verdict']}** | {cell(c['reason'])} |"
              for c in verdicts]
    return Markdown("\n".join(lines))

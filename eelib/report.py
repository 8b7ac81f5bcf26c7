"""The claims report of one experiment: claims.md, claims.json and the figures, from its rows.

`eelib report <experiment>` (and the claims notebook) call `report`: it collects the finished
runs' rows (eelib.pipeline.collect), tests the claims on them (eelib.claims.evaluate), and writes
the Markdown and JSON reports atomically beside the runs, with what was pooled and what is missing.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from eelib.claims import evaluate
from eelib.claims_fig3 import FLAT_RATIO
from eelib.io import CorruptRecord, atomic_write_json, atomic_write_text
from eelib.stats import ALPHA, MIN_SEEDS


def pooled_markdown(pooled: dict, n_rows: int) -> list[str]:
    """The report's "Runs pooled here" section from pipeline.pooled_runs."""
    from eelib.pipeline import HOW_FIELDS, ROW_FIELDS, spread_line, unrecorded
    spread, by_design = pooled["spread"], set(pooled["by_design"])
    lines = ["", "## Runs pooled here", ""]
    if not n_rows:
        return lines + ["No finished runs."]
    if not spread and not pooled["duplicates"]:
        return lines + ["All finished runs were made by the same config."]
    rec = [f for f in spread if f in ROW_FIELDS]
    how = [f for f in spread if f in HOW_FIELDS]
    by_grid = [f for f in spread if f in by_design and f not in ROW_FIELDS and f not in HOW_FIELDS]
    odd = unrecorded(spread, by_design)
    if rec:
        lines.append("Recorded in each row (so the claims keep these apart or test them): "
                     + ", ".join(f"`{f}` ({len(spread[f])} values)" for f in rec) + ".")
    if by_grid:
        lines.append("Swept by the grid that made the runs but not recorded in the rows, so pooled on one "
                     "frontier as a hyperparameter grid is (e.g. Table 9's LoRA dropout): "
                     + ", ".join(f"`{f}` ({len(spread[f])} values)" for f in by_grid) + ".")
    if how:
        lines.append("How runs executed (same numbers up to floating-point order): "
                     + ", ".join(f"`{f}`" for f in how) + ".")
    if odd:
        lines += ["", "**Differ beyond what the grids that made these runs swept, and not recorded in the rows**: "
                  "runs that differ only here share a frontier, so the frontiers mix configs (say, a stage-3 "
                  "budget changed between runs an older params file made under other names). Move the odd runs "
                  "out of `runs/` or rename the experiment. " + spread_line(odd, limit=4) + "."]
    for group in pooled["duplicates"]:
        lines += ["", f"Duplicates: runs {', '.join(f'`{r}`' for r in group)} were made by the same config "
                  "(e.g. `--seeds` renamed a grid's runs), so results.jsonl holds their rows twice; the tests "
                  "above work per seed (frontiers, per-seed means), so equal rows change nothing. Move all but "
                  "one out of `runs/` to keep one."]
    return lines


def to_markdown(claims: list[dict], experiment: str, n_rows: int, pooled: dict | None = None,
                unfinished: list[str] | None = None, stale: dict[str, str] | None = None,
                unchecked: dict[str, str] | None = None) -> str:
    lines = [f"# Claims report: `{experiment}`", "",
             f"Computed by `eelib.claims` from {n_rows} row(s) of the experiment's results.jsonl (beside this report). "
             f"Verdicts: **holds** = the effect in the claimed direction, one-sided paired t-test across "
             f"≥ {MIN_SEEDS} seeds at p < {ALPHA:g}; **does not hold** = significantly the opposite way; "
             "**not shown** = tested, neither direction significant (3 seeds have little power); "
             "**inconclusive** = not testable (reason given). Claim c also does not hold when L_im moves by more "
             f"than {FLAT_RATIO:.2f} of ΔL_ret (a ratio of means). Each pipeline and |D_post| (for c and d also "
             "each stage-2 LR and batch) is tested on its own. "
             "Losses are nats/token; the paper's scale (135M/1B) differs from a CPU run's, so compare signs, "
             "not magnitudes.", "",
             "| claim | paper | verdict | numbers |", "|---|---|---|---|"]
    for c in claims:
        lines.append(f"| {c['id']}. {c['claim']} | {c['paper']} | **{c['verdict']}** | {c['reason']} |")
    lines += ["", "## Tests used", ""]
    for c in claims:
        lines.append(f"* **{c['id']}**: {c['test']}")
        for p in c.get("parts", []):
            if "id" in p:
                lines.append(f"  * {p.get('part', p['id'])}: **{p['verdict']}**: {p['reason']}")
    if pooled is not None:
        lines += pooled_markdown(pooled, n_rows)
    if unfinished:  # their absence changes what is tested (e.g. "mixed" read at a smaller λ)
        lines += ["", "## Runs without results", "",
                  f"{len(unfinished)} run director{'y' if len(unfinished) == 1 else 'ies'} under runs/ "
                  "hold no result.json (unfinished, failed, or stopped by the NaN guard), so the claims above "
                  "were tested without them: " + ", ".join(f"`{r}`" for r in unfinished[:20])
                  + (f" and {len(unfinished) - 20} more" if len(unfinished) > 20 else "")
                  + ". Rerun the params file to finish them (finished runs are reused)."]
    if stale:  # finished, but by stages this eelib keys otherwise: never pooled with today's rows
        lines += ["", "## Runs left out: computed by stages keyed otherwise now", "",
                  f"{len(stale)} finished run{'' if len(stale) == 1 else 's'} came from stages this eelib keys "
                  "otherwise (a rule, a model preset or a data marker changed since, or a local tokenizer or data file "
                  "they read was edited in place), so their rows are not in "
                  "results.jsonl nor in the claims above: " + ", ".join(f"`{r}`" for r in list(stale)[:20])
                  + (f" and {len(stale) - 20} more" if len(stale) > 20 else "")
                  + ". Rerun the params file under a new experiment name (`--set name=...`) to recompute them. "
                  "First: " + next(iter(stale.values()))]
    if unchecked:  # pooled as before, but nobody could confirm their stages are today's
        lines += ["", "## Runs pooled unchecked", "",
                  f"{len(unchecked)} finished run{'' if len(unchecked) == 1 else 's'} could not be checked against "
                  "today's stage keys, because the stored config does not load here (moved local files, a field "
                  "of an older eelib, an unreadable tokenizer); their rows are in the claims above: "
                  + "; ".join(f"`{r}` ({why})" for r, why in list(unchecked.items())[:10])
                  + (f" and {len(unchecked) - 10} more" if len(unchecked) > 10 else "")
                  + ". Restore what the config names to check them, or move them out of `runs/`."]
    return "\n".join(lines) + "\n"


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (float, np.floating)):
        f = float(o)
        return None if math.isnan(f) else (str(f) if math.isinf(f) else f)
    return o


def write(claims: list[dict], out_dir: str | Path, experiment: str, n_rows: int,
          pooled: dict | None = None, unfinished: list[str] | None = None,
          stale: dict[str, str] | None = None, unchecked: dict[str, str] | None = None) -> dict[str, Path]:
    """claims.md and claims.json in out_dir, written atomically; returns their paths.
    `pooled`: pipeline.pooled_runs of the runs, reported when given; `unfinished`: run
    directories without a result.json; `stale`, `unchecked`: pipeline.run_checks."""
    out_dir = Path(out_dir)
    md, js = out_dir / "claims.md", out_dir / "claims.json"
    atomic_write_text(md, to_markdown(claims, experiment, n_rows, pooled, unfinished, stale, unchecked))
    extra = {} if pooled is None else {"pooled_runs": pooled}
    if unfinished is not None:
        extra["unfinished_runs"] = unfinished
    if stale is not None:
        extra["stale_runs"] = stale
    if unchecked is not None:
        extra["unchecked_runs"] = unchecked
    atomic_write_json(js, {"experiment": experiment, "n_rows": n_rows, "min_seeds": MIN_SEEDS,
                           "alpha": ALPHA, "flat_ratio": FLAT_RATIO, "claims": _jsonable(claims), **extra})
    return {"claims_md": md, "claims_json": js}


def report(experiment: str, root: str | Path = "outputs", figures: bool = True,
           trajectory: bool = True) -> dict[str, Path]:
    """`eelib report <experiment>`: collect rows, write claims.md/.json and the figures.

    Returns {name: path} of everything written under <root>/<experiment>/ (figures in figures/).
    """
    from eelib.pipeline import collect, pooled_runs, run_checks
    root = Path(root)
    if not (root / experiment / "runs").is_dir():
        raise FileNotFoundError(f"no runs under {root / experiment}: run its params file first "
                                f"(`eelib run <params.yaml> --out {root}`), or name the outputs root it "
                                "was run with (--out, or $EELIB_OUTPUTS)")
    checks = run_checks(experiment, root)
    rows = collect(experiment, root, checks)  # stale runs' rows left out
    claims = evaluate(rows, trajectory=trajectory)
    unfinished = sorted(d.name for d in (root / experiment / "runs").iterdir()
                        if d.is_dir() and not (d / "result.json").exists())
    paths = write(claims, root / experiment, experiment, len(rows), pooled_runs(experiment, root, checks["stale"]),
                  unfinished, checks["stale"], checks["unchecked"])
    if figures and rows:
        from eelib import figures as FG
        paths |= FG.save_all(rows, root / experiment / "figures", trajectory=trajectory)
    return paths


def run_report(args) -> int:
    """Write the report of parsed `cli.report_arguments` args; print it. Exit status: 0, or 2 without runs."""
    try:
        paths = report(args.experiment, args.root, figures=not args.no_figures, trajectory=not args.final_only)
    except FileNotFoundError as e:
        print(f"eelib: error: {e}", file=sys.stderr)
        return 2
    except CorruptRecord as e:
        print(f"eelib: error: {e}", file=sys.stderr)
        return 1
    print(paths["claims_md"].read_text())
    for k, p in paths.items():
        print(f"{k}: {p}")
    return 0


def main_report(argv: list[str] | None = None) -> int:
    """CLI hook: `eelib report <experiment> [--root outputs] [--no-figures] [--final-only]`."""
    import argparse
    from eelib.cli import report_arguments
    ap = argparse.ArgumentParser(prog="eelib report", description=report.__doc__)
    report_arguments(ap)
    return run_report(ap.parse_args(argv))

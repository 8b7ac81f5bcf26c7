"""Command line: `eelib run|batch|report ...` (also `python -m eelib ...`). Thin: parses, calls eelib."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml


# The outputs root when --out is not given: $EELIB_OUTPUTS, the notebooks' root too (eelib.notebook).
OUT = os.environ.get("EELIB_OUTPUTS") or "outputs"
OUT_HELP = f"outputs root (default: $EELIB_OUTPUTS if set, else outputs; now {OUT})"


def report_arguments(ap) -> None:
    """`eelib report`'s arguments: this subcommand's, and eelib.report.main_report's own parser."""
    ap.add_argument("experiment")
    ap.add_argument("--root", "--out", dest="root", default=OUT, help=OUT_HELP)
    ap.add_argument("--no-figures", action="store_true", help="the claims report only")
    ap.add_argument("--final-only", action="store_true", help="frontiers from final points only")


def _overrides(pairs: list[str]) -> dict:
    from eelib.config import ConfigError
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise ConfigError(f"--set {p!r}: use field=value, e.g. --set stage1.lam=0.5")
        k, v = p.split("=", 1)
        if not k or not all(k.split(".")):
            raise ConfigError(f"--set {p!r}: {k!r} is not a field name; use field=value, e.g. --set stage1.lam=0.5")
        try:
            out[k] = yaml.safe_load(v)
        except yaml.YAMLError:
            raise ConfigError(f"--set {k}: {v!r} is not valid YAML; quote or fix the value") from None
    return out


def _print_table(rows: list[dict]) -> None:
    if not rows:
        print("(no finished runs)")
        return
    cols = ["run", "method", "lam", "seed", "stage3_lr", "L_im", "L_ret", "L_ft", "L_pre"]
    print("  ".join(f"{c:>10}" for c in cols))
    for r in rows:
        print("  ".join(f"{r[c]:>10.4f}" if isinstance(r[c], float) and c.startswith("L_")
                        else f"{str(r[c]):>10}" for c in cols))


def _report(experiment: str, out: str) -> None:
    """Figures + claims report for an experiment (issue 4)."""
    from eelib.report import report
    paths = report(experiment, root=out)
    print(f"report: {paths}")


def _load(path: str, sets: list[str], seeds: list[int] | None, models: bool = True):
    """A params file with --set overrides and, with --seeds, a seed axis added to its grid."""
    from eelib import config as C
    over = _overrides(sets)
    if seeds and "seed" in over:
        raise C.ConfigError("--set seed: --seeds sets the seed axis, so this value would be ignored; "
                            "give the seeds with --seeds only")
    cfg = C.load(path, over)
    return C.with_seeds(cfg, seeds, models=models) if seeds else cfg


def _plan(args) -> int:
    from eelib import config as C, plan
    try:
        cfgs = [_load(path, [], args.seeds, models=False) for path in args.params]
        tok_s, source, warmup_s = args.tok_s, "", 0.0
        if args.throughput:
            try:
                tok_s, source, warmup_s = plan.tok_s_from_throughput(args.throughput, args.mode)
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                raise C.ConfigError(f"--throughput {args.throughput}: {type(e).__name__}: {e}; pass the JSON "
                                    "that benchmarks/throughput.py --json wrote") from None
        if tok_s is not None and tok_s <= 0:
            raise C.ConfigError("--tok-s: must be > 0 (training tokens per second)")
        if tok_s is not None and not tok_s < float("inf"):  # nan printed nan GPU-hours, inf 0.0
            raise C.ConfigError(f"--tok-s: must be a finite number > 0 (training tokens per second), got {tok_s}")
        if args.json:
            _check_plan_json(args.json, args.params)
        stage_s = warmup_s if args.stage_s is None else args.stage_s
        if not 0 <= stage_s < float("inf"):
            raise C.ConfigError("--stage-s: must be a number >= 0 (fixed seconds per stage, e.g. compile warm-up)")
    except (C.ConfigError, OSError, ValueError, KeyError) as e:
        print(f"eelib: error: {e}", file=sys.stderr)
        return 2
    p = plan.plan(cfgs, tok_s, stage_s)
    print(plan.format_plan(p, source))
    if args.json:
        from eelib.io import atomic_write_json
        try:
            atomic_write_json(Path(args.json), dict(p, source=source))
        except OSError as e:
            print(f"eelib: error: --json {args.json}: {e}", file=sys.stderr)
            return 1
    return 0


def _check_plan_json(path: str, params: list[str]) -> None:
    """`plan --json X` overwrites X: never a params file (`--json params/*.yaml` takes the first
    file for the output), a directory, or a file that is not an earlier plan."""
    from eelib import config as C
    j = Path(path)
    if j.suffix in (".yaml", ".yml") or any(j.resolve() == Path(p).resolve() for p in params):
        raise C.ConfigError(f"--json {path}: that is a params file, which --json would overwrite; --json takes "
                            "the file to write the plan to: --json plan.json params/135m/*.yaml")
    if j.is_dir():
        raise C.ConfigError(f"--json {path}: is a directory; give a file path, e.g. --json plan.json")
    if j.exists():
        try:
            import json
            earlier = json.loads(j.read_text())
        except (ValueError, UnicodeDecodeError, OSError):
            earlier = None
        if not (isinstance(earlier, dict) and "experiments" in earlier):
            raise C.ConfigError(f"--json {path}: exists and is not an earlier plan; it is never overwritten, "
                                "so give a new file name")


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # report, plan: nothing to resume (run and batch say more, below)
        if os.environ.get("EELIB_DEBUG"):
            raise
        print("eelib: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="eelib", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_run = sub.add_parser("run", help="run a params file's pipelines in this process")
    p_run.add_argument("params")
    p_run.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    p_run.add_argument("--out", default=OUT, help=OUT_HELP)
    p_run.add_argument("--no-progress", action="store_true")
    p_run.add_argument("--workers", type=int, default=1,
                       help="runs at once, each in its own process (default 1: in this process)")
    p_bat = sub.add_parser("batch", help="run the grid through the stage notebooks with papermill")
    p_bat.add_argument("params")
    p_bat.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    p_bat.add_argument("--out", default=OUT, help=OUT_HELP)
    p_bat.add_argument("--workers", type=int, default=None, help="default: one per GPU, else one per core")
    p_bat.add_argument("--executor", choices=["papermill", "python", "ray"], default="papermill",
                       help="ray: each run is a Ray task (pip install 'eelib[ray]'; docs/scaling.md)")
    p_bat.add_argument("--no-report", action="store_true", help="skip the figures and claims report")
    p_chk = sub.add_parser("check", help="validate a params file and list its runs; writes nothing")
    p_chk.add_argument("params")
    p_chk.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    for p in (p_run, p_bat, p_chk):
        p.add_argument("--seeds", type=int, nargs="+", default=None,
                       help="the grid's seed axis: added, or replacing a seed axis it has (e.g. --seeds 0 1 2)")
    report_arguments(sub.add_parser("report", help="figures + claims report for an experiment's results"))
    p_one = sub.add_parser("run-one", help="one run from a run's stored config.yaml: what batch workers, torchrun and accelerate launch (docs/scaling.md)")
    p_one.add_argument("params")
    # --run-name: torchrun's own parser would take a bare --run as an abbreviation of --run-path.
    p_one.add_argument("--run", "--run-name", dest="run", required=True)
    p_one.add_argument("--out", default=OUT)
    p_one.add_argument("--set", action="append", default=[])
    p_pln = sub.add_parser("plan", help="tokens per stage and GPU-hours of params files; writes nothing")
    p_pln.add_argument("params", nargs="+")
    p_pln.add_argument("--seeds", type=int, nargs="+", default=None)
    speed = p_pln.add_mutually_exclusive_group()
    speed.add_argument("--tok-s", type=float, default=None, help="training tokens/s to assume")
    speed.add_argument("--throughput", default=None, metavar="JSON",
                       help="take tokens/s from a benchmarks/throughput.py --json file")
    p_pln.add_argument("--mode", default="", help="with --throughput: which mode (default: first ok)")
    p_pln.add_argument("--stage-s", type=float, default=None, metavar="S",
                       help="fixed seconds per distinct stage, e.g. compile warm-up "
                            "(default: the --throughput file's warm-up, else 0)")
    p_pln.add_argument("--json", default=None, help="also write the plan as JSON here")
    args = ap.parse_args(argv)

    from eelib import config as C
    if args.cmd == "plan":
        return _plan(args)
    if args.cmd == "report":
        from eelib.report import run_report
        return run_report(args)
    try:
        if getattr(args, "workers", None) is not None and args.workers < 1:
            raise C.ConfigError(f"--workers: must be >= 1 (runs at once), got {args.workers}")
        cfg = _load(args.params, args.set, getattr(args, "seeds", None))
        out = getattr(args, "out", None)
        if out is not None and args.cmd != "check" and (Path(out).exists() and not Path(out).is_dir()
                                                        or (Path(out) / cfg.name).is_file()):
            raise C.ConfigError(f"--out {out}: the outputs root must be a directory (it holds "
                                f"<experiment>/runs, stage1, ...), and {out} or {Path(out) / cfg.name} is a file")
        if args.cmd == "check":
            from eelib.pipeline import grid_runs
            runs = grid_runs(cfg)
            print(f"{args.params}: valid; experiment {cfg.name!r}, {len(runs)} run(s) × "
                  f"{len(cfg.stage3.lrs)} stage-3 LR(s)")
            for name, _ in runs:
                print(f"  {name}")
            return 0
        if args.cmd == "run-one":
            if cfg.grid:  # it would run the base config under a grid run's name, silently
                raise C.ConfigError(
                    f"grid: run-one runs one config, and {args.params} sweeps {sorted(cfg.grid)}; pass a run's "
                    "stored outputs/<exp>/runs/<run>/config.yaml (eelib run/batch write it), or set the "
                    "run's values and drop the grid: --set grid={} --set stage1.lam=0.5 ...")
            from eelib import distributed, pipeline
            # torchrun / accelerate launch: one DDP group (no-op alone); gloo for a device: cpu
            # run even on a GPU host (nccl cannot reduce CPU tensors)
            distributed.init_from_env(backend="gloo" if cfg.device == "cpu" else None)
            try:
                pipeline.run_pipeline(cfg, args.run, root=Path(args.out), progress=False,
                                      swept=list(cfg.grid))  # under batch, swept.json is already written
            finally:
                distributed.shutdown()
            return 0
        if args.cmd == "run" and args.workers == 1:
            from eelib import pipeline
            rows = pipeline.run_experiment(cfg, root=Path(args.out), progress=not args.no_progress)
            _print_table(rows)
            print(f"results: {Path(args.out) / cfg.name / 'results.jsonl'}")
            return 0
        if args.cmd in ("run", "batch"):
            from eelib import batch, pipeline
            executor = "python" if args.cmd == "run" else args.executor
            summary = batch.execute(cfg, executor=executor, workers=args.workers, root=args.out)
            rows = pipeline.read_results(cfg.name, Path(args.out))  # what execute just collected
            _print_table(rows)
            if args.cmd == "batch" and not args.no_report:
                _report(cfg.name, args.out)
            for r in summary["runs"]:
                if r["status"] == "failed":
                    print(f"FAILED {r['run']}: {r['error']}", file=sys.stderr)
            print(f"results: {Path(args.out) / cfg.name / 'results.jsonl'}; "
                  f"summary: {Path(args.out) / cfg.name / 'summary.md'}")
            return 1 if summary["failed"] else 0
    except C.ConfigError as e:
        print(f"eelib: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: nothing finished is lost (atomic writes), so no traceback
        if os.environ.get("EELIB_DEBUG"):
            raise
        print("eelib: interrupted; the same command resumes from each stage's last checkpoint "
              "(finished stages and runs are kept)", file=sys.stderr)
        return 130
    except (FloatingPointError, OSError, RuntimeError) as e:  # NaN guard, disk, run-dir conflicts
        if os.environ.get("EELIB_DEBUG"):
            raise
        print(f"eelib: error: {e} (set EELIB_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    return 1


if __name__ == "__main__":
    sys.exit(main())

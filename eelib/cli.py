"""Command line: `eelib run|batch|report ...` (also `python -m eelib ...`). Thin: parses, calls eelib."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml


def _overrides(pairs: list[str]) -> dict:
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise SystemExit(f"eelib: error: --set {p!r}: use field=value, e.g. --set stage1.lam=0.5")
        k, v = p.split("=", 1)
        out[k] = yaml.safe_load(v)
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="eelib", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_run = sub.add_parser("run", help="run a params file's pipelines in this process")
    p_run.add_argument("params")
    p_run.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    p_run.add_argument("--out", default="outputs", help="outputs root (default: outputs)")
    p_run.add_argument("--no-progress", action="store_true")
    p_chk = sub.add_parser("check", help="validate a params file and list its runs; writes nothing")
    p_chk.add_argument("params")
    p_chk.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    args = ap.parse_args(argv)

    from eelib import config as C
    try:
        cfg = C.load(args.params, _overrides(args.set))
        if args.cmd == "check":
            from eelib.pipeline import grid_runs
            runs = grid_runs(cfg)
            print(f"{args.params}: valid; experiment {cfg.name!r}, {len(runs)} run(s) × "
                  f"{len(cfg.stage3.lrs)} stage-3 LR(s)")
            for name, _ in runs:
                print(f"  {name}")
            return 0
        if args.cmd == "run":
            from eelib import pipeline, stages
            stages.OUTPUTS = Path(args.out)
            rows = pipeline.run_experiment(cfg, progress=not args.no_progress)
            _print_table(rows)
            print(f"results: {Path(args.out) / cfg.name / 'results.jsonl'}")
            return 0
    except C.ConfigError as e:
        print(f"eelib: error: {e}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())

"""The bf16 residual stream's effect on the paper's losses, measured on CPU (issue 5).

    python benchmarks/stream_numerics.py params/quick.yaml --set "grid.stage1.lam=[1.0]" --seeds 0 1 2 --json out.json

Runs one config's three stages twice under bf16 autocast, the policy CUDA runs train with
(`train._autocast` is pointed at CPU bf16 autocast for this process), once with `residual_stream:
fp32` and once with `bf16`, each into its own outputs root (the field keys no stage, so one root
would hand the second run the first one's stages), and prints L_im, L_ret, L_ft, L_pre of both and
their differences. A config with a grid runs its first combination. With several `--seeds` it runs
both streams per seed and sets the paired difference (bf16 − fp32, mean ± SE, two-sided t-test)
beside the fp32 stream's seed-to-seed spread: is the option's effect on the losses systematic, and
is it small next to seed noise (the decision log's condition for switching the params files)? eelib's own CPU runs use no
autocast, where the two streams give the same numbers bit for bit (tests/test_precision.py); this
script is how the option's effect on the losses is measured without a GPU, at CPU sizes only.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from eelib import config as C, pipeline, train  # noqa: E402
from eelib.stats import fmt, paired_summary  # noqa: E402

LOSSES = ("L_im", "L_ret", "L_ft", "L_pre")


def run(cfg: C.ExperimentConfig, work: Path) -> dict:
    """{stream: rows} for both streams, under CPU bf16 autocast."""
    cpu_autocast = train._autocast
    train._autocast = lambda device: torch.autocast(device.type, dtype=torch.bfloat16)
    try:
        out = {}
        for stream in C.RESIDUAL_STREAMS:
            c = C.from_dict({**C.to_dict(cfg), "residual_stream": stream, "device": "cpu", "grid": {}})
            out[stream] = pipeline.run_pipeline(c, "r", root=work / stream, progress=False)
        return out
    finally:
        train._autocast = cpu_autocast


def compare(rows: dict) -> list[dict]:
    """One row per seed and stage-3 LR: both streams' losses and their differences."""
    table = []
    for seed, by_stream in rows.items():
        for a, b in zip(by_stream["fp32"], by_stream["bf16"]):
            table.append({"seed": seed, "stage3_lr": a["stage3_lr"], **{f"{k}_fp32": a[k] for k in LOSSES},
                          **{f"{k}_bf16": b[k] for k in LOSSES}, **{f"d{k}": b[k] - a[k] for k in LOSSES}})
    return table


def summarize(table: list[dict]) -> list[dict]:
    """Per stage-3 LR and loss: the paired difference over seeds and the fp32 stream's seed std."""
    out = []
    for lr in dict.fromkeys(r["stage3_lr"] for r in table):
        rs = [r for r in table if r["stage3_lr"] == lr]
        for k in LOSSES:
            s = paired_summary([r[f"d{k}"] for r in rs])
            p2 = None if s.get("p_t") is None else min(1.0, 2 * min(s["p_t"], 1 - s["p_t"]))
            fp32 = np.array([r[f"{k}_fp32"] for r in rs])
            out.append({"stage3_lr": lr, "loss": k, "n": s["n"], "mean_diff": s.get("mean"), "se": s.get("se"),
                        "t": s.get("t"), "p_two_sided": p2,
                        "seed_std_fp32": float(fp32.std(ddof=1)) if len(fp32) > 1 else None})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("params", help="a params YAML file (its grid's first combination runs)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="dotted override, as eelib's")
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="run both streams at each of these seeds (default: the config's seed)")
    ap.add_argument("--work", default=None, help="outputs roots go here (default: a temporary folder)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    from eelib.cli import _overrides  # the CLI's --set, its errors included
    try:
        cfg = C.load(args.params, _overrides(args.set))
    except C.ConfigError as e:  # one line, as eelib's CLI gives it
        print(f"stream_numerics: error: {e}", file=sys.stderr)
        return 2
    cfg = C.expand(cfg)[0] if cfg.grid else cfg
    seeds = args.seeds if args.seeds is not None else [cfg.seed]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        # one seed keeps the layout of earlier runs (WORK/STREAM); several get WORK/seedS/STREAM
        rows = {s: run(C.from_dict({**C.to_dict(cfg), "seed": s}), work / f"seed{s}" if len(seeds) > 1 else work)
                for s in seeds}
    table, summary = compare(rows), None
    print(f"{cfg.name} ({cfg.model}, λ={cfg.stage1.lam:g}), CPU bf16 autocast: bf16 stream - fp32 stream")
    print(f"{'seed':>5}{'stage3_lr':>10}" + "".join(f"{k + ' fp32':>12}{'d' + k:>10}" for k in LOSSES))
    for r in table:
        print(f"{r['seed']:>5}{r['stage3_lr']:>10g}" + "".join(f"{r[k + '_fp32']:>12.4f}{r['d' + k]:>+10.4f}" for k in LOSSES))
    if len(seeds) > 1:
        summary = summarize(table)
        print(f"\nover {len(seeds)} seeds: mean difference ± SE, two-sided paired t-test, and the fp32 stream's seed std")
        for s in summary:
            print(f"  lr {s['stage3_lr']:g} {s['loss']:<6} {fmt(s['mean_diff']):>8} ± {fmt(s['se'])}"
                  f"  t = {fmt(s['t'], 2)}, p = {fmt(s['p_two_sided'], 3)}   seed std {fmt(s['seed_std_fp32'])}")
    if args.json:
        Path(args.json).write_text(json.dumps({"params": args.params, "set": args.set, "model": cfg.model,
                                               "lam": cfg.stage1.lam, "seeds": seeds, "torch": torch.__version__,
                                               "rows": table, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

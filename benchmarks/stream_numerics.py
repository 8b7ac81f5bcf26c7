"""The bf16 residual stream's effect on the paper's losses, measured on CPU (issue 5).

    python benchmarks/stream_numerics.py params/quick.yaml --set "grid.stage1.lam=[1.0]" --json out.json

Runs one config's three stages twice under bf16 autocast, the policy CUDA runs train with
(`train._autocast` is pointed at CPU bf16 autocast for this process), once with `residual_stream:
fp32` and once with `bf16`, each into its own outputs root (the field keys no stage, so one root
would hand the second run the first one's stages), and prints L_im, L_ret, L_ft, L_pre of both and
their differences. A config with a grid runs its first combination. eelib's own CPU runs use no
autocast, where the two streams give the same numbers bit for bit (tests/test_precision.py); this
script is how the option's effect on the losses is measured without a GPU, at CPU sizes only.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from eelib import config as C, pipeline, train  # noqa: E402

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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("params", help="a params YAML file (its grid's first combination runs)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="dotted override, as eelib's")
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
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(cfg, Path(args.work or tmp))
    table = []
    for a, b in zip(rows["fp32"], rows["bf16"]):
        table.append({"stage3_lr": a["stage3_lr"], **{f"{k}_fp32": a[k] for k in LOSSES},
                      **{f"{k}_bf16": b[k] for k in LOSSES}, **{f"d{k}": b[k] - a[k] for k in LOSSES}})
    print(f"{cfg.name} ({cfg.model}, λ={cfg.stage1.lam:g}), CPU bf16 autocast: bf16 stream - fp32 stream")
    print(f"{'stage3_lr':>10}" + "".join(f"{k + ' fp32':>12}{'d' + k:>10}" for k in LOSSES))
    for r in table:
        print(f"{r['stage3_lr']:>10g}" + "".join(f"{r[k + '_fp32']:>12.4f}{r['d' + k]:>+10.4f}" for k in LOSSES))
    if args.json:
        Path(args.json).write_text(json.dumps({"params": args.params, "set": args.set, "model": cfg.model,
                                               "lam": cfg.stage1.lam, "torch": torch.__version__,
                                               "rows": table}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

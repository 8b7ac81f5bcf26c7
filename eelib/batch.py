"""Batch execution of an experiment grid: each run in its own worker process, N at a time.

    eelib batch params/quick.yaml --workers 2             # stage notebooks through papermill
    eelib run   params/quick.yaml --workers 2             # same runs, plain python, no notebooks

Each run is a subprocess, so one failure (a traceback, a NaN, a kill) stays in its run: it keeps
its log (and, for papermill, the executed notebook with the traceback), is listed in the summary,
and the other runs go on. Runs are disjoint directories claimed by the parent before any worker
starts; stages shared by several runs (e.g. one stage-1 checkpoint under many stage-2 variants)
are built once under a file lock and reused. Finished runs are reused, not rerun.

With executor="ray" each run is a Ray task (one GPU, or one CPU where the cluster has no GPUs)
that runs the same `python -m eelib run-one` command on whichever node Ray picks; the outputs
root must then be on a filesystem every node shares (docs/scaling.md). Install: eelib[ray].

With papermill each run executes notebooks/pretrain.ipynb → posttrain.ipynb → finetune.ipynb
with the run's resolved config (`-f config.yaml`) in the current environment's `python3` kernel;
the executed copies land in outputs/<experiment>/runs/<run>/.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

from eelib import config as C
from eelib.io import atomic_write_json, atomic_write_text
from eelib.pipeline import claim_run_dir, collect, grid_runs, release_run, run_checks, warn_unswept

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
STAGE_NOTEBOOKS = ("pretrain.ipynb", "posttrain.ipynb", "finetune.ipynb")


# Where no GPU driver is installed torch would count none: not importing it spares the batch's
# parent, which never trains, ≈ 2 s (NVIDIA's driver, or ROCm's /dev/kfd, which torch.cuda also serves).
GPU_DRIVER_PATHS = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/kfd")


def _gpu_count() -> int:
    if not any(os.path.exists(p) for p in GPU_DRIVER_PATHS):
        return 0
    try:
        import torch
        return torch.cuda.device_count()
    except Exception:
        return 0


def default_workers() -> int:
    """One per GPU when GPUs are visible; else one per core (each run then uses one thread)."""
    n_gpu = _gpu_count()
    if n_gpu:
        return n_gpu
    return max(1, os.cpu_count() or 1)


def _commands(executor: str, rdir: Path, run: str, root: Path) -> list[list[str]]:
    cfg_file = str(rdir / "config.yaml")
    if executor in ("python", "ray"):
        return [[sys.executable, "-m", "eelib", "run-one", cfg_file, "--run", run, "--out", str(root)]]
    if executor != "papermill":
        raise ValueError(f"executor must be python, papermill or ray, got {executor!r}")
    cmds = []
    for nb in STAGE_NOTEBOOKS:
        cmds.append([sys.executable, "-m", "papermill", str(NOTEBOOKS / nb), str(rdir / nb),
                     "-f", cfg_file, "-p", "run", run, "-p", "out_dir", str(root),
                     "--cwd", os.getcwd(), "--no-progress-bar", "--log-level", "WARNING"])
    return cmds


# Kernels started at the same moment by parallel runs can race for the same TCP ports
# (jupyter_client picks free ports, closes them, then the kernel binds them; papermill#511): the
# kernel dies or never answers and papermill fails before running a cell. That is a failure to
# start, not to compute, and stages resume, so such a notebook is retried. A failure inside a
# cell (a traceback, a NaN, a kill mid-stage) is never retried.
KERNEL_START_TRIES = 3


def _kernel_never_ran(executed_nb: Path, since: float) -> bool:
    """True when papermill wrote the output notebook (at or after `since`) but no code cell of it
    ever executed. An older file is a previous attempt's: papermill then failed before the
    kernel (bad arguments), which is not a race."""
    try:
        if executed_nb.stat().st_mtime < since:
            return False
        cells = json.loads(executed_nb.read_text())["cells"]
    except (OSError, ValueError, KeyError):
        return False
    return all(c.get("execution_count") is None for c in cells if c.get("cell_type") == "code")


# The batch's live worker processes, and whether it is stopping (Ctrl-C): an interrupt that
# reached the batch alone (kill -INT <pid>, not the terminal's Ctrl-C, which every process of the
# group gets) is passed on to them, and no further notebook or run starts.
_CHILDREN: set[subprocess.Popen] = set()
_RAY_REFS: set = set()  # the Ray tasks running (executor="ray"), cancelled the same way
_STOPPING = threading.Event()
INTERRUPT_GRACE_S = 10  # time the workers get to stop on a Ctrl-C of their own before it is passed on


def _call(cmd: list[str], **kw) -> int:
    if _STOPPING.is_set():
        return -signal.SIGINT
    proc = subprocess.Popen(cmd, **kw)
    _CHILDREN.add(proc)
    try:
        return proc.wait()
    except KeyboardInterrupt:  # where this runs in a main thread (a cancelled Ray task): pass it on
        proc.send_signal(signal.SIGINT)
        proc.wait()
        raise
    finally:
        _CHILDREN.discard(proc)


def _interrupt_workers(ray=None) -> None:
    _STOPPING.set()
    deadline = time.time() + INTERRUPT_GRACE_S
    while time.time() < deadline and any(p.poll() is None for p in list(_CHILDREN)):
        time.sleep(0.1)
    for proc in list(_CHILDREN):
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    for ref in list(_RAY_REFS):  # a KeyboardInterrupt in the task, as Ctrl-C gives a local worker
        ray.cancel(ref)


def _ray_call(ray, remote, *args):
    if _STOPPING.is_set():
        raise KeyboardInterrupt
    ref = remote.remote(*args)
    _RAY_REFS.add(ref)
    try:
        return ray.get(ref)
    finally:
        _RAY_REFS.discard(ref)


def _run_one(executor: str, run: str, rdir: Path, root: Path, env: dict, cwd: str | None = None) -> dict:
    t0 = time.time()
    log = rdir / "log.txt"
    status, error = "done", None
    with open(log, "a") as f:
        for cmd in _commands(executor, rdir, run, root):
            name = Path(cmd[3]).name if executor == "papermill" else "run-one"
            for attempt in range(1, KERNEL_START_TRIES + 1):
                f.write(f"$ {' '.join(cmd)}\n")
                f.flush()
                started = time.time() - 1  # (file times can be coarser than time.time())
                rc = _call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd)
                # papermill exits 1 on an exception; a signal (Ctrl-C, kill) is never retried
                unstarted = rc == 1 and executor == "papermill" and _kernel_never_ran(Path(cmd[4]), started)
                if not unstarted:
                    break
                f.write(f"[eelib batch] the kernel of {name} failed before running a cell "
                        f"(try {attempt} of {KERNEL_START_TRIES})\n")
                f.flush()
            if rc != 0:
                status = "failed"
                error = (f"the kernel of {name} failed to start {KERNEL_START_TRIES} times" if unstarted
                         else f"exit {rc} in {name}") + f"; see {log}"
                break
    if status == "done" and not (rdir / "result.json").exists():
        status, error = "failed", f"finished without result.json; see {log}"
    return {"run": run, "status": status, "seconds": round(time.time() - t0, 1), "log": str(log),
            "error": error}


# Driver environment a Ray task passes on to its run (the worker's own env supplies the rest,
# including the CUDA_VISIBLE_DEVICES Ray assigns).
_RAY_ENV_PREFIXES = ("EELIB_", "HF_", "TRANSFORMERS_", "TORCHINDUCTOR_", "PYTHONPATH", "OMP_NUM_THREADS")


def _ray_task():
    """`_run_one` as a Ray remote function: one GPU per run where the cluster has GPUs, else one CPU."""
    try:
        import ray
    except ImportError as e:
        raise RuntimeError("executor='ray' needs Ray: pip install 'eelib[ray]'") from e
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False,
                 log_to_driver=False)
    has_gpu = ray.cluster_resources().get("GPU", 0) > 0

    def remote_run(run: str, rdir: str, root: str, env_extra: dict, cwd: str) -> dict:
        env = dict(os.environ, **env_extra)
        return _run_one("ray", run, Path(rdir), Path(root), env, cwd=cwd)
    opts = {"num_gpus": 1} if has_gpu else {"num_cpus": 1}
    return ray.remote(**opts)(remote_run).options(max_retries=0), ray


def _ray_workers() -> int:
    import ray
    res = ray.cluster_resources()
    return int(res.get("GPU", 0)) or max(1, int(res.get("CPU", 1)))


def execute(cfg: C.ExperimentConfig, *, executor: str = "papermill", workers: int | None = None,
            root: str | Path = "outputs", progress: bool = True) -> dict:
    """Run every run of the grid; returns (and writes) the summary. Never raises for a failed run;
    a failed run (no result.json) is run again by the next call."""
    root = Path(root).resolve()
    runs = grid_runs(cfg)
    ray_task = None
    if executor == "ray":
        ray_task = _ray_task()
        workers = workers or _ray_workers()
    workers = workers or default_workers()
    # Claim every run directory first (refusing ones made by a different config), so workers only
    # ever write inside their own, pre-claimed directory; they stay held until the batch ends.
    claimed = []
    try:
        for run, c in runs:
            claimed.append((run, c, claim_run_dir(c, run, root, list(cfg.grid))))
        return _execute(cfg, claimed, executor, workers, root, progress, ray_task)
    finally:
        for _, _, d in claimed:
            release_run(d)


def _execute(cfg, claimed, executor, workers, root, progress, ray_task) -> dict:
    ray_run, ray = ray_task or (None, None)
    n_gpu = _gpu_count()
    given = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    gpu_ids = given if len(given) == n_gpu else [str(i) for i in range(n_gpu)]
    todo = [(run, c, d) for run, c, d in claimed if not (d / "result.json").exists()]
    # The experiment's finished runs, checked once: a run this batch trains cannot be stale, so the
    # same checks serve the results collected at the end.
    checks = run_checks(cfg.name, root)
    summary_runs = {}
    for run, c, d in claimed:
        if (d / "result.json").exists():  # reused, unless its stages are keyed otherwise now
            stale = checks["stale"].get(run)
            summary_runs[run] = {"run": run, "status": "failed" if stale else "reused", "seconds": 0.0,
                                 "log": None, "error": stale}
    slots: queue.Queue = queue.Queue()
    for i in range(workers):
        slots.put(i)
    lock = threading.Lock()
    t_start, done_n = time.time(), 0

    def task(item):
        nonlocal done_n
        run, c, rdir = item
        slot = slots.get()
        env = dict(os.environ)
        env.pop("EELIB_OUTPUTS", None)  # the batch passes its outputs root explicitly (-p out_dir)
        if n_gpu:  # one of the GPUs this process was given (a scheduler's "4,5,6,7", UUIDs), not "0".."n-1"
            env["CUDA_VISIBLE_DEVICES"] = gpu_ids[slot % len(gpu_ids)]
        elif not c.threads:
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
        env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(".cache/inductor").resolve()))
        try:
            if executor == "ray":  # the same command, wherever Ray places it
                extra = {k: v for k, v in env.items() if k.startswith(_RAY_ENV_PREFIXES)}
                res = _ray_call(ray, ray_run, run, str(rdir), str(root), extra, os.getcwd())
            else:
                res = _run_one(executor, run, rdir, root, env)
        finally:
            slots.put(slot)
        with lock:
            done_n += 1
            summary_runs[run] = res
            if progress:
                el = time.time() - t_start
                eta = el / done_n * (len(todo) - done_n)
                print(f"[eelib batch] {done_n}/{len(todo)} runs  {run}: {res['status']} "
                      f"({res['seconds']:.0f}s)  elapsed {el:.0f}s  ETA {eta:.0f}s", flush=True)
        return res

    if progress:
        print(f"[eelib batch] {cfg.name}: {len(claimed)} runs ({len(claimed) - len(todo)} reused), "
              f"{workers} worker(s), executor={executor}", flush=True)
    _STOPPING.clear()
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        futures = [pool.submit(task, item) for item in todo]
        # Wait in short slices, not in one blocking result(): a SIGINT the kernel hands to a worker
        # thread only sets Python's flag, and the main thread acts on it when it next runs
        # bytecode. Blocked in result(), it did not until the running run ended (a test sends the
        # SIGINT to the worker thread: 30 s late before, within 0.5 s now).
        pending = futures
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_EXCEPTION)
            if any(f.exception() is not None for f in done):
                break
        for f in futures:
            f.result()  # a worker's exception, as pool.map raised it
    except KeyboardInterrupt:  # stop the workers, keep what finished; the CLI says how to resume
        _interrupt_workers(ray)
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
    warn_unswept(cfg, root, skip=checks["stale"])  # their rows are left out of the results too
    rows = collect(cfg.name, root, checks)
    summary = {"experiment": cfg.name, "executor": executor, "workers": workers,
               "seconds": round(time.time() - t_start, 1),
               "runs": [summary_runs[r] for r, _, _ in claimed],
               "failed": [r for r, _, _ in claimed if summary_runs[r]["status"] == "failed"],
               "n_rows": len(rows)}
    edir = root / cfg.name
    atomic_write_json(edir / "summary.json", summary)
    atomic_write_text(edir / "summary.md", summary_markdown(summary, rows))
    return summary


def summary_markdown(summary: dict, rows: list[dict]) -> str:
    lines = [f"# {summary['experiment']}: batch summary", "",
             f"{len(summary['runs'])} runs, {len(summary['failed'])} failed, "
             f"{summary['seconds']:.0f} s, executor {summary['executor']}, {summary['workers']} workers", "",
             "| run | status | seconds | error |", "|---|---|---|---|"]
    for r in summary["runs"]:
        lines.append(f"| {r['run']} | {r['status']} | {r['seconds']} | {r['error'] or ''} |")
    lines += ["", "| run | method | λ | seed | stage-3 LR | L_im | L_ret | L_ft | L_pre |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['method']} | {r['lam']} | {r['seed']} | {r['stage3_lr']:g} | "
                     f"{r['L_im']:.4f} | {r['L_ret']:.4f} | {r['L_ft']:.4f} | {r['L_pre']:.4f} |")
    return "\n".join(lines) + "\n"

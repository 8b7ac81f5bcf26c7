"""Shared fixtures for the reliability tests (issue 7): a tiny end-to-end config, a CLI runner,
and one uninterrupted baseline run that the resume, corruption, offline and determinism tests
compare against.

The tiny config runs all three stages in ~10 s on one CPU thread: stage 1 has 86 steps
(checkpoint every 50), stage 2 58 steps (eval + checkpoint every 10), stage 3 16 steps per LR
(eval + checkpoint every 5), two LRs.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

# A shell without job control starts background jobs (`nohup make test &`) with SIGINT ignored, and
# exec'd children inherit that: the Ctrl-C tests (test_batch, test_resume) then failed, their
# processes deaf to SIGINT (2026-11-27). They test eelib's answer to an interrupt, so the suite
# takes SIGINT as a terminal gives it.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

TINY = {
    "name": "tiny",
    "model": "test-micro",
    "threads": 1,
    "data": {"seq_len": 64, "general_tokens": 40000, "post_tokens": 8000, "val_tokens": 2048,
             "cache_dir": "cache"},  # relative: each test's working directory gets a fresh cache
    "stage1": {"lam": 0.5, "batch_size": 8},
    "stage2": {"batch_size": 8, "max_tokens": 30000, "eval_interval": 10, "patience": 2},
    "stage3": {"lrs": [1.0e-3, 3.0e-3], "tokens": 8000, "batch_size": 8, "eval_interval": 5},
}

# What a results row must reproduce exactly (stage_dirs and timings legitimately differ).
COMPARED = ("stage3_lr", "L_im", "L_ret", "L_ft", "L_pre", "L_pre_im", "stage2_steps",
            "stage2_stopped_early", "trajectory")


def write_params(path: Path, cfg: dict | None = None) -> Path:
    path.write_text(yaml.safe_dump(cfg if cfg is not None else TINY, sort_keys=False))
    return path


def child_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "EELIB_FAULT"}
    env.update({"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def eelib_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "eelib", *args]


def run_cli(cwd: Path, *args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(eelib_cmd(*args), cwd=cwd, env=env or child_env(), capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def cli(monkeypatch, capsys):
    """cli(cwd, *args): `eelib ARGS` run by the CLI's own entry point in this process, in `cwd`,
    returning what run_cli does. A new Python costs ≈ 9 s of imports on the CI machine; keep
    run_cli where the process itself is under test (its exit, a kill, its environment). One torch
    thread, as child_env gives run_cli's processes, so the numbers are theirs bit for bit."""
    def call(cwd: Path, *args: str) -> subprocess.CompletedProcess:
        import torch
        from eelib.cli import main
        monkeypatch.chdir(cwd)
        capsys.readouterr()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            rc = main(list(args))
        except SystemExit as e:  # argparse's own errors
            rc = e.code
        finally:
            torch.set_num_threads(threads)
        out = capsys.readouterr()
        return subprocess.CompletedProcess(["eelib", *args], rc, out.out, out.err)
    return call


def run_tiny(cwd: Path, fault: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """`eelib run tiny.yaml --out outputs` in `cwd`; with `fault`, EELIB_FAULT kills it there."""
    params = cwd / "tiny.yaml"
    if not params.exists():
        write_params(params)
    e = dict(env or child_env())
    if fault:
        e["EELIB_FAULT"] = fault
    return run_cli(cwd, "run", "tiny.yaml", "--out", "outputs", "--no-progress", env=e)


def read_rows(cwd: Path, name: str = "tiny") -> list[dict]:
    p = cwd / "outputs" / name / "results.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def max_abs_diff(a, b) -> float:
    """Largest |a - b| over two nested row structures; inf if their shapes or non-floats differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return float("inf")
        return max((max_abs_diff(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return float("inf")
        return max((max_abs_diff(x, y) for x, y in zip(a, b)), default=0.0)
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b))
    return 0.0 if a == b else float("inf")


def compared(rows: list[dict]) -> list[dict]:
    return [{k: r[k] for k in COMPARED} for r in rows]


def _tiny_run(cwd: Path) -> dict:
    p = run_tiny(cwd)
    assert p.returncode == 0, p.stderr[-3000:]
    return {"dir": cwd, "rows": read_rows(cwd)}


@pytest.fixture(scope="session")
def baseline(tmp_path_factory) -> dict:
    """One uninterrupted tiny run through the CLI: {"dir": its cwd, "rows": results rows}. Tests
    only read it, so under `make test`'s pytest-xdist workers the first worker to need it runs it
    and the others wait for it (≈ 20 s of CPU each, once per session instead of once per worker)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return _tiny_run(tmp_path_factory.mktemp("baseline"))
    from filelock import FileLock
    shared = tmp_path_factory.getbasetemp().parent  # this session's, common to its workers
    cwd = shared / "baseline"
    with FileLock(str(shared / "baseline.lock")):
        if (cwd / "finished").exists():
            return {"dir": cwd, "rows": read_rows(cwd)}
        shutil.rmtree(cwd, ignore_errors=True)  # a worker that failed here left a part
        cwd.mkdir()
        out = _tiny_run(cwd)
        (cwd / "finished").touch()
        return out


# A sitecustomize that makes every outgoing connection (and DNS lookup) fail, and logs the try.
NO_NETWORK = '''
import os, socket

def _blocked(*args, **kwargs):
    log = os.environ.get("EELIB_NET_LOG")
    if log:
        with open(log, "a") as f:
            f.write(repr(args[:2]) + "\\n")
    raise OSError("network blocked by the eelib offline test")

socket.socket.connect = _blocked
socket.socket.connect_ex = _blocked
socket.create_connection = _blocked
socket.getaddrinfo = _blocked
'''


def offline_env(tmp: Path) -> dict:
    block = tmp / "no_network"
    block.mkdir(exist_ok=True)
    (block / "sitecustomize.py").write_text(NO_NETWORK)
    env = child_env(EELIB_NET_LOG=str(tmp / "net.log"), HF_HUB_OFFLINE="0")
    env["PYTHONPATH"] = f"{block}{os.pathsep}{env['PYTHONPATH']}"
    return env


@pytest.fixture(scope="session")
def offline_run(tmp_path_factory) -> dict:
    """A second fresh tiny run (own outputs dir, own cache) with the network blocked."""
    cwd = tmp_path_factory.mktemp("offline")
    env = offline_env(cwd)
    p = run_tiny(cwd, env=env)
    return {"dir": cwd, "env": env, "proc": p,
            "rows": read_rows(cwd) if p.returncode == 0 else None}


# `make test` hands whole files to its two pytest-xdist workers (--dist loadfile) in collection
# order (--no-loadscope-reorder: xdist's own order, most tests first, put the long files with few
# tests, test_batch_interrupts and test_ray, at the end, where one worker ran one while the other
# had nothing left). The longest go first (sums of their tests on a CI-like run, 2026-11-28:
# 200-230 s each down to test_ray's 78 s); the many short files and notebooks fill the end.
# test_batch sits between the two files that need the shared `baseline` run, so the second
# worker does not start by waiting for it. Order only: every test still runs.
LONGEST_FIRST = ("test_resume.py", "test_batch.py", "test_batch_interrupts.py", "test_stage_wiring.py",
                 "test_distributed.py", "test_benchmarks.py", "test_stage_reuse.py", "test_loss.py",
                 "test_reliability.py", "test_ray.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order

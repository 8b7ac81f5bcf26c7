"""Stopping a batch: kill -9 and resume, an interrupt sent to the batch alone, interrupts under Ray
and on a worker thread. Apart from tests/test_batch.py so the two long files run side by side
under `make test`'s two pytest workers (pytest-xdist, one file per worker)."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from eelib import config as C
from conftest import TINY, child_env, compared, eelib_cmd, max_abs_diff, read_rows, run_cli, write_params
from test_batch import _cfg


@pytest.mark.slow
def test_batch_killed_mid_run_resumes_to_the_same_losses(tmp_path, baseline):
    """kill -9 a papermill batch (the whole process group: the batch, papermill, the stage
    notebook's kernel) once stage 2 has checkpointed; rerunning the same command finishes with the
    losses of an uninterrupted run: the shared `eelib run` baseline of the same params (conftest),
    so the batch through notebooks must also agree with the plain CLI, and the reference costs
    nothing here. One run (a grid of one, the mixed pipeline at λ = 0.5): a second doubled the
    test's CI time and added no code path (workers side by side: test_batch.py)."""
    cut = tmp_path / "cut"
    cut.mkdir()
    write_params(cut / "p.yaml", TINY)
    args = ["batch", "p.yaml", "--out", "outputs", "--workers", "1", "--no-report"]

    proc = subprocess.Popen(eelib_cmd(*args), cwd=cut, env=child_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    stage2 = cut / "outputs" / "tiny" / "stage2"
    while time.time() < deadline and not any(stage2.glob("*/ckpt/step-*")):
        time.sleep(0.2)
    assert any(stage2.glob("*/ckpt/step-*")), "stage 2 never checkpointed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (cut / "outputs" / "tiny" / "results.jsonl").exists() or \
        not (cut / "outputs" / "tiny" / "results.jsonl").read_text().strip()

    p = run_cli(cut, *args, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert max_abs_diff(compared(read_rows(cut)), compared(baseline["rows"])) <= 1e-6


def test_interrupt_sent_to_the_batch_alone_stops_its_workers(tmp_path):
    """kill -INT <batch pid> (not the terminal's Ctrl-C, which the whole process group gets): a
    review found the batch waited for the running run to finish, then died in a traceback. It
    now passes the interrupt on after a grace period, starts nothing more, and ends in one line;
    the run keeps its checkpoint (a rerun resumes it: test_batch_killed_mid_run_resumes...)."""
    cfg = _cfg({"stage1.lam": [0.0, 1.0]}, name="intr")
    cfg["data"]["general_tokens"] = 3_000_000  # stage 1 long enough to be interrupted
    cfg["stage1"]["ckpt_interval"] = 20
    write_params(tmp_path / "p.yaml", cfg)
    proc = subprocess.Popen(eelib_cmd("batch", "p.yaml", "--out", "outputs", "--workers", "1",
                                      "--executor", "python", "--no-report"),
                            cwd=tmp_path, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and \
            not any((tmp_path / "outputs" / "intr" / "stage1").glob("*/ckpt/step-*/manifest.json")):
        time.sleep(0.1)
    t0 = time.time()
    proc.send_signal(signal.SIGINT)  # the batch process only
    rc = proc.wait(timeout=120)
    err = proc.stderr.read()
    assert rc == 130 and err.strip().splitlines()[-1].startswith("eelib: interrupted"), err[-2000:]
    assert time.time() - t0 < 60, "the batch waited for its run to finish"
    runs = tmp_path / "outputs" / "intr" / "runs"
    logs = {d.name: (d / "log.txt").read_text() if (d / "log.txt").exists() else "" for d in runs.iterdir()}
    assert "eelib: interrupted" in logs["lam0.0"], logs["lam0.0"][-2000:]  # the worker was told
    assert logs["lam1.0"] == "" and not (runs / "lam1.0" / "result.json").exists()  # nothing more started
    assert not any(runs.glob("*/result.json"))


def _one_ray_worker(monkeypatch, tmp_path, remote, ray, name: str) -> dict:
    """A two-run batch config whose Ray executor is `remote`/`ray` (test doubles), one task at a time."""
    from eelib import batch
    monkeypatch.setattr(batch, "_ray_task", lambda: (remote, ray))
    monkeypatch.setattr(batch, "_ray_workers", lambda: 1)
    monkeypatch.setattr(batch, "INTERRUPT_GRACE_S", 0)
    raw = _cfg({"stage1.lam": [0.0, 1.0]}, name=name)
    raw["data"]["cache_dir"] = str(tmp_path / "cache")
    return raw


def test_interrupted_ray_batch_cancels_its_tasks(tmp_path, monkeypatch):
    """Ray tasks are no child processes of the batch: a review found Ctrl-C waited for every
    running task to finish (hours at paper scale). They are cancelled (a KeyboardInterrupt in
    the task, which passes it on to its run), and the batch's runs are released."""
    import threading
    from eelib import batch, rundir

    cancelled = []

    class Task:
        def __init__(self):
            self.done, self.cancelled = threading.Event(), False

    class Remote:
        def remote(self, *args):
            return Task()

    class Ray:
        def get(self, task):
            task.done.wait(60)
            raise RuntimeError("cancelled" if task.cancelled else "never cancelled")

        def cancel(self, task):
            cancelled.append(task)
            task.cancelled = True
            task.done.set()

    raw = _one_ray_worker(monkeypatch, tmp_path, Remote(), Ray(), "ray-intr")
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
    t0 = time.time()
    with pytest.raises(KeyboardInterrupt):
        batch.execute(C.from_dict(raw), executor="ray", root=tmp_path / "out", progress=False)
    assert time.time() - t0 < 10 and len(cancelled) == 1  # one worker: one task running, none started after
    assert (tmp_path / "out" / "ray-intr").resolve() not in rundir._USERS


def test_an_interrupt_handed_to_a_worker_thread_still_stops_the_batch(tmp_path, monkeypatch):
    """The kernel may hand a process's SIGINT to any thread. Python then only sets a flag that the
    main thread acts on when it next runs bytecode; blocked in one future's result() it did not
    until the running run ended, and then started the next (CI, 2026-11-27: kill -INT and the
    batch ran on). The batch now waits in 0.5 s slices."""
    import threading
    from eelib import batch

    in_get, cancelled = [], []

    class Task:
        def __init__(self):
            self.done = threading.Event()

    class Remote:
        def remote(self, *args):
            return Task()

    class Ray:
        def get(self, task):
            in_get.append(threading.get_ident())
            task.done.wait(30)
            return {"run": "x", "status": "ok", "seconds": 0.0, "log": None, "error": None}

        def cancel(self, task):
            cancelled.append(task)
            task.done.set()

    raw = _one_ray_worker(monkeypatch, tmp_path, Remote(), Ray(), "thread-intr")

    def to_the_worker():
        deadline = time.time() + 20
        while not in_get and time.time() < deadline:
            time.sleep(0.05)
        signal.pthread_kill(in_get[0], signal.SIGINT)  # not the main thread
    threading.Thread(target=to_the_worker, daemon=True).start()
    t0 = time.time()
    with pytest.raises(KeyboardInterrupt):
        batch.execute(C.from_dict(raw), executor="ray", root=tmp_path / "out", progress=False)
    assert time.time() - t0 < 10 and len(cancelled) == 1 and len(in_get) == 1  # nothing started after

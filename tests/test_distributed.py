"""Data-parallel training (eelib/distributed.py): 2 CPU processes over gloo vs one process.

(a) the union of the ranks' rows at each step is the single-process batch, in the same order;
(b) after a few DDP steps (uneven last batches, micro-batches, evaluation broadcast, rank-0
    checkpoints) the parameters are identical across ranks and match a one-process run.
"""
from __future__ import annotations

import os
import pickle
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from eelib import distributed
from eelib.mixture import Mixture, Source

WORLD = 2
BATCH = 5  # odd: every step splits 3 / 2 rows, so the loss weighting must be exact


def _windows():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(30, 16)), rng.integers(0, 256, size=(10, 16))


def _mixture():
    a, b = _windows()
    return Mixture([Source("a", a, 17, once=True, quota=17), Source("b", b, 6, once=True, quota=6)], seed=3)


def _spec(**kw):
    from eelib.train import LoopSpec
    return LoopSpec(lr=3e-3, min_lr=3e-4, warmup_steps=1, weight_decay=0.1, batch_size=BATCH,
                    micro_batch=2, max_steps=5, eval_interval=2, **kw)


def _evaluator(model):
    from eelib.train import heldout_loss
    return {"L_x_val": heldout_loss(model, _windows()[1][:4], torch.device("cpu"))}


def _train(stage_dir, chunk=0, compile=False):
    from eelib.model import build_model
    from eelib.train import train
    torch.set_num_threads(1)
    model = build_model("test-micro", 258, seed=0)
    out = train(model, _mixture(), _spec(chunked_ce=chunk), stage_dir=stage_dir, config_digest="d",
                device=torch.device("cpu"), seed=0, evaluator=_evaluator, progress=False, compile=compile)
    return model, out


# (ce_chunk, compile): the compiled case is DDP around the model and its loss compiled in one
# graph, checkpointed chunks inside (eelib/loss.py), against an eager one-process run. Its ranks
# compile with the "aot_eager" backend: dynamo, AOT autograd and DDP's graph splitting at bucket
# boundaries are the parts DDP adds, and they do not depend on the backend; inductor's code is
# tested against eager in tests/test_loss.py. (With inductor, both ranks generating its C++ at
# once, the fixture took 234 s on the 2-core machine under load; 74 s with aot_eager.)
VARIANTS = {"plain-ce": (0, False), "chunked-ce": (7, False), "chunked-ce-compiled": (7, True)}


def _worker(rank, port, tmp):
    """Every variant in turn, in one process group: a spawned rank costs ≈ 8 s of imports on the
    CI machine, so the three variants share two processes instead of taking six."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    d = distributed.init_from_env(backend="gloo")
    import functools
    import eelib.train
    eager_loss = eelib.train.LMLoss
    try:
        for name, (chunk, compile) in VARIANTS.items():
            if compile:  # dynamo + AOT autograd + DDP's graph splitting, without inductor's C++ codegen
                eelib.train.LMLoss = functools.partial(eager_loss, backend="aot_eager")
            mix, rows = _mixture(), []
            while mix.remaining():
                batch, _ = mix.next_batch(BATCH)
                rows.append(d.shard(batch)[0])
            model, out = _train(os.path.join(tmp, name, "stage3", "k"), chunk, compile)
            eelib.train.LMLoss = eager_loss
            os.makedirs(os.path.join(tmp, name), exist_ok=True)  # rank 1 writes no checkpoint there
            with open(os.path.join(tmp, name, f"rank{rank}.pkl"), "wb") as f:
                pickle.dump({"rows": rows, "state": model.state_dict(), "trajectory": out["trajectory"],
                             "steps": out["steps"]}, f)
    finally:
        distributed.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), str(tmp)), nprocs=WORLD, join=True)
    return tmp


@pytest.fixture(scope="module", params=list(VARIANTS))
def ranks(request, ddp_runs):
    chunk, _ = VARIANTS[request.param]
    tmp = ddp_runs / request.param
    out = [pickle.loads((tmp / f"rank{r}.pkl").read_bytes()) for r in range(WORLD)]
    single_model, single = _train(tmp / "single" / "stage3" / "k", chunk)
    return {"tmp": tmp, "ranks": out, "single_state": single_model.state_dict(), "single": single}


def test_union_of_rank_rows_is_the_single_process_batch(ranks):
    mix = _mixture()
    for step, parts in enumerate(zip(*(r["rows"] for r in ranks["ranks"]))):
        batch, _ = mix.next_batch(BATCH)
        merged = np.empty_like(batch)
        for rank, part in enumerate(parts):
            merged[rank::WORLD] = part
        assert sum(len(p) for p in parts) == len(batch)
        np.testing.assert_array_equal(merged, batch, err_msg=f"step {step}")
    assert mix.remaining() == 0


def test_ddp_params_identical_across_ranks_and_match_one_process(ranks):
    r0, r1 = ranks["ranks"]
    assert r0["steps"] == r1["steps"] == ranks["single"]["steps"] == 5
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
        diff = (r0["state"][k] - ranks["single_state"][k]).abs().max().item()
        assert diff < 1e-5, (k, diff)
    # Evaluation ran on rank 0 and was broadcast: both ranks hold the same trajectory.
    assert r0["trajectory"] == r1["trajectory"]
    assert [t["step"] for t in r0["trajectory"]] == [0, 2, 4, 5]
    for a, b in zip(r0["trajectory"], ranks["single"]["trajectory"]):
        assert abs(a["L_x_val"] - b["L_x_val"]) < 1e-5


def _nan_worker(rank, port, tmp, bad):
    """Rank 1's loss turns non-finite on its 3rd micro-batch (step 2); rank 0's never does.
    bad="nan": loss * nan, every gradient NaN too; bad="inf": loss + inf, gradients stay finite."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    from eelib import train as T
    distributed.init_from_env(backend="gloo")
    try:
        if rank == 1:
            real, calls = T.lm_loss, {"n": 0}

            def flaky(model, tokens):
                calls["n"] += 1
                loss = real(model, tokens)
                if calls["n"] != 3:
                    return loss
                return loss * float("nan") if bad == "nan" else loss + float("inf")
            T.lm_loss = flaky
        try:
            _train(os.path.join(tmp, "stage3", "k"))
            got = "finished"
        except T.NonFiniteLoss as e:
            got = str(e)
        with open(os.path.join(tmp, f"nan{rank}.txt"), "w") as f:
            f.write(got)
        # Both ranks stopped at the same step: meet before tearing gloo down. Without this a rank
        # could close its connections while the other's gloo thread still used them, and that
        # rank died of SIGABRT ("terminate called without an active exception", once in ~5 runs).
        torch.distributed.barrier()
    finally:
        distributed.shutdown()
    # Both files are written and both ranks met: leave without Python's teardown, where gloo's
    # threads, after a rank stopped mid-step, still aborted a rank now and then ("terminate called
    # without an active exception", 2 in 24 runs here, after the barrier above was added).
    os._exit(0)


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_non_finite_loss_on_one_rank_stops_every_rank_at_that_step(tmp_path, bad):
    """The finite check all-reduces its flags (train._check_finite): rank 1's bad loss stops
    rank 0 at the same step, also when its gradients stay finite (inf loss: cross-entropy's
    gradient is bounded). A check on rank 1 alone would leave rank 0 in the next all-reduce
    (under gloo it then fails with "Connection closed by peer"; under NCCL it would wait)."""
    import time
    ctx = mp.spawn(_nan_worker, args=(_free_port(), str(tmp_path), bad), nprocs=WORLD, join=False)
    deadline = time.time() + 120
    while not ctx.join(timeout=5):
        if time.time() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("a rank hung after the other's loss went non-finite")
    msgs = [(tmp_path / f"nan{r}.txt").read_text() for r in range(WORLD)]
    assert f"loss is {bad} at step 2" in msgs[1], msgs
    assert "loss is not finite on another rank at step 2" in msgs[0], msgs


class _Killed(BaseException):
    """Stands in for kill -9 inside a rank (BaseException: nothing in the loop catches it)."""


# The dropout test's three runs, in order, in one process group (a spawned rank costs ≈ 8 s of
# imports on the CI machine): uninterrupted, killed at step 5, and the same command resumed.
DROPOUT_RUNS = (("ref", None, "ref"), ("cut", "stage2:step:5", "x"), ("cut", None, "res"))


def _dropout_worker(rank, port, tmp):
    """2 ranks, dropout 0.3, 5 rows a step (3 + 2: the ranks draw different amounts of randomness),
    a checkpoint every 2 steps; each of DROPOUT_RUNS builds its model afresh, and a run with a
    fault point stops both ranks there."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    distributed.init_from_env(backend="gloo")
    from eelib import train as T
    from eelib.model import build_model, set_dropout
    torch.set_num_threads(1)
    try:
        for sub, kill, tag in DROPOUT_RUNS:
            def fault(tag_, kill=kill):
                if tag_ == kill:
                    raise _Killed
            T.fault_point = fault
            out = os.path.join(tmp, sub)
            ckpt = os.path.join(out, "stage2", "k", "ckpt")
            with open(os.path.join(tmp, f"{tag}{rank}-before.txt"), "w") as f:  # what the run starts from
                f.write(" ".join(sorted(os.listdir(ckpt))) if os.path.isdir(ckpt) else "")
            model = build_model("test-micro", 258, seed=0)
            set_dropout(model, 0.3)
            masks = []  # the first micro-batch's embedding dropout mask
            model.model.embed_tokens.register_forward_hook(
                lambda mod, a, out, masks=masks: masks.append((out == 0).clone()) if not masks else None)
            w = _windows()[0]
            mix = Mixture([Source("a", w, 1.0, once=False)], seed=3)
            spec = T.LoopSpec(lr=3e-3, min_lr=3e-4, warmup_steps=1, weight_decay=0.1, batch_size=BATCH,
                              micro_batch=2, max_steps=8, ckpt_interval=2)
            try:
                T.train(model, mix, spec, stage_dir=os.path.join(out, "stage2", "k"), config_digest="d",
                        device=torch.device("cpu"), seed=0, progress=False)
            except _Killed:
                continue
            with open(os.path.join(tmp, f"{tag}{rank}.pkl"), "wb") as f:
                pickle.dump(model.state_dict(), f)
            with open(os.path.join(tmp, f"{tag}mask{rank}.pkl"), "wb") as f:
                pickle.dump(masks[0], f)
    finally:
        distributed.shutdown()


def test_ddp_resume_with_dropout_continues_every_ranks_random_stream(tmp_path):
    """Killed at step 5 and resumed, a 2-rank run with dropout ends with the weights of an
    uninterrupted one: each rank's random state is saved (rank 0 gathers them) and restored to
    its own rank. With rank 0's state restored on every rank, rank 1's masks would differ."""
    mp.spawn(_dropout_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    assert not list(tmp_path.glob("x*.pkl"))  # the killed run finished nothing
    for r in range(WORLD):  # the resumed run started from the killed run's checkpoints (steps 2, 4)
        assert (tmp_path / f"res{r}-before.txt").read_text().split() == ["step-0000002", "step-0000004"]
        assert (tmp_path / f"ref{r}-before.txt").read_text() == ""
    a, b = (pickle.loads((tmp_path / f"{t}0.pkl").read_bytes()) for t in ("ref", "res"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # each rank draws its own masks for its own rows: with one seed for all ranks, rank 1's first
    # micro-batch (rows 1, 3 of the step) got exactly rank 0's mask (rows 0, 2) (a review found it)
    m0, m1 = (pickle.loads((tmp_path / f"refmask{r}.pkl").read_bytes()) for r in (0, 1))
    assert m0.shape == m1.shape and m0.any() and not torch.equal(m0, m1)


def test_zero_row_rank_gets_a_zero_weight_row():
    d = distributed.Dist(rank=1, world=2, local_rank=1)
    rows, denom = d.shard(np.arange(8).reshape(1, 8))
    assert len(rows) == 1 and denom == float("inf")
    rows, denom = distributed.Dist(rank=0, world=2, local_rank=0).shard(np.arange(24).reshape(3, 8))
    assert len(rows) == 2 and denom == 1.5


TINY_DDP = """name: trun
model: test-micro
threads: 1
data: {seq_len: 64, general_tokens: 16384, post_tokens: 4096, val_tokens: 1024, cache_dir: cache}
stage1: {lam: 0.5, batch_size: 8}
stage2: {batch_size: 8, max_tokens: 8192, eval_interval: 8, patience: 2}
stage3: {lrs: [0.001], tokens: 4096, batch_size: 8, eval_interval: 4}
"""


@pytest.mark.slow
def test_torchrun_and_accelerate_run_one_match_one_process(tmp_path, cli):
    """`torchrun --nproc_per_node 2 -m eelib run-one` and `accelerate launch --multi_gpu
    --num_processes 2 -m eelib run-one` (gloo on CPU): all three stages as DDP with world 2 (stage.json
    says so), rank-0 files, the same losses as `python -m eelib run-one` within float noise (~30 s).
    Without --multi_gpu, accelerate on a machine with < 2 GPUs runs one process: docs/scaling.md."""
    import json
    import shutil
    import subprocess
    import sys
    from pathlib import Path
    from conftest import child_env
    (tmp_path / "tiny.yaml").write_text(TINY_DDP)
    bindir = str(Path(sys.executable).parent)
    torchrun, accelerate = shutil.which("torchrun", path=bindir), shutil.which("accelerate", path=bindir)
    assert torchrun and accelerate, "torchrun and accelerate install with the project (torch, accelerate)"
    env = child_env()
    # the one-process reference in this process (the cli fixture: one torch thread, as child_env)
    p = cli(tmp_path, "run-one", "tiny.yaml", "--run", "r", "--out", "one")
    assert p.returncode == 0, p.stderr[-3000:]
    launches = {"torchrun": [torchrun, "--nproc_per_node", "2", "-m", "eelib", "run-one", "tiny.yaml",
                             "--run-name", "r", "--out", "torchrun"],
                "accelerate": [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                               "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "eelib", "run-one",
                               "tiny.yaml", "--run-name", "r", "--out", "accelerate"]}
    rows = {}
    for name, cmd in [("one", None), *launches.items()]:
        if cmd:
            p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
            assert p.returncode == 0, (name, p.stderr[-3000:])
        rows[name] = json.loads((tmp_path / f"{name}/trun/runs/r/result.json").read_text())["rows"][0]
        recs = sorted((tmp_path / name / "trun").glob("stage*/*/stage.json"))
        assert len(recs) == 3, name
        worlds = {g["world"] for r in recs for g in json.loads(r.read_text())["computed"]}
        assert worlds == {1 if name == "one" else 2}, (name, worlds)
    for name in ("torchrun", "accelerate"):
        a, b = rows["one"], rows[name]
        assert a["stage2_steps"] == b["stage2_steps"], name
        for k in ("L_im", "L_ret", "L_ft", "L_pre"):
            assert abs(a[k] - b[k]) < 5e-4, (name, k, a[k], b[k])  # measured here: 5e-5 at most

"""Stage directories: one process per directory, reuse of a finished one, adoption of a twin.

A stage's directory is outputs/<experiment>/stage{1,2,3}/<digest of its key> (eelib/keys.py names
it). This module is what happens around the training: `locked` makes parallel runs that share a
stage wait and then reuse it; `begin` returns a finished stage (refusing one made by another
config); `adopt_twin` hard-links a stage another experiment finished with the same key; `finish`
writes stage.json last and atomically, which is what marks the stage done.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from eelib import checkpoint, config as C, distributed
from eelib.io import atomic_write_json, atomic_write_text, read_json


@dataclass
class StageResult:
    stage: int
    dir: Path
    record: dict      # the stage.json contents: losses, audit, timings, keys

    def __getitem__(self, k):
        return self.record[k]


@contextmanager
def locked(sdir: Path, older: tuple[str, dict] | None = None):
    """One process per stage directory: parallel runs that share a stage wait, then reuse it.

    Under torchrun, rank 0 holds the lock for its group (and adopts a finished twin, below); the
    other ranks wait at barriers, so all ranks see the same files on entry and rank 0's outputs
    before they leave.
    """
    sdir.mkdir(parents=True, exist_ok=True)
    if not distributed.is_main():
        distributed.barrier()
        yield
        distributed.barrier()
        return
    with open(sdir / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            adopt_twin(sdir, older)
            distributed.barrier()
            yield
            distributed.barrier()
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def adopt_twin(sdir: Path, older: tuple[str, dict] | None = None) -> bool:
    """Reuse a stage another experiment under the same outputs root finished with the same key.

    The directory name is the digest of everything the stage's result depends on, and the
    experiment name is not part of it, so Fig 3a and 3b (and the λ ∈ {0, 1} runs of the other
    grids) need the same stage 1; at 135M, 270B of the grid's 966B training tokens are in
    such shared stages (`eelib plan`).
    Its files are hard-linked here (copied where links fail), so this experiment keeps a whole
    stage directory of its own even if the other one is deleted; stage.json, written last and
    atomically, names the source. A twin still training is not waited for: both then train.

    `older` = (digest, key): also adopt a stage finished under an older key of the same result
    (a λ = 0 stage 1 keyed by D_post before `_stage1_key` left it out); its record takes the new
    key, and keeps only the losses the new key determines. Returns whether a stage was adopted.
    """
    if (sdir / "stage.json").exists():
        return False
    root, stage = sdir.parents[2], sdir.parent.name
    names = [sdir.name] + ([older[0]] if older else [])
    for rec_path in [p for n in names for p in sorted(root.glob(f"*/{stage}/{n}/stage.json"))]:
        src = rec_path.parent
        if src == sdir:
            continue
        rec = json.loads(rec_path.read_text())
        if rec.get("digest") != src.name:
            continue
        restate = src.name != sdir.name  # finished under the older key: restate it under this one
        if restate:
            rec = dict(rec, key=json.loads(json_dumps(older[1])), digest=sdir.name,
                       losses={k: v for k, v in rec.get("losses", {}).items() if k != "L_post_val"})
        for item in sorted(src.iterdir()):
            if item.name in ("stage.json", "ckpt") or item.name.startswith("."):  # .lock, .adopt-*
                continue
            tmp = sdir / f".adopt-{item.name}"
            shutil.rmtree(tmp, ignore_errors=True)
            if item.is_dir():
                shutil.copytree(item, tmp, copy_function=_link_or_copy)
                shutil.rmtree(sdir / item.name, ignore_errors=True)
            else:
                _link_or_copy(item, tmp)
            os.replace(tmp, sdir / item.name)
        shutil.rmtree(sdir / "ckpt", ignore_errors=True)  # an interrupted attempt of our own
        if restate:  # a new file, not the linked one: the source keeps its own key.json
            atomic_write_text(sdir / "key.json", json_dumps(older[1]) + "\n")
        atomic_write_json(sdir / "stage.json", dict(rec, reused_from=str(src.relative_to(root))))
        return True
    return False


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not allowed
        shutil.copy2(src, dst)


# How a stage was computed that changes its numbers at floating-point level but keys no stage
# (docs/decisions.md, "What stage keys leave out"): the precision (CPU fp32 or CUDA bf16 autocast),
# compile, ce_chunk, and the residual stream, which matters under autocast only. A stage reused
# by a run that would compute it otherwise is named on stderr, not recomputed: under CPU bf16
# autocast the two streams moved a tiny model's losses by up to 0.043 a seed, more than its L_im
# seed std (benchmarks/results/cpu-stream-numerics-3seeds-2026-11-28.json).
HOW_COMPUTED = ("precision", "compile", "ce_chunk", "residual_stream")


def computed_otherwise(rec: dict, how: dict) -> dict:
    """{field: [values]} of a stage record's computed segments that differ from `how`."""
    out: dict = {}
    for seg in rec.get("computed") or []:
        for f in HOW_COMPUTED:
            v = seg.get(f, "fp32" if f == "residual_stream" else None)  # records from before the field
            if v is None or v == how[f]:
                continue
            if f == "residual_stream" and not seg.get("precision") == how["precision"] == "bf16 autocast":
                continue  # without autocast on both sides the streams compute the same numbers
            out.setdefault(f, [])
            if v not in out[f]:
                out[f].append(v)
    return out


def begin(stage: int, sdir: Path, key: dict, how: dict | None = None) -> StageResult | None:
    """Reuse a finished stage; refuse a directory written by a different config. `how`: how this
    run would compute the stage (HOW_COMPUTED); a reused stage computed otherwise is named."""
    done = sdir / "stage.json"
    if done.exists():
        rec = read_json(done, f"move {sdir} away (or restore it from a copy); the next run trains the "
                              "stage again")
        if rec.get("key") != json.loads(json_dumps(key)):
            raise RuntimeError(f"{sdir} holds a stage made by a different config; it is never overwritten. "
                               "Move it away or use another experiment name.")
        if how and distributed.is_main() and (other := computed_otherwise(rec, how)):
            was = ", ".join(f"{f} {'/'.join(map(str, v))}" for f, v in other.items())
            now = ", ".join(f"{f} {how[f]}" for f in other)
            print(f"eelib: stage {stage} is reused from {sdir}, computed with {was}; this run would use "
                  f"{now}. These key no stage, so its numbers differ from a recomputation at float level "
                  "(docs/decisions.md); to recompute, use another outputs root (--out): under this one another "
                  "experiment name would adopt this stage as its twin.", file=sys.stderr)
        return StageResult(stage, sdir, rec)
    sdir.mkdir(parents=True, exist_ok=True)
    if distributed.is_main() and not (sdir / "key.json").exists():
        # What this stage depends on; the stage may be shared by several runs, so not a run config.
        atomic_write_text(sdir / "key.json", json_dumps(key) + "\n")
    return None


def json_dumps(o) -> str:
    return json.dumps(o, sort_keys=True, default=str)


def finish(stage: int, sdir: Path, key: dict, record: dict) -> StageResult:
    record = dict(record, stage=stage, key=json.loads(json_dumps(key)), digest=C.digest(key))
    if distributed.is_main():
        atomic_write_json(sdir / "stage.json", record)
        shutil.rmtree(sdir / "ckpt", ignore_errors=True)  # the stage is done; final/ holds its output
    return StageResult(stage, sdir, record)


def save_final(sdir: Path, model, meta: dict) -> None:
    if distributed.is_main():  # one writer under torchrun
        checkpoint.save_model(sdir / "final", model.state_dict(), meta)

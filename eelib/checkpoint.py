"""Checkpoints that survive kill -9: written to a temp dir, fsynced, renamed into place.

Layout of a stage directory:
    ckpt/step-0000120/state.pt       model, optimizer, mixture, RNG, early-stopping state
    ckpt/step-0000120/manifest.json  sha256 + size of state.pt, the step, the config digest
    final/model.pt + manifest.json  the stage's output weights (what the next stage starts from)

A checkpoint is verified against its manifest on load; a corrupt or partial one is reported and
the previous good one is used. Only the newest `keep` checkpoints are kept.

"Start from" (the next stage loading `final/model.pt` of the stage before) is a different thing
from "resume" (the same stage loading its own newest `ckpt/step-*`): OLMo-core keeps them apart too.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from eelib.io import DIR_MODE, _fsync_dir, atomic_write_json, check_free_disk, fault_point, sha256_file


def _write_dir(dest: Path, files: dict[str, object], meta: dict, fault: str = "") -> None:
    """Write `files` (name -> torch-saveable) and a manifest into `dest`, atomically as a dir.

    A kill at any point leaves `dest` as it was (absent, or the previous complete version) plus,
    at worst, a hidden `.<name>.*` temp dir that nothing reads.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Temp dirs left by a writer killed mid-write (each as big as the payload). One process owns
    # a stage directory at a time (stagedir.locked), so none of these is being written now.
    for stale in dest.parent.glob(f".{dest.name}.*"):
        shutil.rmtree(stale, ignore_errors=True)
    if not dest.exists():  # a rewrite killed between its two renames (below): `dest` is written anew
        shutil.rmtree(dest.with_name(dest.name + ".old"), ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    os.chmod(tmp, DIR_MODE)
    try:
        manifest = dict(meta, files={})
        for name, obj in files.items():
            p = tmp / name
            with open(p, "wb") as f:
                torch.save(obj, f)
                f.flush()
                os.fsync(f.fileno())
            manifest["files"][name] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        if fault:
            fault_point(fault)  # tests: SIGKILL with the payload written but no manifest yet
        atomic_write_json(tmp / "manifest.json", manifest)
        _fsync_dir(tmp)
        if dest.exists():  # same step rewritten (e.g. resumed exactly at a checkpoint)
            old = dest.with_name(dest.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def verify(d: Path, expect: str | None = None) -> dict | None:
    """The manifest if every file matches it (and it lists `expect`), else None."""
    try:
        manifest = json.loads((d / "manifest.json").read_text())
        if expect is not None and expect not in manifest["files"]:
            return None
        for name, info in manifest["files"].items():
            p = d / name
            if p.stat().st_size != info["bytes"] or sha256_file(p) != info["sha256"]:
                return None
        return manifest
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # TypeError etc.: valid JSON, wrong shape
        return None


def save_checkpoint(stage_dir: Path, step: int, state: dict, meta: dict, keep: int = 2) -> Path:
    ckdir = Path(stage_dir) / "ckpt"
    need = sum(t.numel() * t.element_size() for t in _tensors(state))
    check_free_disk(ckdir, need, "a checkpoint")
    dest = ckdir / f"step-{step:07d}"
    _write_dir(dest, {"state.pt": state}, dict(meta, step=step),
               fault=f"{Path(stage_dir).parent.name}:ckpt:{step}")
    # Prune by step among complete names only: a leftover `step-N.old` must not take the place
    # of a real checkpoint among the `keep` newest.
    for old in sorted(d for d in ckdir.glob("step-*") if d.name[5:].isdigit())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return dest


def load_latest(stage_dir: Path, digest: str) -> dict | None:
    """The newest checkpoint that verifies and belongs to this config; None if there is none."""
    ckdir = Path(stage_dir) / "ckpt"
    for d in sorted(ckdir.glob("step-*"), reverse=True) if ckdir.exists() else []:
        if not d.name[5:].isdigit():  # step-N.old: a swap interrupted mid-way
            continue
        manifest = verify(d, expect="state.pt")
        if manifest is None:
            print(f"[eelib] checkpoint {d} is corrupt or incomplete; falling back to the previous one",
                  file=sys.stderr)
            continue
        if manifest.get("config_digest") != digest:
            raise RuntimeError(f"checkpoint {d} was written by a different config "
                               f"({manifest.get('config_digest')} != {digest}); refusing to resume it")
        return torch.load(d / "state.pt", map_location="cpu", weights_only=False)
    return None


def save_model(dest: Path, state_dict: dict, meta: dict) -> None:
    need = sum(t.numel() * t.element_size() for t in state_dict.values())
    check_free_disk(dest, need, "model weights")
    dest = Path(dest)
    _write_dir(dest, {"model.pt": state_dict}, meta, fault=f"{dest.parent.parent.name}:final")


def load_model(d: Path) -> dict:
    d = Path(d)
    if verify(d, expect="model.pt") is None:
        raise RuntimeError(f"model weights in {d} are missing or corrupt (manifest check failed); "
                           "delete that directory and rerun to rebuild it")
    return torch.load(d / "model.pt", map_location="cpu", weights_only=True)


def _tensors(obj):
    if torch.is_tensor(obj):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)

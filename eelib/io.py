"""Atomic file writes: temp file in the same directory, fsync, rename (issue 7).

A reader (or a rerun after kill -9) sees either the old file or the new one, never half of one.
Every result, record, config and manifest eelib writes under outputs/ and the cache goes
through these helpers; appended logs, lock files and the token shards' memmaps (built under a
temporary name and renamed when complete) do not.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import signal
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np


# mkstemp/mkdtemp create 0600/0700 entries; give renamed-in files the modes a plain open() would.
def _read_umask() -> int:
    try:  # Linux: read it without changing it (os.umask's set-and-restore races other threads)
        for line in open("/proc/self/status"):
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK


# A temp file of `path` older than this is a leftover of a writer killed before its rename
# (kill -9 skips the cleanup below); younger ones may be another process's write in progress.
STALE_TEMP_S = 600


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temp path next to `path`; on success fsync it and rename it over `path`, and
    remove the temp files of `path` that killed writers left (older than STALE_TEMP_S)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, FILE_MODE)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        _remove_stale_temps(path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _remove_stale_temps(path: Path) -> None:
    now = time.time()
    for old in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        try:
            if now - old.stat().st_mtime > STALE_TEMP_S:
                old.unlink()
        except OSError:  # gone already: another writer cleaned it
            pass


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serializable: {type(o).__name__}")


def atomic_save_npy(path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


class CorruptRecord(RuntimeError):
    """A JSON record eelib wrote (atomically) that no longer parses: cut or edited from outside."""


def read_json(path, fix: str):
    """json.loads of a record eelib wrote; one line naming the file and `fix` where it does not parse
    (eelib's writes are atomic, so a cut file came from elsewhere: a copy, a sync, an edit)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        why = "empty" if not path.stat().st_size else f"not valid JSON ({str(e).splitlines()[0]})"
        raise CorruptRecord(f"{path}: {why}; eelib writes it whole, so it was cut or edited since "
                            f"(a copy, a sync, a full disk): {fix}") from None


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class InsufficientDisk(OSError):
    """Not enough free disk for a checkpoint or weights; raised before anything is written."""


def check_free_disk(path, need_bytes: int, what: str) -> None:
    """Refuse to start a write that cannot fit (issue 7: free disk checked before writing)."""
    path = Path(path)
    probe = path if path.exists() else next((p for p in path.parents if p.exists()), Path("."))
    free = shutil.disk_usage(probe).free
    if free < need_bytes * 1.1:
        raise InsufficientDisk(f"not enough free disk for {what} under {path}: need ~{need_bytes / 2**20:.0f} MiB, "
                      f"have {free / 2**20:.0f} MiB; free space or set another output directory")


# ---------------------------------------------------------------------------------------------
# Fault injection for the resume tests (issue 7): EELIB_FAULT="stage2:step:25,stage1:ckpt:50"
# kills this process with SIGKILL (no cleanup, no atexit, like kill -9 or a power cut) when the
# named point is reached. Points: "<stage>:step:<n>" after optimizer step n (train.py);
# "<stage>:ckpt:<n>" inside the step-n checkpoint write, after state.pt is written and before its
# manifest and rename; "<stage>:final" inside the final-weights write (checkpoint.py).
# Unset (the normal case) this is one dict lookup.

def fault_point(tag: str) -> None:
    spec = os.environ.get("EELIB_FAULT")
    if spec and tag in spec.split(","):
        os.kill(os.getpid(), signal.SIGKILL)

"""Run directories: outputs/<experiment>/runs/<run>/, claimed by one config and held while used.

    runs/<run>/config.yaml     the resolved config of the run; config.digest its digest
    runs/<run>/data.digest     with source: local, the identity of its files (data.json per corpus)
    runs/<run>/swept.json      the keys of the grid the run belongs to
    runs/<run>/result.json     written when the run finishes (eelib.pipeline)

A finished run is never overwritten nor re-entered by another config or changed data (issue 7);
an unfinished one is taken over by a corrected config only while no other process uses the
experiment (the locks below).
"""
from __future__ import annotations

import fcntl
import json
import os
import sys
from pathlib import Path

from eelib import config as C
from eelib.io import atomic_write_json, atomic_write_text


def run_dir(cfg: C.ExperimentConfig, run: str, root: Path | None = None) -> Path:
    if not (isinstance(run, str) and run and run not in (".", "..") and "/" not in run and run.isprintable()
            and len(run.encode("utf-8")) <= 200):
        # '' or '..' would put config.yaml and result.json in runs/ or the experiment's own folder,
        # 'a/b' nests it where results.jsonl and the report never look (runs/*/result.json)
        raise C.ConfigError(f"run name {run!r}: give one directory name (no '/', not '.' or '..', at most "
                            "200 bytes), e.g. --run-name lam0.5 or -p run lam0.5")
    return Path(root or C.OUTPUTS) / cfg.name / "runs" / run


def _data_identity(cfg: C.ExperimentConfig) -> dict | None:
    """The identity of each of a source=local run's corpora's files (None otherwise: hub and
    offline data are pinned by the config itself). Editing or appending to a file changes it
    (data.files_identity)."""
    if cfg.data.source != "local":
        return None
    from eelib.data import files_identity
    return {k: files_identity(v) for k, v in sorted(cfg.data.data_files.items())}


def _per_corpus(identity: dict) -> dict:
    """{corpus: digest of its files' identity}: what data.json records."""
    return {k: C.digest(v) for k, v in identity.items()}


def _changed_corpora(rdir: Path, identity: dict) -> str:
    """Which corpora's files differ from those the run recorded in data.json (runs made
    before that file name them all)."""
    try:
        old = json.loads((rdir / "data.json").read_text())
    except (OSError, ValueError):
        return f"the data files of {', '.join(identity)}"
    now = _per_corpus(identity)
    parts = [f"{k} ({'added' if k not in old else 'removed' if k not in now else 'changed'})"
             for k in sorted(set(old) | set(now)) if old.get(k) != now.get(k)]
    return "the data files of " + ", ".join(parts)


def _flat(d: dict, pre: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{pre}{k}.") if isinstance(v, dict) else {f"{pre}{k}": v})
    return out


def _stored_config(rdir: Path) -> dict | None:
    """A run's config.yaml read back as eelib reads configs now: fields added since it was written
    take their defaults. Not validated: its files may have moved. None if unreadable."""
    import yaml
    try:
        raw = yaml.safe_load((rdir / "config.yaml").read_text()) or {}
        return C.to_dict(C._from_dict(C.ExperimentConfig, raw, ""))
    except (OSError, yaml.YAMLError, C.ConfigError, TypeError, ValueError):
        return None


def _comparable(d: dict) -> dict:
    d = json.loads(json.dumps(d))
    if d["data"]["source"] == "local":  # their identity is data.digest's; paths may move
        d["data"]["data_files"] = None
    return d


def _changed_fields(old: dict | None, new: dict) -> str:
    """'stage2.lr: 0.001 -> 0.002, …' between a stored config and the new one (both _comparable)."""
    if old is None:
        return "its config.yaml is unreadable"
    old, new = _flat(old), _flat(new)
    diff = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]
    return ", ".join(diff[:5]) + (f" (+{len(diff) - 5} more)" if len(diff) > 5 else "") or "no field differs"


# Run directories in use. A process that works on runs of an experiment holds a shared flock
# on outputs/<experiment>/.in-use (one descriptor per experiment, whatever the number of runs it
# holds) until it releases them (release_run, in a `finally`) or ends, however it ends. An
# unfinished run directory made by another config, or from other data, is taken over only when
# no other process holds the experiment, so a running batch (it holds every run it claimed) is
# never handed another config's config.yaml, which its next notebook would read. Claims are
# serialised by an exclusive flock on outputs/<experiment>/.claim, held for the check and writes.
_USERS: dict[Path, tuple[int, dict[Path, int]]] = {}  # experiment dir -> (descriptor, {run dir: claims})


def _lock_fd(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask applies, as to every file


def _experiment(rdir: Path) -> Path:
    """The key of a run's experiment: one spelling for a claim and its release (symlinks resolved)."""
    return Path(rdir).parent.parent.resolve()


def _shared(edir: Path) -> int:
    fd = _lock_fd(edir / ".in-use")
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def _used_by_others(edir: Path) -> bool:
    """Whether another process holds the experiment (called under its .claim lock, so no one
    takes the lock meanwhile; our own shared lock is dropped for the test, then taken again)."""
    mine = _USERS.pop(edir, None)
    if mine is not None:
        os.close(mine[0])
    fd = _lock_fd(edir / ".in-use")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        others = False
    except BlockingIOError:
        others = True
    finally:
        os.close(fd)
    if mine is not None:
        _USERS[edir] = (_shared(edir), mine[1])
    return others


def _hold(rdir: Path) -> None:
    edir = _experiment(rdir)
    if edir not in _USERS:
        _USERS[edir] = (_shared(edir), {})
    runs = _USERS[edir][1]
    runs[rdir] = runs.get(rdir, 0) + 1


def release_run(rdir: Path) -> None:
    """This process is done with a run it claimed (the path claim_run_dir returned); a no-op for a
    run it does not hold. The experiment's lock goes when its last held run is released."""
    rdir = Path(os.path.abspath(rdir))
    edir = _experiment(rdir)
    fd, runs = _USERS.get(edir, (None, {}))
    if rdir not in runs:
        return
    runs[rdir] -= 1
    if not runs[rdir]:
        del runs[rdir]
    if not runs:
        del _USERS[edir]
        os.close(fd)


def claim_run_dir(cfg: C.ExperimentConfig, run: str, root: Path | None = None,
                  swept: list[str] | None = None) -> Path:
    """Create (or re-enter) a run directory and hold it until release_run; returns its absolute
    path. A finished run (result.json) made by a different config, or from data files that
    changed since, is refused: results are never overwritten (issue 7). An unfinished one holds no
    results, so a corrected config takes it over, unless another process is using the experiment.

    "Different" is judged on the stored config.yaml read with today's defaults, so a run written
    by an older eelib (before a field was added) or whose local files moved is re-entered, and
    its stamp and config.yaml are brought up to date. `swept`: the keys of the grid the run belongs
    to, recorded once in swept.json (what pooled_runs takes as varying by design).
    Under torchrun rank 0 claims and holds it for the group; the others get its outcome."""
    rdir = Path(os.path.abspath(run_dir(cfg, run, root)))
    # A process group exists only once eelib.distributed set it up; a process that never imported
    # it (a batch's parent) has none, and need not import torch to learn so.
    distributed = sys.modules.get("eelib.distributed")
    dist = distributed.current() if distributed is not None else None
    if dist is None or dist.world == 1:
        _claim(cfg, rdir, run, swept)
        return rdir
    error = None
    if dist.is_main:
        try:
            _claim(cfg, rdir, run, swept)
        except Exception as e:  # every rank stops with it, none waits for a broadcast that never comes
            error = f"{e}"
            dist.broadcast(error)
            raise
    error = dist.broadcast(error)
    if error is not None:
        raise RuntimeError(error)
    return rdir


def _claim(cfg: C.ExperimentConfig, rdir: Path, run: str, swept: list[str] | None) -> None:
    identity = _data_identity(cfg)
    dig, data = C.digest(C.to_dict(cfg)), identity and C.digest(identity)
    stamp, dstamp = rdir / "config.digest", rdir / "data.digest"
    fix = ("Rename the experiment (name:), give the run another name (eelib run-one --run-name; a stage "
           "notebook's -p run <name>), or move the run directory away.")
    edir = _experiment(rdir)
    edir.mkdir(parents=True, exist_ok=True)
    claim = _lock_fd(edir / ".claim")
    try:
        fcntl.flock(claim, fcntl.LOCK_EX)
        finished = (rdir / "result.json").exists()
        same = stamp.exists() and stamp.read_text().strip() == dig
        other_data = bool(data) and dstamp.exists() and dstamp.read_text().strip() != data
        if (rdir / "config.yaml").exists() and (not same or other_data):  # made before, maybe by another config
            old, now = _stored_config(rdir), _comparable(C.to_dict(cfg))
            old = None if old is None else _comparable(old)
            changed = _changed_fields(old, now) if old != now else ""
            if finished and changed:
                raise RuntimeError(f"{rdir} holds the results of a different config ({changed}); they "
                                   f"are never overwritten. {fix}")
            if finished and other_data:
                raise RuntimeError(f"{rdir}: {_changed_corpora(rdir, identity)} changed since this run "
                                   f"finished; its results are never overwritten. {fix}")
            if changed or other_data:  # unfinished, so it holds no results
                what = f"made by another config ({changed})" if changed else \
                    f"made from other data ({_changed_corpora(rdir, identity)})"
                if _used_by_others(edir):
                    raise RuntimeError(f"{rdir} is unfinished, {what}, and another process (a batch or "
                                       f"run) is using experiment {edir.name}; wait for it to end, or "
                                       f"{fix[0].lower()}{fix[1:]}")
                print(f"[eelib] {run}: taking over an unfinished run directory (no result.json) {what}",
                      file=sys.stderr)
        rdir.mkdir(parents=True, exist_ok=True)
        if not same:  # config.yaml first: a kill between the two leaves a stamp that differs, never none
            atomic_write_text(rdir / "config.yaml", C.dump(cfg))
            atomic_write_text(stamp, dig + "\n")
        if data and not (finished and dstamp.exists()):
            atomic_write_json(rdir / "data.json", _per_corpus(identity))
            atomic_write_text(dstamp, data + "\n")
        if swept is not None and not (rdir / "swept.json").exists():
            atomic_write_json(rdir / "swept.json", sorted(swept))
        _hold(rdir)  # last: a claim that failed holds nothing
    finally:
        os.close(claim)

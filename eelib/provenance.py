"""How a stage was computed: software, hardware and loop settings, per training segment.

A stage's key (eelib/config.py) holds what its numbers depend on; device, world size, torch.compile,
chunked CE and threads are left out of it on purpose (they change how a stage is computed, not
what), so a stage trained eagerly on a CPU and one trained compiled on 8 GPUs share a key. Their
numbers still differ by float noise (docs/reliability.md), and a stage can be reused across
experiments and machines, so stage.json says how it was made: `computed` lists one segment per
process that trained it (a resumed stage has several), each with this environment, its steps,
seconds and training tokens/s. The segments travel inside checkpoints, so a kill loses none.
"""
from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
import time
from importlib import metadata
from pathlib import Path

import torch


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def source_revision() -> str | None:
    """The git commit of the eelib source tree ("+dirty" with uncommitted changes), if it is a checkout."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        git = ["git", "-C", str(root)]
        head = subprocess.run(git + ["rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(git + ["status", "--porcelain", "--untracked-files=no", "--", "eelib"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def environment(device: torch.device, *, world: int, compile: bool, ce_chunk: int) -> dict:
    """What one training process ran with; JSON-ready."""
    return {
        "eelib": _version("eelib"), "source": source_revision(),
        "python": platform.python_version(), "torch": torch.__version__,
        "transformers": _version("transformers"), "peft": _version("peft"),
        "device": device_name(device), "world": world,
        "precision": "bf16 autocast" if device.type == "cuda" else "fp32",
        "compile": bool(compile), "ce_chunk": int(ce_chunk),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "host": socket.gethostname(),
    }


class Segments:
    """The `computed` list of a stage: earlier segments (from a checkpoint) plus this process's."""

    def __init__(self, earlier: list | None, env: dict, from_step: int, tokens_per_step: int):
        self.earlier = list(earlier or [])
        self.env, self.from_step, self.tokens_per_step = env, from_step, tokens_per_step
        self.t0 = time.time()

    def upto(self, step: int) -> list[dict]:
        """All segments, this one ending at `step` (what a checkpoint or stage.json stores)."""
        seconds = time.time() - self.t0
        steps = step - self.from_step
        this = dict(self.env, from_step=self.from_step, to_step=step, seconds=round(seconds, 3),
                    tokens_per_s=round(steps * self.tokens_per_step / seconds, 1) if steps and seconds > 0 else None)
        return self.earlier + [this]

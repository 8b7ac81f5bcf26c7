"""How a stage was computed: software, hardware and loop settings, per training segment.

A stage's key (eelib/keys.py) holds what its numbers depend on; device, world size, torch.compile,
chunked CE and threads are left out of it on purpose (they change how a stage is computed, not
what), so a stage trained eagerly on a CPU and one trained compiled on 8 GPUs share a key. Their
numbers still differ by float noise (docs/reliability.md), and a stage can be reused across
experiments and machines, so stage.json says how it was made: `computed` lists one segment per
process that trained it (a resumed stage has several), each with this environment, its steps,
seconds and tokens per second of wall time (evaluations and checkpoint writes included). The
segments travel inside checkpoints; steps a killed process took after its last checkpoint are
redone by the next one and counted there.
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
    # GIT_DIR & co. from the caller's shell would point git at another repository; optional locks
    # off, so this never takes index.lock while the user commits. Never fatal: provenance is a
    # record, and no training may fail over it (no git, dubious ownership, odd file names).
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    git = ["git", "--no-optional-locks", "-C", str(root)]
    try:
        head = subprocess.run(git + ["rev-parse", "--short=12", "HEAD"], capture_output=True, env=env,
                              timeout=10, check=True).stdout.decode("ascii", "replace").strip()
        dirty = subprocess.run(git + ["status", "--porcelain", "--untracked-files=no", "--", "eelib"],
                               capture_output=True, env=env, timeout=10, check=True).stdout.strip()
    except Exception:  # noqa: BLE001 (see above)
        return None
    return (head + ("+dirty" if dirty else "")) if head else None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def precision(device_type: str) -> str:
    """What a stage trains in on this kind of device (train._autocast): CUDA bf16 autocast, else fp32."""
    return "bf16 autocast" if device_type == "cuda" else "fp32"


def environment(device: torch.device, *, world: int, compile: bool, ce_chunk: int,
                residual_stream: str = "fp32") -> dict:
    """What one training process ran with; JSON-ready."""
    return {
        "eelib": _version("eelib"), "source": source_revision(),
        "python": platform.python_version(), "torch": torch.__version__,
        "transformers": _version("transformers"), "peft": _version("peft"),
        "device": device_name(device), "world": world,
        "precision": precision(device.type),
        "compile": bool(compile), "ce_chunk": int(ce_chunk),
        # the stream's dtype under autocast; without autocast (CPU) it changes nothing (model.py)
        "residual_stream": residual_stream,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        # CPU kernels differ by instruction set (AVX2, AVX-512), and so does their rounding:
        # same params + seed give the same numbers on CPUs of the same capability only.
        "cpu_capability": torch.backends.cpu.get_cpu_capability() if device.type == "cpu" else None,
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
        # Wall time of the loop: evaluations and checkpoint writes included (not a kernel benchmark).
        this = dict(self.env, from_step=self.from_step, to_step=step, seconds=round(seconds, 3),
                    wall_tokens_per_s=round(steps * self.tokens_per_step / seconds, 1) if steps and seconds > 0 else None)
        return self.earlier + [this]

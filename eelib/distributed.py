"""Data-parallel training over several processes (DDP), launched by torchrun or accelerate.

    torchrun --nproc_per_node 8 -m eelib run-one run.yaml --run-name <name> --out outputs
    accelerate launch --multi_gpu --num_processes 8 -m eelib run-one run.yaml --run-name <name> --out outputs

(`--multi_gpu` on purpose: without it, accelerate starts a single process wherever it sees fewer than
two GPUs, and nothing fails; each stage.json's `computed[].world` says how many ranks trained it.)

Both launchers set RANK / WORLD_SIZE / LOCAL_RANK (and MASTER_ADDR / MASTER_PORT); `init_from_env`
reads them (backend nccl on CUDA, gloo on CPU). Nothing else changes for the user: the same
params file, the same outputs layout.

Design (what stays identical between 1 and N processes):
  * Data: every rank builds the same Mixture and draws the same *global* batch (an index
    computation; cheap), then keeps rows [rank::world]. So the union of the ranks' rows at each
    step is the single-process batch, in the same order, and the mixture state in checkpoints
    is the global one (a run can resume on a different number of processes).
  * Gradients: DDP averages them; each rank weights its loss by its share of the global rows, so
    the averaged gradient is the global-batch mean even when the last batch splits unevenly.
    A rank left without rows (a last batch shorter than the world) runs one row at weight 0 so
    the collective still happens.
  * Evaluation (early stopping, trajectories) runs on rank 0 and its result is broadcast, so
    every rank takes the same early-stopping decision.
  * Files: checkpoints, final weights and stage.json are written by rank 0 only; stage
    directories are locked by rank 0 and the other ranks wait at a barrier (eelib.stagedir).
  * The global batch size is the config's batch_size; micro_batch is per rank.
Several machines: the same command under torchrun's multi-node flags; the outputs directory
must be on a filesystem all nodes share (resume reads rank 0's checkpoints).
"""
from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as tdist


@dataclass
class Dist:
    rank: int
    world: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: np.ndarray) -> tuple[np.ndarray, float]:
        """This rank's rows of a global batch, and the denominator that makes DDP's mean exact.

        Returns (rows, denom): a micro-batch's mean loss is weighted len(micro) / denom, with
        denom = global rows / world; DDP's average over ranks is then the global-batch mean.
        """
        rows = batch[self.rank::self.world]
        if len(rows) == 0:  # fewer global rows than ranks: contribute a zero-weight row
            return batch[:1], float("inf")
        return rows, len(batch) / self.world

    def wrap(self, module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel as DDP
        ids = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else None
        return DDP(module, device_ids=ids)

    def no_sync(self, module: torch.nn.Module, last: bool):
        """Skip the gradient all-reduce on all but the last micro-batch of a step."""
        return nullcontext() if last or not hasattr(module, "no_sync") else module.no_sync()

    def barrier(self) -> None:
        tdist.barrier()

    def all_gather_object(self, obj) -> list:
        """Every rank's `obj`, in rank order, on every rank (any picklable object)."""
        out = [None] * self.world
        tdist.all_gather_object(out, obj)
        return out

    def all_reduce_max(self, t: torch.Tensor) -> torch.Tensor:
        """`t` replaced, in place, by its elementwise maximum over the ranks."""
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
        return t

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank (any picklable object)."""
        box = [obj]
        tdist.broadcast_object_list(box, src=0)
        return box[0]


_CURRENT: Dist | None = None


def current() -> Dist | None:
    """The process group set up by `init_from_env`, or None in a single-process run."""
    return _CURRENT


def is_main() -> bool:
    return _CURRENT is None or _CURRENT.is_main


def barrier() -> None:
    if _CURRENT is not None:
        _CURRENT.barrier()


def init_from_env(backend: str | None = None) -> Dist | None:
    """Join the process group torchrun/accelerate describe in the environment; None if WORLD_SIZE ≤ 1."""
    global _CURRENT
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)  # so device "cuda" is this rank's GPU everywhere
    if not tdist.is_initialized():
        # Rank 0 works alone while the others wait in a collective: a 1B checkpoint (~16 GB, fsync,
        # sha256), an evaluation, the lock of a stage another run trains. NCCL's default watchdog
        # (10 min) would abort such a wait; 2 h covers them.
        tdist.init_process_group(backend=backend, rank=rank, world_size=world, timeout=timedelta(hours=2))
    _CURRENT = Dist(rank=rank, world=world, local_rank=local_rank)
    return _CURRENT


def shutdown() -> None:
    global _CURRENT
    if tdist.is_initialized():
        import gc
        gc.collect()  # a DDP wrapper left in a cycle (an exception's frames) goes before its group
        tdist.destroy_process_group()
    _CURRENT = None

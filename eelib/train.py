"""The one training loop all three stages share; the stages differ only by config (§3, Table 5).

AdamW (β 0.9/0.95), grad-norm clip 1.0, linear warmup then cosine to a minimum LR, decoupled weight
decay on matrices only, gradient accumulation, bf16 autocast on CUDA, optional torch.compile.
Evaluation every `eval_interval` steps feeds early stopping (stage 2) and the loss trajectory
(stage 3). Checkpoints carry everything needed to resume bit-exactly on CPU: model, optimizer,
step, mixture position, RNG states, early-stopping state and the trajectory so far.
"""
from __future__ import annotations

import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from eelib import checkpoint, distributed, provenance
from eelib.io import fault_point
from eelib.loss import LMLoss, chunked_lm_loss, lm_loss
from eelib.model import residual_stream
from eelib.mixture import Mixture


@dataclass
class LoopSpec:
    lr: float
    min_lr: float
    warmup_steps: int
    weight_decay: float
    batch_size: int          # sequences per optimizer step
    micro_batch: int         # sequences per forward/backward (gradient accumulation); 0 = all
    max_steps: int           # schedule length; the stage may stop earlier (early stopping)
    eval_interval: int = 0   # 0: no evaluation during training
    patience: int = 0        # 0: no early stopping
    early_stop_key: str = ""  # evaluator key watched by early stopping
    ckpt_interval: int = 0   # 0: checkpoint at every eval
    clip: float = 1.0
    betas: tuple = (0.9, 0.95)
    chunked_ce: int = 0      # tokens per cross-entropy chunk (eelib/loss.py); 0 = plain loss


def lr_at(step: int, s: LoopSpec) -> float:
    """Linear warmup to s.lr, then cosine to s.min_lr at s.max_steps (Table 7: warmup + cosine)."""
    if s.warmup_steps and step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    span = max(1, s.max_steps - s.warmup_steps)
    t = min(1.0, (step - s.warmup_steps) / span)
    return s.min_lr + 0.5 * (s.lr - s.min_lr) * (1 + math.cos(math.pi * t))


def make_optimizer(model: torch.nn.Module, s: LoopSpec, device: torch.device) -> torch.optim.AdamW:
    # Decay matrices only; norms and other 1-D params are not decayed (common practice; the paper
    # gives only the weight-decay value).
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": s.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=s.lr, betas=s.betas, eps=1e-8,
                             fused=(device.type == "cuda"))


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@torch.no_grad()
def heldout_loss(model, windows: np.ndarray, device: torch.device, batch_size: int = 32,
                 chunk: int = 0) -> float:
    """L(θ; D) of the notes' §1: mean token cross-entropy on the fixed held-out windows of one corpus.

    `chunk` > 0 (the config's ce_chunk) evaluates with the chunked loss too, so evaluation never
    builds the [32, T, 49152] fp32 logits (6.4 GB at seq 1024) that training was spared.
    """
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(windows), batch_size):
        x = torch.from_numpy(np.asarray(windows[i:i + batch_size], dtype=np.int64)).to(device)
        with _autocast(device):
            loss = chunked_lm_loss(model, x, chunk) if chunk else lm_loss(model, x)
        n = x.size(0) * (x.size(1) - 1)
        total += float(loss) * n
        count += n
    model.train(was_training)
    return total / count


RANK_SEED_STRIDE = 1_000_003  # rank r seeds its dropout stream with seed + r * this


def _rng_state(device: torch.device) -> dict:
    """This process's random streams: CPU, and on CUDA its own device's only (under DDP each rank
    has one GPU; every visible device's state would not restore on a machine with fewer)."""
    st = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state()
    return st


def _set_rng_state(st: dict, dist: distributed.Dist | None = None) -> None:
    """Restore what `save` stored. A DDP checkpoint holds every rank's streams (`per_rank`): each
    rank takes its own, so dropout masks continue as if never interrupted; resumed on another
    number of processes, every rank takes rank 0's (same numbers are then not promised)."""
    if "per_rank" in st:
        per = st["per_rank"]
        st = per[dist.rank] if dist is not None and len(per) == dist.world else per[0]
    torch.set_rng_state(st["torch"])
    cuda = st.get("cuda")
    if isinstance(cuda, list):  # checkpoints before per-device states: one entry per visible device
        i = torch.cuda.current_device() if torch.cuda.is_available() else len(cuda)
        cuda = cuda[i] if i < len(cuda) else None
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda)


class NonFiniteLoss(FloatingPointError):
    """A NaN/inf training loss, gradient norm or evaluation loss; the message names step and fix."""


def _check_finite(losses: list[torch.Tensor], gnorm: torch.Tensor, where: str, desc: str,
                  dist: distributed.Dist | None = None) -> None:
    """Stop the run if a micro-batch loss or the gradient norm is NaN/inf (issue 7), before
    `opt.step()` can write NaN into the weights.

    One host sync per optimizer step, not one per micro-batch: a check between forward and
    backward would make the host wait for each forward and leave the GPU idle while it then
    launches the backward (issue 5). Under DDP the two flags are all-reduced first, so every
    rank stops at the same step whichever rank went bad. The gradient all-reduce alone would not
    do: cross-entropy's gradient is bounded, so an inf loss can leave every gradient finite, and
    the bad rank would stop while the others waited in the next step's all-reduce.
    """
    dev = losses[0].device
    flags = torch.stack([(~torch.isfinite(torch.stack([l.detach().float() for l in losses]))).any(),
                         (~torch.isfinite(gnorm.detach().float())).to(dev)]).float()
    if dist is not None and dist.world > 1:
        dist.all_reduce_max(flags)
    if not bool(flags.any()):  # the host sync
        return
    bad = next((v for v in (float(l) for l in losses) if not math.isfinite(v)), None)
    if bad is not None:
        what = f"loss is {bad}"
    elif flags[0]:
        what = "loss is not finite on another rank"
    else:
        what = f"gradient norm is {float(gnorm)}"
    raise NonFiniteLoss(f"{desc}: {what} {where}; lower the learning rate or check the data")


@dataclass
class EarlyStopping:
    """Stage 2 trains "until its validation loss stops improving" (§3): stop once `patience`
    evaluations in a row have not beaten the best one, and keep the best evaluation's weights
    (what stage 2 hands on). patience 0: no early stopping and no best kept (the stage hands on
    its last weights)."""
    patience: int = 0
    key: str = ""            # the evaluator's key watched (a held-out loss on D_post)
    best: float = math.inf
    best_step: int = -1
    bad_evals: int = 0
    best_state: dict | None = None
    stopped: bool = False

    def observe(self, row: dict, step: int, model: torch.nn.Module) -> None:
        if not self.patience:
            return
        if row[self.key] < self.best:
            self.best, self.best_step, self.bad_evals = row[self.key], step, 0
            self.best_state = {k: t.detach().to("cpu", copy=True) for k, t in model.state_dict().items()}
        else:
            self.bad_evals += 1
            self.stopped = self.bad_evals >= self.patience

    # A checkpoint stores these five flat, under the names it always had, so older checkpoints resume.
    _FIELDS = ("best", "best_step", "bad_evals", "best_state", "stopped")

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in self._FIELDS}

    def load_state_dict(self, st: dict) -> None:
        for k in self._FIELDS:
            setattr(self, k, st[k])


def _accumulate(fwd, x_all: torch.Tensor, n_rows: int, micro: int, denom: float, device: torch.device,
                dist: distributed.Dist | None) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Forward and backward over the micro-batches holding real rows (padding-only ones are not
    run); each row's loss weighted 1/global rows, so the summed gradient is the global-batch mean.
    Under DDP the all-reduce runs on the last micro-batch only. Returns (losses, last loss)."""
    losses = []
    n_micro = math.ceil(n_rows / micro)
    for m in range(n_micro):
        x = x_all[m * micro:(m + 1) * micro].to(device, non_blocking=True)
        real = min(micro, n_rows - m * micro)
        with dist.no_sync(fwd, last=m == n_micro - 1) if dist is not None else nullcontext():
            with _autocast(device):
                loss = fwd(x, rows=real)
            (loss * real / denom).backward()
        losses.append(loss.detach())
    return losses, losses[-1]


def _step_rows(mixture: Mixture, spec: LoopSpec, dist: distributed.Dist | None, pad_to: int,
               device: torch.device) -> tuple[torch.Tensor, int, float]:
    """The next global batch, this rank's rows of it ([rank::world], eelib/distributed.py) padded
    with zero rows up to `pad_to`, pinned on CUDA. Returns (rows, real rows, loss denominator)."""
    batch, _ = mixture.next_batch(spec.batch_size)
    batch, denom = dist.shard(batch) if dist is not None else (batch, len(batch))
    x_all = torch.from_numpy(batch.astype(np.int64))
    n_rows = x_all.size(0)
    if n_rows < pad_to:
        x_all = torch.cat([x_all, x_all.new_zeros(pad_to - n_rows, x_all.size(1))])
    if device.type == "cuda":  # pinned pages let the copies to the GPU run asynchronously
        x_all = x_all.pin_memory()
    return x_all, n_rows, denom


def train(model: torch.nn.Module, mixture: Mixture, spec: LoopSpec, *, stage_dir: Path,
          config_digest: str, device: torch.device, seed: int,
          evaluator: Callable[[torch.nn.Module], dict] | None = None,
          compile: bool = False, desc: str = "train", progress: bool = True,
          dist: distributed.Dist | None = None) -> dict:
    """Train in place; resume from the newest good checkpoint in `stage_dir` if one exists.

    Returns {"steps", "tokens", "trajectory", "best", "stopped_early", "best_state", "computed"}; for
    early stopping, `best_state` holds the weights at the best evaluation (what stage 2 hands on);
    `computed` lists how each process that trained the stage ran (eelib/provenance.py).
    Under torchrun (`dist`, default: eelib.distributed.current()) each rank trains on its rows
    of the same global batch through DDP; see eelib/distributed.py.
    """
    from tqdm.auto import tqdm

    model.to(device).train()
    opt = make_optimizer(model, spec, device)
    dist = dist or distributed.current()
    main = dist is None or dist.is_main
    progress = progress and main
    # The forward that returns the loss (plain or chunked CE, maybe compiled), DDP-wrapped on
    # several ranks. `lm_loss` is passed by name so tests can patch train.lm_loss.
    fwd = LMLoss(model, spec.chunked_ce, compile, plain=lm_loss)
    if dist is not None:
        fwd = dist.wrap(fwd, device)
    step, trajectory = 0, []
    stopping = EarlyStopping(spec.patience, spec.early_stop_key)
    # One stream per rank: with the same seed, ranks (same micro-batch shapes) would draw the same
    # dropout masks for their different rows. Rank 0 keeps `seed`, so one process is unchanged.
    torch.manual_seed(seed + (RANK_SEED_STRIDE * dist.rank if dist is not None else 0))

    resumed = checkpoint.load_latest(stage_dir, config_digest)
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        opt.load_state_dict(resumed["optimizer"])
        mixture.load_state_dict(resumed["mixture"])
        _set_rng_state(resumed["rng"], dist)
        step, trajectory = resumed["step"], resumed["trajectory"]
        stopping.load_state_dict(resumed)
        print(f"[eelib] {desc}: resuming at step {step} from {Path(stage_dir) / 'ckpt'}", file=sys.stderr)
    # How this stage is computed, one segment per process that trains it (eelib/provenance.py).
    env = provenance.environment(device, world=dist.world if dist is not None else 1, compile=compile,
                                 ce_chunk=spec.chunked_ce,
                                 residual_stream=residual_stream(model))
    segments = provenance.Segments(resumed.get("segments") if resumed is not None else None, env, step,
                                   spec.batch_size * mixture.seq_len)

    def save(step_now):
        rng = _rng_state(device)
        if dist is not None:  # each rank's own streams (dropout draws differ per rank)
            rng = {"per_rank": dist.all_gather_object(rng)}
        if not main:  # rank 0 writes; every rank resumes from its files
            return
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(),
                 "mixture": mixture.state_dict(), "rng": rng, "step": step_now,
                 "trajectory": trajectory, **stopping.state_dict(), "segments": segments.upto(step_now)}
        checkpoint.save_checkpoint(stage_dir, step_now, state, {"config_digest": config_digest})

    def evaluate(step_now):
        # tokens trained so far, as the mixture delivered them (a stage's last batch can be short)
        row = {"step": step_now, "tokens": mixture.n * mixture.seq_len}
        if dist is None:
            row.update(evaluator(model))
        else:  # rank 0 evaluates; every rank gets its numbers, so early stopping agrees
            row.update(dist.broadcast(evaluator(model) if main else None))
        bad = {k: v for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)}
        if bad:
            raise NonFiniteLoss(f"{desc}: evaluation at step {step_now} gave {bad}; "
                                "lower the learning rate or check the data")
        trajectory.append(row)
        stopping.observe(row, step_now, model)

    micro = spec.micro_batch or spec.batch_size
    # Compiled graphs are static. A stage's last batch can be short (exact quotas), so it is
    # padded with zero rows that the loss leaves out, up to the rows this process gets on a full
    # step, and split as a full step is: the compiled forward sees only a full step's shapes and
    # never recompiles at a stage's end (issue 5). Full steps are never padded; eager runs never.
    full_rows = len(range(dist.rank, spec.batch_size, dist.world)) if dist is not None else spec.batch_size
    pad_to = full_rows if compile else 0
    fault_stage = Path(stage_dir).parent.name  # "stage1" for outputs/<exp>/stage1/<key>
    bar = tqdm(total=spec.max_steps, initial=step, desc=desc, disable=not progress, leave=False,
               unit="step", dynamic_ncols=True)
    t0, tok0 = time.time(), step
    if step == 0 and evaluator is not None and spec.eval_interval and not trajectory:
        evaluate(0)
    while step < spec.max_steps and not stopping.stopped and mixture.remaining() != 0:  # None: unbounded
        lr = lr_at(step, spec)
        for g in opt.param_groups:
            g["lr"] = lr
        x_all, n_rows, denom = _step_rows(mixture, spec, dist, pad_to, device)
        losses, loss = _accumulate(fwd, x_all, n_rows, micro, denom, device, dist)
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), spec.clip)
        _check_finite(losses, gnorm, f"at step {step} (lr {lr:.3g})", desc, dist)  # before the update
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        fault_point(f"{fault_stage}:step:{step}")
        bar.update(1)
        if progress and step % 10 == 0:
            rate = (step - tok0) * spec.batch_size * mixture.seq_len / max(time.time() - t0, 1e-9)
            bar.set_postfix(loss=f"{float(loss):.3f}", lr=f"{lr:.2e}", tok_s=f"{rate:,.0f}")
        at_end = step >= spec.max_steps or mixture.remaining() == 0
        if evaluator is not None and spec.eval_interval and (step % spec.eval_interval == 0 or at_end):
            evaluate(step)
        ck = spec.ckpt_interval or spec.eval_interval
        if ck and step % ck == 0 and not at_end:
            save(step)
    bar.close()
    return {"steps": step, "tokens": mixture.n * mixture.seq_len, "trajectory": trajectory,
            "best": stopping.best if stopping.best < math.inf else None, "best_step": stopping.best_step,
            "stopped_early": stopping.stopped, "best_state": stopping.best_state,
            "computed": segments.upto(step)}

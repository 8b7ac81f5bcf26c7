"""The training loss: next-token cross-entropy, optionally chunked over tokens (issue 5).

With a 49,152-token vocabulary the plain loss materialises [B, T, V] logits (and their fp32 copy
for the cross-entropy): 32 × 1024 × 49,152 × 4 bytes = 6.4 GB at 135M, batch 32, plus the same
again for their gradient. The chunked loss never builds them: it takes the final hidden states,
and for each chunk of `chunk` tokens computes that chunk's logits through the LM head, the
cross-entropy in fp32, and throws the logits away; `torch.utils.checkpoint` recomputes them in
backward. Peak extra memory is one chunk's logits (8192 × 49,152 × 4 B = 1.6 GB), and the loss
and gradients equal the plain loss's up to float rounding (tests/test_loss.py).

`LMLoss` wraps a model as a module whose forward returns the loss, so DDP (eelib.distributed)
wraps the whole training forward, whichever loss is used. With `compile`, torch.compile takes
the model and the loss together (`_LossSum`): on one H100 (benchmarks/results/h100-2026-11-27)
compiling only the transformer and running the CE eagerly left eelib at 0.79x (135M) and 0.91x
(1B) the tokens/s of a plain transformers loop whose compiled graph holds its loss; the likely
cause (estimated, not profiled) is the eager CE's several passes over fp32 [tokens, 49152]
logits, which inductor fuses.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from eelib.model import base_model


def lm_loss(model, tokens: torch.Tensor, rows: int | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy over a [B, T] window batch (positions 1..T−1 predicted).

    `rows`: only the first `rows` windows count; the rest are padding that keeps a compiled
    model's input shape fixed (LMLoss). Rows do not interact in a causal LM, so padding changes
    no real row's logits.
    """
    logits = model(input_ids=tokens).logits
    if rows is not None:
        logits, tokens = logits[:rows], tokens[:rows]
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(),
                           tokens[:, 1:].reshape(-1))


def _chunk_ce_sum(head: torch.nn.Module, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # The head is called as a module (not via its .weight) so a LoRA-wrapped head (untied
    # paper-1b, Table 9) keeps its adapter.
    return F.cross_entropy(head(h).float(), y, reduction="sum")


IGNORE = -100  # F.cross_entropy's default ignore_index: the targets of padding rows


def ce_sum(model, tokens: torch.Tensor, targets: torch.Tensor, chunk: int = 0) -> torch.Tensor:
    """Summed next-token CE of a [B, T] batch over `targets` ([B, T-1], IGNORE where a row is
    padding), plain or chunked: the compiled training forward (`_LossSum`), and the chunked loss.

    Padding rows go through the head too, with no target, so every call has one shape.
    """
    y = targets.reshape(-1)
    if not chunk:
        logits = model(input_ids=tokens).logits
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(), y,
                               ignore_index=IGNORE, reduction="sum")
    base = base_model(model)
    hidden = base.model(input_ids=tokens).last_hidden_state
    h = hidden[:, :-1].reshape(-1, hidden.size(-1))
    total = hidden.new_zeros((), dtype=torch.float32)
    for i in range(0, h.size(0), chunk):  # unrolled by torch.compile
        if torch.is_grad_enabled():  # recompute this chunk's logits in backward instead of keeping them
            total = total + checkpoint(_chunk_ce_sum, base.lm_head, h[i:i + chunk], y[i:i + chunk],
                                       use_reentrant=False)
        else:
            total = total + _chunk_ce_sum(base.lm_head, h[i:i + chunk], y[i:i + chunk])
    return total


def chunked_lm_loss(model, tokens: torch.Tensor, chunk: int, rows: int | None = None) -> torch.Tensor:
    """`lm_loss` without the full [B, T, V] logits: the LM head and CE run per `chunk` tokens
    (`ce_sum`). `rows` as in `lm_loss`."""
    if rows is not None:
        tokens = tokens[:rows]  # rows do not interact in a causal LM
    return ce_sum(model, tokens, tokens[:, 1:], chunk) / (tokens.size(0) * (tokens.size(1) - 1))


def compile_module(module, backend: str = "inductor", mode: str = "default", **kw):
    """torch.compile with a mode ("reduce-overhead": the step's kernels replayed as CUDA graphs,
    skipped on CPU; benchmarks/throughput.py --compile-mode). Only inductor takes one: other
    backends (gpu_check's tracing-only "eager") get none."""
    if backend == "inductor" and mode != "default":
        kw["mode"] = mode
    return torch.compile(module, backend=backend, **kw)


class _LossSum(torch.nn.Module):
    """forward(tokens, targets) -> ce_sum: what torch.compile wraps, model and loss in one graph."""

    def __init__(self, model: torch.nn.Module, chunk: int):
        super().__init__()
        self.model, self.chunk = model, chunk

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return ce_sum(self.model, input_ids, targets, self.chunk)


class LMLoss(torch.nn.Module):
    """forward(tokens) -> mean next-token loss; `chunk` > 0 selects the chunked loss.

    `compile` compiles the model together with its loss (`_LossSum`) with dynamic=False: every
    distinct input shape gets its own static graph, and a new shape costs a recompile (tens of
    seconds at 135M). The mixture delivers exact quotas, so a stage's last batch can be short;
    the training loop pads it to a full step's rows and passes `rows`, the real ones, so a stage
    compiles only a full step's shapes, at its start (issue 5). Compiled, padding rows get IGNORE
    targets (one shape for the whole graph); eager, the loss slices the real rows (`lm_loss`,
    `chunked_lm_loss`). Either way the loss is the real rows' mean. The model's own state_dict
    keys are untouched.
    """

    def __init__(self, model: torch.nn.Module, chunk: int = 0, compile: bool = False, plain=None,
                 backend: str = "inductor", mode: str = "default"):
        super().__init__()
        self.model = model
        self.chunk = int(chunk)
        self.plain = plain or lm_loss  # the plain eager loss (train passes its own name)
        # Held in a list so the compiled wrapper is not registered as a second submodule.
        # `backend` other than inductor: benchmarks/gpu_check.sh's CPU dry run traces the graph with
        # dynamo's "eager" backend (seconds) instead of generating code (tens of seconds a piece).
        self._run = [compile_module(_LossSum(model, self.chunk), backend, mode, dynamic=False) if compile else None]

    def forward(self, tokens: torch.Tensor, rows: int | None = None) -> torch.Tensor:
        rows = None if rows is None or rows >= tokens.size(0) else int(rows)  # None: all rows are real
        run = self._run[0]  # (not `or`: a compiled module refuses truth testing)
        if run is not None:
            targets = tokens[:, 1:].clone()  # contiguous: one stride for the compiled graph's guards
            if rows is not None:
                targets[rows:] = IGNORE
            return run(tokens, targets) / ((tokens.size(0) if rows is None else rows) * targets.size(1))
        if self.chunk:
            return chunked_lm_loss(self.model, tokens, self.chunk, rows=rows)
        # Only padded calls pass `rows`, so a test's stand-in for `plain` needs no such argument.
        return self.plain(self.model, tokens) if rows is None else self.plain(self.model, tokens, rows=rows)

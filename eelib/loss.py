"""The training loss: next-token cross-entropy, optionally chunked over tokens (issue 5).

With a 49,152-token vocabulary the plain loss materialises [B, T, V] logits (and their fp32 copy
for the cross-entropy): 32 × 1024 × 49,152 × 4 bytes = 6.4 GB at 135M, batch 32, plus the same
again for their gradient. The chunked loss never builds them: it takes the final hidden states,
and for each chunk of `chunk` tokens computes that chunk's logits through the LM head, the
cross-entropy in fp32, and throws the logits away; `torch.utils.checkpoint` recomputes them in
backward. Peak extra memory is one chunk's logits (8192 × 49,152 × 4 B = 1.6 GB), and the loss
and gradients equal the plain loss's up to float rounding (tests/test_loss.py).

`LMLoss` wraps a model as a module whose forward returns the loss, so DDP (eelib.distributed)
and torch.compile wrap the whole training forward, whichever loss is used.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def base_model(model):
    """The LlamaForCausalLM inside a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


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


def chunked_lm_loss(model, tokens: torch.Tensor, chunk: int, body=None,
                    rows: int | None = None) -> torch.Tensor:
    """`lm_loss` without the full [B, T, V] logits: the LM head and CE run per `chunk` tokens.

    `body` (default: the model's LlamaModel) maps input_ids to hidden states; the training loop
    passes a compiled copy of it when `compile` is on. `rows` as in `lm_loss`: padding rows
    go through the body only, never through the head.
    """
    base = base_model(model)
    hidden = (base.model if body is None else body)(input_ids=tokens).last_hidden_state
    if rows is not None:
        hidden, tokens = hidden[:rows], tokens[:rows]
    h = hidden[:, :-1].reshape(-1, hidden.size(-1))
    y = tokens[:, 1:].reshape(-1)
    head = base.lm_head
    total = hidden.new_zeros((), dtype=torch.float32)
    for i in range(0, h.size(0), chunk):
        if torch.is_grad_enabled():
            total = total + checkpoint(_chunk_ce_sum, head, h[i:i + chunk], y[i:i + chunk],
                                       use_reentrant=False)
        else:
            total = total + _chunk_ce_sum(head, h[i:i + chunk], y[i:i + chunk])
    return total / y.numel()


class LMLoss(torch.nn.Module):
    """forward(tokens) -> mean next-token loss; `chunk` > 0 selects the chunked loss.

    `compile` compiles what runs the transformer (the whole model for the plain loss, its
    LlamaModel body for the chunked one) with dynamic=False: every distinct input shape gets its
    own static graph, and a new shape costs a recompile (tens of seconds at 135M). The mixture
    delivers exact quotas, so a stage's last batch can be short; the training loop pads it to a
    full step's rows and passes `rows`, the real ones, so a stage compiles only a full step's
    shapes, at its start (issue 5).
    The loss covers the real rows only; the CE outside the compiled region slices them.
    The model's own state_dict keys are untouched.
    """

    def __init__(self, model: torch.nn.Module, chunk: int = 0, compile: bool = False, plain=None):
        super().__init__()
        self.model = model
        self.chunk = int(chunk)
        self.plain = plain or lm_loss  # the plain loss function (train passes its own name)
        # Held in a list so the compiled wrapper is not registered as a second submodule.
        target = base_model(model).model if self.chunk else model
        self._run = [torch.compile(target, dynamic=False) if compile else None]

    def forward(self, tokens: torch.Tensor, rows: int | None = None) -> torch.Tensor:
        rows = None if rows is None or rows >= tokens.size(0) else int(rows)  # None: all rows are real
        if self.chunk:
            return chunked_lm_loss(self.model, tokens, self.chunk, body=self._run[0], rows=rows)
        run = self._run[0]  # (not `or`: a compiled module refuses truth testing)
        model = self.model if run is None else run
        # Only padded calls pass `rows`, so a test's stand-in for `plain` needs no such argument.
        return self.plain(model, tokens) if rows is None else self.plain(model, tokens, rows=rows)

"""eelib's models run causal SDPA with no mask tensor, also when compiled (eelib/model.py).

transformers 5.17 (the GPU image's) builds an explicit causal mask whenever dynamo traces; on the
H100 that made SDPA do the masked half too and kept the flash kernel out. The pinned transformers
here skips the mask under compile already, so these tests force the 5.17 behaviour by patching its
mask-skip rule to "never", which the stock attention is shown to obey (the control)."""
from __future__ import annotations

import pytest
import torch
import transformers.masking_utils as masking

from eelib.model import CAUSAL_SDPA, build_model


def _sdpa_calls(model, tokens):
    """(mask passed?, is_causal) of every SDPA call in the graph dynamo traces for a forward."""
    calls = []

    def spy(gm, example_inputs):
        for n in gm.graph.nodes:
            if n.op == "call_function" and "scaled_dot_product_attention" in str(n.target):
                mask = n.kwargs.get("attn_mask", n.args[3] if len(n.args) > 3 else None)
                calls.append((mask is not None, n.kwargs.get("is_causal", False)))
        return gm.forward

    torch._dynamo.reset()
    try:
        out = torch.compile(model, backend=spy, fullgraph=True)(input_ids=tokens).logits
    finally:
        torch._dynamo.reset()
    return calls, out


@pytest.fixture
def mask_always_built(monkeypatch):
    """transformers 5.17 under torch.compile: the causal mask is never skipped."""
    monkeypatch.setattr(masking, "_ignore_causal_mask_sdpa", lambda *a, **k: False)


def test_compiled_eelib_model_passes_no_mask_and_is_causal(mask_always_built):
    tokens = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    stock = build_model("test-micro", 64, seed=0, attention="sdpa").eval()
    calls, _ = _sdpa_calls(stock, tokens)
    assert calls == [(True, False)], calls  # the control: the patch reproduces 5.17's mask tensor
    ours = build_model("test-micro", 64, seed=0).eval()
    assert ours.config._attn_implementation == CAUSAL_SDPA
    calls, logits = _sdpa_calls(ours, tokens)
    assert calls == [(False, True)], calls
    with torch.no_grad():
        want = stock(input_ids=tokens).logits  # eager, the mask tensor built: the same function
    torch.testing.assert_close(logits, want, rtol=1e-5, atol=1e-5)


def test_causal_sdpa_equals_stock_attention_with_gqa_and_dropout_off():
    """Same weights (same seed), grouped-query heads as at 135M (9 query, 3 KV): same logits and
    loss gradients as transformers' own attention, eager (CPU)."""
    from eelib.model import PRESETS
    PRESETS["test-gqa"] = dict(PRESETS["test-micro"], num_attention_heads=4, num_key_value_heads=2)
    try:
        tokens = torch.randint(0, 64, (3, 24), generator=torch.Generator().manual_seed(1))
        grads = []
        for attention in ("sdpa", CAUSAL_SDPA):
            m = build_model("test-gqa", 64, seed=3, attention=attention).train()
            out = m(input_ids=tokens, labels=tokens)
            out.loss.backward()
            grads.append((out.loss.detach(), [p.grad.clone() for p in m.parameters()]))
        torch.testing.assert_close(grads[0][0], grads[1][0])
        for a, b in zip(grads[0][1], grads[1][1]):
            torch.testing.assert_close(a, b)
    finally:
        del PRESETS["test-gqa"]

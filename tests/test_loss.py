"""The chunked cross-entropy (eelib/loss.py) equals the plain loss, in value and in gradients."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from eelib import train as T
from eelib.loss import LMLoss, ce_sum, chunked_lm_loss, lm_loss
from eelib.mixture import Mixture, Source
from eelib.model import add_lora, build_model


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same_loss_and_grads(a, la, b, lb):
    """Backpropagate la through model a and lb through b; values and every gradient agree."""
    la.backward()
    lb.backward()
    assert abs(la.item() - lb.item()) < 1e-6
    ga, gb = _grads(a), _grads(b)
    assert ga.keys() == gb.keys() and len(ga) > 0
    for n in ga:
        torch.testing.assert_close(gb[n], ga[n], rtol=1e-5, atol=1e-7, msg=n)


@pytest.mark.parametrize("preset,chunk", [("test-micro", 7), ("test-micro", 64), ("test-micro", 10_000),
                                          ("cpu-tiny", 50)])
def test_chunked_equals_plain_loss_and_grads(preset, chunk):
    torch.manual_seed(0)
    tokens = torch.randint(0, 258, (3, 33))
    a, b = build_model(preset, 258, seed=1), build_model(preset, 258, seed=1)
    _assert_same_loss_and_grads(a, lm_loss(a, tokens), b, chunked_lm_loss(b, tokens, chunk))


def test_chunked_untied_head_and_no_grad():
    # An untied head (paper-1b style) gets its own gradient; under no_grad no checkpointing is used.
    from transformers import LlamaForCausalLM
    from eelib.model import llama_config
    cfg = llama_config("test-micro", 258)
    cfg.tie_word_embeddings = False
    torch.manual_seed(0)
    a = LlamaForCausalLM(cfg)
    b = LlamaForCausalLM(cfg)
    b.load_state_dict(a.state_dict())
    tokens = torch.randint(0, 258, (2, 17))
    lm_loss(a, tokens).backward()
    chunked_lm_loss(b, tokens, 5).backward()
    torch.testing.assert_close(b.lm_head.weight.grad, a.lm_head.weight.grad, rtol=1e-5, atol=1e-7)
    with torch.no_grad():
        assert abs(float(lm_loss(a, tokens)) - float(chunked_lm_loss(a, tokens, 5))) < 1e-6


def test_chunked_with_lora_matches_plain():
    pytest.importorskip("peft")
    tokens = torch.randint(0, 258, (2, 17), generator=torch.Generator().manual_seed(0))
    a = add_lora(build_model("test-micro", 258, seed=1), 4, 8, 0.0, seed=0)
    b = add_lora(build_model("test-micro", 258, seed=1), 4, 8, 0.0, seed=0)
    b.load_state_dict(a.state_dict())
    for p in list(a.parameters()) + list(b.parameters()):  # make the adapters non-trivial
        if p.requires_grad:
            torch.nn.init.normal_(p.data, std=0.02, generator=torch.Generator().manual_seed(p.numel()))
    assert abs(lm_loss(a, tokens).item() - LMLoss(b, chunk=6)(tokens).item()) < 1e-6


def test_training_loop_with_chunked_ce_matches_plain(tmp_path):
    """A few optimizer steps through train.train: chunked CE ends at the same weights."""
    windows = np.random.default_rng(0).integers(0, 256, size=(24, 16))

    def run(chunk, d):
        model = build_model("test-micro", 258, seed=0)
        mix = Mixture([Source("x", windows, 1.0, once=True, quota=24)], seed=0)
        spec = T.LoopSpec(lr=1e-3, min_lr=1e-4, warmup_steps=0, weight_decay=0.1, batch_size=8,
                          micro_batch=3, max_steps=3, chunked_ce=chunk)
        T.train(model, mix, spec, stage_dir=tmp_path / d / "k", config_digest="d",
                device=torch.device("cpu"), seed=0, progress=False)
        return model.state_dict()
    plain, chunked = run(0, "a"), run(11, "b")
    for k in plain:
        torch.testing.assert_close(chunked[k], plain[k], rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.slow
@pytest.mark.parametrize("chunk,backend", [(0, "aot_eager"), (16, "inductor")])
def test_compiled_loss_matches_eager(chunk, backend):
    """compile=True (the model and its loss in one graph) gives the eager loss and gradients, for a
    full batch and with padding rows (IGNORE targets). The chunked loss (its recomputation in
    backward) goes through CPU inductor; the plain loss through aot_eager (its graph capture and
    forward/backward split, in seconds): CPU inductor's C++ is not the GPU's triton, so a second
    inductor compile here added CI minutes, not GPU coverage. Both calls have one shape, as a
    stage's full and padded last batches do: one compile (≈ 38 s cold; two shapes took ≈ 70 s)."""
    gen = torch.Generator().manual_seed(0)
    full = torch.randint(0, 258, (3, 16), generator=gen)  # 45 targets: chunks of 16, 16 and 13
    padded = torch.cat([full[:2], torch.zeros(1, 16, dtype=full.dtype)])  # 2 real rows + 1 of padding
    b = build_model("test-micro", 258, seed=1)
    compiled = LMLoss(b, chunk, compile=True, backend=backend)
    for x, real, rows in ((full, full, None), (padded, full[:2], 2)):
        a = build_model("test-micro", 258, seed=1)
        la = LMLoss(a, chunk)(real)
        la.backward()
        b.zero_grad(set_to_none=True)
        lb = compiled(x, rows=rows)
        lb.backward()
        assert abs(la.item() - lb.item()) < 1e-5, rows
        for (n, p), q in zip(a.named_parameters(), b.parameters()):
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=f"{n} rows={rows}")
    assert set(a.state_dict()) == set(b.state_dict())  # compiling leaves the checkpoint keys alone


@pytest.mark.parametrize("chunk", [0, 7])
def test_padding_rows_leave_loss_and_grads_unchanged(chunk):
    """LMLoss(tokens + zero rows, rows=n) is the loss of the n real rows, with their gradients:
    what lets a compiled stage pad its short last batch instead of recompiling."""
    tokens = torch.randint(0, 258, (3, 17), generator=torch.Generator().manual_seed(0))
    padded = torch.cat([tokens, torch.zeros(5, 17, dtype=tokens.dtype)])
    a, b = build_model("test-micro", 258, seed=1), build_model("test-micro", 258, seed=1)
    la = LMLoss(a, chunk)(tokens)
    _assert_same_loss_and_grads(a, la, b, LMLoss(b, chunk)(padded, rows=3))
    assert abs(LMLoss(b, chunk)(padded).item() - la.item()) > 1e-3  # without rows= the padding counts


class _ShapeRecorder(torch.nn.Module):
    """Stands in for torch.compile: records the input shapes the compiled forward is called with."""
    shapes: list = []

    def __init__(self, target, **kwargs):
        super().__init__()
        self.target = target

    def forward(self, input_ids, targets):
        _ShapeRecorder.shapes.append(tuple(input_ids.shape))
        assert targets.shape == (input_ids.size(0), input_ids.size(1) - 1)  # padding rows too
        return self.target(input_ids, targets)


def _train_tiny(tmp_path, n, batch, micro, steps, compile, chunk=0, dist=None):
    windows = np.random.default_rng(0).integers(0, 256, size=(n, 16))
    model = build_model("test-micro", 258, seed=0)
    mix = Mixture([Source("x", windows, 1.0, once=True, quota=n)], seed=0)
    spec = T.LoopSpec(lr=1e-3, min_lr=1e-4, warmup_steps=0, weight_decay=0.1, batch_size=batch,
                      micro_batch=micro, max_steps=steps, chunked_ce=chunk)
    out = T.train(model, mix, spec, stage_dir=tmp_path / f"{compile}{chunk}" / "k", config_digest="d",
                  device=torch.device("cpu"), seed=0, progress=False, compile=compile, dist=dist)
    assert out["steps"] == steps
    return model.state_dict()


@pytest.mark.parametrize("chunk", [0, 11])
def test_compiled_stage_sees_only_a_full_steps_shapes(tmp_path, monkeypatch, chunk):
    """With compile on, a stage whose last batch is short (25 windows, batch 8: 8, 8, 8, 1) feeds
    the compiled forward only the micro-batch shapes of a full step (micro 3: 3, 3, 2 rows), so it
    never recompiles at its end; full steps are not padded; the weights end where eager's do."""
    monkeypatch.setattr(torch, "compile", _ShapeRecorder)
    _ShapeRecorder.shapes = []
    eager = _train_tiny(tmp_path, 25, 8, 3, 4, compile=False, chunk=chunk)
    assert _ShapeRecorder.shapes == []
    compiled = _train_tiny(tmp_path, 25, 8, 3, 4, compile=True, chunk=chunk)
    assert _ShapeRecorder.shapes == [(3, 16), (3, 16), (2, 16)] * 3 + [(3, 16)]
    for k in eager:
        torch.testing.assert_close(compiled[k], eager[k], rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.parametrize("rank", [3, 6])
def test_compiled_ddp_rank_pads_to_its_own_rows_not_the_global_batch(tmp_path, monkeypatch, rank):
    """Under DDP a rank holds batch/world rows: with micro_batch 0 its short last batch is padded
    to those (2 of 16 at world 8), not to the global batch. Rank 6 gets no row of the last batch
    (5 windows) and runs one zero-weight row, padded the same way."""
    from eelib.distributed import Dist

    class LocalDist(Dist):  # one rank of a world of 8, without a process group
        def wrap(self, module, device):
            return module

        def all_reduce_max(self, t):
            return t

    monkeypatch.setattr(torch, "compile", _ShapeRecorder)
    _ShapeRecorder.shapes = []
    _train_tiny(tmp_path, 37, 16, 0, 3, compile=True, dist=LocalDist(rank, 8, rank))
    assert _ShapeRecorder.shapes == [(2, 16)] * 3


def test_heldout_loss_with_ce_chunk_equals_the_plain_one(monkeypatch):
    """Evaluation takes the config's ce_chunk (stages._losses → train.heldout_loss): same L(θ; D)
    without the full [B, T, V] logits."""
    from eelib import stages
    windows = np.random.default_rng(0).integers(0, 256, size=(37, 17))
    model = build_model("test-micro", 258, seed=1)
    calls = []
    real = T.chunked_lm_loss
    monkeypatch.setattr(T, "chunked_lm_loss", lambda *a, **k: calls.append(1) or real(*a, **k))
    plain = stages._losses(model, {"post": windows}, torch.device("cpu"), 0, roles=("post",))
    assert calls == []
    chunked = stages._losses(model, {"post": windows}, torch.device("cpu"), 13, roles=("post",))
    assert len(calls) == 2  # 37 windows in evaluation batches of 32
    assert abs(chunked["L_post_val"] - plain["L_post_val"]) < 1e-6


# --- The compiled training forward on the GPU fast path (issue 5) ------------------------------
# Speed rests on two things transformers could silently change in an upgrade: torch.compile sees
# the model and its loss as *one* graph (a graph break splits inductor's fusion and adds a Python
# round trip per layer), and attention reaches SDPA with no materialised mask and is_causal=True,
# the only call the flash kernel takes. Both are decided in Python, before any kernel runs, so
# they are checked on CPU.

@pytest.mark.parametrize("variant", ["plain", "dropout", "lora"])
@pytest.mark.parametrize("chunk", [0, 8])
def test_compiled_training_forward_is_one_graph(variant, chunk):
    import torch._dynamo as dynamo

    from eelib.loss import _LossSum
    from eelib.model import set_dropout
    model = build_model("test-micro", 64, seed=0).train()
    if variant == "dropout":  # stage 2 of Figs 5-6: forward hooks on every layer
        set_dropout(model, 0.1)
    if variant == "lora":  # stage 2 of Fig 7
        model = add_lora(model, r=4, alpha=8, dropout=0.0, seed=0).train()
    x = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    dynamo.reset()
    try:
        ex = dynamo.explain(_LossSum(model, chunk))(x, x[:, 1:].clone())
    finally:
        dynamo.reset()
    assert ex.graph_break_count == 0, [b.reason for b in ex.break_reasons]
    assert ex.graph_count == 1


def test_stages_in_one_process_share_one_compiled_graph(monkeypatch):
    """A run trains stage 1, stage 2 and one stage 3 per LR in one process, each a new model and
    a new LMLoss(compile=True). Same-structure stages must reuse the graph: were each to
    recompile, dynamo's recompile limit (8) would be hit at paper scale and later stages would
    silently fall back to eager, at about half the speed (benchmarks/results/h100-2026-11-27)."""
    import torch._dynamo as dynamo
    from torch._dynamo.utils import counters

    from eelib.loss import _LossSum
    from eelib.model import set_dropout
    # Guards and recompiles are dynamo's, whatever the backend: skip inductor's codegen here.
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda m, **kw: compile_(m, **kw | {"backend": "eager"}))
    x = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    n = dynamo.config.recompile_limit + 2
    dynamo.reset()
    counters.clear()
    try:
        for i in range(n):  # stage 1, stage 2 with dropout (Figs 5-6), then stage 3 at n-2 LRs
            model = build_model("test-micro", 64, seed=i).train()
            if i == 1:
                set_dropout(model, 0.1)
            LMLoss(model, 0, compile=True)(x).backward()
        assert counters["stats"]["unique_graphs"] == 2  # plain and dropout, each compiled once
        assert len(dynamo.eval_frame._debug_get_cache_entry_list(_LossSum.forward.__code__)) == 2
    finally:
        dynamo.reset()


def test_attention_takes_the_flash_eligible_sdpa_call(monkeypatch):
    seen = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def probe(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        seen.append(dict(mask=attn_mask, causal=is_causal, gqa=enable_gqa, hq=q.size(1), hk=k.size(1)))
        return sdpa(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                    scale=scale, enable_gqa=enable_gqa)
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", probe)
    # transformers 5.17 (the GPU image's) never skips the causal mask while dynamo traces: the
    # model's own attention (CAUSAL_SDPA) must not need that skip (tests/test_attention.py)
    import transformers.masking_utils as masking
    monkeypatch.setattr(masking, "_ignore_causal_mask_sdpa", lambda *a, **k: False)
    # SmolLM2-135M's 9 query heads share 3 key/value heads: shrink its shape, keep that ratio.
    from transformers import LlamaForCausalLM

    from eelib.model import CAUSAL_SDPA, llama_config
    cfg = llama_config("smollm2-135m", 49152)
    cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size = 48, 64, 2, 64
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    assert model.config._attn_implementation == CAUSAL_SDPA
    x = torch.randint(0, 64, (2, 16))
    ce_sum(model, x, x[:, 1:].clone())
    # Compiled, the mask decision is taken while dynamo traces (the training path): probe that too.
    import torch._dynamo as dynamo

    from eelib.loss import _LossSum
    dynamo.reset()
    try:
        torch.compile(_LossSum(model, 0), backend="eager", dynamic=False)(x, x[:, 1:].clone())
    finally:
        dynamo.reset()
    assert len(seen) == 4  # one call per layer, eager then compiled
    for call in seen:
        assert call["mask"] is None and call["causal"] is True
        # 9 query heads over 3 KV heads: either SDPA's own GQA, or K/V already repeated to 9
        assert call["gqa"] or call["hk"] == call["hq"]


def test_compile_mode_goes_to_inductor_only(monkeypatch):
    """LMLoss hands torch.compile a mode (reduce-overhead: CUDA graphs) with inductor only: the
    tracing-only "eager" backend (gpu_check's CPU dry run) takes no mode, and default passes none."""
    seen = []
    monkeypatch.setattr(torch, "compile", lambda m, **kw: seen.append(kw) or m)
    model = build_model("test-micro", 258, seed=0)
    LMLoss(model, 0, compile=True, mode="reduce-overhead")
    LMLoss(model, 0, compile=True, mode="reduce-overhead", backend="eager")
    LMLoss(model, 0, compile=True)
    LMLoss(model, 0, compile=False, mode="reduce-overhead")  # eager: nothing compiled
    assert [(kw.get("backend"), kw.get("mode")) for kw in seen] == [
        ("inductor", "reduce-overhead"), ("eager", None), ("inductor", None)]

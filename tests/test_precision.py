"""The residual stream's dtype (`residual_stream`, eelib/model.py): bf16 under autocast, fp32
weights and gradients either way, and nothing changed where there is no autocast (CPU runs).

CUDA autocast is what the stages use; CPU autocast to bf16 takes the same code path (the hook asks
torch for whichever autocast is on), so these run on CPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from eelib.loss import LMLoss, _LossSum
from eelib.model import build_model, set_dropout, set_residual_stream

VOCAB = 64


def _tokens(rows: int = 3, seq: int = 16) -> torch.Tensor:
    return torch.randint(0, VOCAB, (rows, seq), generator=torch.Generator().manual_seed(0))


def _autocast(on: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=on)


def _layer_dtypes(model, x, autocast: bool) -> dict:
    """dtype of what the embedding, each decoder layer and the final norm hand on."""
    seen, hooks = {}, []
    inner = model.model
    named = [("embed", inner.embed_tokens), ("norm", inner.norm)] + \
            [(f"layer{i}", layer) for i, layer in enumerate(inner.layers)]
    for name, mod in named:
        hooks.append(mod.register_forward_hook(
            lambda m, a, out, name=name: seen.__setitem__(name, (out[0] if isinstance(out, tuple) else out).dtype)))
    try:
        with _autocast(autocast):
            model(input_ids=x)
    finally:
        for h in hooks:
            h.remove()
    return seen


@pytest.mark.parametrize("preset", ["test-micro", "cpu-tiny"])
def test_bf16_stream_under_autocast_fp32_without(preset):
    x = _tokens()
    fp32, bf16 = build_model(preset, VOCAB, seed=0), build_model(preset, VOCAB, seed=0, stream="bf16")
    # transformers' Llama under autocast: the stream stays in the weights' fp32
    assert set(_layer_dtypes(fp32, x, autocast=True).values()) == {torch.float32}
    got = _layer_dtypes(bf16, x, autocast=True)
    assert {k: v for k, v in got.items() if k != "norm"} == {k: torch.bfloat16 for k in got if k != "norm"}
    # the final norm multiplies by its fp32 weight: fp32 into the head, as with the fp32 stream
    assert got["norm"] == torch.float32
    # no autocast (eelib on CPU): the hook leaves every tensor fp32
    assert set(_layer_dtypes(bf16, x, autocast=False).values()) == {torch.float32}


def test_without_autocast_the_bf16_stream_changes_no_number():
    """eelib trains on CPU without autocast: there `residual_stream: bf16` must give the fp32
    stream's loss and gradients bit for bit, so CPU results and their determinism are untouched."""
    x = _tokens()
    a, b = build_model("cpu-tiny", VOCAB, seed=0), build_model("cpu-tiny", VOCAB, seed=0, stream="bf16")
    la, lb = LMLoss(a)(x), LMLoss(b)(x)
    la.backward()
    lb.backward()
    assert la.item() == lb.item()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p.grad, q.grad), n


@pytest.mark.parametrize("chunk", [0, 16])
def test_bf16_stream_keeps_fp32_master_weights_and_a_close_loss(chunk):
    """Under autocast the bf16 stream rounds activations, not weights: parameters and their
    gradients stay fp32 (AdamW updates fp32 masters), and loss and gradients stay near the fp32
    stream's (bf16 keeps 8 bits of mantissa, so near, not equal)."""
    x = _tokens(4, 32)
    a, b = build_model("cpu-tiny", VOCAB, seed=0), build_model("cpu-tiny", VOCAB, seed=0, stream="bf16")
    with _autocast(True):
        la, lb = LMLoss(a, chunk)(x), LMLoss(b, chunk)(x)
    la.backward()
    lb.backward()
    assert lb.dtype == torch.float32 and abs(la.item() - lb.item()) < 2e-2 * la.item()
    assert la.item() != lb.item()  # the stream did change: the test would notice a hook that never ran
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert q.dtype == q.grad.dtype == torch.float32, n
        cos = torch.nn.functional.cosine_similarity(p.grad.flatten(), q.grad.flatten(), dim=0)
        assert cos > 0.99, (n, float(cos))


@pytest.mark.parametrize("variant", ["plain", "dropout"])
def test_bf16_stream_compiles_to_one_graph(variant):
    """The hook asks torch whether autocast is on inside the forward; dynamo must trace that
    without a graph break (a break would split every step's compiled graph in two)."""
    import torch._dynamo as dynamo
    model = build_model("test-micro", VOCAB, seed=0, stream="bf16").train()
    if variant == "dropout":  # stage 2's dropout hooks on the same embedding
        set_dropout(model, 0.1)
    x = _tokens(2, 16)
    dynamo.reset()
    try:
        with _autocast(True):
            ex = dynamo.explain(_LossSum(model, 0))(x, x[:, 1:].clone())
    finally:
        dynamo.reset()
    assert ex.graph_break_count == 0, [b.reason for b in ex.break_reasons]
    assert ex.graph_count == 1


def test_compiled_bf16_stream_matches_eager():
    """Compiled (aot_eager: dynamo's capture and the forward/backward split) under autocast gives
    the eager bf16-stream loss and gradients."""
    x = _tokens(2, 16)
    a, b = build_model("test-micro", VOCAB, seed=1, stream="bf16"), build_model("test-micro", VOCAB, seed=1, stream="bf16")
    with _autocast(True):
        la = LMLoss(a)(x)
        lb = LMLoss(b, compile=True, backend="aot_eager")(x)
    la.backward()
    lb.backward()
    assert abs(la.item() - lb.item()) < 1e-5
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-5, msg=n)


def test_residual_stream_switches_and_refuses_unknown():
    model = build_model("test-micro", VOCAB, seed=0, stream="bf16")
    set_residual_stream(model, "fp32")  # removes the hook
    assert set(_layer_dtypes(model, _tokens(), autocast=True).values()) == {torch.float32}
    set_residual_stream(model, "bf16")
    set_residual_stream(model, "bf16")  # idempotent: one hook, not two
    assert len(model.get_input_embeddings()._forward_hooks) == 1
    with pytest.raises(ValueError, match="residual stream must be one of"):
        set_residual_stream(model, "fp16")


def test_stream_numerics_runs_both_streams_under_bf16_autocast(tmp_path, capsys):
    """benchmarks/stream_numerics.py: both streams' rows from their own outputs roots, under CPU
    bf16 autocast (so the streams differ), and the process's CPU policy (no autocast) restored."""
    import json
    from conftest import write_params
    from test_benchmarks import _benchmark
    from eelib import train
    sn = _benchmark("stream_numerics")
    cfg = {"name": "sn", "model": "test-micro", "threads": 1,
           "data": {"seq_len": 64, "general_tokens": 16384, "post_tokens": 4096, "val_tokens": 1024,
                    "cache_dir": str(tmp_path / "cache")},
           "stage1": {"lam": 0.5, "batch_size": 8},
           "stage2": {"batch_size": 8, "max_tokens": 8192, "eval_interval": 8, "patience": 2},
           "stage3": {"lrs": [1e-3], "tokens": 4096, "batch_size": 8, "eval_interval": 4}}
    write_params(tmp_path / "p.yaml", cfg)
    before = train._autocast
    assert sn.main([str(tmp_path / "p.yaml"), "--work", str(tmp_path / "w"), "--json", str(tmp_path / "o.json")]) == 0
    assert train._autocast is before
    (row,) = json.loads((tmp_path / "o.json").read_text())["rows"]
    for k in sn.LOSSES:
        assert 0 < row[f"{k}_fp32"] < 6 and 0 < row[f"{k}_bf16"] < 6
        assert row[f"d{k}"] == row[f"{k}_bf16"] - row[f"{k}_fp32"]
    assert any(row[f"d{k}"] != 0 for k in sn.LOSSES)  # bf16 autocast was on: the streams differ
    for stream in ("fp32", "bf16"):  # each stream trained its own stages
        recs = list((tmp_path / "w" / stream / "sn").glob("stage*/*/stage.json"))
        assert len(recs) == 3
        assert {json.loads(r.read_text())["computed"][0]["residual_stream"] for r in recs} == {stream}
    assert "bf16 stream - fp32 stream" in capsys.readouterr().out


def test_stream_numerics_sets_the_seed_paired_difference_beside_seed_noise():
    """--seeds: per LR and loss, the bf16 − fp32 difference paired by seed (mean, SE, two-sided t)
    and the fp32 stream's own seed-to-seed std, the noise the difference is judged against."""
    from test_benchmarks import _benchmark
    sn = _benchmark("stream_numerics")
    fp32 = {0: 3.0, 1: 3.2, 2: 2.9}
    shift = {0: 0.05, 1: 0.04, 2: 0.06}  # a systematic +0.05 on L_im, nothing elsewhere
    rows = {s: {"fp32": [{"stage3_lr": 1e-3, **{k: fp32[s] for k in sn.LOSSES}}],
                "bf16": [{"stage3_lr": 1e-3, **{k: fp32[s] + (shift[s] if k == "L_im" else 0.0) for k in sn.LOSSES}}]}
            for s in fp32}
    table = sn.compare(rows)
    assert [r["seed"] for r in table] == [0, 1, 2]
    by_loss = {s["loss"]: s for s in sn.summarize(table)}
    im = by_loss["L_im"]
    assert im["n"] == 3 and im["mean_diff"] == pytest.approx(0.05) and im["se"] == pytest.approx(0.01 / 3 ** 0.5)
    assert im["p_two_sided"] < 0.05  # t ≈ 8.7 on 2 dof
    assert im["seed_std_fp32"] == pytest.approx(float(np.std([3.0, 3.2, 2.9], ddof=1)))
    assert by_loss["L_ret"]["mean_diff"] == 0 and by_loss["L_ret"]["p_two_sided"] == 1.0

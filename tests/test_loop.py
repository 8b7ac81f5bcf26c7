"""The loop's arithmetic (eelib/train.py, eelib/model.py) against a reference: micro-batches give
the full batch's update, a merged LoRA model is the adapter model, held-out loss has no dropout."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from eelib import train as T
from eelib.mixture import Mixture, Source
from eelib.model import add_lora, build_model, merge_lora, set_dropout

CPU = torch.device("cpu")


def _windows(n=24, seq=16, seed=0):
    return np.random.default_rng(seed).integers(0, 258, size=(n, seq))


def _train(tmp_path, micro_batch, tag):
    torch.set_num_threads(1)
    model = build_model("test-micro", 258, seed=0)
    spec = T.LoopSpec(lr=3e-3, min_lr=3e-4, warmup_steps=1, weight_decay=0.1, batch_size=4,
                      micro_batch=micro_batch, max_steps=3)
    T.train(model, Mixture([Source("a", _windows(), 1.0, once=False)], seed=1), spec,
            stage_dir=tmp_path / tag / "k", config_digest="d", device=CPU, seed=0, progress=False)
    return model.state_dict()


def test_micro_batches_give_the_full_batch_update(tmp_path):
    """Gradient accumulation weights each micro-batch by its rows (3 + 1 here), so 3 AdamW steps
    with micro-batches of 1 and of 3 end where full batches of 4 do, to float32 rounding."""
    full = _train(tmp_path, 0, "full")
    for mb in (1, 3):
        got = _train(tmp_path, mb, f"mb{mb}")
        worst = max((got[k] - full[k]).abs().max().item() for k in full)
        assert worst < 1e-5, (mb, worst)


@pytest.mark.parametrize("preset", ["test-micro", "cpu-tiny"])
def test_a_merged_lora_model_computes_what_the_adapter_model_does(preset):
    """Stage 3 fine-tunes the merged model; merging must not change the function (B is zero at
    init, so the adapters are first given values)."""
    pytest.importorskip("peft")
    torch.manual_seed(0)
    model = add_lora(build_model(preset, 258, seed=0), r=4, alpha=8, dropout=0.0, seed=1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    val = _windows(8, 16, seed=2)
    before = T.heldout_loss(model, val, CPU)
    merged = merge_lora(model)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert T.heldout_loss(merged, val, CPU) == pytest.approx(before, abs=1e-5)


def test_held_out_loss_is_taken_without_dropout():
    model = build_model("test-micro", 258, seed=0)
    val = _windows(8, 16, seed=3)
    plain = T.heldout_loss(model, val, CPU)
    set_dropout(model, 0.5)
    model.train()
    x = torch.from_numpy(val[:2].astype(np.int64))
    with torch.no_grad():  # dropout is in force in training mode (else this test proves nothing)
        assert not torch.equal(model(x).logits, model(x).logits)
    assert T.heldout_loss(model, val, CPU) == plain
    assert model.training  # the caller's mode is given back


def test_the_schedule_warms_up_then_decays_to_min_lr():
    """Linear warmup from lr/warmup at step 0 to lr, cosine to min_lr at max_steps (Table 7)."""
    s = T.LoopSpec(lr=1e-3, min_lr=1e-4, warmup_steps=4, weight_decay=0.0, batch_size=1, micro_batch=0,
                   max_steps=24)
    assert T.lr_at(0, s) == pytest.approx(2.5e-4) and T.lr_at(3, s) == pytest.approx(1e-3)
    assert T.lr_at(4, s) == pytest.approx(1e-3)                  # the cosine starts at the peak
    assert T.lr_at(14, s) == pytest.approx((1e-3 + 1e-4) / 2)    # half way: the mean
    assert T.lr_at(24, s) == pytest.approx(1e-4) and T.lr_at(30, s) == pytest.approx(1e-4)
    lrs = [T.lr_at(k, s) for k in range(4, 25)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_weight_decay_reaches_matrices_only():
    model = build_model("test-micro", 258, seed=0)
    s = T.LoopSpec(lr=1e-3, min_lr=1e-4, warmup_steps=0, weight_decay=0.1, batch_size=1, micro_batch=0, max_steps=1)
    groups = T.make_optimizer(model, s, CPU).param_groups
    decayed = {id(p) for g in groups if g["weight_decay"] == 0.1 for p in g["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in decayed) == (p.dim() >= 2), name
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_gradients_are_clipped_to_the_specs_norm(tmp_path, monkeypatch):
    seen = []
    real = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_",
                        lambda params, max_norm, *a, **k: seen.append(max_norm) or real(params, max_norm, *a, **k))
    _train(tmp_path, 0, "clip")
    assert seen == [1.0] * 3  # LoopSpec's clip (Table 5: 1.0), every step


def test_a_non_finite_gradient_stops_the_step_before_it_reaches_the_weights(tmp_path):
    """A finite loss with a NaN gradient (an overflow in backward) stops the run at that step: the
    gradient norm is checked before opt.step(), so the weights stay as they were."""
    torch.set_num_threads(1)
    model = build_model("test-micro", 258, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    next(model.parameters()).register_hook(lambda g: g * float("nan"))
    spec = T.LoopSpec(lr=3e-3, min_lr=3e-4, warmup_steps=1, weight_decay=0.1, batch_size=4, micro_batch=0,
                      max_steps=3)
    with pytest.raises(T.NonFiniteLoss, match="step 0"):
        T.train(model, Mixture([Source("a", _windows(), 1.0, once=False)], seed=1), spec,
                stage_dir=tmp_path / "k", config_digest="d", device=CPU, seed=0, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_held_out_loss_is_the_mean_over_every_token():
    """Windows are evaluated 32 at a time; a last, shorter batch weighs by its tokens, not as a
    batch (33 windows here: one window in the second batch)."""
    model = build_model("test-micro", 258, seed=0)
    val = _windows(33, 16, seed=4)
    with torch.no_grad():
        logits = model(torch.from_numpy(val.astype(np.int64))).logits[:, :-1].float()
        ref = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)),
                                                torch.from_numpy(val[:, 1:].astype(np.int64)).reshape(-1))
    assert T.heldout_loss(model, val, CPU) == pytest.approx(float(ref), rel=1e-6)

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
    assert T.heldout_loss(model, val, CPU) == plain
    assert model.training  # the caller's mode is given back

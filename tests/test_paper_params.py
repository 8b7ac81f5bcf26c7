"""The paper-scale params files hold the paper's values (Tables 2, 6-10 of the paper).

A wrong value there costs hundreds of GPU-hours before anyone sees it, and nothing at CPU scale
runs these files, so their values are checked here against the paper, run by run as `expand`
resolves them. Choices the paper leaves open are in docs/decisions.md, not here.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from eelib import config as C
from eelib.model import PRESETS, llama_config
from eelib.stages import stage2_min_lr

ROOT = Path(__file__).resolve().parent.parent


def _runs(scale: str, exp: str) -> list[C.ExperimentConfig]:
    return C.expand(C.load(ROOT / "params" / scale / f"{exp}.yaml"), models=False)


def _all(scale: str) -> list[C.ExperimentConfig]:
    return [r for p in sorted((ROOT / "params" / scale).glob("*.yaml")) for r in _runs(scale, p.stem)]


def test_params_files_are_what_make_params_writes():
    """The YAML files are generated; an edit by hand would be lost at the next regeneration."""
    spec = importlib.util.spec_from_file_location("make_params", ROOT / "tools" / "make_params.py")
    mp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mp)
    files = mp.files()
    on_disk = {str(p.relative_to(ROOT / "params")) for p in (ROOT / "params").glob("*/*.yaml")
               if p.parent.name in mp.SCALES}
    assert set(files) == on_disk
    for rel, text in files.items():
        assert (ROOT / "params" / rel).read_text() == text, f"params/{rel}: run python tools/make_params.py"


@pytest.mark.parametrize("preset,params", [("smollm2-135m", 134_515_008), ("paper-1b", 1_029_917_376)])
def test_architectures(preset, params):
    """135M: the released SmolLM2-135M config, its init std 1/sqrt(576) included. 1B: Table 2
    (24 layers, hidden 1728, 27 heads MHA, MLP 4608); 1.03B params only if the head is untied."""
    from transformers import LlamaForCausalLM
    with torch.device("meta"):
        model = LlamaForCausalLM(llama_config(preset, 49152))
    assert sum(p.numel() for p in model.parameters()) == params
    cfg = llama_config(preset, 49152)
    if preset == "smollm2-135m":
        assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads,
                cfg.intermediate_size, cfg.tie_word_embeddings) == (30, 576, 9, 3, 1536, True)
        assert cfg.initializer_range == pytest.approx(0.041666666666666664)
    else:
        assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads,
                cfg.intermediate_size, cfg.tie_word_embeddings) == (24, 1728, 27, 27, 4608, False)
    assert PRESETS[preset]["rope_theta"] == 100000.0 and cfg.vocab_size == 49152


def test_1b_runs_use_the_papers_seed_and_tables_6_and_8():
    for r in _all("1b"):
        assert r.seed == 42, r.name  # Table 6 (stage 1); stage 2 derives seed + 1 (docs/decisions.md)
        s1, s2 = r.stage1, r.stage2
        assert (s1.lr, s1.min_lr, s1.warmup_steps, s1.batch_size) == (5e-4, 5e-5, 1000, 512)  # Table 6
        assert r.data.general_tokens == 19_700_000_000 and r.data.seq_len == 1024
        assert (s2.warmup_steps, s2.batch_size, s2.eval_interval, s2.patience, s2.weight_decay) == (100, 512, 100, 3, 0.1)
        assert s2.lr in (1e-5, 2e-5, 5e-5, 1e-4, 2e-4)
        # Table 8's min LR 5e-5 wherever it is below the peak, 0.1 x the peak elsewhere
        assert stage2_min_lr(s2) == (5e-5 if s2.lr > 5e-5 else pytest.approx(0.1 * s2.lr))
    frontier = {r.stage2.lr for r in _runs("1b", "frontiers")}
    assert frontier == {1e-5, 2e-5, 5e-5, 1e-4, 2e-4}
    # Table 10: dropout {.02, .05} x LR {1e-5, 2e-5, 5e-5} x λ {0, 1} (plus the dropout-0 baseline)
    rd = _runs("1b", "replay_dropout")
    assert {(r.stage2.dropout, r.stage2.lr, r.stage1.lam) for r in rd} >= {
        (d, lr, lam) for d in (0.02, 0.05) for lr in (1e-5, 2e-5, 5e-5) for lam in (0.0, 1.0)}


def test_135m_runs_follow_table_7_and_section_4():
    for r in _all("135m"):
        s2 = r.stage2
        assert r.data.general_tokens == 8_700_000_000 and r.data.post_tokens in (30_000_000, 150_000_000, 300_000_000)
        assert (s2.min_lr, s2.warmup_steps, s2.weight_decay, s2.max_tokens) == (5e-5, 500, 0.1, 2_000_000_000)
        assert s2.lr in (1e-4, 2e-4, 5e-4, 1e-3, 5e-3) and s2.batch_size in (192, 480, 896)
        assert s2.dropout in (0.0, 0.02, 0.05) and s2.replay in (0.0, 0.01)
        assert r.stage3.tokens == 200_000_000
    for exp, alloc in (("fig3a", "added"), ("fig3b", "split")):  # §4.1, §4.2
        runs = _runs("135m", exp)
        assert {r.allocation for r in runs} == {alloc} and {r.stage3.lrs[0] for r in runs} == {5e-5}
        assert {(r.stage1.lam, r.data.post_tokens) for r in runs} == {
            (lam, n) for lam in (0.0, 0.25, 0.5, 0.75, 1.0) for n in (30_000_000, 150_000_000, 300_000_000)}
    lora = [r for r in _runs("135m", "lora") if r.stage2.lora_r]  # Table 9
    assert {(r.stage2.lora_r, r.stage2.lora_alpha) for r in lora} == {(64, 128)}
    assert {r.stage2.lora_dropout for r in lora} == {0.0, 0.02, 0.05}
    assert {r.stage2.lr for r in lora} == {1e-4, 2e-4, 5e-4, 1e-3, 5e-3}
    assert {r.stage2.batch_size for r in lora} == {192, 480, 896}
    frontier = _runs("135m", "frontiers")  # Fig 2: four pipelines, the whole Table 7 sweep
    assert {r.pipeline for r in frontier} == {"music->chem", "music->flan", "flan->chem", "flan->music"}
    assert {(r.stage2.lr, r.stage2.batch_size) for r in frontier} == {
        (lr, b) for lr in (1e-4, 2e-4, 5e-4, 1e-3, 5e-3) for b in (192, 480, 896)}

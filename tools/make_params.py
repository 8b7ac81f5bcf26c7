"""Writes params/<scale>/<experiment>.yaml: every paper experiment at every scale, from one table.

Scales: ci (seconds, for nbval), offline (the offline default, minutes on a 2-core CPU),
135m and 1b (the paper's scales: real corpora from the hub, a GPU). The experiments and their grids
follow the paper (§4, Tables 7–10); where the paper is silent the choice is in docs/decisions.md.
Run `python tools/make_params.py` after editing; the YAML files are committed.
"""
from copy import deepcopy
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
LAMS = [0.0, 0.25, 0.5, 0.75, 1.0]

SCALES = {
    "ci": dict(
        note="seconds per run on one CPU core; for nbval and smoke tests, not for conclusions",
        base=dict(model="test-micro", threads=1,
                  data=dict(seq_len=64, general_tokens=60000, post_tokens=12000, val_tokens=4096),
                  stage1=dict(batch_size=8),
                  stage2=dict(batch_size=8, max_tokens=60000, eval_interval=10, patience=2),
                  stage3=dict(lrs=[0.001, 0.003], tokens=12000, batch_size=8, eval_interval=5)),
        post_sizes=[6000, 12000], s2_lrs=[0.001, 0.003], s2_batches=[8], lora=dict(r=8, alpha=16),
        seeds=[0], lams=[0.0, 0.5, 1.0], s3_lr_fig3=[0.001], pipelines=["music->chem"],
        dropouts=[0.0, 0.05], rd_s2_lrs=[0.001], lora_s2_lrs=[0.001]),
    "offline": dict(
        note="the offline default: cpu-tiny (0.46M params), byte tokens, ~2-3 minutes per run on one core",
        base=dict(model="cpu-tiny", threads=1,
                  data=dict(seq_len=256, general_tokens=800000, post_tokens=200000, val_tokens=16384),
                  stage1=dict(lr=0.002, min_lr=0.0002, warmup_steps=50, batch_size=16),
                  stage2=dict(lr=0.002, min_lr=0.0002, warmup_steps=20, batch_size=16,
                              max_tokens=1200000, eval_interval=20, patience=3),
                  stage3=dict(lrs=[0.0003, 0.001, 0.003], tokens=100000, warmup_steps=5, batch_size=16,
                              eval_interval=5)),
        # |D_post| ∈ {30M, 150M, 300M} in the paper: the same 1 : 5 : 10 ratio here.
        post_sizes=[20000, 100000, 200000], s2_lrs=[0.001, 0.002, 0.004], s2_batches=[16],
        frontier_s2_lrs=[0.001, 0.004],
        lora=dict(r=16, alpha=32), seeds=[0, 1, 2], lams=LAMS, s3_lr_fig3=[0.001],
        pipelines=["music->chem", "flan->chem"], dropouts=[0.0, 0.05], rd_pipelines=["music->chem"],
        rd_s2_lrs=[0.002], lora_s2_lrs=[0.002, 0.004]),
    "135m": dict(
        note="paper scale (notes §2–4): SmolLM2-135M config, SmolLM2 tokenizer, real corpora; one GPU per run",
        base=dict(model="smollm2-135m", compile=True, device="cuda", ce_chunk=0,
                  data=dict(source="hub", tokenizer="smollm2", seq_len=1024, general_tokens=8700000000,
                            post_tokens=300000000, val_tokens=2097152),
                  stage1=dict(lr=0.003, min_lr=0.0003, warmup_steps=1000, batch_size=256, micro_batch=32,
                              ckpt_interval=1000),
                  stage2=dict(lr=0.0005, min_lr=0.00005, warmup_steps=500, batch_size=192, micro_batch=32,
                              max_tokens=2000000000, eval_interval=200, patience=3),
                  stage3=dict(lrs=[0.00005, 0.0001, 0.0002, 0.0005], tokens=200000000, warmup_steps=100,
                              batch_size=192, micro_batch=32, eval_interval=100)),
        post_sizes=[30000000, 150000000, 300000000],
        s2_lrs=[0.0001, 0.0002, 0.0005, 0.001, 0.005], s2_batches=[192, 480, 896],  # Table 7
        lora=dict(r=64, alpha=128), seeds=[0], lams=LAMS, s3_lr_fig3=[0.00005],
        pipelines=["music->chem", "music->flan", "flan->chem", "flan->music"],
        # Table 9: LR {1e-4 … 5e-3} (= Table 7's), LoRA dropout {0, .02, .05}, "other settings as
        # in Table 7" (batch {192, 480, 896}); the FFT runs repeat per LoRA dropout, reusing their
        # stages (lora fields do not key a full fine-tuning stage 2)
        lora_s2_lrs=[0.0001, 0.0002, 0.0005, 0.001, 0.005], lora_batches=[192, 480, 896],
        lora_dropouts=[0.0, 0.02, 0.05],
        lora_doc="Table 9's grid",
        # Figs 4–6: Table 7 sweeps dropout with 5 LRs × 3 batches; we run 2 LRs at batch 192
        # (docs/decisions.md: the full cross is ≈ 7× this experiment's GPU-hours)
        rd_doc="2 of Table 7's stage-2 LRs at batch 192, not its full 5 × 3 sweep (docs/decisions.md)"),
    "1b": dict(
        note="paper scale (Table 2, 6, 8): 1.03B params, 19.7B C4 tokens; one GPU (or node) per run",
        base=dict(model="paper-1b", compile=True, device="cuda", ce_chunk=8192,
                  data=dict(source="hub", tokenizer="smollm2", seq_len=1024, general_tokens=19700000000,
                            post_tokens=300000000, val_tokens=2097152),
                  stage1=dict(lr=0.0005, min_lr=0.00005, warmup_steps=1000, batch_size=512, micro_batch=16,
                              ckpt_interval=1000),
                  stage2=dict(lr=0.00005, min_lr=0.00005, min_lr_ratio=0.1, warmup_steps=100, batch_size=512, micro_batch=16,
                              max_tokens=2000000000, eval_interval=100, patience=3),
                  # warmup 40 of its ≈ 381 steps: the same ≈ 10% as 100 of 135M's ≈ 1,017
                  stage3=dict(lrs=[0.00005, 0.0001, 0.0002, 0.0005], tokens=200000000, warmup_steps=40,
                              batch_size=512, micro_batch=16, eval_interval=50)),
        post_sizes=[300000000], s2_lrs=[0.00001, 0.00002, 0.00005, 0.0001, 0.0002], s2_batches=[512],  # Table 8
        # Fig 3 is 135M only in the paper (§4.1-4.2); at 1B it is an extension, fig3a at λ {0, 1},
        # fig3b adds λ = 0.5 (an interior best λ needs an interior point)
        lora=dict(r=64, alpha=128), seeds=[42], lams=[0.0, 1.0], fig3b_lams=[0.0, 0.5, 1.0], s3_lr_fig3=[0.00005],
        fig3_doc="an extension: the paper runs Fig 3 at 135M only",
        pipelines=["music->chem", "music->flan", "flan->chem"],
        rd_pipelines=["music->flan"], rd_s2_lrs=[0.00001, 0.00002, 0.00005],  # Figs 10–12, Table 10
        rd_doc="Table 10's LRs (the best 3 of the baseline) on Music→FLAN, the pipeline of Figs 10–12",
        lora_s2_lrs=[0.00005, 0.0001, 0.0002],  # LoRA wants higher LRs than full fine-tuning
        lora_doc="an extension: the paper runs LoRA at 135M only; here Table 9's r and α with "
                 "Table 8's three highest stage-2 LRs"),
}


def experiments(s: dict) -> dict:
    seeds = {"seed": s["seeds"]} if len(s["seeds"]) > 1 else {}  # one seed: `seed` in the base (main)
    ext = f" At this scale {s['fig3_doc']}." if "fig3_doc" in s else ""
    return {
        "fig3a": dict(
            doc="Fig 3a, latent benefit (§4.1): λ·|D_post| added to stage 1, stage 2 on all of D_post "
                "to convergence, one stage-3 LR. L_im should stay flat in λ while L_ret improves." + ext,
            cfg=dict(pipeline="music->chem", allocation="added", stage3=dict(lrs=s["s3_lr_fig3"]),
                     grid={"data.post_tokens": s["post_sizes"], "stage1.lam": s["lams"], **seeds})),
        "fig3b": dict(
            doc="Fig 3b, compute-matched (§4.2): one pass over D_post split λ / (1−λ) between stages 1 "
                "and 2. The paper finds the best L_ret at an interior λ." + ext,
            cfg=dict(pipeline="music->chem", allocation="split", stage3=dict(lrs=s["s3_lr_fig3"]),
                     grid={"data.post_tokens": s["post_sizes"], "stage1.lam": s.get("fig3b_lams", s["lams"]),
                           **seeds})),
        "frontiers": dict(
            doc="Fig 2 (135M) and Figs 8–9 (1B): mixed (λ=1) vs unmixed frontiers in both views, from "
                "the stage-2 LR × batch sweep (Table 7/8) × the stage-3 LR sweep, per pipeline.",
            cfg=dict(grid={"pipeline": s["pipelines"], "stage1.lam": [0.0, 1.0],
                           "stage2.lr": s.get("frontier_s2_lrs", s["s2_lrs"]), "stage2.batch_size": s["s2_batches"],
                           **seeds})),
        "replay_dropout": dict(
            doc="Figs 4–6 (135M) and 10–12 (1B): 1% C4 replay and stage-2 dropout, with and without "
                "mixing" + (f"; {s['rd_doc']}" if "rd_doc" in s else "") + ".",
            cfg=dict(grid={"pipeline": s.get("rd_pipelines", [p for p in s["pipelines"] if p.startswith("music")]),
                           "stage1.lam": [0.0, 1.0], "stage2.dropout": s.get("dropouts", [0.0, 0.02, 0.05]),
                           "stage2.replay": [0.0, 0.01], "stage2.lr": s.get("rd_s2_lrs", s["s2_lrs"][:2]),
                           **seeds})),
        "lora": dict(
            doc="Fig 7 (appendix, Table 9): LoRA instead of full fine-tuning in stage 2, mixed vs "
                "unmixed; LoRA on o_proj and the MLP, and on the head only where it is untied (not "
                "at 135M, whose head is the embedding), Q/K/V excluded, α/r = 2"
                + (f"; {s['lora_doc']}" if "lora_doc" in s else "") + ".",
            cfg=dict(pipeline="music->chem",
                     stage2=dict(lora_alpha=s["lora"]["alpha"]),
                     grid={"stage1.lam": [0.0, 1.0], "stage2.lora_r": [0, s["lora"]["r"]],
                           "stage2.lr": s.get("lora_s2_lrs", s["s2_lrs"][:3]),
                           **({"stage2.batch_size": s["lora_batches"]} if "lora_batches" in s else {}),
                           **({"stage2.lora_dropout": s["lora_dropouts"]} if "lora_dropouts" in s else {}),
                           **seeds})),
    }


def merge(a: dict, b: dict) -> dict:
    out = deepcopy(a)
    for k, v in b.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "grid" else v
    return out


def files() -> dict[str, str]:
    """{path under params/: YAML text} for every scale and experiment."""
    out = {}
    for scale, s in SCALES.items():
        for exp, e in experiments(s).items():
            cfg = merge(s["base"], e["cfg"])
            one_seed = {"seed": s["seeds"][0]} if len(s["seeds"]) == 1 else {}  # 1B: 42 (Table 6)
            cfg = {"name": f"{exp}-{scale}", **one_seed, **cfg}
            head = f"# {e['doc']}\n# Scale {scale}: {s['note']}.\n# Written by tools/make_params.py.\n"
            out[f"{scale}/{exp}.yaml"] = head + yaml.safe_dump(cfg, sort_keys=False, width=100)
    return out


if __name__ == "__main__":
    for rel, text in files().items():
        path = ROOT / "params" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print("wrote", path.relative_to(ROOT))

"""Writes the stage notebooks (notebooks/{pretrain,posttrain,finetune}.ipynb) from this one source.

Run `python tools/make_notebooks.py` after changing it; the notebooks are committed without outputs.
"""
from pathlib import Path

import nbformat as nbf

from eelib.model import PRESETS

ROOT = Path(__file__).resolve().parent.parent
KERNEL = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
          "language_info": {"name": "python"}}

# The `parameters` cell: the ExperimentConfig fields at `ci` scale (about a minute on one CPU core).
# papermill -f params/<file>.yaml replaces these with a params file's values; -p lam 0.5 sets λ.
PARAMS = '''name: str = "nb-stages"  # experiment name: outputs/<name>/
pipeline: str = "music->chem"  # D_post->D_ft (Table 1), or your own corpora's names
allocation: str = "added"  # added (Fig 3a) or split (Fig 3b: one pass of D_post split λ / 1−λ)
model: str = "test-micro"  # preset: PRESET_LIST
seed: int = 0
device: str = "auto"  # auto, cpu or cuda
compile: bool = False  # torch.compile the model with its loss
threads: int = 1  # CPU threads (0: torch's default)
ce_chunk: int = 0  # tokens per chunk of the chunked cross-entropy (0: the plain loss)
data: dict = {"seq_len": 64, "general_tokens": 60000, "post_tokens": 12000, "val_tokens": 4096}
stage1: dict = {"lam": 0.0, "batch_size": 8}  # lam: the fraction λ of D_post mixed into pretraining
stage2: dict = {"batch_size": 8, "max_tokens": 60000, "eval_interval": 10, "patience": 2}
stage3: dict = {"lrs": [0.001, 0.003], "tokens": 12000, "batch_size": 8, "eval_interval": 5}
grid: dict = {}  # ignored here: a stage notebook runs one config (use -p lam for λ)
lam: float = None  # sets stage1.lam when given (papermill -p lam 0.5)
run: str = "run"  # run name: outputs/<name>/runs/<run>/
out_dir: str = "outputs"  # outputs root ($EELIB_OUTPUTS overrides)'''
PARAMS = PARAMS.replace("PRESET_LIST", ", ".join(PRESETS))  # eelib/model.py's, so they never drift

SETUP = '''from eelib import config as C, notebook as nb, stages
from eelib.pipeline import run_pipeline
cfg = nb.config(globals(), lam=lam)
root = nb.outputs(out_dir)
print(C.dump(cfg))'''


def md(s):
    return nbf.v4.new_markdown_cell(s)


def code(s, tags=None):
    c = nbf.v4.new_code_cell(s)
    if tags:
        c.metadata["tags"] = tags
    return c


NOTEBOOKS = {
    "pretrain.ipynb": [
        md("# Stage 1 — upstream pretraining with early exposure (paper §3, §4.1)\n\n"
           "The paper pretrains a SmolLM2-style model from scratch on C4 and mixes in a fraction "
           "**λ ∈ [0, 1]** of the post-training set D_post — at most one pass. eelib spreads the "
           "λ·|D_post| tokens uniformly through stage 1, on top of the fixed general-text budget "
           "(docs/decisions.md). This notebook runs stage 1 for one config; a finished stage is reused."),
        code(PARAMS, tags=["parameters"]),
        code(SETUP),
        md("## Train (or reuse) θ_pre"),
        code("s1 = stages.pretrain(cfg, root=root, progress=False)\nnb.stage_table(s1)"),
        md("## What stage 1 saw\n\nThe mixture audit: windows and tokens delivered per source next to "
           "what was requested. D_post never exceeds one pass (the sampler raises rather than repeat)."),
        code("nb.mixture_table(s1)"),
        md("Held-out losses after stage 1 show what early exposure bought before any post-training: "
           "run it with λ > 0 (`-p lam 0.5`) and its D_post loss is already lower than θ_pre's at the "
           "default λ = 0 (at the ci scale: 3.73 vs 5.49 nats). At λ = 0 the table shows no D_post loss: "
           "stage 1 then reads no D_post, so one θ_pre serves every D_post, and posttrain.ipynb shows its "
           "D_post loss as stage 2's step 0. The paper's point (§4.1) is what happens "
           "*after* stages 2 and 3 — see posttrain.ipynb and finetune.ipynb."),
    ],
    "posttrain.ipynb": [
        md("# Stage 2 — upstream post-training to convergence (paper §3)\n\n"
           "Starting from θ_pre, train on D_post (repeating it as needed) while its validation loss "
           "improves, up to a token cap (paper: 2B), and hand on the best checkpoint. The immediate "
           "post-training loss **L_im = L(θ_post; D_post)**. Options of §4.4 and the appendix: dropout, "
           "1% C4 replay, LoRA. Under the compute-matched split (Fig 3b, `allocation: split`) stage 2 "
           "gets the remaining 1−λ of one pass, once."),
        code(PARAMS, tags=["parameters"]),
        code(SETUP),
        code("s1 = stages.pretrain(cfg, root=root, progress=False)      # reused when already done\n"
             "s2 = stages.posttrain(cfg, s1, root=root, progress=False)\nnb.stage_table(s1, s2)"),
        md("## Early stopping\n\nThe dashed line marks the evaluation whose weights stage 2 hands on."),
        code("nb.early_stopping_chart(s2)"),
        code("print(f\"L_im = {s2['L_im']:.4f}  (stopped early: {s2.record.get('stopped_early')}, steps: {s2['steps']})\")\n"
             "nb.mixture_table(s2)"),
    ],
    "finetune.ipynb": [
        md("# Stage 3 — downstream fine-tuning and forgetting (paper §3)\n\n"
           "Fine-tune θ_post on a new domain D_ft for a fixed token budget (paper: 200M) at each "
           "learning rate. Measured on held-out splits: **L_ft** (new domain), **L_ret** (post-training "
           "domain, retained) and **L_pre** (C4, retained), every few steps — the trajectories feed the "
           "frontiers. This notebook ends the run: it writes the run's `result.json` rows."),
        code(PARAMS, tags=["parameters"]),
        code(SETUP),
        code("s1 = stages.pretrain(cfg, root=root, progress=False)\n"
             "s2 = stages.posttrain(cfg, s1, root=root, progress=False)\n"
             "s3s = [stages.finetune(cfg, s2, lr, root=root, progress=False) for lr in cfg.stage3.lrs]\n"
             "nb.stage_table(s1, s2, *s3s)"),
        md("## Forgetting along stage 3"),
        code("nb.trajectory_chart(s3s)"),
        md("## The run's rows (what frontiers, figures and the claims report read)"),
        code("rows = run_pipeline(cfg, run, root=root, progress=False)\n"
             "import pandas as pd\n"
             "pd.DataFrame(rows)[[\"run\", \"method\", \"lam\", \"stage3_lr\", \"L_im\", \"L_ret\", \"L_ft\", \"L_pre\"]]"),
    ],
}

# ---------------------------------------------------------------------------------------------
# Experiment notebooks: run a params file's grid (reusing finished stages), then figures + claims.

def exp_params(default):
    return (f'params_file: str = "{default}"  # a params/ YAML file; its grid is run\n'
            'out_dir: str = "outputs"  # outputs root ($EELIB_OUTPUTS overrides)\n'
            'workers: int = 1  # runs at once (processes)\n'
            'seeds: str = None  # e.g. "[0, 1, 2]": adds a seed axis to the grid')


EXP_SETUP = """from eelib import claims, config as C, figures, notebook as nb
from eelib.pipeline import collect
cfg = nb.experiment_config(params_file, seeds, globals())
root = nb.outputs(out_dir)
print(f"{cfg.name}: {len(C.expand(cfg))} runs x {len(cfg.stage3.lrs)} stage-3 LRs -> {root / cfg.name}")"""

EXP_RUN = """nb.run_grid(cfg, root, workers=workers)   # finished stages and runs are reused
rows = collect(cfg.name, root)
nb.rows_table(rows)"""

EXP_CLAIMS = """verdicts = claims.evaluate(rows)
nb.claims_table(verdicts)"""


def experiment(title, paper, runs, default, plot, reading):
    return [
        md(f"# {title}\n\n**What the paper did.** {paper}\n\n**What this notebook runs.** {runs}\n\n"
           "Defaults run the `ci` scale (seconds, a smoke test, not evidence); pass "
           "`-p params_file params/offline/<this>.yaml` for the offline default, or the `135m`/`1b` "
           "files on a GPU with the real corpora."),
        code(exp_params(default), tags=["parameters"]),
        code(EXP_SETUP),
        md("## Run the grid"),
        code(EXP_RUN),
        md("## Figure (ours on top; the paper's digitized values below, on their own axes)"),
        code(plot),
        md("## Claims, computed from these rows\n\n" + reading),
        code(EXP_CLAIMS),
    ]


NOTEBOOKS.update({
    "fig3a_latent_benefit.ipynb": experiment(
        "Fig 3a — the latent benefit of early exposure (§4.1)",
        "135M, Music→Chem. λ·|D_post| of MusicPile mixed into stage 1 (λ ∈ {0, .25, .5, .75, 1}, "
        "|D_post| ∈ {30M, 150M, 300M}), stage 2 on all of D_post to convergence, stage 3 at LR 5e-5. "
        "L_im is flat in λ (within ~0.02 nats) while L_ret improves by 0.10–0.13 nats.",
        "The same grid at the chosen scale, `allocation: added`.",
        "params/ci/fig3a.yaml", "figures.fig3(rows, \"added\")",
        "Claim (c) asks whether L_im stays flat while L_ret improves with λ, across seeds."),
    "fig3b_compute_matched.ipynb": experiment(
        "Fig 3b — compute-matched allocation of one pass (§4.2)",
        "135M, Music→Chem. One pass over D_post split λ into stage 1 and 1−λ into stage 2. L_im gets "
        "worse with λ; the best L_ret is at an interior λ (0.25–0.5).",
        "The same grid at the chosen scale, `allocation: split` (stage 2 is skipped at λ = 1).",
        "params/ci/fig3b.yaml", "figures.fig3(rows, \"split\")",
        "Claim (d) asks whether the best L_ret lies at an interior λ, across seeds."),
    "frontiers.ipynb": experiment(
        "Fig 2 (and Figs 8–9 at 1B) — mixing moves both frontiers (§4.3)",
        "Four pipelines at 135M. For each, the stage-2 LR × batch grid (Table 7) × several stage-3 "
        "LRs gives points; the Pareto set per method is the frontier, in two views: L_ret vs L_ft, "
        "and L_pre (C4) vs L_ret. Mixed (λ = 1) is below unmixed in every panel; at 1B, FLAN→Chem "
        "shows no gain in the first view.",
        "λ ∈ {0, 1} × the stage-2 LR grid × the stage-3 LRs, per pipeline; trajectory points included.",
        "params/ci/frontiers.yaml",
        "figures.methods_figures(rows, (\"fig2\",))   # every pipeline, |D_post| and model in the rows",
        "Claims (a) and (b) compare the mixed and unmixed frontiers at matched x, per seed."),
    "replay_dropout.ipynb": experiment(
        "Figs 4–6 (and 10–12 at 1B) — replay and dropout add to mixing (§4.4)",
        "135M, Music→Chem and Music→FLAN. Stage 2 with 1% C4 replay or dropout {0.02, 0.05}, with "
        "and without mixing. Both shift the frontier further on top of mixing (Fig 4), protect C4 "
        "(Fig 5), and help without mixing but less than mixing (Fig 6).",
        "λ ∈ {0, 1} × dropout × replay {0, 1%} × stage-2 LR.",
        "params/ci/replay_dropout.yaml",
        "figures.methods_figures(rows, (\"fig4\", \"fig5\", \"fig6\"))   # every pipeline in the rows",
        "Claim (e) asks whether mixed+replay and mixed+dropout each beat mixed alone."),
    "lora.ipynb": experiment(
        "Fig 7 — mixing helps LoRA post-training too (appendix)",
        "135M. Stage 2 with LoRA (r = 64, α = 128; o_proj and MLP, the head only where untied, not at 135M; Q/K/V excluded) instead of "
        "full fine-tuning. Mixing improves both frontiers; full fine-tuning beats LoRA.",
        "λ ∈ {0, 1} × {full, LoRA} × stage-2 LR; adapters are merged before stage 3.",
        "params/ci/lora.yaml", "figures.methods_figures(rows, (\"fig7\",))",
        "Claim (f) asks whether LoRA-mixed beats LoRA-unmixed."),
})

if __name__ == "__main__":
    for name, cells in NOTEBOOKS.items():
        for i, cell in enumerate(cells):  # stable ids: regenerating changes only what changed
            cell.id = f"{Path(name).stem.replace('_', '-')}-{i}"
        nb = nbf.v4.new_notebook(cells=cells, metadata=KERNEL)
        nbf.validate(nb)
        nbf.write(nb, ROOT / "notebooks" / name)
        print("wrote", name)

"""The paper's three stages, each one call: pretrain → posttrain → finetune (§3, Fig 1).

Each stage writes under outputs/<experiment>/stage{1,2,3}/<key>/, where <key> is a digest of every
config field that stage's result depends on and of the stage before it (eelib/keys.py). So a sweep
that varies only stage-3 LR reuses one stage-2 checkpoint, and a sweep over stage-2 settings reuses
one stage-1 checkpoint. A stage whose `stage.json` exists is done and is reused as is; a stage with checkpoints
but no `stage.json` was interrupted and resumes from its newest good checkpoint.

    s1 = pretrain(cfg)            # θ_pre; cfg.stage1.lam of D_post mixed in
    s2 = posttrain(cfg, s1)       # θ_post; L_im
    s3 = finetune(cfg, s2, lr)    # θ_ft; L_ret, L_ft, L_pre and their trajectory
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from eelib import checkpoint, config as C
from eelib.data import corpus_windows, vocab_size
from eelib.mixture import Mixture, Source, check_delivery
from eelib.provenance import precision
from eelib.model import add_lora, build_model, merge_lora, n_params, set_dropout
from eelib.keys import _stage1_identity, _stage1_key, _stage2_key, _stage3_key, stage_dir
from eelib.stagedir import StageResult, begin, finish, locked, save_final
from eelib.train import LoopSpec, heldout_loss, train



# ---------------------------------------------------------------------------------------------
# Training rules of stage 2 (the keys name them: eelib/keys.py).

def stage2_min_lr(s2: C.Stage2Config) -> float:
    """The stage-2 cosine target. Table 8 prints one min LR, 5e-5, for peak LRs {1e-5 … 2e-4}: a
    decay target for 1e-4 and 2e-4, but at or above the other three, where a cosine "decay" to it
    would hold the LR flat or raise it. So `min_lr` is kept where it is below the peak, and
    `min_lr_ratio` (> 0) × the peak is the target elsewhere (docs/decisions.md)."""
    if s2.min_lr_ratio and s2.min_lr >= s2.lr:
        return s2.lr * s2.min_lr_ratio
    return s2.min_lr


def _warmup(warmup_steps: int, max_steps: int, split: bool) -> int:
    """The stage-2 warmup. Under the compute-matched split (Fig 3b) stage 2 is one pass over the
    (1−λ) share of D_post, so its length falls with λ: at 135M, |D_post| = 30M, batch 192 it is
    153 steps at λ = 0 and 39 at λ = 0.75, against Table 7's 500 warmup steps. Such a stage would
    never reach its peak LR nor decay, by a different amount at each λ, which confounds the λ
    curve; so warmup takes at most a third of the stage (docs/decisions.md)."""
    return min(warmup_steps, max_steps // 3) if split else warmup_steps


# ---------------------------------------------------------------------------------------------
# Shared set-up.

def resolve_device(cfg: C.ExperimentConfig) -> torch.device:
    if cfg.threads:  # on a GPU too: several runs sharing one GPU share the host's cores as well
        torch.set_num_threads(cfg.threads)
    if _wants_cuda(cfg):
        if not torch.cuda.is_available():
            raise RuntimeError("device: cuda was asked for but no CUDA device is visible; use device: auto")
        return torch.device("cuda")
    return torch.device("cpu")


def _wants_cuda(cfg: C.ExperimentConfig) -> bool:
    return cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())


def how_computed(cfg: C.ExperimentConfig) -> dict:
    """How this config would compute a stage, in stage.json's `computed` terms (stagedir.begin)."""
    return {"precision": precision("cuda" if _wants_cuda(cfg) else "cpu"), "compile": cfg.compile,
            "ce_chunk": cfg.ce_chunk, "residual_stream": cfg.residual_stream}


def read_ahead(cfg: C.ExperimentConfig) -> dict[str, np.ndarray]:
    """Read what the later stages need before a stage trains: every held-out shard and the D_post
    and D_ft training shards. A record in the wrong shape, or a hub/local corpus too small for its budget
    (their sizes are unknown until read), then stops the run in minutes, not hours later in
    stage 3. Cached shards make it free. Returns the held-out windows."""
    val = heldout(cfg)
    corpus_windows(cfg.post_corpus, "train", cfg.data.post_tokens, cfg.data)  # a λ = 0 stage 1 reads none
    corpus_windows(cfg.ft_corpus, "train", cfg.stage3.tokens, cfg.data)
    return val


def heldout(cfg: C.ExperimentConfig) -> dict[str, np.ndarray]:
    """Fixed held-out windows for D_pre (c4), D_post and D_ft (notes §5: loss on held-out splits)."""
    names = {"pre": "c4", "post": cfg.post_corpus, "ft": cfg.ft_corpus}
    return {role: corpus_windows(c, "val", cfg.data.val_tokens, cfg.data).tokens for role, c in names.items()}


# Stages 1-2 do not depend on D_ft and are shared by pipelines with the same D_post (music->chem and
# music->flan), so their records hold only the losses their key determines. L_ft at θ_post is step
# 0 of each stage-3 trajectory.
UPSTREAM = ("pre", "post")


def _losses(model, val: dict, device, chunk: int, roles=("pre", "post", "ft")) -> dict:
    return {f"L_{r}_val": heldout_loss(model, val[r], device, chunk=chunk) for r in roles}


def _steps(windows: int, batch: int) -> int:
    return max(1, math.ceil(windows / batch))


# ---------------------------------------------------------------------------------------------
# Stage 1: pretraining on D_pre with λ of D_post mixed in.

def pretrain(cfg: C.ExperimentConfig, root: Path | None = None, progress: bool = True) -> StageResult:
    sdir = stage_dir(cfg, 1, root=root)
    # A λ = 0 stage 1 finished while its key still named D_post is adopted, not trained again.
    older = None if cfg.stage1.lam else (C.digest(_stage1_identity(cfg)), _stage1_key(cfg))
    with locked(sdir, older):
        return _pretrain(cfg, sdir, progress)


def _pretrain(cfg: C.ExperimentConfig, sdir: Path, progress: bool) -> StageResult:
    key = _stage1_key(cfg)
    if (r := begin(1, sdir, key, how_computed(cfg))) is not None:
        return r
    d, s1 = cfg.data, cfg.stage1
    t0, device = time.time(), resolve_device(cfg)
    val = read_ahead(cfg)
    general = corpus_windows("c4", "train", d.general_tokens, d)
    sources = [Source("c4", general.tokens, general.n, once=True, quota=general.n)]
    k = 0
    if s1.lam:  # λ·|D_post|, in whole windows, at most one pass (§3)
        post = corpus_windows(cfg.post_corpus, "train", d.post_tokens, d)
        k = round(s1.lam * post.n)
    if k:
        sources.append(Source(cfg.post_corpus, post.tokens, k, once=True, quota=k))
    mix = Mixture(sources, seed=cfg.seed)
    model = build_model(cfg.model, vocab_size(d), seed=cfg.seed, stream=cfg.residual_stream)
    spec = LoopSpec(lr=s1.lr, min_lr=s1.min_lr, warmup_steps=s1.warmup_steps,
                    weight_decay=s1.weight_decay, batch_size=s1.batch_size, micro_batch=s1.micro_batch,
                    max_steps=_steps(mix.total, s1.batch_size), ckpt_interval=s1.ckpt_interval,
                    chunked_ce=cfg.ce_chunk)
    out = train(model, mix, spec, stage_dir=sdir, config_digest=C.digest(key), device=device,
                seed=cfg.seed, compile=cfg.compile, desc=f"stage1 λ={s1.lam}", progress=progress)
    audit = mix.audit()
    check_delivery(audit)
    save_final(sdir, model, {"stage": 1})
    # At λ = 0 the stage serves every D_post, so it records no D_post loss (that is step 0 of
    # stage 2's trajectory). val_tokens is recorded, not keyed: runs that differ only in it share
    # this stage, and its losses are on the held-out set of the run that trained it (notebook.stage_table).
    losses = _losses(model, val, device, cfg.ce_chunk, UPSTREAM if s1.lam else ("pre",))
    return finish(1, sdir, key, {"lam": s1.lam, "steps": out["steps"], "mixture": audit,
                                  "losses": losses, "val_tokens": d.val_tokens, "n_params": n_params(model),
                                  "seconds": time.time() - t0, "computed": out["computed"],
                                  "ckpt_interval": s1.ckpt_interval})  # the key holds the default


# ---------------------------------------------------------------------------------------------
# Stage 2: post-training on D_post until its validation loss stops improving (§3).

def posttrain(cfg: C.ExperimentConfig, stage1: StageResult, root: Path | None = None,
              progress: bool = True) -> StageResult:
    sdir = stage_dir(cfg, 2, root=root)
    with locked(sdir):
        return _posttrain(cfg, stage1, sdir, progress)


def _posttrain(cfg: C.ExperimentConfig, stage1: StageResult, sdir: Path, progress: bool) -> StageResult:
    key = _stage2_key(cfg)
    if (r := begin(2, sdir, key, how_computed(cfg))) is not None:
        return r
    t0, device = time.time(), resolve_device(cfg)
    d, s2 = cfg.data, cfg.stage2
    val = read_ahead(cfg)  # stage 1 may have been reused from a run with other stage-3 budgets
    model = build_model(cfg.model, vocab_size(d), seed=cfg.seed, stream=cfg.residual_stream)
    model.load_state_dict(checkpoint.load_model(stage1.dir / "final"))
    post = corpus_windows(cfg.post_corpus, "train", d.post_tokens, d)
    general = corpus_windows("c4", "train", d.general_tokens, d)
    split = cfg.allocation == "split"
    k = round(cfg.stage1.lam * post.n) if split else 0
    if split:
        # Fig 3b: the remaining 1−λ of one pass, once; replay is sized relative to it.
        rest = post.n - k
        sources = [Source(cfg.post_corpus, post.tokens[k:], 1.0 - s2.replay, once=True, quota=rest)] if rest else []
        n_replay = round(s2.replay / (1 - s2.replay) * rest) if rest else 0
        if n_replay:
            # drawn from all of stage 1's C4 windows, per seed (not its first n_replay windows)
            sources.append(Source("c4", general.tokens, s2.replay, once=True, quota=n_replay, prefix=False))
    else:
        # Fig 3a: all of D_post, repeated as long as validation improves, up to max_tokens.
        sources = [Source(cfg.post_corpus, post.tokens, 1.0 - s2.replay, once=False)]
        if s2.replay:
            sources.append(Source("c4", general.tokens, s2.replay, once=False))
    record = {"allocation": cfg.allocation, "lam": cfg.stage1.lam}
    if not sources:  # λ = 1 under the split: nothing left for stage 2; θ_post = θ_pre (§4.2: λ = 1 puts all of D_post in stage 1)
        save_final(sdir, model, {"stage": 2, "skipped": True})
        losses = _losses(model, val, device, cfg.ce_chunk, UPSTREAM)
        return finish(2, sdir, key, dict(record, skipped=True, steps=0, mixture={}, losses=losses,
                                          L_im=losses["L_post_val"], seconds=time.time() - t0,
                                          computed=[]))  # nothing trained
    mix = Mixture(sources, seed=cfg.seed + 1)
    if s2.lora_r:
        model = add_lora(model, s2.lora_r, s2.lora_alpha, s2.lora_dropout, seed=cfg.seed + 1)
    set_dropout(model, s2.dropout)
    max_steps = (_steps(mix.total, s2.batch_size) if split
                 else max(1, s2.max_tokens // (s2.batch_size * d.seq_len)))
    spec = LoopSpec(lr=s2.lr, min_lr=stage2_min_lr(s2),
                    warmup_steps=_warmup(s2.warmup_steps, max_steps, split),
                    weight_decay=s2.weight_decay, batch_size=s2.batch_size, micro_batch=s2.micro_batch,
                    max_steps=max_steps, eval_interval=s2.eval_interval,
                    patience=0 if split else s2.patience, early_stop_key="L_post_val", chunked_ce=cfg.ce_chunk)
    out = train(model, mix, spec, stage_dir=sdir, config_digest=C.digest(key), device=device,
                seed=cfg.seed + 1, compile=cfg.compile, progress=progress,
                evaluator=lambda m: _losses(m, val, device, cfg.ce_chunk, roles=("post",)),
                desc=f"stage2 λ={cfg.stage1.lam}")
    audit = mix.audit()
    check_delivery(audit)
    if out["best_state"] is not None:  # early stopping hands on the best evaluation's weights
        model.load_state_dict(out["best_state"])
    set_dropout(model, 0.0)
    model = merge_lora(model)
    save_final(sdir, model, {"stage": 2})
    losses = _losses(model, val, device, cfg.ce_chunk, UPSTREAM)
    return finish(2, sdir, key, dict(record, skipped=False, steps=out["steps"],
                                      best_step=out["best_step"], stopped_early=out["stopped_early"],
                                      mixture=audit, trajectory=out["trajectory"], losses=losses,
                                      L_im=losses["L_post_val"], seconds=time.time() - t0,
                                      computed=out["computed"]))


# ---------------------------------------------------------------------------------------------
# Stage 3: downstream fine-tuning on D_ft, fixed token budget, one learning rate (§3).

def finetune(cfg: C.ExperimentConfig, stage2: StageResult, lr: float, root: Path | None = None,
             progress: bool = True) -> StageResult:
    sdir = stage_dir(cfg, 3, lr=lr, root=root)
    with locked(sdir):
        return _finetune(cfg, stage2, lr, sdir, progress)


def _finetune(cfg: C.ExperimentConfig, stage2: StageResult, lr: float, sdir: Path,
              progress: bool) -> StageResult:
    key = _stage3_key(cfg, lr)
    if (r := begin(3, sdir, key, how_computed(cfg))) is not None:
        return r
    t0, device = time.time(), resolve_device(cfg)
    d, s3 = cfg.data, cfg.stage3
    val = heldout(cfg)
    model = build_model(cfg.model, vocab_size(d), seed=cfg.seed, stream=cfg.residual_stream)
    model.load_state_dict(checkpoint.load_model(stage2.dir / "final"))
    ft = corpus_windows(cfg.ft_corpus, "train", s3.tokens, d)
    mix = Mixture([Source(cfg.ft_corpus, ft.tokens, 1.0, once=True, quota=ft.n)], seed=cfg.seed + 2)
    spec = LoopSpec(lr=lr, min_lr=lr * s3.min_lr_ratio, warmup_steps=s3.warmup_steps,
                    weight_decay=s3.weight_decay, batch_size=s3.batch_size, micro_batch=s3.micro_batch,
                    max_steps=_steps(mix.total, s3.batch_size), eval_interval=s3.eval_interval, chunked_ce=cfg.ce_chunk)
    # The trajectory (every eval_interval steps) feeds the frontiers: each point is a checkpoint.
    out = train(model, mix, spec, stage_dir=sdir, config_digest=C.digest(key), device=device,
                seed=cfg.seed + 2, compile=cfg.compile, progress=progress,
                evaluator=lambda m: _losses(m, val, device, cfg.ce_chunk), desc=f"stage3 lr={lr:g}")
    audit = mix.audit()
    check_delivery(audit)
    final = out["trajectory"][-1]
    traj = [{"step": r["step"], "tokens": r["tokens"], "L_ret": r["L_post_val"],
             "L_ft": r["L_ft_val"], "L_pre": r["L_pre_val"]} for r in out["trajectory"]]
    return finish(3, sdir, key, {"lr": lr, "steps": out["steps"], "mixture": audit,
                                  "L_ret": final["L_post_val"], "L_ft": final["L_ft_val"],
                                  "L_pre": final["L_pre_val"], "trajectory": traj,
                                  "seconds": time.time() - t0, "computed": out["computed"]})

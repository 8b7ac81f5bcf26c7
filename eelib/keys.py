"""Stage keys: what each stage's result depends on, which names its directory (§3's three stages).

outputs/<experiment>/stage{1,2,3}/<digest of the key>/: a sweep that varies only the stage-3 LR
reuses one stage 2, a sweep over stage-2 settings one stage 1 (eelib/stages.py trains them).
Plain data and digests, no torch: `eelib plan`, a batch's parent and the stale-stage check of
finished runs compute keys without importing a model (≈ 8 s of imports on the CI machine).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from eelib import config as C
from eelib.data import files_identity, shard_key
from eelib.presets import preset_key
from eelib.tokenizer import tokenizer_id


def _stage1_identity(cfg: C.ExperimentConfig) -> dict:
    """Stage 1's identity as stage 2's key names it: the fields of the run that chose θ_pre,
    D_post's included (at λ = 0 these name more than θ_pre depends on, which changes no key of
    a stage 2: D_post keys it anyway). Kept as it was, so finished stage-2 and stage-3 keys stay valid."""
    d = cfg.data
    # allocation is absent on purpose: stage 1 takes the first round(λ·N) windows of D_post in both
    # Fig 3a ("added") and Fig 3b ("split"), so both experiments can share one stage-1 checkpoint.
    # source=local: the identity of the files stage 1 reads (D_pre, D_post), not the paths written.
    files = {c: files_identity(d.data_files[c]) for c in ("c4", cfg.post_corpus)} if d.source == "local" else {}
    data = [d.source, tokenizer_id(d.tokenizer), d.seq_len, d.general_tokens, d.post_tokens, files]
    data += _shards(cfg, [("c4", "train"), (cfg.post_corpus, "train")])
    return {"model": preset_key(cfg.model), "seed": cfg.seed, "post": cfg.post_corpus, "data": data,
            "stage1": _stage1_fields(cfg)}


def _stage1_fields(cfg: C.ExperimentConfig) -> dict:
    """stage1's fields as its key holds them. How often it checkpoints changes no number (a resumed
    stage is bit-identical), so the key holds the default interval whatever is set: stages that
    differ only in it are shared (the interval that ran is in stage.json). Keys made before this
    rule (2026-11-27) stay valid where the interval was the default, 50 (every offline config);
    those of params/135m and params/1b (1000) moved once, before any such stage had been trained."""
    s1 = dataclasses.asdict(cfg.stage1)
    s1["ckpt_interval"] = C.Stage1Config().ckpt_interval
    return s1


def _shards(cfg: C.ExperimentConfig, reads: list[tuple[str, str]]) -> list:
    """The token shards a stage reads, by their keys, for hub and local data: any rule that moves a
    shard's key (val read shuffled; C4's validation folder held out; a pinned revision) then moves
    the keys of the stages that read it, instead of leaving stages trained on the old shard to be
    reused. Offline shards come from fixed generators: their stages keep the keys they had."""
    if cfg.data.source == "offline":
        return []
    return [{"shards": {f"{c}/{split}": C.digest(shard_key(c, split, cfg.data)) for c, split in reads}}]


PRE_ONLY = "lam = 0: reads D_pre only"  # marks the stage-1 key below


def _stage1_key(cfg: C.ExperimentConfig) -> dict:
    """What stage 1's result depends on, which names its directory. At λ = 0 stage 1 reads no
    D_post, so its key leaves D_post out and one C4-only θ_pre serves every D_post, |D_post| and
    pipeline of a model and seed (the unmixed baseline of Figs 2-7: at 135M 26B tokens of the grid
    would otherwise be trained again per corpus and per size). A stage 1 finished under the older
    key (`_stage1_identity`) is adopted, not retrained (`stagedir.adopt_twin`)."""
    if cfg.stage1.lam > 0:
        return _stage1_identity(cfg)
    d = cfg.data
    files = {"c4": files_identity(d.data_files["c4"])} if d.source == "local" else {}
    data = [d.source, tokenizer_id(d.tokenizer), d.seq_len, d.general_tokens, files] + _shards(cfg, [("c4", "train")])
    return {"model": preset_key(cfg.model), "seed": cfg.seed, "reads": PRE_ONLY, "data": data,
            "stage1": _stage1_fields(cfg)}


SPLIT_WARMUP_RULE = "min(warmup_steps, steps // 3)"  # stages._warmup; part of split stage-2 keys


LORA_INIT_RULE = "torch.manual_seed(seed + 1)"  # stages: add_lora(seed=seed + 1); part of LoRA stage-2 keys
SPLIT_REPLAY_RULE = "seeded draw from all C4 windows"  # split stage-2 replay (Source.prefix=False)


def _stage2_key(cfg: C.ExperimentConfig) -> dict:
    s2 = dataclasses.asdict(cfg.stage2)
    if not s2["min_lr_ratio"]:  # added later; left out at its default so older keys stay valid
        s2.pop("min_lr_ratio")
    if not s2["lora_r"]:  # full fine-tuning: the LoRA fields change nothing, so they key nothing
        default = C.Stage2Config()
        s2["lora_alpha"], s2["lora_dropout"] = default.lora_alpha, default.lora_dropout
    key = {"stage1": C.digest(_stage1_identity(cfg)), "allocation": cfg.allocation,
           "val_tokens": cfg.data.val_tokens, "stage2": s2}
    if cfg.allocation == "split":  # the warmup rule (stages._warmup) changed what a split stage 2 trains
        key["warmup"] = SPLIT_WARMUP_RULE
    if s2["lora_r"]:  # adapters were initialised from the global random state before
        key["lora_init"] = LORA_INIT_RULE
    if cfg.allocation == "split" and s2["replay"]:  # replay took C4's first windows before
        key["replay_draw"] = SPLIT_REPLAY_RULE
    for shards in _shards(cfg, [(cfg.post_corpus, "train"), (cfg.post_corpus, "val")]
                          + ([("c4", "train")] if s2["replay"] else [])):
        key |= shards  # D_post's val chooses the stopping point
    return key


def _stage3_key(cfg: C.ExperimentConfig, lr: float) -> dict:
    s3 = dataclasses.asdict(cfg.stage3)
    s3.pop("lrs")
    key = {"stage2": C.digest(_stage2_key(cfg)), "ft": cfg.ft_corpus, "lr": lr, "stage3": s3}
    if cfg.data.source == "local":  # the D_ft files; added only then, so other keys stay as they were
        key["ft_files"] = files_identity(cfg.data.data_files[cfg.ft_corpus])
    for shards in _shards(cfg, [(cfg.ft_corpus, "train"), ("c4", "val"), (cfg.post_corpus, "val"),
                                (cfg.ft_corpus, "val")]):
        key |= shards  # the held-out sets L_pre, L_ret and L_ft are measured on
    return key


def stage_dir(cfg: C.ExperimentConfig, stage: int, lr: float | None = None, root: Path | None = None) -> Path:
    key = {1: _stage1_key, 2: _stage2_key}.get(stage)
    k = C.digest(key(cfg)) if key else C.digest(_stage3_key(cfg, lr))
    return Path(root or C.OUTPUTS) / cfg.name / f"stage{stage}" / k

"""Validation of an ExperimentConfig: one rule per field, each with the fix in its message.

Bad input is refused with a `ConfigError` naming the field and the fix (issue 7): out-of-range
values, inconsistent combinations, corpora and files that cannot be read, budgets a finite corpus
cannot hold. `eelib.config` calls `validate` on every params file and every grid combination
before anything runs; the model-preset checks are apart (`check_model`), run after the field checks
of every grid combination.
"""
from __future__ import annotations

import difflib
import math
import os
import re
from pathlib import Path

from eelib.config import (CORPUS_CAPACITY, CORPUS_NAMES, OWN_CORPUS_NAME, PIPELINES, RESERVED_NAMES,
                          RESIDUAL_STREAMS, ConfigError, DataConfig, ExperimentConfig, pipeline_corpora)
from eelib.corpora.registry import HUB_DATASET_FIELDS
from eelib.presets import PRESETS


def data_files_found(pattern: str) -> list[str]:
    """The files the reader would open (eelib/corpora/hub.py), so a config that passes can be read;
    [] when none match. An ImportError (.zst files without zstandard) passes through."""
    from eelib.corpora.hub import resolve_files
    try:
        return resolve_files(pattern)
    except FileNotFoundError:
        return []


def _check(cond: bool, path: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{path}: {msg}")


def validate(cfg: ExperimentConfig, models: bool = True) -> ExperimentConfig:
    """Every rule below, in this order (the first broken one is reported); `models=False` skips
    the model-preset checks (they import torch)."""
    post, ft = _check_pipeline(cfg)
    _check_run(cfg)
    _check_tokenizer(cfg.data)
    _check_hub(cfg.data)
    _check_budgets(cfg, post, ft)
    _check_local(cfg.data, post, ft)
    _check_stages(cfg)
    _check_grid(cfg)
    return check_model(cfg) if models else cfg


def _check_pipeline(cfg: ExperimentConfig) -> tuple[str, str]:
    """The pipeline string and its corpora: (D_post, D_ft)."""
    d = cfg.data
    _check(isinstance(cfg.pipeline, str), "pipeline", "give a string such as 'music->chem'")
    # One spelling per pipeline: results, figures and claims group rows by this string.
    squeezed = re.sub(r"\s+", "", cfg.pipeline)
    _check(squeezed == cfg.pipeline, "pipeline", f"{cfg.pipeline!r}: write it without spaces, e.g. {squeezed!r}")
    post, ft = pipeline_corpora(cfg.pipeline)
    _check(bool(post and ft), "pipeline", f"unknown pipeline {cfg.pipeline!r}; use one of {sorted(PIPELINES)}, "
           "or '<post>-><ft>' naming corpora of your own given in data.data_files (source: local)")
    own = [c for c in (post, ft) if c not in CORPUS_NAMES]
    _check(bool(own) or cfg.pipeline in PIPELINES, "pipeline",
           f"{cfg.pipeline!r} pairs two paper corpora; the paper's pipelines (Table 1) are {sorted(PIPELINES)}, "
           "written so (one name per pair keeps results matched to the paper's figures)")
    for c in own:
        _check(bool(OWN_CORPUS_NAME.fullmatch(c)), "pipeline", f"corpus name {c!r}: use lower-case letters, "
               "digits and '_' (it names files and table columns)")
        _check(c not in RESERVED_NAMES, "pipeline", f"corpus name {c!r} is reserved: it names the paper's "
               f"corpus in its pipelines {sorted(PIPELINES)}; use one of those, or call your corpus "
               f"something else (e.g. {c + '_own'!r})")
        if d.source == "local" and d.data_files and c not in d.data_files:  # most likely a typo
            near = difflib.get_close_matches(c, list(d.data_files), n=1)
            _check(False, "pipeline", f"{c!r} is not a paper corpus nor in data.data_files (which names "
                   f"{', '.join(sorted(d.data_files))}){f'; did you mean {near[0]!r}?' if near else ''} "
                   f"Name the same corpus in both, or add data.data_files.{c}: <its files>")
        _check(d.source == "local" and c in d.data_files, "pipeline",
               f"{c!r} is not a paper corpus ({', '.join(CORPUS_NAMES[1:])}); a corpus of your own is read from "
               f"files: set data.source: local and data.data_files.{c}: <file, directory or glob of "
               ".jsonl/.json(.gz)/.parquet records with a 'text' field>")
    # Table 1 never pairs a corpus with itself, and D_pre is C4: with D_ft = D_post, L_ret and L_ft
    # are one loss and forgetting cannot be measured.
    _check("c4" not in (post, ft), "pipeline", f"{cfg.pipeline!r}: c4 is D_pre (stage 1); name the "
           "post-training and fine-tuning corpora, e.g. 'music->chem'")
    _check(post != ft, "pipeline", f"{cfg.pipeline!r} fine-tunes on its post-training corpus {post!r}; "
           "D_ft must differ from D_post")
    return post, ft


def _check_run(cfg: ExperimentConfig) -> None:
    """How the run is named and executed."""
    _check(cfg.allocation in ("added", "split"), "allocation", "use 'added' (Fig 3a) or 'split' (Fig 3b)")
    _check(cfg.device in ("auto", "cpu", "cuda"), "device", "use auto, cpu or cuda")
    # torch.manual_seed takes < 2**63 and the LoRA init uses seed + 1; 2**31 leaves room for any such use.
    _check(0 <= cfg.seed < 2**31, "seed", f"must be >= 0 and < 2**31 ({2**31:,}), got {cfg.seed}")
    _check(cfg.threads >= 0, "threads", "must be >= 0 (0 = torch default)")
    _check(cfg.ce_chunk >= 0, "ce_chunk", "must be >= 0 (0 = the plain loss; e.g. 8192 tokens per chunk)")
    _check(cfg.residual_stream in RESIDUAL_STREAMS, "residual_stream",
           f"use fp32 (transformers' stream under autocast) or bf16, got {cfg.residual_stream!r}")
    _check(bool(cfg.name) and "/" not in cfg.name and cfg.name not in (".", ".."), "name",
           "must be a non-empty directory name without '/'")
    _check(cfg.name.isprintable() and cfg.name.strip() == cfg.name, "name",
           f"{cfg.name!r}: use a directory name without control characters or leading/trailing spaces")
    _check(len(cfg.name.encode("utf-8")) <= 200, "name",
           f"{len(cfg.name.encode('utf-8'))} bytes long; file systems allow 255 bytes a name, so keep it "
           "at most 200 (UTF-8 bytes)")


def _check_tokenizer(d: DataConfig) -> None:
    """data.source, and a tokenizer directory that reads and fits uint16 tokens."""
    _check(d.source in ("offline", "hub", "local"), "data.source", "use offline, hub or local")
    _check(isinstance(d.tokenizer, str) and (d.tokenizer in ("bytes", "smollm2")
                                             or (Path(d.tokenizer) / "tokenizer.json").is_file()),
           "data.tokenizer", f"{d.tokenizer!r} is not a tokenizer; use bytes, smollm2, or a directory "
           "holding a saved Hugging Face tokenizer (tokenizer.json, e.g. from save_pretrained)")
    if d.tokenizer not in ("bytes", "smollm2"):
        from eelib.tokenizer import tokenizer_vocab
        try:
            n = tokenizer_vocab(d.tokenizer)
        except Exception as e:  # the tokenizers library raises a bare Exception on a malformed file
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"data.tokenizer: {d.tokenizer}/tokenizer.json cannot be read ({first}); "
                              "save the tokenizer again (save_pretrained) or point at another directory") from None
        _check(n <= 65536, "data.tokenizer", f"{d.tokenizer} has {n:,} ids; tokens are stored as uint16, "
               "so use a tokenizer with at most 65,536")


def _check_hub(d: DataConfig) -> None:
    """Dataset revisions and ids, read with source: hub only."""
    _check(isinstance(d.revisions, dict), "data.revisions", "must map corpus names to dataset revisions")
    _check(d.source == "hub" or not d.revisions, "data.revisions",
           f"only used with data.source: hub (source is {d.source!r}); remove it or set source: hub")
    for k, v in d.revisions.items():
        _check(k in CORPUS_NAMES, f"data.revisions.{k}", f"unknown corpus; use {list(CORPUS_NAMES)}")
        _check(isinstance(v, str) and bool(v.strip()), f"data.revisions.{k}",
               "must be a commit sha, tag or branch of the dataset repository")
    _check(isinstance(d.hub_datasets, dict), "data.hub_datasets",
           "must map corpus names to {id: <dataset id>, config: <name>, field: <text field>}")
    _check(d.source == "hub" or not d.hub_datasets, "data.hub_datasets",
           f"only used with data.source: hub (source is {d.source!r}); remove it or set source: hub")
    for k, v in d.hub_datasets.items():
        _check(k in CORPUS_NAMES, f"data.hub_datasets.{k}", f"unknown corpus; use {list(CORPUS_NAMES)}")
        _check(isinstance(v, dict) and bool(v), f"data.hub_datasets.{k}",
               "must be a mapping with some of id, config, field (e.g. {id: jablonkagroup/chempile-paper})")
        for f, x in v.items():
            _check(f in HUB_DATASET_FIELDS, f"data.hub_datasets.{k}.{f}",
                   f"unknown field; use {list(HUB_DATASET_FIELDS)}")
            _check(isinstance(x, str) and bool(x.strip()), f"data.hub_datasets.{k}.{f}",
                   "must be a non-empty string (the dataset id, its config name, or the record's text field)")


def _check_budgets(cfg: ExperimentConfig, post: str, ft: str) -> None:
    """Window length and token budgets, and what a finite corpus can hold."""
    d, s3 = cfg.data, cfg.stage3
    for f in ("seq_len", "general_tokens", "post_tokens", "val_tokens"):
        _check(getattr(d, f) > 0, f"data.{f}", "must be > 0")
    _check(d.seq_len >= 8, "data.seq_len", "must be >= 8")
    for f in ("general_tokens", "post_tokens", "val_tokens"):
        _check(getattr(d, f) >= d.seq_len, f"data.{f}", "must hold at least one window (>= data.seq_len)")
    _check(s3.tokens >= d.seq_len, "stage3.tokens", "must hold at least one window (>= data.seq_len)")
    for role, corpus, split, n in (("general_tokens", "c4", "train", d.general_tokens),
                                   ("val_tokens", "c4", "val", d.val_tokens),
                                   ("val_tokens", post, "val", d.val_tokens),
                                   ("val_tokens", ft, "val", d.val_tokens),
                                   ("post_tokens", post, "train", d.post_tokens),
                                   ("tokens", ft, "train", s3.tokens)):
        cap = CORPUS_CAPACITY.get((d.source, d.tokenizer, corpus, split))
        if cap is None:  # infinite (offline generators) or unknown until read (hub, local)
            continue
        used = n // d.seq_len * d.seq_len  # budgets are cut to whole windows
        _check(used <= cap, f"stage3.{role}" if role == "tokens" else f"data.{role}",
               f"{n:,} tokens asked of {d.source} {corpus}/{split}, which holds {cap:,} "
               f"({d.tokenizer} tokens); lower it to at most {cap:,} or use another data.source")


def _check_local(d: DataConfig, post: str, ft: str) -> None:
    """The cache directory, and with source: local the files of every corpus the pipeline reads."""
    _check(isinstance(d.cache_dir, str) and not (d.cache_dir and Path(d.cache_dir).is_file()),
           "data.cache_dir", f"{d.cache_dir!r} is not a usable directory; point it at a directory "
           "(or leave it empty for $EELIB_CACHE_DIR / ~/.cache/eelib)")
    _check(d.source == "local" or not d.data_files, "data.data_files",
           f"only read with data.source: local (source is {d.source!r}); remove it or set source: local")
    if d.source == "local":
        needed = {"c4", post, ft}
        missing = sorted(needed - set(d.data_files))
        _check(not missing, "data.data_files", f"source=local needs files for {missing}")
        for k, v in d.data_files.items():
            _check(isinstance(k, str) and (k in CORPUS_NAMES or bool(OWN_CORPUS_NAME.fullmatch(k))), f"data.data_files.{k}",
                   f"not a corpus name; use {list(CORPUS_NAMES)} or a name of your own in lower-case "
                   "letters, digits and '_' (and name it in pipeline: '<post>-><ft>')")
            _check(k not in RESERVED_NAMES, f"data.data_files.{k}", f"{k!r} is reserved ('music->chem' etc. "
                   f"name the paper's pipelines); call your corpus something else (e.g. {k + '_own'!r})")
            _check(isinstance(v, str) and bool(v.strip()), f"data.data_files.{k}",
                   "give a file path or glob as a string")
            try:
                found = data_files_found(v)
            except ImportError as e:  # found, but unreadable without a package: say which
                raise ConfigError(f"data.data_files.{k}: {e}") from None
            _check(bool(found), f"data.data_files.{k}",
                   f"no .json/.jsonl(.gz)/.parquet file matches {v!r}; fix the path (eelib reads "
                   "JSON lines, JSON and parquet files; relative paths are read from the params "
                   "file's folder, those of --set and of papermill's -f/-p from the working directory)")
            kinds = {"parquet" if f.endswith(".parquet") else "json" for f in found}
            _check(len(kinds) == 1, f"data.data_files.{k}",
                   f"{v!r} mixes parquet and JSON files; give one format per corpus")
            _check(any(os.path.getsize(f) for f in found), f"data.data_files.{k}",
                   f"every file matching {v!r} is empty; point it at files with records")


def _check_stages(cfg: ExperimentConfig) -> None:
    s1, s2, s3, d = cfg.stage1, cfg.stage2, cfg.stage3, cfg.data
    _check(0.0 <= s1.lam <= 1.0, "stage1.lam", "λ must lie in [0, 1] (at most one pass over D_post, §3)")
    for name, st in (("stage1", s1), ("stage2", s2)):
        _check(st.lr > 0, f"{name}.lr", "must be > 0")
        if not getattr(st, "min_lr_ratio", 0):  # else a min_lr at or above the peak falls back to the ratio
            _check(0 <= st.min_lr <= st.lr, f"{name}.min_lr",
                   f"must lie in [0, {name}.lr]" + ("; or set stage2.min_lr_ratio to decay to a "
                                                    "fraction of each swept LR where min_lr is not below it"
                                                    if name == "stage2" else ""))
        _check(st.min_lr >= 0, f"{name}.min_lr", "must be >= 0")
    for name, st in (("stage1", s1), ("stage2", s2), ("stage3", s3)):
        _check(st.batch_size > 0, f"{name}.batch_size", "must be > 0")
        _check(st.micro_batch >= 0, f"{name}.micro_batch", "must be >= 0 (0 = the whole batch)")
        _check(st.warmup_steps >= 0, f"{name}.warmup_steps", "must be >= 0")
        _check(st.weight_decay >= 0, f"{name}.weight_decay", "must be >= 0")
    _check(s1.ckpt_interval > 0, "stage1.ckpt_interval", "must be > 0 (steps between checkpoints)")
    _check(s2.max_tokens > 0, "stage2.max_tokens", "must be > 0")
    _check(s2.eval_interval > 0, "stage2.eval_interval", "must be > 0")
    _check(s2.patience > 0, "stage2.patience", "must be > 0")
    _check(0.0 <= s2.dropout < 1.0, "stage2.dropout", "must lie in [0, 1)")
    _check(0.0 <= s2.replay < 1.0, "stage2.replay", "must lie in [0, 1) (paper: 0.01)")
    _check(0.0 <= s2.min_lr_ratio <= 1.0, "stage2.min_lr_ratio",
           "must lie in [0, 1] (0 = use stage2.min_lr)")
    _check(s2.lora_r >= 0, "stage2.lora_r", "must be >= 0 (0 = full fine-tuning)")
    _check(s2.lora_alpha > 0, "stage2.lora_alpha", "must be > 0")
    _check(0.0 <= s2.lora_dropout < 1.0, "stage2.lora_dropout", "must lie in [0, 1)")
    _check(not (s2.lora_r and s2.dropout), "stage2.dropout",
           "model dropout with LoRA is not a paper setting; use stage2.lora_dropout")
    if cfg.allocation == "split" and s2.replay:
        # stage 2 reads its replay windows of D_pre once; they must fit in data.general_tokens.
        n_post = d.post_tokens // d.seq_len
        rest = n_post - round(s1.lam * n_post)
        n_replay = round(s2.replay / (1 - s2.replay) * rest) if rest else 0
        _check(n_replay <= d.general_tokens // d.seq_len, "stage2.replay",
               f"allocation split needs {n_replay} replay windows of D_pre but data.general_tokens holds "
               f"{d.general_tokens // d.seq_len}; lower stage2.replay or raise data.general_tokens")
        # replay is counted in whole windows: a share that rounds to none would silently run a
        # "+replay" stage 2 without any
        _check(not rest or n_replay > 0, "stage2.replay",
               f"allocation split at λ={s1.lam:g} leaves {rest} windows of D_post for stage 2, and replay "
               f"{s2.replay:g} of them rounds to 0 windows; raise stage2.replay or data.post_tokens")
    _check(isinstance(s3.lrs, list) and len(s3.lrs) > 0, "stage3.lrs", "give a non-empty list of learning rates")
    for i, lr in enumerate(s3.lrs):
        _check(isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr) and lr > 0,
               f"stage3.lrs[{i}]", "each learning rate must be a finite number > 0")
    _check(len(set(s3.lrs)) == len(s3.lrs), "stage3.lrs", "remove the duplicate learning rates")
    _check(s3.tokens > 0, "stage3.tokens", "must be > 0")
    _check(0.0 <= s3.min_lr_ratio <= 1.0, "stage3.min_lr_ratio", "must lie in [0, 1]")
    _check(s3.eval_interval > 0, "stage3.eval_interval", "must be > 0")


def _check_grid(cfg: ExperimentConfig) -> None:
    for key, values in cfg.grid.items():
        _check(isinstance(key, str), f"grid.{key}", "a grid key is a dotted field name, e.g. stage1.lam "
               "(quote it if YAML reads it as a number)")
        _check(isinstance(values, list) and len(values) > 0, f"grid.{key}", "give a non-empty list of values")
        _check(key.split(".")[0] not in ("grid", "name"), f"grid.{key}", "this field cannot be swept")


def check_model(cfg: ExperimentConfig) -> ExperimentConfig:
    d = cfg.data
    _check(cfg.model in PRESETS, "model", f"unknown preset {cfg.model!r}; use one of {sorted(PRESETS)}")
    max_pos = PRESETS[cfg.model]["max_position_embeddings"]
    _check(d.seq_len <= max_pos, "data.seq_len", f"must be <= {max_pos} for model {cfg.model!r}")
    # here, after the window length is known to fit, so a window too long is named first
    n_post = d.post_tokens // d.seq_len
    lam = cfg.stage1.lam
    _check(lam == 0 or round(lam * n_post) > 0, "stage1.lam",
           f"λ={lam:g} of |D_post| ({n_post:,} windows) mixes in no window at all (stage 1 takes "
           f"round(λ·N)), so this 'mixed' run would be the unmixed one; use 0, or λ ≥ {1 / max(n_post, 1):.3g}")
    return cfg

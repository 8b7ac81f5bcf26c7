"""Typed configs for the three stages, and the YAML file that maps onto them 1:1.

A params file is one `ExperimentConfig`: shared fields (pipeline, model, data, seed) plus one
section per stage, plus an optional `grid` of dotted field names -> value lists that expands into
runs. Every field has a default; every knob the paper leaves open is listed in docs/decisions.md.

Bad input is refused with a `ConfigError` naming the field and the fix (issue 7): unknown keys
and wrong types here, out-of-range values and inconsistent combinations in eelib/validate.py.
Nothing is written before the whole file validates.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
import math
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

CORPUS_NAMES = ("c4", "musicpile", "chempile", "flan")
# Table 1 of the paper: D_pre is always C4; the pipelines pair a post-training and a fine-tuning set.
PIPELINES = {
    "music->chem": ("musicpile", "chempile"),
    "music->flan": ("musicpile", "flan"),
    "flan->chem": ("flan", "chempile"),
    "flan->music": ("flan", "musicpile"),
}
# Your own study: pipeline "<post>-><ft>" over corpora of your own, read with data.source: local
# from data.data_files.<name> (records with a `text` field; eelib/corpora/registry.own_corpus).
OWN_CORPUS_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
# The short names in the paper's pipeline names: a corpus of your own may not take them, so that
# "music->chem" always means the paper's pair.
RESERVED_NAMES = {"music", "chem"}


def pipeline_corpora(pipeline: str) -> tuple[str, str]:
    """(D_post, D_ft) corpus names of a pipeline: a paper one (Table 1) or "<post>-><ft>"."""
    if pipeline in PIPELINES:
        return PIPELINES[pipeline]
    post, sep, ft = pipeline.partition("->")
    return (post, ft) if sep else ("", "")

# Corpora that end: tokens one pass holds, per (source, tokenizer, corpus, split), counted as the
# data layer packs them (UTF-8 bytes + one end-of-document token per document). The offline C4
# stand-in (KJV) is finite; the offline generators for the other three are infinite and absent.
# tests/test_config.py recounts these from the installed corpus, so a drift fails a test.
CORPUS_CAPACITY = {
    ("offline", "bytes", "c4", "train"): 3_960_108,
    ("offline", "bytes", "c4", "val"): 177_344,
}


# The outputs root a run writes under when no --out / root is given (relative: the working directory).
OUTPUTS = Path("outputs")

# The residual stream's dtype under autocast (`residual_stream`; eelib/model.py, set_residual_stream).
RESIDUAL_STREAMS = ("fp32", "bf16")


class ConfigError(ValueError):
    """A params file (or override) that cannot run. The message names the field and the fix."""


@dataclass
class DataConfig:
    source: str = "offline"          # offline (installs with eelib) | hub (real HF datasets) | local
    tokenizer: str = "bytes"         # bytes (offline, 258 ids) | smollm2 (HF, vocab 49,152) | a saved tokenizer dir
    seq_len: int = 256               # training window; paper: 1,024 (Table 2, 1B; 135M not stated)
    general_tokens: int = 1_000_000  # stage-1 D_pre (C4) budget; paper: 8.7B at 135M
    post_tokens: int = 200_000       # |D_post|; paper: 30M / 150M / 300M
    val_tokens: int = 32_768         # held-out tokens per corpus for L_im/L_ret/L_ft/L_pre
    data_files: dict = field(default_factory=dict)  # source=local: corpus name -> file glob
    revisions: dict = field(default_factory=dict)   # source=hub: corpus name -> dataset commit/tag to pin
    # source=hub: corpus name -> {id, config, field} replacing eelib's guess of the dataset the
    # paper read (it names none; corpora/registry.py), e.g. another ChemPile subset
    hub_datasets: dict = field(default_factory=dict)
    cache_dir: str = ""              # tokenized corpora; "" = $EELIB_CACHE_DIR or ~/.cache/eelib


@dataclass
class Stage1Config:
    """Stage 1, upstream pretraining on D_pre with λ·|D_post| mixed in (§3, §4.1)."""
    lam: float = 0.0                 # λ: fraction of one pass over D_post mixed into stage 1
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 30
    weight_decay: float = 0.1
    batch_size: int = 16             # sequences per optimizer step (global)
    micro_batch: int = 0             # sequences per forward/backward; 0 = the whole batch
    ckpt_interval: int = 50          # steps between resumable checkpoints (paper scale: ~1000)


@dataclass
class Stage2Config:
    """Stage 2, upstream post-training on D_post until its validation loss stops improving."""
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 20
    weight_decay: float = 0.1
    batch_size: int = 16
    micro_batch: int = 0
    max_tokens: int = 2_000_000      # cap; paper: 2B tokens with early stopping
    eval_interval: int = 25          # steps between validation evals (early stopping)
    patience: int = 3                # evals without improvement before stopping (paper 1B: 3)
    dropout: float = 0.0             # embed/attn/resid/mlp dropout, stage 2 only (§4.4)
    replay: float = 0.0              # fraction of stage-2 tokens drawn from D_pre (paper: 0.01)
    lora_r: int = 0                  # 0 = full fine-tuning; paper Table 9: r=64
    lora_alpha: int = 128
    lora_dropout: float = 0.0
    min_lr_ratio: float = 0.0        # > 0: where min_lr is not below the peak LR, the cosine
                                     # decays to this x the peak instead (Table 8's 5e-5; stages.stage2_min_lr)


@dataclass
class Stage3Config:
    """Stage 3, downstream fine-tuning on D_ft for a fixed token budget, one run per LR."""
    lrs: list = field(default_factory=lambda: [3e-4, 1e-3])
    tokens: int = 150_000            # paper: 200M
    min_lr_ratio: float = 0.1        # cosine target as a fraction of the peak LR
    warmup_steps: int = 10
    weight_decay: float = 0.0
    batch_size: int = 16
    micro_batch: int = 0
    eval_interval: int = 10          # steps between trajectory evals (feeds the frontiers)


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    pipeline: str = "music->chem"
    allocation: str = "added"        # added: Fig 3a (λ·D_post on top) | split: Fig 3b (λ / 1−λ)
    model: str = "cpu-tiny"          # preset in eelib.presets.PRESETS
    seed: int = 0
    device: str = "auto"             # auto | cpu | cuda
    compile: bool = False            # torch.compile the model (off on CPU: +4–11% only)
    threads: int = 0                 # torch CPU threads; 0 = torch's default
    ce_chunk: int = 0                # tokens per chunk of the chunked cross-entropy (eelib/loss.py); 0 = plain
    residual_stream: str = "fp32"    # fp32 | bf16: the residual stream's dtype under CUDA autocast (eelib/model.py)
    data: DataConfig = field(default_factory=DataConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    stage3: Stage3Config = field(default_factory=Stage3Config)
    grid: dict = field(default_factory=dict)   # "stage1.lam": [0, 0.5, 1], "seed": [0, 1, 2]

    @property
    def post_corpus(self) -> str:
        return pipeline_corpora(self.pipeline)[0]

    @property
    def ft_corpus(self) -> str:
        return pipeline_corpora(self.pipeline)[1]


# ---------------------------------------------------------------------------------------------
# YAML <-> dataclasses, strict: unknown keys and wrong types are errors, not silently ignored.

def _type_ok(value, tp) -> bool:
    origin = typing.get_origin(tp)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp in (str, bool):
        return isinstance(value, tp)
    if tp is list or origin is list:
        return isinstance(value, list)
    if tp is dict or origin is dict:
        return isinstance(value, dict)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    return True


def _from_dict(cls, raw, path: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{path or 'params'}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid fields: {sorted(names)}"
            raise ConfigError(f"{where}: unknown field{hint}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _from_dict(tp, value, where)
            continue
        if tp is float and isinstance(value, str):  # YAML reads 3e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if not _type_ok(value, tp):
            tname = getattr(tp, "__name__", str(tp))
            raise ConfigError(f"{where}: expected {tname}, got {type(value).__name__} {value!r}")
        if tp is float and not math.isfinite(value):
            raise ConfigError(f"{where}: got {value!r}; give a finite number")
        kwargs[key] = float(value) if tp is float else value
    return cls(**kwargs)


def from_dict(raw: dict, models: bool = True) -> ExperimentConfig:
    from eelib.validate import check_model, validate  # here: eelib.validate imports this module
    cfg = _from_dict(ExperimentConfig, raw or {}, "")
    # stage3.lrs may be written as 3e-4 strings in YAML too
    if isinstance(cfg.stage3.lrs, list):
        cfg.stage3.lrs = [float(x) if isinstance(x, str) and _is_float(x) else x for x in cfg.stage3.lrs]
    validate(cfg, models=False)
    # Every grid combination must validate too, before anything runs; the cheap checks of all
    # combinations first, then the model-preset checks.
    runs = expand(cfg, models=False) if cfg.grid else []
    if models:
        check_model(cfg)
        for c in runs:
            try:
                check_model(c)
            except ConfigError as e:
                where = ", ".join(f"{k}={_get_dotted(to_dict(c), k)}" for k in cfg.grid)
                raise ConfigError(f"grid ({where}): {e}") from e
    return cfg


def _get_dotted(raw: dict, key: str):
    for p in key.split("."):
        raw = raw[p]
    return raw


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


class _StrictLoader(yaml.SafeLoader):
    """safe_load, but a key given twice in one mapping is an error (YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise ConfigError(f"{key!r} given twice (line {key_node.start_mark.line + 1}); keep one")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load(path: str | Path, overrides: dict | None = None) -> ExperimentConfig:
    """Read a params YAML file (+ dotted overrides) into a validated ExperimentConfig."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"params file {str(path)!r}: not found; pass an existing YAML file (see params/)")
    if path.is_dir():
        raise ConfigError(f"params file {str(path)!r}: is a directory; pass one YAML file in it, e.g. "
                          f"{str(path / 'fig3a.yaml')!r}")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)
        if raw is None:  # an empty file (or comments only) would run every default, named after the file
            raise ConfigError("empty (no fields); write the experiment's fields, e.g. copy params/quick.yaml")
    except UnicodeDecodeError:
        raise ConfigError(f"params file {str(path)!r}: not UTF-8 text; save it as UTF-8 YAML") from None
    except ConfigError as e:
        raise ConfigError(f"params file {str(path)!r}: {e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"params file {str(path)!r}: not valid YAML ({e.__class__.__name__}); fix the syntax") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"params file {str(path)!r}: top level must be a mapping of fields")
    if {"alpha", "beta", "c_mis"} <= set(raw):  # params/theory.yaml's fields (eelib/theory.py)
        raise ConfigError(f"params file {str(path)!r} holds the §5 theory notebook's parameters, not an "
                          f"experiment's: run it with papermill notebooks/theory.ipynb out.ipynb -f {path}")
    raw.setdefault("name", path.stem)
    _absolute_data_files(raw, path.resolve().parent)  # a file's paths are read from its folder
    _absolute_grid_files(raw, path.resolve().parent)
    _absolute_tokenizer(raw, path.resolve().parent)
    for key, value in (overrides or {}).items():
        set_dotted(raw, key, value)
    grid = raw.get("grid") if isinstance(raw.get("grid"), dict) else {}
    for key, value in (overrides or {}).items():
        if key in grid and grid[key] != [value]:  # expand() would overwrite it: refuse, not ignore
            raise ConfigError(f"--set {key}: the grid sweeps {key}, so this value would be ignored; "
                              f"set the sweep instead, e.g. --set grid.{key}=[{value}]")
    _absolute_data_files(raw, Path.cwd())  # --set paths from where the command runs
    _absolute_tokenizer(raw, Path.cwd())
    return from_dict(raw)


def with_seeds(cfg: ExperimentConfig, seeds: list[int], models: bool = True) -> ExperimentConfig:
    """cfg with `seeds` as its grid's seed axis (`--seeds`, a notebook's `seeds`), re-validated."""
    from eelib.validate import validate
    cfg.grid = {**cfg.grid, "seed": [int(s) for s in seeds]}
    return validate(cfg, models=models)


def _absolute_data_files(raw: dict, base: Path) -> None:
    """Relative data.data_files become absolute, so a run's stored config.yaml reads the same
    files from any working directory (papermill, the explorer's runs, `eelib run-one`)."""
    from eelib.validate import data_files_found

    def found(pattern: str) -> bool:
        try:
            return bool(data_files_found(pattern))
        except ImportError:  # there, but needs a package: validate names it
            return True
    files = (raw.get("data") or {}).get("data_files") if isinstance(raw.get("data"), dict) else None
    if isinstance(files, dict):
        for k, v in files.items():
            if isinstance(v, str) and v.strip() and not Path(v).expanduser().is_absolute():
                here = str(base / v)
                if not found(here) and found(v):
                    # written for the working directory (eelib before 2026-11-27, or a run's
                    # stored config.yaml from then): still found, with a word
                    print(f"[eelib] data.data_files.{k}: {v!r} is not beside the params file; "
                          f"reading it from the current directory", file=sys.stderr)
                    here = str(Path.cwd() / v)
                files[k] = here
            elif isinstance(v, str) and v.startswith("~"):
                files[k] = str(Path(v).expanduser())


def _absolute_tokenizer(raw: dict, base: Path) -> None:
    """A tokenizer directory named relative to the params file is read from its folder, as data
    files are (its key is its files' hash, so the path written changes no stage key). One found
    only from the working directory (eelib before 2026-11-27 read it from there) still is, with a word."""
    d = raw.get("data") if isinstance(raw.get("data"), dict) else None
    tok = d.get("tokenizer") if d else None
    if not isinstance(tok, str) or tok in ("bytes", "smollm2") or not tok.strip():
        return
    if Path(tok).expanduser().is_absolute():
        d["tokenizer"] = str(Path(tok).expanduser())
        return
    if (base / tok / "tokenizer.json").is_file():
        d["tokenizer"] = str(base / tok)
    elif (Path.cwd() / tok / "tokenizer.json").is_file():
        print(f"[eelib] data.tokenizer: {tok!r} is not beside the params file; reading it from the "
              "current directory", file=sys.stderr)
        d["tokenizer"] = str(Path.cwd() / tok)


def _absolute_grid_files(raw: dict, base: Path) -> None:
    """A grid that sweeps data.data_files.<corpus> reads its relative paths from `base` too."""
    grid = raw.get("grid")
    if not isinstance(grid, dict):
        return
    for key, values in grid.items():
        if isinstance(key, str) and key.startswith("data.data_files.") and isinstance(values, list):
            corpus = key[len("data.data_files."):]
            out = []
            for v in values:
                fake = {"data": {"data_files": {corpus: v}}}
                _absolute_data_files(fake, base)
                out.append(fake["data"]["data_files"][corpus])
            grid[key] = out


def set_dotted(raw: dict, key: str, value) -> None:
    if key.startswith("grid.") and len(key) > 5:  # grid keys are dotted field names themselves
        grid = raw.setdefault("grid", {})
        if not isinstance(grid, dict):
            raise ConfigError(f"{key}: grid is not a section")
        grid[key[5:]] = value
        return
    parts = key.split(".")
    node = raw
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: {p} is not a section")
    node[parts[-1]] = value


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def dump(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def expand(cfg: ExperimentConfig, models: bool = True) -> list[ExperimentConfig]:
    """The grid's cartesian product, one validated config per run (grid emptied), in file order."""
    if not cfg.grid:
        return [cfg]
    keys = list(cfg.grid)
    base = to_dict(cfg)
    base["grid"] = {}
    runs = []
    for combo in itertools.product(*(cfg.grid[k] for k in keys)):
        raw = json.loads(json.dumps(base))
        for k, v in zip(keys, combo):
            try:
                set_dotted(raw, k, v)
            except ConfigError as e:
                raise ConfigError(f"grid.{k}: {e}") from e
        try:
            runs.append(from_dict(raw, models=models))
        except ConfigError as e:
            raise ConfigError(f"grid ({', '.join(f'{k}={v}' for k, v in zip(keys, combo))}): {e}") from e
    return runs


RUN_NAME_SHORT = {"stage1.lam": "lam", "stage2.dropout": "drop", "stage2.replay": "replay",
                  "stage2.lora_r": "lora", "data.post_tokens": "post", "stage2.lr": "s2lr",
                  "stage2.batch_size": "s2bs"}


def run_name_part(key: str, value) -> str:
    """One swept field's part of a run name, e.g. 'lam0.25'."""
    text = f"{RUN_NAME_SHORT.get(key, key.split('.')[-1])}{value}"
    # a path swept in the grid (data files, tokenizer): '/' would nest the run directory, where
    # results.jsonl, the claims and the report never look (they read runs/*/result.json)
    return text.replace("/", "_").replace("\0", "")


def run_name(cfg: ExperimentConfig, grid_keys: list[str]) -> str:
    """Human-readable run directory name from the swept fields, e.g. 'lam0.25-seed1'."""
    if not grid_keys:
        return "run"
    raw = to_dict(cfg)
    parts = []
    for k in grid_keys:
        node = raw
        for p in k.split("."):
            node = node[p]
        parts.append(run_name_part(k, node))
    return "-".join(parts)


def digest(obj) -> str:
    """Stable short hash of a JSON-able object: the key of a stage's outputs."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]

"""The same study on a researcher's own corpora: pipeline "<post>-><ft>" over files read with
data.source: local (README "Your own data"). Through the CLI, as a researcher would run it."""
from __future__ import annotations

import json
import os
import random
import shutil

import numpy as np
import yaml

from conftest import run_cli

VOCAB = {
    "general": "the of and a to in is was that for on with as by at from it this be are".split(),
    "legal": "court plaintiff defendant statute appeal ruling contract clause tort liability".split(),
    "medical": "patient dose symptom diagnosis therapy clinical trial tumor cardiac renal".split(),
}


def _corpora(cwd, n_general: int = 3000) -> None:
    """Three small jsonl corpora with a `text` field, each with its own vocabulary (1 document in 200
    is held out by hash, so 3,000 documents give ~15 held-out ones, ~6k tokens: enough for val_tokens)."""
    rng = random.Random(0)
    for name, words in VOCAB.items():
        n = n_general if name == "general" else 3000
        with open(cwd / f"{name}.jsonl", "w") as f:
            for i in range(n):
                text = " ".join(rng.choice(words) for _ in range(rng.randint(30, 80)))
                f.write(json.dumps({"id": i, "text": text}) + "\n")


PARAMS = {
    "name": "own", "pipeline": "legal->medical", "model": "test-micro", "threads": 1,
    "data": {"source": "local", "seq_len": 64, "general_tokens": 16384, "post_tokens": 4096,
             "val_tokens": 1024, "cache_dir": "cache",
             "data_files": {"c4": "general.jsonl", "legal": "legal.jsonl", "medical": "medical.jsonl"}},
    "stage1": {"lam": 0.5, "batch_size": 8},
    "stage2": {"batch_size": 8, "max_tokens": 8192, "eval_interval": 8, "patience": 2},
    "stage3": {"lrs": [1e-3], "tokens": 4096, "batch_size": 8, "eval_interval": 4},
}


def test_own_corpora_run_all_three_stages_and_report(tmp_path, cli):
    _corpora(tmp_path)
    (tmp_path / "own.yaml").write_text(yaml.safe_dump(PARAMS))
    p = cli(tmp_path, "run", "own.yaml", "--out", "outputs", "--no-progress")  # in-process: the CLI's exit is tested below
    assert p.returncode == 0, p.stderr[-3000:]
    (row,) = [json.loads(x) for x in (tmp_path / "outputs/own/results.jsonl").read_text().splitlines()]
    assert row["pipeline"] == "legal->medical"
    for k in ("L_im", "L_ret", "L_ft", "L_pre"):
        assert 0 < row[k] < 6, (k, row[k])  # finite, below uniform over 258 byte ids (5.55)
    # Stage 1 mixed in the post corpus by its own name, and the shards are named after it.
    (s1,) = (tmp_path / "outputs/own/stage1").glob("*/stage.json")
    rec1 = json.loads(s1.read_text())
    assert rec1["key"]["post"] == "legal"
    # Stages 1-2 are keyed without D_ft (pipelines sharing D_post share them): no L_ft in their records.
    (s2,) = (tmp_path / "outputs/own/stage2").glob("*/stage.json")
    assert set(rec1["losses"]) == set(json.loads(s2.read_text())["losses"]) == {"L_pre_val", "L_post_val"}
    shards = {p.name.split("-")[0] + "/" + p.name.split("-")[1] for p in (tmp_path / "cache/tokens").glob("*.npy")}
    assert {"legal/train", "legal/val", "medical/train", "medical/val", "c4/train", "c4/val"} <= shards
    # The report runs on it: frontier figure named after the pipeline, claims computed.
    p = cli(tmp_path, "report", "own", "--out", "outputs")
    assert p.returncode == 0, p.stderr[-3000:]
    assert (tmp_path / "outputs/own/figures/fig2_legal-medical.png").stat().st_size > 0
    claims = (tmp_path / "outputs/own/claims.md").read_text()
    assert "| a. Mixing improves the L_ret-vs-L_ft frontier |" in claims  # one λ, one seed: inconclusive
    assert "needs λ=0 and some λ>0 runs" in claims


def test_own_corpora_in_the_wrong_shape_are_one_clear_line(tmp_path, cli):
    _corpora(tmp_path, n_general=200)
    (tmp_path / "bad.jsonl").write_text(json.dumps({"id": 0, "body": "no text field here"}) + "\n")
    (tmp_path / "own.yaml").write_text(yaml.safe_dump(PARAMS))
    # A record without `text`: the field, what the record has, and the fix.
    p = run_cli(tmp_path, "run", "own.yaml", "--out", "outputs", "--no-progress",
                "--set", "data.data_files.c4=bad.jsonl")
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 1 and len(lines) == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert lines[0].startswith("eelib: error: corpus 'c4': a record has no field 'text' (its fields: body, id)")
    # A corpus too small for a budget (200 general documents hold ~1 held-out one): the budget to lower.
    p = cli(tmp_path, "run", "own.yaml", "--out", "outputs2", "--no-progress")
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 1 and len(lines) == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert "c4/val: corpus exhausted" in lines[0] and "Lower data.val_tokens" in lines[0]


def test_a_bad_fine_tuning_corpus_stops_the_run_before_stage_1_trains(tmp_path, cli):
    """D_ft is first trained on in stage 3, hours later at paper scale; stage 1 reads it up front."""
    _corpora(tmp_path)
    (tmp_path / "own.yaml").write_text(yaml.safe_dump(PARAMS))
    (tmp_path / "bad.jsonl").write_text(json.dumps({"id": 0, "body": "no text field here"}) + "\n")
    for out, change, needle in (
            ("a", "data.data_files.medical=bad.jsonl", "corpus 'medical': a record has no field 'text'"),
            ("b", "stage3.tokens=4000000", "medical/train: corpus exhausted")):
        p = cli(tmp_path, "run", "own.yaml", "--out", out, "--no-progress", "--set", change)
        assert p.returncode == 1 and needle in p.stderr, p.stderr[-2000:]
        s1 = list((tmp_path / out / "own/stage1").glob("*"))
        assert len(s1) == 1 and sorted(x.name for x in s1[0].iterdir()) == [".lock", "key.json"], \
            [sorted(x.name for x in d.iterdir()) for d in s1]  # no checkpoint, no final weights
    # A λ = 0 stage 1 reads no D_post, yet a D_post too small for its budget stops it as early.
    p = cli(tmp_path, "run", "own.yaml", "--out", "d", "--no-progress", "--set", "stage1.lam=0",
                "--set", "data.post_tokens=4000000")
    assert p.returncode == 1 and "legal/train: corpus exhausted" in p.stderr, p.stderr[-2000:]
    (s1,) = (tmp_path / "d/own/stage1").glob("*")
    assert sorted(x.name for x in s1.iterdir()) == [".lock", "key.json"]
    # Stage 1 reused from a finished run, stage 2 new: stage 2 reads ahead before it trains too.
    assert cli(tmp_path, "run", "own.yaml", "--out", "c", "--no-progress").returncode == 0
    p = cli(tmp_path, "run", "own.yaml", "--out", "c", "--no-progress", "--set", "name=own2",
                "--set", "stage2.lr=0.002", "--set", "stage3.tokens=4000000")
    assert p.returncode == 1 and "medical/train: corpus exhausted" in p.stderr, p.stderr[-2000:]
    (s2,) = (tmp_path / "c/own2/stage2").glob("*")
    assert sorted(x.name for x in s2.iterdir()) == [".lock", "key.json"]
    assert json.loads(next((tmp_path / "c/own2/stage1").glob("*/stage.json")).read_text())["reused_from"]


def test_keys_follow_the_files_not_the_path_written(tmp_path):
    """Two projects with `legal: legal.jsonl` and one shared token cache must not share tokens; an
    edited file gets new shards and stages; the same files copied elsewhere keep theirs."""
    from eelib import config as C, data as D, stages
    cache = tmp_path / "cache"
    cfgs = {}
    for proj, words in (("a", VOCAB["legal"]), ("b", VOCAB["medical"])):
        d = tmp_path / proj
        d.mkdir()
        _corpora(d, n_general=600)
        if proj == "b":  # same relative path, other content
            (d / "legal.jsonl").write_text((d / "medical.jsonl").read_text())
        raw = json.loads(json.dumps(PARAMS))
        raw["data"]["cache_dir"] = str(cache)
        raw["data"]["data_files"] = {k: str(d / v) for k, v in raw["data"]["data_files"].items()}
        cfgs[proj] = C.from_dict(raw)
    a, b = (D.corpus_windows("legal", "train", 1024, cfgs[p].data).tokens for p in "ab")
    assert not np.array_equal(a, b)
    assert stages.stage_dir(cfgs["a"], 1) != stages.stage_dir(cfgs["b"], 1)
    # Copied elsewhere: same identity, same stage keys.
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "a", copy)
    raw = json.loads(json.dumps(PARAMS))
    raw["data"]["cache_dir"] = str(cache)
    raw["data"]["data_files"] = {k: str(copy / v) for k, v in raw["data"]["data_files"].items()}
    moved = C.from_dict(raw)
    for s in (1, 2):
        assert stages.stage_dir(moved, s) == stages.stage_dir(cfgs["a"], s)
    assert stages.stage_dir(moved, 3, lr=1e-3) == stages.stage_dir(cfgs["a"], 3, lr=1e-3)
    # Appended to: new shard and new stage 1 (D_post) / new stage 3 only (D_ft).
    with open(copy / "legal.jsonl", "a") as f:
        f.write(json.dumps({"text": "court ruling"}) + "\n")
    assert D.shard_key("legal", "train", moved.data) != D.shard_key("legal", "train", cfgs["a"].data)
    assert stages.stage_dir(moved, 1) != stages.stage_dir(cfgs["a"], 1)
    # Rewritten in place with other bytes of the same size and the old mtime (cp -p, rsync -a), in
    # the same process: the fingerprint cache must not hand back the old identity.
    legal = copy / "legal.jsonl"
    shutil.copy(tmp_path / "a" / "legal.jsonl", legal)
    before, st = D.files_identity(str(legal)), legal.stat()
    body = legal.read_bytes()
    legal.write_bytes(body.replace(b"court", b"COURT"))
    os.utime(legal, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert legal.stat().st_size == st.st_size and D.files_identity(str(legal)) != before
    shutil.copy(tmp_path / "a" / "legal.jsonl", copy / "legal.jsonl")
    with open(copy / "medical.jsonl", "a") as f:
        f.write(json.dumps({"text": "patient dose"}) + "\n")
    assert stages.stage_dir(moved, 1) == stages.stage_dir(cfgs["a"], 1)
    assert stages.stage_dir(moved, 3, lr=1e-3) != stages.stage_dir(cfgs["a"], 3, lr=1e-3)


def test_damaged_own_files_are_one_clear_line_never_silently_skipped(tmp_path, cli):
    """A record whose `text` is missing among good ones (it reads as null) used to be skipped
    without a word, and a line that is not JSON or an all-empty file ended in a traceback."""
    _corpora(tmp_path)
    (tmp_path / "own.yaml").write_text(yaml.safe_dump(PARAMS))
    good = (tmp_path / "legal.jsonl").read_text()
    (tmp_path / "holey.jsonl").write_text(good + json.dumps({"id": -1, "body": "no text"}) + "\n")
    (tmp_path / "broken.jsonl").write_text(good + "this line is not JSON\n")
    for out, change, needle in (
            ("a", "data.data_files.legal=holey.jsonl", "corpus 'legal': a record of "),
            ("b", "data.data_files.legal=broken.jsonl", "corpus 'legal': cannot read a record of data_files=")):
        p = cli(tmp_path, "run", "own.yaml", "--out", out, "--no-progress", "--set", change)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 1 and len(lines) == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
        assert needle in lines[0], lines[0]
    assert "has no 'text' value" in cli(tmp_path, "run", "own.yaml", "--out", "a", "--no-progress",
                                            "--set", "data.data_files.legal=holey.jsonl").stderr
    # Caught by `eelib check` before anything runs: an all-empty corpus, mixed formats.
    (tmp_path / "empty.jsonl").write_text("")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(tmp_path / "legal.jsonl", mixed / "a.jsonl")
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"text": ["one document"]}), mixed / "b.parquet")
    for change, needle in (("data.data_files.legal=empty.jsonl", "data.data_files.legal: every file matching"),
                           ("data.data_files.legal=mixed", "mixed' mixes parquet and JSON files; give one format")):
        p = cli(tmp_path, "check", "own.yaml", "--set", change)
        assert p.returncode == 2 and p.stderr.strip().splitlines() == [p.stderr.strip()], p.stderr
        assert needle in p.stderr, p.stderr


def test_relative_data_files_are_read_from_the_params_folder(tmp_path, cli):
    """A study folder checked or run from elsewhere (the repo root, notebooks/) finds its files,
    and each run's stored config names them absolutely, so its reruns do too."""
    study = tmp_path / "study"
    study.mkdir()
    _corpora(study, n_general=300)
    (study / "own.yaml").write_text(yaml.safe_dump(PARAMS))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    p = cli(elsewhere, "check", str(study / "own.yaml"))
    assert p.returncode == 0, p.stderr
    from eelib import config as C
    cwd = os.getcwd()
    try:
        os.chdir(elsewhere)
        cfg = C.load(study / "own.yaml", {"data.data_files.c4": "../study/general.jsonl"})
    finally:
        os.chdir(cwd)
    assert cfg.data.data_files["legal"] == str(study / "legal.jsonl")
    assert os.path.samefile(cfg.data.data_files["c4"], study / "general.jsonl")  # --set: from the cwd
    # Written for the working directory (eelib before this rule): still read, with a warning.
    old = dict(PARAMS, data={**PARAMS["data"], "data_files": {
        k: f"study/{v}" for k, v in PARAMS["data"]["data_files"].items()}})
    (elsewhere / "old.yaml").write_text(yaml.safe_dump(old))
    p = cli(tmp_path, "check", str(elsewhere / "old.yaml"))
    assert p.returncode == 0 and "is not beside the params file; reading it from the current" in p.stderr, p.stderr


def test_the_readme_study_validates_with_the_main_jobs_stage_settings(tmp_path):
    """README "Your own data": its study YAML validates once its files exist, and its stage
    sections are params/quick.yaml's (a field left out would take config.py's dataclass default,
    which is not the offline scale's value)."""
    from pathlib import Path

    from eelib import config as C
    root = Path(__file__).resolve().parents[1]
    text = (root / "README.md").read_text()
    block = text.split("## Your own data", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    study = yaml.safe_load(block)
    quick = yaml.safe_load((root / "params" / "quick.yaml").read_text())
    for stage in ("stage1", "stage2", "stage3"):
        mine = {k: v for k, v in study[stage].items() if k != "lam"}
        assert mine == {k: v for k, v in quick[stage].items() if k != "lam"}, stage
    assert {k: study["data"][k] for k in ("seq_len", "general_tokens", "post_tokens", "val_tokens")} == \
        {k: quick["data"][k] for k in ("seq_len", "general_tokens", "post_tokens", "val_tokens")}
    _corpora(tmp_path)
    (tmp_path / "general").mkdir()
    shutil.move(tmp_path / "general.jsonl", tmp_path / "general" / "part-0.jsonl")
    (tmp_path / "medical").mkdir()
    import pandas as pd
    pd.read_json(tmp_path / "medical.jsonl", lines=True).to_parquet(tmp_path / "medical" / "part-0.parquet")
    (tmp_path / "study.yaml").write_text(block)
    cfg = C.load(tmp_path / "study.yaml")
    assert len(C.expand(cfg)) == 9 and cfg.stage1.lr == 2e-3 and cfg.stage3.lrs == [3e-4, 1e-3, 3e-3]


def test_an_edit_near_the_end_of_a_large_file_changes_its_identity(tmp_path):
    """files_identity hashes both ends of each file (docs/decisions.md): a record fixed in the last
    64 KiB of a large file, size unchanged, must key new shards and stages, not reuse the stale ones."""
    from eelib import data as D
    f = tmp_path / "legal.jsonl"
    body = bytearray(b"x" * (5 * D.FINGERPRINT_BYTES))
    f.write_bytes(bytes(body))
    before = D.files_identity(str(f))
    body[-10] = ord("y")
    f.write_bytes(bytes(body))
    assert D.files_identity(str(f)) != before

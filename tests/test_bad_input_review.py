"""Bad input found by a review (2026-11-27) that broke "one clear line naming the field and the fix,
nothing lost": a plan --json that overwrote a params file, records cut outside eelib that gave a
traceback, run names that put a run where results.jsonl never looks, tokenizer files that do not read."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, TINY
from eelib import cli, config as C, io, rundir, stagedir


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("eelib: error: "), err
    return err[0]


def test_plan_json_never_overwrites_a_params_file(tmp_path, capsys):
    """`--json` takes a value: `eelib plan --json params/135m/*.yaml` wrote the plan over fig3a.yaml."""
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    for p, lam in ((a, 0.0), (b, 1.0)):
        p.write_text(yaml.safe_dump({**TINY, "name": p.stem, "stage1": {"lam": lam, "batch_size": 8}}))
    before = a.read_bytes()
    assert cli.main(["plan", "--json", str(a), str(b), "--tok-s", "1000"]) == 2
    assert "--json" in _one_error_line(capsys) and a.read_bytes() == before
    other = tmp_path / "notes.json"
    other.write_text('{"mine": 1}')
    assert cli.main(["plan", str(a), "--tok-s", "1000", "--json", str(other)]) == 2
    assert "never overwritten" in _one_error_line(capsys) and other.read_text() == '{"mine": 1}'
    assert cli.main(["plan", str(a), "--tok-s", "1000", "--json", str(tmp_path)]) == 2
    assert "is a directory" in _one_error_line(capsys)
    out = tmp_path / "plan.json"
    assert cli.main(["plan", str(a), "--tok-s", "1000", "--json", str(out)]) == 0
    assert cli.main(["plan", str(a), "--tok-s", "2000", "--json", str(out)]) == 0  # an earlier plan: rewritten
    assert json.loads(out.read_text())["tok_s"] == 2000


@pytest.mark.parametrize("args, needle", [
    (["--tok-s", "nan"], "--tok-s: must be a finite number > 0"),
    (["--tok-s", "inf"], "--tok-s: must be a finite number > 0"),
    (["--throughput", "LIST"], "--throughput"),
])
def test_plan_speed_must_be_finite_and_readable(tmp_path, capsys, args, needle):
    p = tmp_path / "a.yaml"
    p.write_text(yaml.safe_dump(TINY))
    (tmp_path / "list.json").write_text("[1, 2]")
    args = [str(tmp_path / "list.json") if a == "LIST" else a for a in args]
    assert cli.main(["plan", str(p), *args]) == 2
    assert needle in _one_error_line(capsys)


@pytest.mark.parametrize("text, needles", [
    ('{"rows": [{"run": "lam', ("result.json: not valid JSON", "move its run directory away")),
    ('{"rows": [{"run": "a"}]}', ("result.json: a row without", "'method'")),  # rows missing fields
])
def test_a_cut_or_edited_result_json_is_one_line_naming_it(tmp_path, capsys, text, needles):
    run = tmp_path / "exp" / "runs" / "lam0.0"
    run.mkdir(parents=True)
    (run / "result.json").write_text(text)
    assert cli.main(["report", "exp", "--out", str(tmp_path), "--no-figures"]) == 1
    line = _one_error_line(capsys)
    assert str(run) in line and all(n in line for n in needles), line


def test_a_cut_stage_json_is_one_line_naming_it(tmp_path):
    (tmp_path / "stage.json").write_text("")
    with pytest.raises(io.CorruptRecord, match=r"stage\.json: empty; .*move .* away"):
        stagedir.begin(1, tmp_path, {"k": 1})


@pytest.mark.parametrize("run", ["", ".", "..", "../other", "a/b", "x" * 201])
def test_a_run_name_is_one_directory_name(run):
    cfg = C.from_dict(dict(TINY), models=False)
    with pytest.raises(C.ConfigError, match="run name"):
        rundir.run_dir(cfg, run, Path("outputs"))


def test_a_swept_path_does_not_nest_the_run_directory(tmp_path):
    """A grid over data files named runs 'medical/abs/path', which runs/*/result.json never finds;
    its relative paths are read from the params file's folder, like data.data_files."""
    hub = ROOT / "tests" / "fixtures" / "hub"
    (tmp_path / "d").mkdir()
    for c in ("c4", "musicpile", "chempile"):
        (tmp_path / "d" / c).symlink_to(hub / c)
    params = tmp_path / "d" / "p.yaml"
    params.write_text(yaml.safe_dump({**TINY, "data": {**TINY["data"], "source": "local", "data_files": {
        c: c for c in ("c4", "musicpile", "chempile")}}, "grid": {"data.data_files.chempile": ["chempile", str(hub / "chempile")]}}))
    cfg = C.load(params)  # from another working directory than the params file's
    assert cfg.grid["data.data_files.chempile"][0] == str(tmp_path / "d" / "chempile")
    from eelib.pipeline import grid_runs
    for name, _ in grid_runs(cfg):
        assert "/" not in name


def test_a_tokenizer_file_that_does_not_read_is_one_line(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(C.ConfigError, match=r"data\.tokenizer: .*tokenizer\.json cannot be read"):
        C.from_dict({**TINY, "data": {**TINY["data"], "tokenizer": str(tmp_path)}}, models=False)


def test_a_params_directory_is_named(tmp_path, capsys):
    assert cli.main(["check", str(ROOT / "params" / "135m")]) == 2
    assert "is a directory; pass one YAML file in it" in _one_error_line(capsys)


def test_a_relative_tokenizer_is_read_from_the_params_files_folder(tmp_path, monkeypatch):
    """As data_files are: the same params file works from any working directory."""
    from eelib.tokenizer import train_bpe
    study = tmp_path / "study"
    study.mkdir()
    train_bpe(["a b c d e"] * 50, 300, str(study / "tok"))
    (study / "p.yaml").write_text(yaml.safe_dump({**TINY, "data": {**TINY["data"], "tokenizer": "tok"}}))
    monkeypatch.chdir(tmp_path)
    cfg = C.load(study / "p.yaml")
    assert cfg.data.tokenizer == str(study / "tok")

"""stage.json says how a stage was computed (eelib/provenance.py): one segment per training
process, with its software, device, world size, compile / chunked-CE / residual-stream settings
and speed."""
from __future__ import annotations

import json
import subprocess

import pytest
import torch

from conftest import ROOT, TINY, compared, read_rows, write_params
from eelib import provenance


def _head() -> str | None:
    if not (ROOT / ".git").exists():
        return None
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_every_stage_of_a_run_records_one_cpu_segment(baseline):
    recs = sorted((baseline["dir"] / "outputs" / "tiny").glob("stage*/*/stage.json"))
    assert len(recs) == 4  # stage 1, stage 2, stage 3 at two LRs
    for path in recs:
        rec = json.loads(path.read_text())
        (seg,) = rec["computed"]
        assert (seg["from_step"], seg["to_step"]) == (0, rec["steps"]), path
        assert seg["world"] == 1 and seg["compile"] is False and seg["ce_chunk"] == 0
        assert seg["residual_stream"] == "fp32"
        assert seg["device"].startswith("cpu (") and seg["precision"] == "fp32" and seg["threads"] == 1
        # CPU numbers are reproducible within one instruction set only (docs/reliability.md)
        assert seg["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
        assert seg["torch"] == torch.__version__ and seg["eelib"] == "0.1.0"
        assert seg["seconds"] > 0 and seg["wall_tokens_per_s"] > 0
        head = _head()
        assert seg["source"] == head or (head and seg["source"] == head + "+dirty"), (seg["source"], head)


def test_residual_stream_reaches_every_stage_and_changes_no_cpu_number(tmp_path, baseline, cli):
    """`residual_stream: bf16` builds every stage's model with the bf16 stream and each stage.json
    says so; on CPU (no autocast) the rows equal the fp32 stream's bit for bit, which is why the
    field keys no stage (docs/decisions.md)."""
    write_params(tmp_path / "tiny.yaml", dict(TINY, residual_stream="bf16"))
    p = cli(tmp_path, "run", "tiny.yaml", "--out", "outputs", "--no-progress")
    assert p.returncode == 0, p.stderr[-3000:]
    assert compared(read_rows(tmp_path)) == compared(baseline["rows"])
    recs = sorted((tmp_path / "outputs" / "tiny").glob("stage*/*/stage.json"))
    assert len(recs) == 4
    for path in recs:
        assert [seg["residual_stream"] for seg in json.loads(path.read_text())["computed"]] == ["bf16"], path


def test_segments_continue_the_ones_a_checkpoint_carried():
    env = provenance.environment(torch.device("cpu"), world=4, compile=True, ce_chunk=8192, residual_stream="bf16")
    assert env["world"] == 4 and env["compile"] is True and env["ce_chunk"] == 8192
    assert env["residual_stream"] == "bf16"
    earlier = [dict(env, from_step=0, to_step=50, seconds=1.0, wall_tokens_per_s=10.0)]
    seg = provenance.Segments(earlier, env, from_step=50, tokens_per_step=1024)
    out = seg.upto(60)
    assert out[0] == earlier[0] and len(out) == 2
    assert (out[1]["from_step"], out[1]["to_step"]) == (50, 60) and out[1]["wall_tokens_per_s"] > 0
    assert seg.upto(50)[1]["wall_tokens_per_s"] is None  # no step taken in this process: no speed
    json.dumps(out)  # JSON-ready: it goes into stage.json as is



def test_source_revision_ignores_the_callers_git_environment(monkeypatch, tmp_path):
    """GIT_DIR from the caller's shell must not make eelib report another repository's commit."""
    expected = _head()  # before GIT_DIR is set
    other = tmp_path / "other"
    other.mkdir()
    git = ["git", "-C", str(other), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["commit", "-q", "--allow-empty", "-m", "x"], check=True)
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    provenance.source_revision.cache_clear()
    try:
        rev = provenance.source_revision()
    finally:
        provenance.source_revision.cache_clear()
    assert (rev or "").split("+")[0] == (expected or "")


def _requirements() -> list[str]:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return meta["dependencies"] + meta["optional-dependencies"]["test"]


def test_constraints_pin_every_dependency_within_pyprojects_ranges():
    """`make setup` installs constraints.txt's versions (the ones the README's numbers were
    measured with): a dependency added to pyproject.toml without `make lock`, or a range moved
    past the pin, would install an untested version or make the pinned install fall back."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    assert "torch" not in pins  # installed on its own: the CPU wheel here, a CUDA build on a GPU machine
    for spec in _requirements():
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        if name == "torch":
            continue
        assert name in pins, f"{req.name} is not in constraints.txt: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {req.name}=={pins[name]}, outside pyproject's {req.specifier}"

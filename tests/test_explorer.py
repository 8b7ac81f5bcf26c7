"""The explorer's widget logic, driven headlessly (no browser, subprocess mocked)."""
import json

import pytest

from eelib import explorer as EX
from test_claims import frontier_rows


def store(root, rows_by_run, experiment="exp"):
    for run, rows in rows_by_run.items():
        d = root / experiment / "runs" / run
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps({"rows": rows}))
        (d / "config.yaml").write_text("name: exp\nstage3: {lrs: [0.001, 0.003]}\n")
    return root


@pytest.fixture
def root(tmp_path):
    runs = {}
    for s in range(2):
        runs[f"lam0.0-seed{s}"] = frontier_rows("unmixed", 0.0, s, 0, 0.01)
        runs[f"lam0.25-seed{s}"] = frontier_rows("mixed", 0.25, s, -0.1, 0.01)
        runs[f"lam1.0-seed{s}"] = frontier_rows("mixed", 1.0, s, -0.3, 0.01)
        runs[f"lam1.0-replay-seed{s}"] = frontier_rows("mixed+replay", 1.0, s, -0.4, 0.01)
    return store(tmp_path, runs)


def test_controls_drive_chart_data(root):
    ex = EX.Explorer(root, "exp", poll_interval=0, renderer="vega")
    w = ex.widgets
    assert w["lam"].options == (0.0, 0.25, 1.0) and w["lam"].value == 1.0
    assert set(w["methods"].options) == {"unmixed", "mixed", "mixed+replay"}
    d1 = ex.chart_data()
    assert set(d1["lam"]) == {0.0, 1.0} and d1["on_frontier"].any()
    w["lam"].value = 0.25
    d2 = ex.chart_data()
    assert set(d2["lam"]) == {0.0, 0.25} and not d1.equals(d2)
    assert "λ = 0.25" in w["caption"].value
    w["methods"].value = ("unmixed",)
    assert set(ex.chart_data()["method"]) == {"unmixed"}
    w["methods"].value = ("unmixed", "mixed")
    before = ex.chart_data()
    w["view"].value = "L_pre vs L_ret"
    after = ex.chart_data()
    assert (after["x"].values != before["x"].values).any()   # x is now L_ret, not L_ft
    n_all = len(after)
    w["trajectory"].value = False
    assert len(ex.chart_data()) < n_all and set(ex.chart_data()["step"]) == {-1}
    t = ex.table()
    assert set(t["λ"]) == {0.0, 0.25, 1.0} and (t[t["λ"] == 0.25][""] == "▶").all()
    assert t[(t["λ"] == 1.0) & (t.method == "mixed")]["gap vs unmixed"].iloc[0] > 0
    assert ex.chart() is not None and len(ex.out.outputs) >= 0


def test_no_results_message(tmp_path):
    ex = EX.Explorer(tmp_path, "quick", poll_interval=0)
    msg = ex.widgets["message"].value
    assert "No results" in msg and "make run" in msg and "params/quick.yaml" in msg
    assert ex.chart_data().empty and ex.table().empty and ex.chart() is None
    assert ex.widgets["lam"].disabled


class FakeProc:
    """Stands in for subprocess.Popen: 'finishes' on the 2nd poll, writing the run's files."""
    def __init__(self, cmd, root, **kw):
        self.cmd, self.root, self.calls = cmd, root, 0

    def poll(self):
        self.calls += 1
        if self.calls == 1:
            st = self.root / "exp" / "stage1" / "k1"
            st.mkdir(parents=True)
            (st / "stage.json").write_text("{}")
            return None
        store(self.root, {"lam0.5": frontier_rows("mixed", 0.5, 0, -0.2)})
        return 0


def test_run_button_background(root, monkeypatch):
    made = []

    def fake_popen(cmd, **kw):
        made.append(FakeProc(cmd, root, **kw))
        return made[-1]

    monkeypatch.setattr(EX.subprocess, "Popen", fake_popen)
    ex = EX.Explorer(root, "exp", poll_interval=0, renderer="vega")
    ex.widgets["new_lam"].value = 0.5
    ex.widgets["run"].click()
    cmd = made[0].cmd
    assert cmd[1:4] == ["-m", "eelib", "run"] and 'grid={"stage1.lam": [0.5]}' in cmd and "name=exp" in cmd
    assert ex.widgets["progress"].max == 4     # stage 1, stage 2, two stage-3 LRs
    assert ex.poll() is None and ex.widgets["progress"].value == 1
    assert ex.poll() == 0
    assert ex.widgets["progress"].value == 4 and "finished" in ex.widgets["status"].value
    assert 0.5 in ex.widgets["lam"].options and ex.widgets["lam"].value == 0.5
    assert 0.5 in set(ex.chart_data()["lam"])


def test_run_refuses_bad_lambda(root):
    ex = EX.Explorer(root, "exp", poll_interval=0, renderer="vega")
    assert ex.start_run(1.5) is None and "[0, 1]" in ex.widgets["status"].value


def test_run_command_validates_on_a_params_file_with_a_lam_grid(tmp_path):
    """The 'run λ now' command must pass the params checks (a --set of a swept field is refused)."""
    from eelib import config as C
    from eelib.cli import _overrides
    from pathlib import Path
    params = Path(__file__).resolve().parents[1] / "params" / "quick.yaml"
    ex = EX.Explorer(tmp_path / "out", "quick", params=params, poll_interval=0)
    cmd = ex.run_command(0.3)
    sets = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--set"]
    cfg = C.load(cmd[4], _overrides(sets))
    assert cfg.grid == {"stage1.lam": [0.3]} and cfg.name == "quick"


def test_notebook_outputs_root(tmp_path, monkeypatch):
    """One outputs root for every notebook: $EELIB_OUTPUTS (tests), else out_dir, taken from the
    repository root when the kernel runs in notebooks/ (JupyterLab, nbval), else from the cwd."""
    from eelib import notebook as nb
    monkeypatch.setenv("EELIB_OUTPUTS", str(tmp_path / "t"))
    assert nb.outputs("outputs") == tmp_path / "t"
    monkeypatch.delenv("EELIB_OUTPUTS")
    monkeypatch.chdir(nb.REPO / "notebooks")
    assert nb.outputs("outputs") == nb.REPO / "outputs"
    monkeypatch.chdir(tmp_path)
    assert nb.outputs("outputs") == nb.Path("outputs") and nb.outputs(tmp_path / "x") == tmp_path / "x"


def test_experiment_notebook_config_refuses_f_and_parses_seeds():
    import pytest
    from eelib import config as C
    from eelib import notebook as nb
    cfg = nb.experiment_config("params/ci/fig3a.yaml", "[0, 1]", {})   # papermill -p seeds "[0, 1]"
    assert cfg.grid["seed"] == [0, 1]
    with pytest.raises(C.ConfigError, match=r"\(model, name were injected\): use -p params_file"):
        nb.experiment_config("params/ci/fig3a.yaml", None, {"name": "x", "model": "test-micro"})

"""Interactive frontier explorer (ipywidgets + altair) over an experiment's results.

    from eelib.explorer import Explorer
    ex = Explorer("outputs", "quick"); ex          # in a notebook: controls, chart, per-λ table

Controls: pipeline, λ (a SelectionSlider over the λ values that were run; it sets the λ at which
the mixed methods are read, unmixed ones are λ = 0), methods (those present), view (the paper's two
frontier views, eelib.frontier.VIEWS) and whether stage-3 trajectory points count. A "run λ now"
button starts a run of this experiment's own config at a new λ, at that config's scale (minutes on
a CPU offline, a GPU job at 135M), in a background subprocess (`python -m eelib run <config>
--set name=<experiment> --set grid={"stage1.lam": [X]} ...`: the grid's λ axis, since a λ swept
by the grid cannot be set alone), shows progress from the
stage.json / result.json files it writes, and adds its points when it finishes.

State and logic (`chart_data`, `table`, `start_run`, `poll`) are separate from display so tests
can drive the widgets headlessly. The chart is rendered server-side to SVG with vl-convert (no
JavaScript, works offline); `renderer="vega"` displays the altair object instead.
"""
from __future__ import annotations

import html
import subprocess
import sys
import threading
import time
from pathlib import Path

import altair as alt
import ipywidgets as W
import pandas as pd
from IPython.display import HTML, display

from eelib import frontier as F
from eelib.figures import COLORS

NO_RESULTS = ("No results under <code>{edir}</code> yet. Make some with <code>make run</code> "
              "(or <code>eelib run params/quick.yaml</code>), or press <b>run λ now</b> below "
              "for a small run at one λ.")


def load_rows(root: str | Path, experiment: str) -> list[dict]:
    """Every finished run's rows (result.json files); [] if there are none yet."""
    from eelib.pipeline import collect
    edir = Path(root) / experiment
    if not (edir / "runs").is_dir():
        return []
    return collect(experiment, Path(root))


class Explorer:
    """Frontier explorer; `.widgets` (dict), `.chart_data()`, `.table()`, `.out`, `.view()`."""

    def __init__(self, root: str | Path = "outputs", experiment: str = "quick",
                 params: str | Path = "params/quick.yaml", renderer: str = "svg",
                 python: str = sys.executable, poll_interval: float = 1.0):
        self.root, self.experiment, self.params = Path(root), experiment, Path(params)
        self.renderer, self.python, self.poll_interval = renderer, python, poll_interval
        self.proc: subprocess.Popen | None = None
        self.run_info: dict = {}
        self._thread: threading.Thread | None = None
        self.rows = pd.DataFrame()
        self._loaded = False
        self.out = W.Output()          # the chart
        self.table_out = W.Output()    # the per-λ table
        wd = self.widgets = {
            "pipeline": W.Dropdown(description="pipeline"),
            "lam": W.SelectionSlider(description="λ (mixed)", options=[0.0], continuous_update=False),
            "methods": W.SelectMultiple(description="methods", rows=4),
            "view": W.ToggleButtons(description="view", options=list(F.VIEWS)),
            "trajectory": W.Checkbox(description="stage-3 trajectory points", value=True),
            "new_lam": W.BoundedFloatText(description="new λ", value=0.5, min=0.0, max=1.0, step=0.05),
            "run": W.Button(description="run λ now", icon="play", button_style="primary"),
            "progress": W.IntProgress(description="run", value=0, min=0, max=1),
            "status": W.HTML(),
            "message": W.HTML(),
            "caption": W.HTML(),
        }
        self.reload()
        for k in ("pipeline", "lam", "methods", "view", "trajectory"):
            wd[k].observe(self._on_change, names="value")
        wd["run"].on_click(lambda _b: self.start_run(wd["new_lam"].value))
        self.refresh()

    # ---- state -----------------------------------------------------------------------------
    def reload(self) -> None:
        """Re-read the rows and reset the option lists, keeping current choices where possible."""
        self.rows = pd.DataFrame(load_rows(self.root, self.experiment))
        wd = self.widgets
        if self.rows.empty:
            wd["message"].value = NO_RESULTS.format(edir=html.escape(str(self.root / self.experiment)))
            for k in ("pipeline", "lam", "methods"):
                wd[k].disabled = True
            return
        wd["message"].value = ""
        pipes = sorted(set(self.rows["pipeline"]))
        first = not self._loaded
        self._set_options(wd["pipeline"], pipes, keep=not first)
        self._update_choices(keep=not first)
        self._loaded = True
        for k in ("pipeline", "lam", "methods"):
            wd[k].disabled = False

    @staticmethod
    def _set_options(w, options, default=None, keep=True):
        cur = w.value if keep else None
        w.options = options
        if isinstance(w, W.SelectMultiple):
            keep = tuple(v for v in (cur or ()) if v in options)
            w.value = keep or tuple(default if default is not None else options)
        elif cur in options:
            w.value = cur
        else:
            w.value = default if default is not None else options[0]

    def _sub(self) -> pd.DataFrame:
        if self.rows.empty:
            return self.rows
        return self.rows[self.rows["pipeline"] == self.widgets["pipeline"].value]

    def _update_choices(self, keep: bool = True) -> None:
        sub = self._sub()
        lams = sorted(float(x) for x in set(sub["lam"]))
        mixed = [x for x in lams if x > 0] or lams
        self._set_options(self.widgets["lam"], lams, default=max(mixed), keep=keep)
        self._set_options(self.widgets["methods"], sorted(set(sub["method"]), key=_method_order), keep=keep)

    def chart_data(self) -> pd.DataFrame:
        """The points behind the current chart: selected methods, mixed ones at the slider's λ,
        in the selected view (columns x, y, on_frontier, method, lam, seed, stage3_lr, step)."""
        sub = self._sub()
        cols = ["method", "lam", "seed", "stage3_lr", "step", "x", "y", "on_frontier"]
        if sub.empty:
            return pd.DataFrame(columns=cols)
        wd = self.widgets
        lam = float(wd["lam"].value)
        sub = sub[sub["method"].isin(wd["methods"].value)]
        sub = sub[(sub["lam"] == 0) | (sub["lam"] == lam)]
        pts = F.points(sub, trajectory=wd["trajectory"].value)
        if pts.empty:
            return pd.DataFrame(columns=cols)
        xcol, ycol = F.view_axes(wd["view"].value)
        pts = pts.assign(x=pts[xcol].astype(float), y=pts[ycol].astype(float))
        pts["on_frontier"] = False
        for _m, g in pts.groupby("method"):
            pts.loc[g.index, "on_frontier"] = F.pareto_mask(g["x"], g["y"])
        return pts[cols].reset_index(drop=True)

    def table(self) -> pd.DataFrame:
        """Per λ and method: seeds, mean L_im / final L_ret, L_ft, L_pre, and the mean gap of the
        method's frontier below the unmixed one in the current view (positive = better)."""
        sub = self._sub()
        if sub.empty:
            return pd.DataFrame()
        wd = self.widgets
        view, traj = wd["view"].value, wd["trajectory"].value
        pts = F.points(sub, trajectory=traj)
        base = pts[pts["method"] == "unmixed"]
        base_front = F.front_of(base, view) if len(base) else None
        recs = []
        for (lam, method), g in sub.groupby(["lam", "method"]):
            gp = pts[(pts["lam"] == lam) & (pts["method"] == method)]
            gap = F.mean_gap(base_front, F.front_of(gp, view)) if base_front is not None else float("nan")
            recs.append({"": "▶" if lam == wd["lam"].value else "", "λ": lam, "method": method,
                         "seeds": g["seed"].nunique(), "runs": len(g), "L_im": g["L_im"].mean(),
                         "L_ret": g["L_ret"].mean(), "L_ft": g["L_ft"].mean(), "L_pre": g["L_pre"].mean(),
                         "gap vs unmixed": gap})
        return pd.DataFrame(recs).round(4)

    def chart(self) -> alt.LayerChart | None:
        data = self.chart_data()
        if data.empty:
            return None
        wd = self.widgets
        xcol, ycol = F.view_axes(wd["view"].value)
        methods = [m for m in wd["methods"].value if m in set(data["method"])]
        color = alt.Color("method:N", sort=methods, scale=alt.Scale(
            domain=methods, range=[COLORS.get(m, "#1f77b4") for m in methods]))
        enc = dict(x=alt.X("x:Q", title=xcol, scale=alt.Scale(zero=False)),
                   y=alt.Y("y:Q", title=ycol, scale=alt.Scale(zero=False)), color=color)
        dots = alt.Chart(data).mark_point(filled=True, opacity=0.35).encode(
            tooltip=["method", "lam", "seed", "stage3_lr", "step", "x", "y"], **enc)
        line = alt.Chart(data[data["on_frontier"]]).mark_line(point=True, strokeWidth=2).encode(order="x:Q", **enc)
        title = f"{wd['pipeline'].value}: {wd['view'].value}, mixed at λ = {wd['lam'].value:g} ({len(data)} points)"
        return (dots + line).properties(title=title, width=420, height=300)

    # ---- background run --------------------------------------------------------------------
    def _run_config(self) -> Path:
        """This experiment's own resolved config (any finished run's), else the params file."""
        cfgs = sorted((self.root / self.experiment / "runs").glob("*/config.yaml"))
        return cfgs[0] if cfgs else self.params

    def run_command(self, lam: float) -> list[str]:
        lam = float(lam)
        return [self.python, "-m", "eelib", "run", str(self._run_config()),
                "--set", f"name={self.experiment}",
                "--set", 'grid={"stage1.lam": [%r]}' % lam, "--out", str(self.root), "--no-progress"]

    def start_run(self, lam: float) -> subprocess.Popen | None:
        """Launch `eelib run` for one λ in the background; progress via `poll()`."""
        wd = self.widgets
        if self.proc is not None and self.proc.poll() is None:
            wd["status"].value = "a run is already in progress"
            return None
        if not 0.0 <= float(lam) <= 1.0:
            wd["status"].value = f"λ must lie in [0, 1], got {lam}"
            return None
        edir = self.root / self.experiment
        edir.mkdir(parents=True, exist_ok=True)
        log = edir / f"explorer-run-lam{float(lam)}.log"
        cmd = self.run_command(lam)
        n_lrs = self._n_stage3_lrs()
        self.run_info = {"lam": float(lam), "t0": time.time(), "log": log, "cmd": cmd,
                         "result": edir / "runs" / f"lam{float(lam)}" / "result.json"}
        wd["progress"].max, wd["progress"].value = 2 + n_lrs, 0   # stage 1, stage 2, one per LR
        wd["progress"].bar_style = "info"
        wd["status"].value = f"running λ = {float(lam):g} … (log: {html.escape(str(log))})"
        with open(log, "w") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        if self.poll_interval:
            self._thread = threading.Thread(target=self._poll_loop, daemon=True)
            self._thread.start()
        return self.proc

    def _n_stage3_lrs(self) -> int:
        try:
            import yaml
            return len(yaml.safe_load(self._run_config().read_text())["stage3"]["lrs"])
        except Exception:
            return 1

    def _poll_loop(self) -> None:
        while self.poll() is None:
            time.sleep(self.poll_interval)

    def poll(self) -> int | None:
        """Update the progress bar from the stage.json files written since the run started;
        when the subprocess has ended, reload the rows (rc 0) or show the log tail. Returns rc."""
        if self.proc is None:
            return None
        wd, info = self.widgets, self.run_info
        edir = self.root / self.experiment
        rc = self.proc.poll()
        done = sum(1 for p in edir.glob("stage*/*/stage.json") if p.stat().st_mtime >= info["t0"] - 1)
        wd["progress"].value = min(done, wd["progress"].max)
        if rc is None:
            return None
        if rc == 0:
            wd["progress"].value = wd["progress"].max
            wd["progress"].bar_style = "success"
            wd["status"].value = f"λ = {info['lam']:g} finished; its points are added"
            self.reload()
            if info["lam"] in self.widgets["lam"].options:
                self.widgets["lam"].value = info["lam"]
            self.refresh()
        else:
            wd["progress"].bar_style = "danger"
            tail = info["log"].read_text()[-800:] if Path(info["log"]).exists() else ""
            wd["status"].value = f"run failed (exit {rc}):<pre>{html.escape(tail)}</pre>"
        return rc

    # ---- display ---------------------------------------------------------------------------
    def _on_change(self, change) -> None:
        if change["owner"] is self.widgets["pipeline"] and not self.rows.empty:
            self._update_choices()
        self.refresh()

    def refresh(self) -> None:
        """Redraw the chart and the table into their Output widgets."""
        data = self.chart_data()
        wd = self.widgets
        wd["caption"].value = (f"<span class='eelib-caption'>{len(data)} points, "
                               f"{int(data['on_frontier'].sum()) if len(data) else 0} on frontiers, "
                               f"mixed at λ = {wd['lam'].value:g}</span>")
        ch = self.chart()
        with self.out:
            self.out.clear_output(wait=True)
            if ch is None:
                display(HTML("<i>nothing to plot for this choice</i>"))
            elif self.renderer == "svg":
                import vl_convert as vlc
                # inline <svg> in HTML (JupyterLab shows image/svg+xml as an <img>): its text is in the DOM
                display(HTML(f"<div class='eelib-chart'>{vlc.vegalite_to_svg(ch.to_dict())}</div>"))
            else:
                display(ch)
        with self.table_out:
            self.table_out.clear_output(wait=True)
            t = self.table()
            if len(t):
                display(HTML(t.to_html(index=False, classes="eelib-table", na_rep="–")))

    def view(self) -> W.VBox:
        wd = self.widgets
        return W.VBox([wd["message"], W.HBox([wd["pipeline"], wd["view"]]),
                       W.HBox([wd["lam"], wd["methods"], wd["trajectory"]]), wd["caption"], self.out,
                       self.table_out, W.HBox([wd["new_lam"], wd["run"], wd["progress"]]), wd["status"]])

    def _ipython_display_(self) -> None:
        display(self.view())


def _method_order(m: str) -> tuple:
    order = ["unmixed", "mixed", "mixed+dropout", "mixed+replay", "unmixed+dropout", "unmixed+replay",
             "LoRA-unmixed", "LoRA-mixed"]
    return (order.index(m) if m in order else len(order), m)

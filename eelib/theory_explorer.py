"""The §5 theory in JupyterLab: trajectory and α-sweep charts (altair) and the slider explorer
(ipywidgets) of notebooks/theory.ipynb. eelib/theory.py computes; this only draws and wires.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from eelib.theory import TheoryConfig, run, summary, trajectory_records

def plot_trajectories(res: dict):
    """Altair: feature values over the three stages, one panel per run, colour = block."""
    import altair as alt
    import pandas as pd
    df = pd.DataFrame(trajectory_records(res))
    steps = np.unique(df["step"])  # thin evenly to stay under altair's 5000-row inline limit
    keep = steps[:: max(1, math.ceil(len(df) / 4500))]
    df = df[df["step"].isin(np.union1d(keep, steps[-1:]))]
    return alt.Chart(df).mark_line().encode(
        x=alt.X("step:Q", title="GD step (stages 1 | 2 | 3)"), y=alt.Y("value:Q", title="u_i^T θ v_i"),
        color="block:N", detail="feature:N", tooltip=["stage", "step", "feature", "value"],
    ).properties(width=320, height=200).facet(column="run:N")


def plot_sweep(rows: list[dict]):
    """Altair: forgetting (mixed, unmixed, bound) and immediate loss against alpha."""
    import altair as alt
    import pandas as pd
    long = [{"alpha": r["alpha"], "quantity": q, "value": r[key], "assumptions_ok": r["assumptions_ok"]}
            for r in rows for q, key in (("Δ mixed", "forgetting_mixed"), ("Δ unmixed", "forgetting_unmixed"),
                                         ("Thm 5.3 bound", "bound"), ("L_im mixed", "L_im_mixed"))]
    return alt.Chart(pd.DataFrame(long)).mark_line(point=True).encode(
        x="alpha:Q", y=alt.Y("value:Q", title="loss"), color="quantity:N",
        shape=alt.Shape("assumptions_ok:N"), tooltip=["alpha", "quantity", "value", "assumptions_ok"],
    ).properties(width=360, height=220)


def explore(base: TheoryConfig, alpha: float, beta: float, c_mis: float, k: int) -> dict:
    """Widget callback body: rerun with new (alpha, beta, c_mis, k); returns chart data or the refusal."""
    cfg = replace(base, alpha=alpha, beta=beta, c_mis=c_mis, k=int(k), init_T=0.0,
                  steps_pre=0, steps_post=0, steps_ft=0, points_per_stage=40)
    try:
        res = run(cfg)
    except ValueError as e:
        return {"ok": False, "message": str(e), "records": [], "summary": {}}
    s = summary(res)
    msg = (f"Δ mixed={s['forgetting_mixed']:.3g}  Δ unmixed={s['forgetting_unmixed']:.3g}  "
           f"bound={s['bound']:.3g}")
    return {"ok": True, "message": msg, "records": trajectory_records(res), "summary": s, "result": res}


class Explorer:
    """Sliders for alpha, beta, c_mis, k wired to explore(); needs no front-end to run."""

    def __init__(self, base: TheoryConfig = TheoryConfig()):
        import ipywidgets as w
        self.base = base
        self.sliders = {
            "alpha": w.FloatSlider(value=base.alpha, min=0.05, max=1.0, step=0.05, description="α"),
            "beta": w.FloatSlider(value=base.beta, min=0.05, max=1.0, step=0.05, description="β"),
            "c_mis": w.FloatSlider(value=base.c_mis, min=0.2, max=2.0, step=0.1, description="c_mis"),
            "k": w.IntSlider(value=base.k, min=1, max=max(1, (base.n - 1) // 2), description="k"),
        }
        self.label, self.out = w.HTML(), w.Output()
        self.last: dict = {}
        for sl in self.sliders.values():
            sl.observe(self.update, names="value")
        self.widget = w.VBox([w.HBox(list(self.sliders.values())), self.label, self.out])
        self.update()

    def update(self, change=None) -> dict:
        self.last = explore(self.base, **{k: s.value for k, s in self.sliders.items()})
        self.label.value = self.last["message"]
        if self.last["ok"]:
            # Set the Output widget's outputs directly: capturing with `with self.out:` hangs
            # under papermill/nbclient, and this form needs no front-end at all.
            bundle = plot_trajectories(self.last["result"])._repr_mimebundle_()
            data = bundle[0] if isinstance(bundle, tuple) else bundle
            self.out.outputs = ({"output_type": "display_data", "data": data, "metadata": {}},)
        else:  # a refused setting has no chart: do not leave the last one up beside its message
            self.out.outputs = ()
        return self.last

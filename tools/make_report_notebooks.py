"""Writes notebooks/claims.ipynb and notebooks/explorer.ipynb (outputs stripped).

Run: python tools/make_report_notebooks.py
"""
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
KERNEL = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
          "language_info": {"name": "python"}}

claims_cells = [
    new_markdown_cell("""\
# Claims report: does a run reproduce the paper?

For one experiment (a folder under `outputs/`), `eelib.report.report` collects the finished runs'
rows, tests the paper's claims (a–j) and draws its figures next to the run:

* **a, b**: mixing improves the L_ret-vs-L_ft and L_pre-vs-L_ret frontiers (§4.3, Fig 2);
* **c**: Fig 3a, L_im flat while L_ret improves with λ; **d**: Fig 3b, an interior optimum of λ;
* **e**: replay and dropout add to mixing (Fig 4); **f**: mixing helps LoRA too (Fig 7).

A claim **holds** if a one-sided paired t-test over at least 3 seeds puts the effect in the claimed
direction at p < 0.05, **does not hold** if it is significantly the other way, is **not shown** if
neither, and is **inconclusive** when the rows it needs are missing (the report says which). Each
pipeline and |D_post| is tested on its own. The definitions are in
`docs/frontiers.md`. The same report is `eelib report <experiment>` on the command line."""),
    new_code_cell('experiment: str = "quick"  # a folder under the outputs root\n'
                  'out_dir: str = "outputs"  # outputs root ($EELIB_OUTPUTS overrides)',
                  metadata={"tags": ["parameters"]}),
    new_code_cell("""\
from IPython.display import Image, Markdown, display
from eelib import notebook as nb, report

root = nb.outputs(out_dir)   # the other notebooks' root ($EELIB_OUTPUTS, else the repo's outputs/)
have_runs = (root / experiment / "runs").is_dir()
print(f"experiment {experiment!r} under {root}: " + ("found runs" if have_runs else
      "no results yet: make some with `make run` or `eelib run params/quick.yaml`"))"""),
    new_markdown_cell("## Verdicts\n\nComputed from the rows, written to `claims.md` / `claims.json` beside the run."),
    new_code_cell("""\
paths = report.report(experiment, root) if have_runs else {}
display(Markdown(paths["claims_md"].read_text()) if paths else Markdown("*(no claims: no results)*"))"""),
    new_markdown_cell("""\
## Figures

Each figure shows our run on top and the paper's digitized values (135M/1B) in a separate panel
below: the scales differ, so compare shapes and orderings, not numbers."""),
    new_code_cell("""\
for name, p in sorted(paths.items()):
    if name.endswith(".png"):
        display(Markdown(f"**{name}**"), Image(filename=str(p)))"""),
]

explorer_cells = [
    new_markdown_cell("""\
# Frontier explorer

Pick a pipeline, the λ at which the *mixed* methods are read (the slider offers the λ values that
were run), the methods and one of the paper's two views (§4.3, Fig 2): **L_ret vs L_ft** (x = L_ft) and
**L_pre vs L_ret** (x = L_ret). Lines are each method's Pareto frontier (lower-left is better);
the table lists, per λ, the mean losses and how far each frontier lies below the unmixed one.

**run λ now** reruns this experiment's own config (its first run's, else `params`) at a new λ in
the background, at that config's scale: seconds to minutes offline, a GPU job at 135M. Its points
appear when it finishes; it has that one run's stage-2 settings, so in a grid over stage-2 settings
its frontier has fewer points than the others. With no results yet, the explorer says how to make
some. The table's `runs` column counts rows (run × stage-3 LR)."""),
    new_code_cell('experiment: str = "quick"  # a folder under the outputs root\n'
                  'out_dir: str = "outputs"  # outputs root ($EELIB_OUTPUTS overrides)\n'
                  'params: str = "params/quick.yaml"  # what "run λ now" runs, at the λ chosen',
                  metadata={"tags": ["parameters"]}),
    new_code_cell("""\
from eelib import notebook as nb
from eelib.explorer import Explorer

ex = Explorer(nb.outputs(out_dir), experiment, params=nb.resolve(params))
ex"""),
    new_markdown_cell("The same state without widgets: the per-λ table behind the view above."),
    new_code_cell("ex.table()"),
]

for name, cells in (("claims", claims_cells), ("explorer", explorer_cells)):
    for i, c in enumerate(cells):  # fixed ids: regenerating leaves an unchanged notebook unchanged
        c["id"] = f"{name}-{i}"
    nb = new_notebook(cells=cells, metadata=KERNEL)
    nbformat.validate(nb)
    nbformat.write(nb, ROOT / "notebooks" / f"{name}.ipynb")
    print(f"wrote notebooks/{name}.ipynb")

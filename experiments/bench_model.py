#!/usr/bin/env python
"""Benchmark the tttLRM forward pass on this machine.

Measures, per configuration: forward wall time (median of several runs after a warm-up), tokens/s, achieved
GFLOP/s (analytic matmul FLOP count, see ``forward_flops``) against the measured matmul peak of the machine
(fp32 and bf16), and peak resident memory (each configuration in its own process, so peaks don't mix).

    python experiments/bench_model.py                      # d=256 preset, 4..64 views at 128x128, + official preset
    python experiments/bench_model.py --views 4 8 --quick  # smaller sweep

Writes ``docs/bench_model.md`` (a markdown section) and ``docs/img/bench_model.png`` (time vs tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def forward_flops(cfg, views: int, h: int, w: int) -> float:
    """Multiply-add FLOPs (2 per MAC) of one forward pass with the de-duplicated sequence.

    Counts every matmul: tokenizer, per block the attention projections and scores, the TTT projections, fast-
    weight update (forward to the hidden layer, three outer products), Newton-Schulz, fast-weight application,
    the MLP, and the decoder. Element-wise work (norms, activations) is excluded, as usual for MFU figures.
    """
    p, d = cfg.patch_size, cfg.d
    n = (h // p) * (w // p)
    t = views * n  # tokens
    dh, m, heads = cfg.ttt_head_dim, cfg.ttt_hidden, cfg.ttt_heads
    per_block = 0.0
    per_block += 2 * t * d * 3 * d + 2 * t * d * d  # attention qkv + out projection
    per_block += 2 * 2 * views * n * n * d  # QK^T and AV within each view
    per_block += 2 * t * d * 3 * d + 2 * t * d * 3 * heads + 2 * t * d * d  # TTT qkv, lr, out projection
    per_block += heads * (12 * t * dh * m)  # update: K W0, K W2, V W1^T, three outer products
    chunks = 1 if cfg.scan == "full" else max(1, views // cfg.ar_chunk_views)
    ns = cfg.muon_steps * (2 * dh * dh * m * 2 + 2 * dh**3)  # per update matrix: X X^T, A A, B X
    per_block += heads * chunks * 3 * ns
    per_block += heads * (6 * t * dh * m)  # apply the fast weights to every token
    per_block += 2 * 2 * t * d * cfg.mlp_ratio * d  # MLP
    total = cfg.n_layer * per_block
    total += 2 * t * 12 * p * p * d + 2 * t * d * p * p * cfg.gaussian_channels  # tokenizer + decoder
    return total


def matmul_peak(dtype: torch.dtype, size: int = 2048, reps: int = 10, warmup: int = 3) -> float:
    """Measured GFLOP/s of a square matmul (best of ``reps``)."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    for _ in range(warmup):
        a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


def worker(args) -> dict:
    """Run one configuration in this process and print a JSON line."""
    from tttlrm_ns.model import TttlrmModel, presets

    torch.set_num_threads(args.threads)
    cfg = presets.get(args.preset, autocast_bf16=args.bf16)
    torch.manual_seed(0)
    model = TttlrmModel(cfg).eval()
    v, h, w = args.views, args.height, args.width
    images = torch.rand(1, v, 3, h, w)
    c2w = torch.eye(4).repeat(1, v, 1, 1)
    c2w[0, :, 0, 3] = torch.linspace(-1, 1, v)
    k = torch.tensor([w * 0.8, w * 0.8, w / 2, h / 2]).repeat(1, v, 1)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = []
    with torch.inference_mode():
        for i in range(args.warmup + args.reps):
            t0 = time.perf_counter()
            model(images, c2w, k)
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = statistics.median(times)
    tokens = v * (h // cfg.patch_size) * (w // cfg.patch_size)
    flops = forward_flops(cfg, v, h, w)
    return dict(
        preset=args.preset, views=v, height=h, width=w, bf16=args.bf16, tokens=tokens, time_s=t,
        tokens_per_s=tokens / t, gflops=flops / t / 1e9, gflop=flops / 1e9, peak_rss_mb=peak,
        rss_after_build_mb=rss_before, params=model.num_parameters(),
    )


def run_config(preset, views, h, w, bf16, threads, reps, warmup) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--preset", preset, "--views", str(views), "--height", str(h),
           "--width", str(w), "--threads", str(threads), "--reps", str(reps), "--warmup", str(warmup)]
    if bf16:
        cmd.append("--bf16")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def plot(rows, peaks, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for bf16, style in ((False, "o-"), (True, "s--")):
        sel = [r for r in rows if r["preset"] == "small_d256" and r["bf16"] == bf16]
        if not sel:
            continue
        label = "bf16 autocast" if bf16 else "fp32"
        ax[0].plot([r["tokens"] for r in sel], [r["time_s"] for r in sel], style, label=label)
        ax[1].plot([r["tokens"] for r in sel], [r["gflops"] for r in sel], style, label=label)
    ax[0].set(xlabel="tokens (views x 256)", ylabel="forward time [s]", title="small_d256, 128x128 views",
              xscale="log", yscale="log")
    ax[1].axhline(peaks["fp32"], color="C0", lw=0.8, ls=":", label=f"fp32 matmul peak {peaks['fp32']:.0f}")
    ax[1].axhline(peaks["bf16"], color="C1", lw=0.8, ls=":", label=f"bf16 matmul peak {peaks['bf16']:.0f}")
    ax[1].set(xlabel="tokens", ylabel="achieved GFLOP/s", xscale="log", title="throughput")
    for a in ax:
        a.grid(alpha=0.3)
        a.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--preset", default="small_d256")
    ap.add_argument("--views", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--official-views", type=int, default=2, help="views for the official preset (128x128)")
    ap.add_argument("--skip-official", action="store_true")
    ap.add_argument("--official-bf16", action="store_true",
                    help="also time the official preset under bf16 on CPUs without bf16 instructions (minutes)")
    ap.add_argument("--bf16-views", type=int, nargs="*", default=None,
                    help="views for the bf16 rows (default: all, or only 4 and 8 on CPUs without bf16 instructions, "
                    "where bf16 runs 10-100x slower than fp32)")
    ap.add_argument("--out", type=Path, default=REPO / "docs/bench_model.md")
    args = ap.parse_args()
    if args.worker:
        args.views = args.views[0]
        print(json.dumps(worker(args)))
        return

    from rich.progress import Progress

    from tttlrm_ns.model.lact import cpu_has_fast_bf16

    torch.set_num_threads(args.threads)
    fast_bf16 = cpu_has_fast_bf16()
    load_before = os.getloadavg()[0]
    t_start = time.time()
    peaks = {"fp32": matmul_peak(torch.float32)}
    # Without bf16 instructions a 2048^3 bf16 matmul takes about a minute: measure a smaller one, fewer times.
    peaks["bf16"] = matmul_peak(torch.bfloat16) if fast_bf16 else matmul_peak(torch.bfloat16, 1024, 2, 1)
    bf16_views = args.views if fast_bf16 else [v for v in args.views if v <= 8]
    if args.bf16_views is not None:
        bf16_views = args.bf16_views
    jobs = [("small_d256", v, False) for v in args.views] + [("small_d256", v, True) for v in bf16_views]
    if not args.skip_official:
        jobs += [("official_full", args.official_views, False)]
        if bf16_views and (fast_bf16 or args.official_bf16):
            jobs += [("official_full", args.official_views, True)]
    rows = []
    with Progress() as prog:
        task = prog.add_task("benchmarking", total=len(jobs))
        for preset, v, bf in jobs:
            prog.update(task, description=f"{preset} {v} views {'bf16' if bf else 'fp32'}")
            rows.append(run_config(preset, v, args.height, args.width, bf, args.threads, args.reps, args.warmup))
            prog.advance(task)

    cpu, flags = "unknown CPU", []
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
        flags = next(l.split(":", 1)[1].split() for l in open("/proc/cpuinfo") if l.startswith("flags"))
    except (OSError, StopIteration):
        pass
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    lines = [
        "## Model forward pass (`experiments/bench_model.py`)",
        "",
        f"Machine: {cpu} ({' '.join(isa) or 'no AVX2'}), {args.threads} threads, torch {torch.__version__}; "
        f"1-minute load average {load_before:.1f} before and {os.getloadavg()[0]:.1f} after the "
        f"{(time.time() - t_start) / 60:.0f}-minute run (above {args.threads}, other processes share the cores). "
        f"Measured matmul peak: **fp32 {peaks['fp32']:.0f} GFLOP/s (2048^3), bf16 {peaks['bf16']:.1f} GFLOP/s "
        f"({'2048' if fast_bf16 else '1024'}^3)**. Images {args.height}x{args.width}, "
        "batch 1, inference mode, default (de-duplicated) sequence, full scan; median of "
        f"{args.reps} runs after {args.warmup} warm-up. GFLOP counts every matmul (see `forward_flops`). "
        "Peak RSS is the whole process (weights included), each row in its own process.",
        "",
        "| preset | views | tokens | precision | GFLOP | time [s] | tokens/s | GFLOP/s | % of peak | peak RSS [MB] |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        prec = "bf16" if r["bf16"] else "fp32"
        pct = 100 * r["gflops"] / peaks[prec]
        lines.append(
            f"| {r['preset']} | {r['views']} | {r['tokens']} | {prec} | {r['gflop']:.1f} | {r['time_s']:.3f} | "
            f"{r['tokens_per_s']:.0f} | {r['gflops']:.1f} | {pct:.0f} % | {r['peak_rss_mb']:.0f} |"
        )
    small = {(r["views"], r["bf16"]): r for r in rows if r["preset"] == "small_d256"}
    summary = []
    if (32, False) in small and (64, False) in small:
        ratio = small[(64, False)]["time_s"] / small[(32, False)]["time_s"]
        summary.append(f"- linearity: 64 views take {ratio:.2f}x the time of 32 views (target <= 2.2x)")
    fp = [r for r in rows if r["preset"] == "small_d256" and not r["bf16"]]
    if fp:
        best = max(r["gflops"] for r in fp)
        summary.append(f"- fp32: best {best:.0f} GFLOP/s = {100 * best / peaks['fp32']:.0f} % of the measured fp32 "
                       "matmul peak (target >= 60 %)")
    speedups = [small[(v, False)]["time_s"] / small[(v, True)]["time_s"] for v in args.views
                if (v, False) in small and (v, True) in small]
    if speedups:
        summary.append(f"- bf16 autocast speed-up over fp32: {min(speedups):.2f}x to {max(speedups):.2f}x "
                       "(target >= 2x)")
    if not fast_bf16:
        summary.append(
            "- this CPU has no bfloat16 matmul instructions (no AVX512-BF16 / AMX): torch's bf16 GEMM runs at "
            f"{peaks['bf16']:.1f} GFLOP/s against {peaks['fp32']:.0f} in fp32, so bf16 autocast cannot be faster "
            "here and the model warns when it is turned on; bf16 rows only for small view counts. The bf16 "
            "Newton-Schulz of the official recipe is emulated in fp32 on such CPUs (`ns_bf16_emulation`), which is "
            "what makes the fp32 rows fast.")
    lines += ["", *summary, "", "![time vs tokens](img/bench_model.png)", ""]
    args.out.write_text("\n".join(lines))
    plot(rows, peaks, REPO / "docs/img/bench_model.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Trainer benchmark on CPU: tokens/s per rank and 1 -> 2 process scaling (gloo), memory per token, learning curve.

    python experiments/bench_train.py                       # writes docs/bench_train.md and docs/img/train_curve.png
    python experiments/bench_train.py --curve-steps 40 --steps 4   # quicker

What is measured (each configuration in fresh processes, one intra-op thread per process, so that 2 processes use
the 2 cores of the machine and 1 process uses one):

* **Scaling**: the tiny model (``configs/tiny_cpu.yaml`` sizes, perceptual loss off) on procedural scenes, 8 input and 8
  target views of 32x48. Data parallel: a global batch of 2 scenes, one process (2 accumulation steps) vs two
  processes (one scene each, DDP). Sequence parallel: one scene per step, its views on one process vs split over two
  (``parallel.sp_size=2``). Tokens/s counts input tokens (views x patches) per optimiser step; the first steps are
  warm-up and excluded. Efficiency = tokens/s with 2 processes / (2 x tokens/s with 1).
* **Memory per token**: peak RSS growth of one forward + backward of the model alone (the renderer is deferred and
  holds one view) for two sequence lengths; the slope is the activation memory per input token.
* **Learning curve**: a tiny CPU run (``configs/tiny_cpu.yaml``, perceptual weight 0 to keep it short) on generated
  scenes; the PNG plots the loss and the training PSNR of the rendered target views.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tttlrm_ns.eval.metrics import psnr_from_mse  # noqa: E402
from tttlrm_ns.train.config import config_from_dict, load_yaml_config  # noqa: E402
from tttlrm_ns.train.procedural import make_scene  # noqa: E402

TINY_MODEL = dict(d=64, n_layer=2, attn_head_dim=16, ttt_head_dim=64, patch_size=8, sh_degree=0)


def bench_config(out: Path, scenes: list[str], steps: int, **sections) -> dict:
    values = {
        "output_dir": str(out),
        "seed": 0,
        "data": dict(scenes=scenes, height=32, width=48, window_min=8, window_max=24, frames_per_window=16,
                     num_input_views=[8], num_target_views=8, num_workers=0),
        "optim": dict(lr=1e-3, warmup_steps=2, max_steps=steps, batch_size=2),
        "model": TINY_MODEL,
        "loss": dict(perceptual=0.0),
        "render": dict(prune=dict(keep_top=0.4, keep_random=0.1)),
        "checkpoint": dict(every=10**6, export=False),
        "logging": dict(tensorboard=False, progress=False, preview_every=0),
    }
    for k, v in sections.items():
        values[k] = {**values.get(k, {}), **v}
    return values


def _run_values(values: dict) -> list[dict]:
    from tttlrm_ns.train.loop import Trainer

    trainer = Trainer(config_from_dict(values), log=lambda m: None)
    return trainer.run().history


def _worker(rank: int, world: int, port: int, values: dict, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        history = _run_values(values)
    finally:
        dist.destroy_process_group()
    if rank == 0:
        Path(out).write_text(json.dumps(history))


def _single(values: dict, out: str) -> None:
    torch.set_num_threads(1)
    Path(out).write_text(json.dumps(_run_values(values)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_processes(values: dict, nprocs: int, warmup: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "history.json")
        if nprocs == 1:
            p = mp.get_context("spawn").Process(target=_single, args=(values, out))
            p.start()
            p.join()
            if p.exitcode:
                raise RuntimeError(f"benchmark process failed with exit code {p.exitcode}")
        else:
            mp.spawn(_worker, args=(nprocs, _free_port(), values, out), nprocs=nprocs, join=True)
        hist = json.loads(Path(out).read_text())
    timed = hist[warmup:]
    step_s = statistics.median(h["step_time_s"] for h in timed)
    tokens = statistics.median(h["tokens_per_s"] * h["step_time_s"] for h in timed)
    return {"step_s": step_s, "tokens_per_s": tokens / step_s, "tokens_per_s_per_rank": tokens / step_s / nprocs,
            "peak_rss_mb": max(h["peak_memory_mb"] for h in hist), "loss": hist[-1]["loss"]}


# --- memory per token -------------------------------------------------------------------------------------------


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _memory_child(preset: str, views: int, hw: int, ckpt: bool, n_layer: int, out: str) -> None:
    from tttlrm_ns.model import TttlrmModel, presets

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = TttlrmModel(presets.get(preset, grad_checkpoint=ckpt, ns_dtype="float32", n_layer=n_layer))
    images = torch.rand(1, views, 3, hw, hw)
    c2w = torch.eye(4).repeat(1, views, 1, 1)
    c2w[..., 2, 3] = -2.0
    K = torch.tensor([hw, hw, hw / 2, hw / 2], dtype=torch.float32).repeat(1, views, 1)
    base = _rss_mb()  # weights + inputs + interpreter; the growth above it is the step's working memory
    out_g = model(images, c2w, K).gaussians
    loss = out_g.means.square().mean() + out_g.sh.square().mean() + out_g.opacity_logits.mean()
    loss.backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(out).write_text(json.dumps({"delta_mb": peak - base, "tokens": views * (hw // model.cfg.patch_size) ** 2}))


def memory_per_token(preset: str, hw: int, views: tuple[int, int], ckpt: bool, n_layer: int) -> dict:
    res = []
    with tempfile.TemporaryDirectory() as tmp:
        for v in views:
            out = str(Path(tmp) / f"m{v}.json")
            p = mp.get_context("spawn").Process(target=_memory_child, args=(preset, v, hw, ckpt, n_layer, out))
            p.start()
            p.join()
            res.append(json.loads(Path(out).read_text()))
    (a, b) = res
    slope = (b["delta_mb"] - a["delta_mb"]) / (b["tokens"] - a["tokens"])
    return {"preset": preset, "n_layer": n_layer, "grad_checkpoint": ckpt, "tokens": (a["tokens"], b["tokens"]),
            "delta_mb": (a["delta_mb"], b["delta_mb"]), "kib_per_token": slope * 1024}


# --- learning curve ---------------------------------------------------------------------------------------------


def learning_curve(scenes: list[str], out_dir: Path, steps: int, png: Path) -> dict:
    import dataclasses

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tttlrm_ns.train.loop import Trainer

    torch.set_num_threads(1)  # tiny tensors: one thread is faster on a shared 2-core machine
    cfg = load_yaml_config(REPO / "configs" / "tiny_cpu.yaml")
    cfg = dataclasses.replace(
        cfg, output_dir=out_dir,
        data=dataclasses.replace(cfg.data, scenes=tuple(scenes), num_workers=0),
        optim=dataclasses.replace(cfg.optim, max_steps=steps, batch_size=2, warmup_steps=max(1, steps // 15)),
        loss=dataclasses.replace(cfg.loss, perceptual=0.0),
        checkpoint=dataclasses.replace(cfg.checkpoint, every=10**6, export=False),
        logging=dataclasses.replace(cfg.logging, progress=False, tensorboard=False, preview_every=0))
    t0 = time.perf_counter()
    hist = Trainer(cfg, log=lambda m: None).run().history
    wall = time.perf_counter() - t0
    steps_ = [h["step"] for h in hist]
    loss = [h["loss"] for h in hist]
    psnr = [psnr_from_mse(h["mse"]) for h in hist]
    k = max(1, len(loss) // 20)

    def smooth(x):
        return [statistics.mean(x[max(0, i - k + 1): i + 1]) for i in range(len(x))]

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    ax[0].plot(steps_, loss, color="0.75", lw=0.8, label="per step")
    ax[0].plot(steps_, smooth(loss), color="C0", lw=2, label=f"running mean ({k})")
    ax[0].set_xlabel("optimiser step")
    ax[0].set_ylabel("training loss (MSE)")
    ax[0].set_yscale("log")
    ax[0].legend()
    ax[1].plot(steps_, psnr, color="0.75", lw=0.8)
    ax[1].plot(steps_, smooth(psnr), color="C1", lw=2)
    ax[1].set_xlabel("optimiser step")
    ax[1].set_ylabel("training PSNR of target views (dB)")
    fig.suptitle(f"tiny CPU run: d=64, 2 blocks, 8 views 32x48, batch 2, {len(scenes)} generated scenes")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    n = max(1, len(loss) // 10)
    return {"steps": len(hist), "wall_s": wall, "first_loss": statistics.mean(loss[:n]),
            "last_loss": statistics.mean(loss[-n:]), "first_psnr": statistics.mean(psnr[:n]),
            "last_psnr": statistics.mean(psnr[-n:]), "window": n}


# --- report -----------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=8, help="optimiser steps per scaling run (incl. warm-up)")
    ap.add_argument("--warmup", type=int, default=2, help="steps excluded from the timing")
    ap.add_argument("--curve-steps", type=int, default=150)
    ap.add_argument("--scenes", nargs="*", default=None, help="training scenes for the curve (default: generated)")
    ap.add_argument("--scenes-desc", default=None, help="how to describe --scenes in the report")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "bench_train.md")
    ap.add_argument("--png", type=Path, default=REPO / "docs" / "img" / "train_curve.png")
    ap.add_argument("--skip-curve", action="store_true")
    args = ap.parse_args()
    args.load_before = os.getloadavg()[0]

    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    args.scenes_desc = args.scenes_desc or (f"{len(args.scenes)} scenes given with --scenes" if args.scenes else
                        "8 procedural scenes (textured box rooms with textured cards; `tttlrm_ns.train.procedural`)")
    gen = [str(make_scene(work / "scenes" / f"scene{i}", num_frames=48, height=64, width=96, n_quads=5, seed=100 + i))
           for i in range(8)]
    rows = []
    for mode, sections in (("data parallel (DDP), global batch 2", {}),
                           ("sequence parallel, 1 scene of 8 views", {"optim": {"batch_size": 1}})):
        for n in (1, 2):
            extra = dict(sections)
            if n == 2 and mode.startswith("sequence"):
                extra["parallel"] = {"sp_size": 2}
            values = bench_config(work / f"run_{len(rows)}", gen, args.steps, **extra)
            r = run_processes(values, n, args.warmup)
            rows.append((mode, n, r))
            print(mode, n, r, flush=True)
    mem = [memory_per_token("small_d256", 128, (4, 8), ckpt, n) for ckpt in (False, True) for n in (3, 6)]
    for m in mem:
        print(m, flush=True)
    curve = None
    if not args.skip_curve:
        curve = learning_curve(args.scenes or gen, work / "curve", args.curve_steps, args.png)
        print(curve, flush=True)
    args.load_after = os.getloadavg()[0]
    write_report(args, rows, mem, curve)


def write_report(args, rows, mem, curve) -> None:
    lines = [
        "# Trainer benchmark (CPU)",
        "",
        f"Generated by `experiments/bench_train.py` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC: "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        "gloo backend, one intra-op thread per process. The machine is shared with other jobs (1-minute load "
        f"average {args.load_before:.1f} before and {getattr(args, 'load_after', os.getloadavg()[0]):.1f} after the "
        "run; 2 processes get both cores only when nobody else computes), so absolute numbers are "
        "noisy; medians over the timed steps are reported.",
        "",
        "## Throughput and scaling, 1 -> 2 processes",
        "",
        f"Tiny model (d=64, 2 blocks), 8 input + 8 target views of 32x48 (48 tokens per view), procedural scenes, "
        f"MSE loss, opacity pruning, deferred rendering through `tttlrm_ns.render.rasterize` (CPU backend); "
        f"{args.steps} steps, the first {args.warmup} excluded.",
        "",
        "| mode | processes | step time (s) | tokens/s (total) | tokens/s per rank | scaling efficiency | peak RSS rank 0 (MiB) |",
        "|---|---|---|---|---|---|---|",
    ]
    base = {}
    for mode, n, r in rows:
        if n == 1:
            base[mode] = r["tokens_per_s"]
        eff = r["tokens_per_s"] / (n * base[mode]) if mode in base else float("nan")
        lines.append(f"| {mode} | {n} | {r['step_s']:.3f} | {r['tokens_per_s']:.0f} | {r['tokens_per_s_per_rank']:.0f} "
                     f"| {eff:.0%} | {r['peak_rss_mb']:.0f} |")
    lines += [
        "",
        "Efficiency = tokens/s with 2 processes / (2 x tokens/s with 1 process). The global batch (and therefore the "
        "optimisation) is identical in both columns: DDP splits the 2 scenes of a step over the ranks instead of "
        "accumulating them, sequence parallelism splits the 8 views of the scene (4 per rank) and all-reduces the "
        "fast-weight updates, all-gathers the Gaussians and reduces the partial gradients. Why the efficiency is low "
        "here: the two processes only run in parallel when the second core is free (the load average shows about "
        "one core busy with other jobs during the run), every collective makes both ranks wait for the slower one, "
        "and at this tiny size the fixed per-step costs (Python, per-view rendering calls, data loading in the "
        "training process, one gloo round trip per collective) are a large share of a 0.1-0.3 s step. These "
        "numbers bound the overhead of the parallel machinery on CPU; they are not a GPU scaling measurement.",
        "",
        "## Memory per token",
        "",
        "Peak RSS growth of one forward + backward of the model alone (`small_d256` widths: d=256, patch 8, SH "
        "degree 3, fp32, 128x128 views = 256 tokens per view) for two view counts; the difference divided by the "
        "token difference is the activation memory per input token (weights and fixed overheads cancel). Two "
        "depths separate the per-block cost from the per-token cost outside the blocks (tokenizer, decoder, "
        "Gaussian head).",
        "",
        "| model | blocks | gradient checkpointing | tokens | RSS growth (MiB) | KiB per token |",
        "|---|---|---|---|---|---|",
    ]
    for m in mem:
        lines.append(f"| {m['preset']} | {m['n_layer']} | {'on' if m['grad_checkpoint'] else 'off'} | "
                     f"{m['tokens'][0]} / {m['tokens'][1]} | {m['delta_mb'][0]:.0f} / {m['delta_mb'][1]:.0f} | "
                     f"{m['kib_per_token']:.1f} |")
    # Fit the runs without checkpointing: KiB per token = n_layer * per_block + outside (tokenizer, head, decoder).
    (a, b) = [m for m in mem if not m["grad_checkpoint"]]
    per_block = (b["kib_per_token"] - a["kib_per_token"]) / (b["n_layer"] - a["n_layer"])
    outside = b["kib_per_token"] - b["n_layer"] * per_block
    # With checkpointing every block keeps only its input (d fp32 values per token) and one block's activations
    # exist at a time during the recomputation.
    ck = [m for m in mem if m["grad_checkpoint"]]
    pred_ck = {m["n_layer"]: m["n_layer"] * 256 * 4 / 1024 + per_block + outside for m in ck}
    full_off = (24 * 3 * per_block + outside) / 1024  # MiB per token, d = 768 (3x the width), 24 blocks
    full_on = (24 * 768 * 4 / 1024 + 3 * per_block + outside) / 1024
    tok = 32 * 8040
    lines += [
        "",
        f"Fit without checkpointing: {per_block:.1f} KiB per token and block, {outside:.1f} KiB per token outside "
        "the blocks (tokenizer, decoder, Gaussian head, loss). With checkpointing each block keeps only its input "
        "(d = 256 fp32 values = 1 KiB per token) and one block is recomputed at a time, which predicts "
        + ", ".join(f"{v:.0f} KiB per token for {k} blocks (measured {m['kib_per_token']:.0f})"
                    for (k, v), m in zip(pred_ck.items(), ck))
        + "; the per-block cost under checkpointing is below the resolution of RSS measurements.",
        "",
        "Sizing a GPU run (an extrapolation, not measured on a GPU): activation memory grows linearly with the "
        "number of tokens (the TTT layer has no quadratic term and attention is per view), the block part with the "
        f"width d. For the full model (d=768, 24 blocks) that gives about {full_off:.1f} MiB per token in fp32 "
        f"without checkpointing and {full_on:.2f} MiB with it, roughly half under bf16 autocast. Example: 32 "
        f"views at 536x960 are 32 x 8040 = 257k tokens per scene -> about {full_off * tok / 1024 / 2:.0f} GiB "
        f"(bf16, no checkpointing) or {full_on * tok / 1024 / 2:.0f} GiB (bf16, checkpointing) of activations per "
        "scene, divided by `sp_size` under sequence parallelism (stage 3 uses 8), plus 400 M parameters x 16 bytes "
        "(fp32 weights, gradients, AdamW moments) = 6.4 GB per GPU.",
    ]
    if curve:
        lines += [
            "",
            "## Learning curve",
            "",
            f"`configs/tiny_cpu.yaml` (perceptual weight 0 to keep the run short), batch 2, {curve['steps']} steps on "
            f"{args.scenes_desc}, "
            f"{curve['wall_s']:.0f} s on 1 thread. Mean over the first / last {curve['window']} steps: loss "
            f"{curve['first_loss']:.4f} -> {curve['last_loss']:.4f}, training PSNR {curve['first_psnr']:.2f} -> "
            f"{curve['last_psnr']:.2f} dB.",
            "",
            "![learning curve](img/train_curve.png)",
        ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

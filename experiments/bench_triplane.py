#!/usr/bin/env python
"""Render time of the triplane object model per image vs samples per ray (and the prediction time).

Both wall-clock and CPU time (``time.process_time``, this process's CPU seconds) are reported: on a shared machine
the wall time mostly measures waiting, the CPU time the cost (one intra-op thread: CPU time = single-core time).

One triplane is predicted from 4 views (``--scene`` object renders, or random inputs without it); one ``--res``^2
view is rendered ``--reps`` times per sample count and the median time is kept. Writes a markdown table (stdout and
``--md``) and a matplotlib PNG. Timings depend on the load of the machine: the 1-minute load average is recorded.

  python experiments/bench_triplane.py --weights tttlrm_ns/assets/weights/tttlrm_triplane.safetensors \
      --samples 16 32 48 64 96 128 --md /tmp/bench_triplane.md --png docs/img/bench_triplane_samples.png
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from tttlrm_ns.triplane.model import load_triplane


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=Path("tttlrm_ns/assets/weights/tttlrm_triplane.safetensors"))
    ap.add_argument("--res", type=int, default=256)
    ap.add_argument("--samples", type=int, nargs="+", default=[16, 32, 48, 64, 96, 128])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=8192, help="rays per batch")
    ap.add_argument("--md", type=Path, default=None)
    ap.add_argument("--png", type=Path, default=None)
    a = ap.parse_args()

    model = load_triplane(a.weights).eval()
    r_in = 64
    g = torch.Generator().manual_seed(0)
    images = torch.rand(1, 4, 3, r_in, r_in, generator=g)
    c2w = torch.eye(4).repeat(1, 4, 1, 1)
    for i in range(4):  # four cameras on a ring at distance 2.7 looking at the origin (object frame)
        ang = torch.tensor(i * torch.pi / 2)
        eye = torch.stack([2.7 * torch.cos(ang), 2.7 * torch.sin(ang), torch.tensor(0.5)])
        z = -eye / eye.norm()
        x = torch.linalg.cross(z, torch.tensor([0.0, 0.0, 1.0]))
        x = x / x.norm()
        c2w[0, i, :3, :3] = torch.stack([x, torch.linalg.cross(z, x), z], -1)
        c2w[0, i, :3, 3] = eye
    k = torch.tensor([r_in * 1.07, r_in * 1.07, r_in / 2, r_in / 2]).repeat(1, 4, 1)
    with torch.no_grad():
        t0, c0 = time.perf_counter(), time.process_time()
        planes = model(images, c2w, k).planes
        t_pred, c_pred = time.perf_counter() - t0, time.process_time() - c0
        kt = k[:, :1] * (a.res / r_in)
        rows = []
        for s in a.samples:
            times, cpu = [], []
            for _ in range(a.reps):
                t0, c0 = time.perf_counter(), time.process_time()
                model.render(planes, c2w[:, :1], kt, a.res, a.res, torch.ones(3), num_samples=s, chunk=a.chunk)
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            rows.append((s, statistics.median(cpu), statistics.median(times)))
            print(f"samples {s}: {rows[-1][1]:.2f} CPU s, {rows[-1][2]:.2f} wall s", flush=True)
    head = (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s), load average "
            f"{os.getloadavg()[0]:.1f}, torch {torch.__version__}; model {a.weights.name} "
            f"({model.num_parameters():,} parameters, planes {model.plane_resolution}^2 x {model.tri.channels}); "
            f"prediction from 4 views at {r_in}^2: {c_pred:.2f} CPU s ({t_pred:.2f} s wall)")
    lines = [head, "", f"| samples per ray | CPU time per {a.res}^2 image (s) | wall time (s) | points / CPU s |",
             "|---|---|---|---|"]
    for s, t, w in rows:
        lines.append(f"| {s} | {t:.2f} | {w:.2f} | {a.res * a.res * s / t / 1e6:.2f} M |")
    text = "\n".join(lines)
    print(text)
    if a.md:
        a.md.write_text(text + "\n")
    if a.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot([r[0] for r in rows], [r[1] for r in rows], "o-")
        ax.set_xlabel("samples per ray")
        ax.set_ylabel(f"CPU seconds per {a.res}x{a.res} image")
        ax.set_title("triplane volume rendering on CPU", fontsize=10)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        a.png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(a.png, dpi=120)


if __name__ == "__main__":
    main()

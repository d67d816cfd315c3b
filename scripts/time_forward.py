#!/usr/bin/env python
"""Time one tttLRM forward pass (random weights) on this machine and write the result as JSON.

    python scripts/time_forward.py --preset official_full --views 32 --height 536 --width 960 --bf16 --out t.json

Random inputs (images in [0, 1], cameras on a circle looking at the origin) go through the model under
``torch.inference_mode``; the reported time is the median of ``--reps`` runs after ``--warmup`` runs, with the
device synchronised around each run. With ``--paper-seconds`` the JSON also holds the ratio to that reference time
(the paper: 7.2 s for 32 views at 536x960 on one A100). ``scripts/gpu_check.sh`` calls this.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch


def circle_cameras(views: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenCV c2w [V, 4, 4] on a unit circle looking at the origin, and pixel intrinsics [V, 4] (60 deg fov)."""
    from tttlrm_ns import conventions

    c2w = torch.zeros(views, 4, 4)
    for i in range(views):
        a = 2 * math.pi * i / views
        centre = torch.tensor([math.cos(a), 0.0, math.sin(a)])
        z = -centre / centre.norm()  # forward: towards the origin
        x = torch.linalg.cross(torch.tensor([0.0, 1.0, 0.0]), z)  # y down (OpenCV): world -y is up
        x = x / x.norm()
        y = torch.linalg.cross(z, x)
        c2w[i, :3, :3] = torch.stack([x, y, z], 1)
        c2w[i, :3, 3] = centre
        c2w[i, 3, 3] = 1.0
    assert float(conventions.rigidity_error(c2w).max()) < 1e-5
    f = 0.5 * width / math.tan(math.radians(30))
    k = torch.tensor([f, f, width / 2, height / 2]).expand(views, 4).clone()
    return c2w, k


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="official_full", help="a function of tttlrm_ns.model.presets")
    ap.add_argument("--views", type=int, default=32)
    ap.add_argument("--height", type=int, default=536)
    ap.add_argument("--width", type=int, default=960)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast (as the official inference)")
    ap.add_argument("--compile", action="store_true", help="torch.compile each block")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--paper-seconds", type=float, default=None, help="reference time to compare with")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    from tttlrm_ns.model import TttlrmModel, presets

    dev = torch.device(args.device)
    torch.manual_seed(0)
    cfg = getattr(presets, args.preset)(autocast_bf16=args.bf16, compile=args.compile)
    model = TttlrmModel(cfg).to(dev).eval()
    images = torch.rand(1, args.views, 3, args.height, args.width, device=dev)
    c2w, k = circle_cameras(args.views, args.height, args.width)
    c2w, k = c2w[None].to(dev), k[None].to(dev)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    times = []
    n_gauss = 0
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    with torch.inference_mode():
        for i in range(args.warmup + args.reps):
            sync()
            t0 = time.perf_counter()
            out = model(images, c2w, k)
            sync()
            dt = time.perf_counter() - t0
            n_gauss = out.gaussians.num
            finite = bool(torch.isfinite(out.gaussians.means).all())
            del out
            print(f"run {i} ({'warm-up' if i < args.warmup else 'timed'}): {dt:.3f} s", flush=True)
            if i >= args.warmup:
                times.append(dt)
    result = {
        "preset": args.preset, "parameters": model.num_parameters(), "views": args.views, "height": args.height,
        "width": args.width, "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "bf16": args.bf16, "compile": args.compile, "gaussians": n_gauss, "finite": finite,
        "seconds_median": statistics.median(times), "seconds_all": times,
        "peak_memory_gib": torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None,
    }
    if args.paper_seconds:
        result["paper_seconds"] = args.paper_seconds
        result["ratio_to_paper"] = result["seconds_median"] / args.paper_seconds
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0 if finite else 1


if __name__ == "__main__":
    sys.exit(main())

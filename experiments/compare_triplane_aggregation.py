#!/usr/bin/env python
"""Sum vs concatenation of the three plane features, measured by fitting planes + MLP to single objects.

For each of ``--objects`` synthetic object renders (training data, never the evaluation sets), the three feature
planes and the MLP of :class:`tttlrm_ns.triplane.model.TriplaneField` are optimised directly (no backbone) on all but
``--held-out`` views with random rays, then the held-out views are rendered and scored (PSNR). Both variants get the
same planes (resolution, channels), MLP width/depth, samples, steps and seeds; concatenation has a 3x wider first MLP
layer. Prints a markdown table (docs/benchmarks.md, section "Triplane object model").

  python experiments/compare_triplane_aggregation.py --data '/tmp/objects128/object_0000[0-2]' --steps 300
"""

from __future__ import annotations

import argparse
import glob
import os
import time
from pathlib import Path

import torch

from tttlrm_ns.data.object_frame import object_frame
from tttlrm_ns.data.scene import ResizeConfig, load_scene, load_views
from tttlrm_ns.eval.metrics import psnr
from tttlrm_ns.model.rays import pixel_rays
from tttlrm_ns.triplane.model import TRIPLANE_HEADS, TriplaneField


def fit(scene_dir: Path, aggregate: str, steps: int, held_out: int, res: int, rays: int, seed: int) -> float:
    head = TRIPLANE_HEADS["triplane_small"]
    cfg = type(head)(**{**head.__dict__, "aggregate": aggregate})
    scene = load_scene(scene_dir)
    views = load_views(scene, list(range(len(scene))), ResizeConfig(height=res, width=res, patch_size=1))
    tr = object_frame(scene.c2w[:4].double(), cfg.camera_distance)
    c2w = tr.apply(scene.c2w.double()).float()
    k = views.fxfycxcy.float()
    o, d = pixel_rays(c2w[None], k[None], res, res)  # [1, V, 3, H, W]
    o = o[0].permute(0, 2, 3, 1).reshape(len(scene), -1, 3)
    d = d[0].permute(0, 2, 3, 1).reshape(len(scene), -1, 3)
    rgb = views.images.permute(0, 2, 3, 1).reshape(len(scene), -1, 3)
    train = slice(held_out, None)
    torch.manual_seed(seed)
    field = TriplaneField(cfg)
    r = 64
    planes = torch.nn.Parameter(0.1 * torch.randn(1, 3, cfg.channels, r, r))
    opt = torch.optim.Adam([{"params": [planes], "lr": 3e-2}, {"params": field.parameters(), "lr": 3e-3}])
    bg = torch.ones(3)
    gen = torch.Generator().manual_seed(seed)
    ot, dt, ct = o[train].reshape(-1, 3), d[train].reshape(-1, 3), rgb[train].reshape(-1, 3)
    for _ in range(steps):
        idx = torch.randint(0, ot.shape[0], (rays,), generator=gen)
        out = field.render_rays(planes, ot[idx][None], dt[idx][None], bg, num_samples=32, stratified=True,
                                generator=gen)
        loss = (out["rgb"][0] - ct[idx]).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = field.render_rays(planes, o[:held_out].reshape(1, -1, 3), d[:held_out].reshape(1, -1, 3), bg,
                                num_samples=48, chunk=8192)
    pred = out["rgb"].view(held_out, res, res, 3).permute(0, 3, 1, 2)
    gt = rgb[:held_out].view(held_out, res, res, 3).permute(0, 3, 1, 2)
    return float(psnr(pred.clamp(0, 1), gt).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="glob of object folders (opencv_cameras.json)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--held-out", type=int, default=4)
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("--rays", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    dirs = sorted(Path(p) for p in glob.glob(a.data))
    if not dirs:
        raise SystemExit(f"no object folders match {a.data!r}")
    print(f"threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}, steps {a.steps}, {a.rays} rays/step, "
          f"{a.res}^2, held-out views {a.held_out}")
    print("| object | sum PSNR | concat PSNR | sum s | concat s |\n|---|---|---|---|---|")
    acc = {"sum": [], "concat": []}
    for d in dirs:
        row, secs = [], []
        for agg in ("sum", "concat"):
            t = time.perf_counter()
            v = fit(d, agg, a.steps, a.held_out, a.res, a.rays, a.seed)
            secs.append(time.perf_counter() - t)
            acc[agg].append(v)
            row.append(v)
        print(f"| {d.name} | {row[0]:.2f} | {row[1]:.2f} | {secs[0]:.0f} | {secs[1]:.0f} |", flush=True)
    print(f"| mean | {sum(acc['sum']) / len(dirs):.2f} | {sum(acc['concat']) / len(dirs):.2f} | | |")


if __name__ == "__main__":
    main()

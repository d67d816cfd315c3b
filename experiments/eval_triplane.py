#!/usr/bin/env python
"""Feed-forward evaluation of the triplane object model on an object scene (e.g. ../shared/data/gso_toy).

4 k-means input views (``tttlrm_ns.data.views``, seed 0) -> one triplane -> the held-out views (every other frame, or
with ``--split paper`` the frames ``tttlrm-eval`` holds out, for a comparison with the Gaussian models) rendered at
``--res``; PSNR / SSIM (scikit-image protocol) / LPIPS-VGG against the ground truth composited on white, the all-white
image's PSNR for reference, the prediction time and the render time per image (wall clock and CPU seconds of this
process: on a shared machine the wall time mostly measures waiting). Pure torch (no nerfstudio), the same
steps as ``ns-train tttlrm-triplane`` (object frame from the input cameras, inputs resized to the training
resolution; :func:`tttlrm_ns.triplane.held_out.render_held_out`).

  python experiments/eval_triplane.py ../shared/data/gso_toy --weights tttlrm_ns/assets/weights/tttlrm_triplane.safetensors \
      --res 256 --out /tmp/gso_toy_triplane.json --png docs/img/triplane_gso_toy.png
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from tttlrm_ns.data.scene import load_scene
from tttlrm_ns.data.views import ViewSelectionConfig, paper_protocol, select_views
from tttlrm_ns.eval import metrics
from tttlrm_ns.triplane.held_out import render_held_out
from tttlrm_ns.triplane.model import load_triplane, read_triplane_metadata


def evaluate_scene(model, meta: dict, scene_dir: Path, a) -> tuple[dict, torch.Tensor]:
    """One object scene -> (the numbers of the module docstring, a PNG grid [3, H', W'] of inputs / 4 predictions over
    the ground truth)."""
    in_res = a.input_res or max(int(v) for v in meta.get("trained.resolution", "64x64").split("x"))
    scene = load_scene(scene_dir)
    if a.split == "paper":  # tttlrm-eval's frames: every 8th held out, k-means inputs from the rest
        split = paper_protocol(scene, a.views)
        inputs, held = split.inputs, split.test[:: a.every]
    else:
        inputs = select_views(scene.c2w, ViewSelectionConfig(mode="kmeans", num_views=a.views),
                              where=f"{scene_dir}: ")
        held = [i for i in range(len(scene)) if i not in inputs][:: a.every]
    r = render_held_out(model, scene, inputs, held, in_res, a.res, a.samples, where=f"{scene_dir}: ")
    pred, gt = r.pred, r.gt
    t_pred, c_pred, t_render, c_render = r.prediction_wall_s, r.prediction_cpu_s, r.render_wall_s, r.render_cpu_s
    p = metrics.psnr(pred, gt)
    s = metrics.ssim(pred, gt, "skimage")
    lp = metrics.lpips(pred, gt, "vgg")
    base = metrics.psnr(torch.ones_like(gt), gt)
    res = {
        "scene": str(scene_dir), "weights": str(a.weights), "input_views": inputs, "held_out_views": held,
        "input_res": in_res, "res": a.res, "samples_per_ray": a.samples or model.tri.samples_per_ray,
        "psnr": float(p.mean()), "ssim": float(s.mean()), "lpips": float(lp.mean()), "all_white_psnr": float(base.mean()),
        "prediction_wall_s": t_pred, "prediction_cpu_s": c_pred,
        "render_wall_s_per_image_mean": sum(t_render) / len(t_render),
        "render_cpu_s_per_image_mean": sum(c_render) / len(c_render),
        "threads": torch.get_num_threads(), "load_avg_1min": os.getloadavg()[0],
        "per_view": [{"frame": h, "psnr": float(p[i]), "ssim": float(s[i]), "lpips": float(lp[i])}
                     for i, h in enumerate(held)],
    }
    k = min(4, len(held))
    up = torch.nn.functional.interpolate(r.inputs, size=(a.res, a.res), mode="nearest")
    top = torch.cat(list(up) + list(pred[:k]), dim=-1)
    bottom = torch.cat([torch.ones_like(up[0])] * len(inputs) + list(gt[:k]), dim=-1)
    return res, torch.cat([top, bottom], dim=-2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenes", type=Path, nargs="+", help="object scene folders (several: means over the scenes too)")
    ap.add_argument("--weights", type=Path, default=Path("tttlrm_ns/assets/weights/tttlrm_triplane.safetensors"))
    ap.add_argument("--views", type=int, default=4, help="input views (k-means)")
    ap.add_argument("--res", type=int, default=256, help="side of the rendered held-out views")
    ap.add_argument("--input-res", type=int, default=None, help="model input side (default: trained resolution)")
    ap.add_argument("--samples", type=int, default=None, help="samples per ray (default: the checkpoint's)")
    ap.add_argument("--split", choices=("all", "paper"), default="all",
                    help="all: every non-input frame is held out; paper: every 8th frame (as tttlrm-eval), inputs "
                         "chosen from the rest")
    ap.add_argument("--every", type=int, default=1, help="evaluate every k-th held-out view (CPU time)")
    ap.add_argument("--out", type=Path, default=None, help="JSON with per-view and mean numbers")
    ap.add_argument("--png", type=Path, default=None,
                    help="inputs | 4 held-out predictions over ground truth (first scene)")
    a = ap.parse_args()

    model = load_triplane(a.weights).eval()
    meta = read_triplane_metadata(a.weights)
    results, grid = [], None
    for scene_dir in a.scenes:
        res, g = evaluate_scene(model, meta, scene_dir, a)
        grid = g if grid is None else grid
        results.append(res)
        print(json.dumps({k: v for k, v in res.items() if k != "per_view"}, indent=1))
    out = results[0]
    if len(results) > 1:
        keys = ("psnr", "ssim", "lpips", "all_white_psnr", "prediction_cpu_s", "render_cpu_s_per_image_mean")
        out = {"weights": str(a.weights), "scenes": len(results), **{k: sum(r[k] for r in results) / len(results)
                                                                     for k in keys}, "per_scene": results}
        print(json.dumps({k: v for k, v in out.items() if k != "per_scene"}, indent=1))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(out, indent=1))
    if a.png:
        from PIL import Image

        a.png.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((grid.permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(a.png)


if __name__ == "__main__":
    main()

"""Figure of the footprint filter: held-out objects predicted from low-resolution inputs and rendered finer.

    python scripts/plot_footprint_filter.py /work/data_synth/zv512_val_s202/zeroverse_0000{0,1,2} \
        --weights tttlrm_ns/assets/weights/tttlrm_object.safetensors --out docs/img/footprint_filter.png

Per object (one row): one of the inputs at the input size, the ground truth of a novel view at the stored size, the
render of the raw prediction and the render with the pipeline's footprint filter
(:func:`tttlrm_ns.gaussians.widen_to_footprint`), each titled with its PSNR. Inputs and novel views are chosen as
``tttlrm_ns.train.holdout`` does for objects (farthest-point inputs, the first other view as the novel one).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from tttlrm_ns import conventions
from tttlrm_ns.data.normalize import NormalizeConfig, normalize_views
from tttlrm_ns.data.scene import ResizeConfig, load_scene, load_views
from tttlrm_ns.eval.metrics import psnr
from tttlrm_ns.gaussians import PruneConfig, input_footprint, prune, widen_to_footprint
from tttlrm_ns.model.checkpoint import load_model
from tttlrm_ns.render.splat import render_gaussians
from tttlrm_ns.train.holdout import choose_views


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scenes", nargs="+", type=Path, help="object scene folders (opencv_cameras.json layout)")
    p.add_argument("--weights", type=Path, required=True, help="object model .safetensors")
    p.add_argument("--views", type=int, default=8, help="input views")
    p.add_argument("--input-size", type=int, default=64, help="input side in pixels (the model's training size)")
    p.add_argument("--filter", type=float, default=0.1, help="footprint filter variance (input pixels^2)")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    torch.set_num_threads(1)
    model = load_model(a.weights).eval()
    white = torch.ones(3)
    resize = ResizeConfig(height=a.input_size, width=a.input_size, orientation="fixed",
                          patch_size=model.cfg.patch_size)
    fig, axes = plt.subplots(len(a.scenes), 4, figsize=(12, 3.1 * len(a.scenes)), squeeze=False)
    for row, scene_dir in zip(axes, a.scenes):
        scene = load_scene(scene_dir)
        inputs, targets = choose_views(scene.c2w, a.views, 1, "sphere", 0)
        c2w_in, c2w_t, _ = normalize_views(scene.c2w[inputs], scene.c2w[targets], NormalizeConfig(method="mean_cam"))
        vin = load_views(scene, inputs, resize)
        full = ResizeConfig(height=scene.height, width=scene.width, orientation="fixed", patch_size=1)
        vt = load_views(scene, targets, full)
        with torch.inference_mode():
            g = model(vin.images[None], c2w_in[None].float(), vin.fxfycxcy[None].float()).gaussians[0]
            g = prune(g, PruneConfig(keep_top=0.4, keep_random=0.1), len(inputs), torch.Generator().manual_seed(0))
            fp = input_footprint(g.means, c2w_in.float(), vin.fxfycxcy.float(), a.input_size, a.input_size)
            K = conventions.fxfycxcy_to_K(vt.fxfycxcy.float())
            renders = [render_gaussians(x, c2w_t.float(), K, scene.width, scene.height, background=white)
                       .rgb.clamp(0, 1)[0].permute(2, 0, 1) for x in (g, widen_to_footprint(g, fp, a.filter))]
        gt = vt.images[0]
        panels = [(vin.images[0], f"input ({a.input_size}x{a.input_size}, 1 of {a.views})"),
                  (gt, f"novel view ({scene.width}x{scene.height})"),
                  (renders[0], f"raw prediction: {float(psnr(renders[0][None], gt[None])):.2f} dB"),
                  (renders[1], f"footprint filter {a.filter}: {float(psnr(renders[1][None], gt[None])):.2f} dB")]
        for ax, (img, title) in zip(row, panels):
            ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.suptitle(f"{a.weights.name}: held-out objects, {a.views} inputs at {a.input_size}^2, rendered at the stored size")
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=90)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

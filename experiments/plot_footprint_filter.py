"""Figure of the footprint filter: held-out objects predicted from low-resolution inputs and rendered finer.

    python experiments/plot_footprint_filter.py data/synthetic/zv512_val_s202/zeroverse_0000{0,1,2} \
        --weights tttlrm_ns/assets/weights/tttlrm_object.safetensors --out docs/img/footprint_filter.png

Per object (one row): one of the inputs at the input size, the ground truth of a novel view at the stored size, the
render of the raw prediction and the render with the pipeline's footprint filter
(:func:`tttlrm_ns.gaussians.widen_to_footprint`), each titled with its PSNR. The steps are
``tttlrm_ns.train.holdout``'s (:func:`~tttlrm_ns.train.holdout.predict_novel_views`: the training config's input
size and normalisation, then ``tttlrm_ns.infer.reconstruct`` with the pipeline's defaults for the run's kind, pruning
seed 0; farthest-point inputs, the first other view as the novel one), the novel view rendered at the stored size
(a whole multiple of the config's input size).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from tttlrm_ns.data.scene import load_scene
from tttlrm_ns.eval.metrics import psnr
from tttlrm_ns.model.checkpoint import load_model
from tttlrm_ns.train.config import load_yaml_config
from tttlrm_ns.train.holdout import choose_views, predict_novel_views, reconstruct_config, render_novel_views


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scenes", nargs="+", type=Path, help="object scene folders (opencv_cameras.json layout)")
    p.add_argument("--weights", type=Path, required=True, help="object model .safetensors")
    p.add_argument("--views", type=int, default=8, help="input views")
    p.add_argument("--config", type=Path, default=Path("configs/object_cpu64.yaml"),
                   help="training config of the weights (input size, normalisation, pruning, rendering)")
    p.add_argument("--filter", type=float, default=0.1, help="footprint filter variance (input pixels^2)")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    torch.set_num_threads(1)
    model = load_model(a.weights).eval()
    cfg = load_yaml_config(a.config)
    size = f"{cfg.data.width}x{cfg.data.height}"
    fig, axes = plt.subplots(len(a.scenes), 4, figsize=(12, 3.1 * len(a.scenes)), squeeze=False)
    for row, scene_dir in zip(axes, a.scenes):
        scene = load_scene(scene_dir)
        scale = scene.width // cfg.data.width
        if scale * cfg.data.width != scene.width or scale * cfg.data.height != scene.height:
            raise SystemExit(f"{scene_dir}: stored size {scene.width}x{scene.height} is not a whole multiple of the "
                             f"config's input size {size}")
        inputs, targets = choose_views(scene.c2w, a.views, 1, "sphere", 0)
        with torch.inference_mode():
            nv = predict_novel_views(model, cfg, scene, inputs, targets, scale,
                                     dataclasses.replace(reconstruct_config(cfg), seed=0))
            renders = [render_novel_views(nv, cfg, v)[0] for v in (0.0, a.filter)]
        vin, vt = nv.inputs, nv.targets
        gt = vt.images[0]
        panels = [(vin.images[0], f"input ({size}, 1 of {a.views})"),
                  (gt, f"novel view ({scene.width}x{scene.height})"),
                  (renders[0], f"raw prediction: {float(psnr(renders[0][None], gt[None])):.2f} dB"),
                  (renders[1], f"footprint filter {a.filter}: {float(psnr(renders[1][None], gt[None])):.2f} dB")]
        for ax, (img, title) in zip(row, panels):
            ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.suptitle(f"{a.weights.name}: held-out objects, {a.views} inputs at {size}, rendered at the stored size")
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=90)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

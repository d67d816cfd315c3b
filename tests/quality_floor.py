"""Shared by the quality-floor tests of bundled weights: render held-out views of a bundled scene from its input
views and compare with the best flat colour a model could guess from its inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from tttlrm_ns import conventions
from tttlrm_ns.infer import mvs_gaussians, normalise_for_model
from tttlrm_ns.data.scene import ResizeConfig, load_scene, load_views
from tttlrm_ns.eval.metrics import psnr
from tttlrm_ns.gaussians import PruneConfig, prune
from tttlrm_ns.model import TttlrmModel
from tttlrm_ns.render.splat import render_gaussians


def _held_out_views(scene_dir: Path, height: int, width: int, inputs: Sequence[int], held_out: Sequence[int],
                    patch: int, normalization: str, scale: str):
    """(input views, held-out views, the inputs' frame as the pipeline builds it, held-out cameras in that frame)."""
    scene = load_scene(scene_dir)
    resize = ResizeConfig(height=height, width=width, orientation="fixed", patch_size=patch)
    ins, outs = list(inputs), list(held_out)
    vin, vt = load_views(scene, ins, resize), load_views(scene, outs, resize)
    norm = normalise_for_model(vin.images, scene.c2w[ins], vin.fxfycxcy, normalization, scale)
    return vin, vt, norm, norm.transform.apply(scene.c2w[outs].double()).float()


def _render_psnr(g, c2w_t: torch.Tensor, vt, height: int, width: int) -> torch.Tensor:
    """PSNR [T] of ``g`` rendered on white into the held-out cameras against their images."""
    out = render_gaussians(g, c2w_t, conventions.fxfycxcy_to_K(vt.fxfycxcy.float()), width, height,
                           background=torch.ones(3))
    return psnr(out.rgb.clamp(0, 1).permute(0, 3, 1, 2), vt.images)


def held_out_psnr(model: TttlrmModel, scene_dir: Path, height: int, width: int, inputs: Sequence[int],
                  held_out: Sequence[int], keep_top: float = 0.0, normalization: str = "mean_cam",
                  scale: str = "extent") -> tuple[torch.Tensor, torch.Tensor, int]:
    """(PSNR [T] of the model's renders of the held-out views, PSNR [T] of the inputs' mean colour, number of
    predicted Gaussians). White background, as the nerfstudio methods render; cameras normalised as the model was
    trained (``normalization``: mean_cam for the full model, first_cam for the autoregressive one; ``scale``: the
    weights' ``trained.scale``, with ``median_depth`` measured by a plane sweep as the pipeline does).
    ``keep_top`` > 0: opacity pruning as the nerfstudio pipeline does (that fraction by opacity, 0.1 of the rest)."""
    vin, vt, norm, c2w_t = _held_out_views(scene_dir, height, width, inputs, held_out, model.cfg.patch_size,
                                           normalization, scale)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small forward; two threads on a busy 2-core machine were 30x slower
    try:
        with torch.inference_mode():
            g = model(vin.images[None], norm.c2w[None], vin.fxfycxcy[None].float()).gaussians[0]
            for t in (g.means, g.sh, g.log_scales, g.quats, g.opacity_logits):
                assert torch.isfinite(t).all()
            if keep_top > 0:
                g = prune(g, PruneConfig(keep_top=keep_top, keep_random=0.1), len(inputs),
                          torch.Generator().manual_seed(0))
            trained = _render_psnr(g, c2w_t, vt, height, width)
    finally:
        torch.set_num_threads(threads)
    flat = vin.images.mean(dim=(0, 2, 3))[None, :, None, None].expand_as(vt.images)
    return trained, psnr(flat, vt.images), g.num


def mvs_held_out_psnr(scene_dir: Path, height: int, width: int, inputs: Sequence[int],
                      held_out: Sequence[int]) -> torch.Tensor:
    """PSNR [T] of the non-learned ``--pipeline.init mvs`` Gaussians (plane-sweep depth, input colours) on the same
    views: the bar a model that reads measured geometry has to clear."""
    vin, vt, norm, c2w_t = _held_out_views(scene_dir, height, width, inputs, held_out, 8, "mean_cam",
                                           "median_depth")
    g = mvs_gaussians(vin.images, norm.c2w, vin.fxfycxcy.float(), *norm.frame_range())
    return _render_psnr(g, c2w_t, vt, height, width)

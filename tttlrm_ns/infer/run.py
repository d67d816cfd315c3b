"""Prepared input views -> Gaussians in the world frame: the whole feed-forward run after :func:`prepare_inputs`.

Pure torch, no nerfstudio. :func:`reconstruct_scene` loads the weights (or runs the non-learned ``mvs``
initialiser), reconstructs in the model's frame (:func:`tttlrm_ns.infer.scene.reconstruct`: chunked prediction,
free-space filter, pruning), applies the footprint filter (to the ``mvs`` Gaussians too), checks that the result
reproduces its own input views (:func:`~tttlrm_ns.infer.scene.check_plausibility`), frees the backbone and maps the
Gaussians back to the world (:func:`~tttlrm_ns.infer.scene.to_world`). The nerfstudio method calls it on first
need (:class:`tttlrm_ns.ns.pipeline.TttlrmPipeline`); what it decides is logged through ``log`` (warnings start
with ``WARNING:``) and returned (:class:`SceneReconstruction`).
"""

from __future__ import annotations

import dataclasses
import gc
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import Tensor

from tttlrm_ns.gaussians import Gaussians
from tttlrm_ns.infer.inputs import Log, PreparedInputs, _quiet
from tttlrm_ns.infer.scene import (
    Plausibility,
    ReconstructConfig,
    check_plausibility,
    footprint_filtered,
    mvs_gaussians,
    reconstruct,
    to_world,
)
from tttlrm_ns.model import TttlrmConfig

RUNTIME_OPTIONS = ("scan", "ar_chunk_views", "elastic_lambda", "autocast_bf16", "compile")
"""Options of a backbone configuration that may differ from a ``.safetensors`` file's stored one (no shape
changes): the run's scan, chunking, selective update, bf16 and compile."""


@dataclass
class SceneReconstruction:
    """What :func:`reconstruct_scene` returns."""

    gaussians: Gaussians
    """Unbatched Gaussians in the world frame of the input cameras."""
    plausibility: Optional[Plausibility]
    """The input-view check (None: not run)."""
    seconds: float
    """Wall time of the run (loading the weights included)."""


def plausibility_render(background: Tensor) -> Callable:
    """The render call of the plausibility check: the project's renderer on ``background``, no gradients."""
    from tttlrm_ns.render.splat import render_gaussians

    def render(g, c2w, ks, width, height):
        return render_gaussians(g, c2w, ks, width, height, background=background.to(c2w.device).float()).rgb

    return render


@torch.no_grad()
def reconstruct_scene(inputs: PreparedInputs, cfg: ReconstructConfig, weights: Optional[Path] = None,
                      model_cfg: Optional[TttlrmConfig] = None, device: str = "cpu", plausibility_check: bool = True,
                      log: Log = _quiet) -> SceneReconstruction:
    """World-frame Gaussians from prepared input views (steps: module docstring).

    Args:
        inputs: :func:`tttlrm_ns.infer.inputs.prepare_inputs`'s result; ``inputs.init`` says model or ``mvs``.
        cfg: pruning, free-space filter, footprint filter, chunking, seed (the footprint filter applies to the
            ``mvs`` Gaussians too, the rest only to the network's).
        weights, model_cfg: the weights file and the backbone configuration to load it with (its
            :data:`RUNTIME_OPTIONS` override the file's); unused with ``mvs``.
        device: where the backbone runs and the Gaussians end up.
    """
    t0 = time.perf_counter()
    dev = torch.device(device)
    c2w, k = inputs.c2w, inputs.fxfycxcy
    if inputs.init == "mvs":
        g = mvs_gaussians(inputs.images, c2w, k, *inputs.norm.frame_range()).to(dev)
        log(f"--pipeline.init mvs: {g.num} Gaussians at the plane-sweep depth of the confidently matched pixels "
            "(no network)")
    else:
        if weights is None or model_cfg is None:
            raise ValueError("reconstruct_scene needs the weights and their configuration unless inputs.init is 'mvs'")
        from tttlrm_ns.model import checkpoint

        overrides = {name: getattr(model_cfg, name) for name in RUNTIME_OPTIONS}
        model = checkpoint.load_any(weights, model_cfg, **overrides).to(dev).eval()
        g = reconstruct(model, inputs.images.to(dev), c2w.to(dev), k.to(dev),
                        dataclasses.replace(cfg, footprint_filter=0.0))
        del model  # the backbone is not part of the result
        if cfg.free_space.enabled:
            log(f"free-space filter: Gaussians in front of the surface of >= {cfg.free_space.min_views} other input "
                f"views by more than {cfg.free_space.tolerance:g} of their depth removed before pruning "
                "(--pipeline.free-space.tolerance 0 turns it off)")
    if cfg.footprint_filter > 0:
        g = footprint_filtered(g, c2w, k, inputs.height, inputs.width, cfg.footprint_filter)
        log(f"every Gaussian widened by {cfg.footprint_filter} input pixels^2 of variance (Mip-Splatting's 3D filter "
            "at the input views' sampling rate: renders finer than the input show surfaces, not dots; "
            "--pipeline.footprint-filter 0 keeps the model's raw output)")
    check = None
    if plausibility_check:
        check = check_plausibility(g, inputs.images.to(dev), c2w.to(dev), k.to(dev),
                                   plausibility_render(inputs.background), source=inputs.init)
        log(f"WARNING: {check.warning}" if check.warning else
            f"plausibility check passed: the Gaussians reproduce input views {check.views} at "
            f"{check.input_psnr:.1f} dB")
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    out = to_world(g, inputs.norm.transform)
    seconds = time.perf_counter() - t0
    log(f"predicted {out.num} Gaussians from {inputs.num_views} views in {seconds:.1f} s")
    return SceneReconstruction(out, check, seconds)


__all__ = ["RUNTIME_OPTIONS", "SceneReconstruction", "plausibility_render", "reconstruct_scene"]

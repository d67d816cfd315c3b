"""How the trainer renders Gaussians: the run's render settings on top of the one render path
(:func:`tttlrm_ns.render.splat.render_gaussians`). Used by the Gaussian model kind's loss
(:mod:`tttlrm_ns.train.gaussian`) and by held-out evaluation (:mod:`tttlrm_ns.train.holdout`)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from tttlrm_ns.conventions import fxfycxcy_to_K
from tttlrm_ns.gaussians import Gaussians
from tttlrm_ns.render.splat import render_gaussians

from .config import TrainConfig


def resolve_rasterize(backend: str) -> Callable:
    """``tttlrm_ns.render.rasterize`` with ``backend`` bound (``auto``: the function itself); an import failure
    says what to build or install."""
    try:
        from tttlrm_ns.render import rasterize
    except ImportError as e:
        raise ImportError(f"the trainer renders through tttlrm_ns.render.rasterize, which cannot be imported ({e}); "
                          "build the CPU rasteriser or install gsplat for CUDA") from e
    if backend == "auto":
        return rasterize
    return lambda *a, **k: rasterize(*a, backend=backend, **k)


def render_views(g: Gaussians, c2w: Tensor, fxfycxcy: Tensor, height: int, width: int, cfg: TrainConfig,
                 rasterize_fn: Callable) -> Tensor:
    """Render unbatched Gaussians [N, ...] into T views (``c2w`` [T, 4, 4], ``fxfycxcy`` [T, 4]) -> [T, 3, H, W].

    The run's render settings (``cfg.render``, ``cfg.data.background``) through
    :func:`tttlrm_ns.render.splat.render_gaussians`: the official renderer's fp32, classic rasterisation and
    background colour. Cameras get no gradient.
    """
    r = cfg.render
    bg = torch.tensor(cfg.data.background, dtype=torch.float32, device=c2w.device)  # [3]
    out = render_gaussians(g, c2w.detach(), fxfycxcy_to_K(fxfycxcy.float()).detach(), width, height, background=bg,
                           near_plane=r.near_plane, far_plane=r.far_plane, eps2d=r.eps2d, backend=r.backend,
                           rasterize_fn=rasterize_fn, deferred=r.deferred, deferred_patch=r.deferred_patch)
    return out.rgb.permute(0, 3, 1, 2)


__all__ = ["render_views", "resolve_rasterize"]

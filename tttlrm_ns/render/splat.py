"""Gaussians + OpenCV cameras -> images: the one render path above :func:`tttlrm_ns.render.rasterize`.

Every caller that turns Gaussians into pictures goes through :func:`render_gaussians`: the nerfstudio models'
``get_outputs`` (tttLRM and splatfacto-cpu, via :mod:`tttlrm_ns.ns.splat_render`), the pretraining trainer and its
held-out evaluation (:func:`tttlrm_ns.train.render.render_views`) and the quality-floor tests. It

1. activates the stored parameters as gsplat takes them: ``exp`` of the log scales, ``sigmoid`` of the opacity
   logits, SH coefficients as they are (the rasteriser adds 0.5 and normalises the raw quaternions);
2. turns OpenCV camera-to-world poses into world-to-camera ``viewmats`` (closed-form rigid inverse,
   :mod:`tttlrm_ns.conventions`);
3. rasterises with any backend, an injected stand-in with ``rasterize``'s signature, or with deferred
   backpropagation (:mod:`tttlrm_ns.render.deferred`);
4. composites the background behind the Gaussians (``rgb + (1 - alpha) * background``, as splatfacto does) and,
   on request, returns the expected depth.

Rendering is float32 (the official renderer's precision) whatever the dtype of the Gaussians.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Dict, Optional

import torch
from torch import Tensor

from tttlrm_ns import conventions
from tttlrm_ns.gaussians import Gaussians
from tttlrm_ns.render import rasterize
from tttlrm_ns.render.deferred import deferred_rasterize


@dataclass
class RenderedViews:
    """What :func:`render_gaussians` returns for C cameras of H x W pixels."""

    rgb: Tensor
    """[C, H, W, D] colour over the background (D = 3 for SH colours); not clamped, so losses see the raw render."""
    alpha: Tensor
    """[C, H, W, 1] accumulated opacity."""
    depth: Optional[Tensor]
    """[C, H, W, 1] expected depth (None unless asked for); pixels no Gaussian reaches hold the largest depth
    rendered in the batch (splatfacto's choice, so depth maps have no holes at 0)."""
    meta: Dict[str, Any]
    """The rasteriser's per-Gaussian data (``radii``, ``means2d``, ...; see ``rasterize``), read by densification
    strategies; empty for deferred rendering, which keeps no graph of the forward pass."""


def render_gaussians(
    g: Gaussians,  # unbatched, N Gaussians
    c2w: Tensor,  # [C, 3|4, 4] OpenCV camera-to-world
    Ks: Tensor,  # [C, 3, 3] pixel intrinsics
    width: int,
    height: int,
    background: Optional[Tensor] = None,  # [3] or [C, 3]
    sh_degree: Optional[int] = None,
    colors: Optional[Tensor] = None,  # [N, D] post-activation
    depth: bool = False,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    rasterize_mode: str = "classic",
    backend: str = "auto",
    absgrad: bool = False,
    rasterize_fn: Optional[Callable] = None,
    deferred: bool = False,
    deferred_patch: Optional[int] = None,
) -> RenderedViews:
    """Render the unbatched Gaussians ``g`` into C OpenCV cameras (see the module docstring).

    Args:
        g: pre-activation Gaussians [N, ...] (:class:`tttlrm_ns.gaussians.Gaussians`); gradients flow to them.
        c2w: [C, 3|4, 4] OpenCV camera-to-world, rigid; gradients flow to it unless rendering is deferred.
        Ks: [C, 3, 3] intrinsics of the ``width`` x ``height`` images (pixel-centre rule of ``conventions``).
        background: colour behind the Gaussians, [3] or one per camera [C, 3]; None leaves it black (0).
        sh_degree: SH bands rendered (None: all of ``g.sh``).
        colors: post-activation colours [N, D] rendered instead of the SH (``sh_degree`` is then ignored), e.g.
            splatfacto's ``sigmoid(features_dc)`` at ``sh_degree = 0``.
        depth: also render the expected depth (render mode ``RGB+ED``).
        near_plane, far_plane, eps2d, rasterize_mode, backend, absgrad: as in ``rasterize``.
        rasterize_fn: a renderer with ``rasterize``'s signature used instead of ``rasterize(backend=backend)``
            (the trainer's injected renderer, test stand-ins).
        deferred: render with deferred backpropagation (memory of one view in backward; cameras get no gradient).
        deferred_patch: with ``deferred``, render windows of this many pixels (CPU backends only; ``rasterize_fn``
            is then not used).
    """
    if g.means.dim() != 2:
        raise ValueError(f"render_gaussians takes unbatched Gaussians [N, 3], got means {tuple(g.means.shape)}")
    if colors is None:
        feats, degree = g.sh.float(), (g.sh_degree if sh_degree is None else sh_degree)  # [N, K, 3]
    else:
        feats, degree = colors.float(), None  # [N, D]
    args = (
        g.means.float(),
        g.quats.float(),
        torch.exp(g.log_scales.float()),
        torch.sigmoid(g.opacity_logits.float())[..., 0],  # [N]
        feats,
        conventions.c2w_to_w2c(c2w.float()),  # [C, 4, 4] viewmats
        Ks.float(),
        width,
        height,
    )
    kwargs = dict(near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, sh_degree=degree,
                  render_mode="RGB+ED" if depth else "RGB", rasterize_mode=rasterize_mode, absgrad=absgrad)
    if rasterize_fn is None:
        rasterize_fn = partial(rasterize, backend=backend)
    meta: Dict[str, Any] = {}
    if deferred:
        if deferred_patch is not None:  # window rendering is a feature of the CPU backends, not of rasterize_fn
            if backend != "auto":
                kwargs["backend"] = backend
            render, alpha = deferred_rasterize(*args, patch_size=deferred_patch, **kwargs)
        else:
            render, alpha = deferred_rasterize(*args, rasterize_fn=rasterize_fn, **kwargs)
    else:
        render, alpha, meta = rasterize_fn(*args, **kwargs)

    rgb = render[..., :-1] if depth else render  # [C, H, W, D]
    if background is not None:
        bg = background if background.dim() == 1 else background[:, None, None, :]
        rgb = rgb + (1 - alpha) * bg
    expected_depth = None
    if depth:
        d = render[..., -1:]  # [C, H, W, 1]
        expected_depth = torch.where(alpha > 0, d, d.detach().max())
    return RenderedViews(rgb=rgb, alpha=alpha, depth=expected_depth, meta=meta)


__all__ = ["RenderedViews", "render_gaussians"]

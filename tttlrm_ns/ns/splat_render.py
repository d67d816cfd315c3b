"""``get_outputs`` of our two ``SplatfactoModel`` subclasses: one nerfstudio camera through ``render_gaussians``.

nerfstudio hands the model a ``Cameras`` object (OpenGL camera-to-world in the dataparser's frame, pixel
intrinsics) and keeps the Gaussians in splatfacto's ``gauss_params``. :func:`render_camera` converts both at this
boundary (:mod:`tttlrm_ns.conventions`, :meth:`tttlrm_ns.gaussians.Gaussians.from_splatfacto`) and renders with
:func:`tttlrm_ns.render.splat.render_gaussians`, so the tttLRM model (:mod:`tttlrm_ns.ns.model`) and splatfacto-cpu
(:mod:`tttlrm_ns.ns.splatfacto_cpu`) differ only in what they pass: the SH bands (tttLRM: all from step 0;
splatfacto: its progressive schedule, or logit RGB at ``sh_degree = 0``) and whether non-pinhole cameras are refused.

The rest is splatfacto's ``get_outputs`` (nerfstudio 1.1.5): the camera optimiser's pose in training, the crop box
at evaluation, the resolution schedule, the densification strategy's hook, the bilateral grid.
:func:`densify_strategy` is that strategy, splatfacto's, for both.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Union

import torch
from torch import Tensor

from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.models.splatfacto import SplatfactoModel

from tttlrm_ns import conventions
from tttlrm_ns.gaussians import Gaussians
from tttlrm_ns.render.splat import render_gaussians


def render_camera(
    model: SplatfactoModel, camera: Cameras, sh_degree: Optional[int], pinhole_only: bool = False
) -> Dict[str, Union[Tensor, List]]:
    """Render one camera of ``model``: rgb [H, W, 3] in [0, 1], depth [H, W, 1] or None, accumulation [H, W, 1],
    background ([3] in training, [H, W, 3] otherwise).

    Args:
        model: a ``SplatfactoModel`` whose config has ``rasterize_backend``.
        camera: one nerfstudio camera.
        sh_degree: SH bands rendered; None renders ``sigmoid(features_dc)`` as plain RGB (splatfacto's storage at
            ``sh_degree = 0``).
        pinhole_only: refuse non-perspective cameras instead of rendering them as pinholes.

    Sets ``model.info`` (the rasteriser's meta, which gsplat's densification strategy reads after backward) and
    ``model.last_size``.
    """
    if not isinstance(camera, Cameras):
        raise TypeError(f"get_outputs expects a nerfstudio Cameras object, got {type(camera).__name__}")
    if camera.shape[0] != 1:
        raise ValueError(f"renders one camera at a time, got {camera.shape[0]}")
    if pinhole_only and int(camera.camera_type[0].item()) != CameraType.PERSPECTIVE.value:
        raise ValueError("tttLRM renders pinhole (perspective) cameras only")
    cfg = model.config
    if cfg.rasterize_mode not in ("antialiased", "classic"):
        raise ValueError(f"unknown rasterize_mode {cfg.rasterize_mode!r}; use 'classic' or 'antialiased'")
    c2w = model.camera_optimizer.apply_to_camera(camera) if model.training else camera.camera_to_worlds  # [1, 3, 4]

    params = dict(model.gauss_params.items())
    W, H = int(camera.width.item()), int(camera.height.item())
    background = model._get_background_color()  # [3]
    if model.crop_box is not None and not model.training:
        inside = model.crop_box.within(params["means"]).squeeze(-1)  # [N] bool
        params = {k: v[inside] for k, v in params.items()}
    if params["means"].shape[0] == 0:
        return model.get_empty_outputs(W, H, background)

    Ks = camera.get_intrinsics_matrices().to(model.device)  # [1, 3, 3]
    scale = model._get_downscale_factor()  # splatfacto's resolution schedule / the refinement's early steps
    if scale > 1:  # a power of two: the same pixel grid as the area-downsampled target (splatfacto's resize_image)
        Ks = torch.cat([Ks[:, :2] / scale, Ks[:, 2:]], dim=1)
        W, H = W // scale, H // scale
    model.last_size = (H, W)

    g = Gaussians.from_splatfacto(params)
    out = render_gaussians(
        g,
        conventions.opengl_to_opencv_c2w(c2w.to(model.device)),
        Ks,
        W,
        H,
        background=background,
        sh_degree=sh_degree,
        colors=torch.sigmoid(g.sh[:, 0]) if sh_degree is None else None,  # [N, 3]
        depth=cfg.output_depth_during_training or not model.training,
        rasterize_mode=cfg.rasterize_mode,
        backend=cfg.rasterize_backend,
        absgrad=model.strategy is not None and model.strategy.absgrad,
    )
    model.info = out.meta
    if model.strategy is not None:
        model.info.setdefault("gaussian_ids", None)  # gsplat's unpacked meta carries it as None; the strategy asks
        if model.training:  # retains the means2d gradient that DefaultStrategy reads after backward
            model.strategy.step_pre_backward(model.gauss_params, model.optimizers, model.strategy_state, model.step,
                                             model.info)

    rgb = torch.clamp(out.rgb, 0.0, 1.0)  # [1, H, W, 3]
    if cfg.use_bilateral_grid and model.training and camera.metadata is not None and "cam_idx" in camera.metadata:
        rgb = model._apply_bilateral_grid(rgb, camera.metadata["cam_idx"], H, W)
    if not model.training:
        background = background.expand(H, W, 3)
    depth = None if out.depth is None else out.depth.squeeze(0)  # [H, W, 1]
    return {"rgb": rgb.squeeze(0), "depth": depth, "accumulation": out.alpha.squeeze(0), "background": background}


def densify_strategy(config, num_train_data: int):
    """splatfacto's densification strategy (gsplat ``DefaultStrategy``) from a splatfacto model config: what
    ``SplatfactoModel.populate_modules`` builds (nerfstudio 1.1.5); returns (strategy, its initial state)."""
    from gsplat.strategy import DefaultStrategy

    c = config
    strategy = DefaultStrategy(
        prune_opa=c.cull_alpha_thresh,
        grow_grad2d=c.densify_grad_thresh,
        grow_scale3d=c.densify_size_thresh,
        grow_scale2d=c.split_screen_size,
        prune_scale3d=c.cull_scale_thresh,
        prune_scale2d=c.cull_screen_size,
        refine_scale2d_stop_iter=c.stop_screen_size_at,
        refine_start_iter=c.warmup_length,
        refine_stop_iter=c.stop_split_at,
        reset_every=c.reset_alpha_every * c.refine_every,
        refine_every=c.refine_every,
        pause_refine_after_reset=num_train_data + c.refine_every,
        absgrad=c.use_absgrad,
        revised_opacity=False,
        verbose=True,
    )
    return strategy, strategy.initialize_state(scene_scale=1.0)


__all__ = ["densify_strategy", "render_camera"]

"""nerfstudio cameras and cached images -> the model's input views.

nerfstudio stores OpenGL camera-to-world matrices in the dataparser's frame (possibly re-oriented, re-centred and
scaled) and caches images as ``[H, W, C]`` tensors at the cameras' resolution (already undistorted). The model wants
OpenCV c2w, pixel intrinsics and ``[V, 3, H, W]`` images whose sides are multiples of its patch size.

Resizing (``docs`` in :mod:`tttlrm_ns.data.scene`): a uniform scale that covers the target size followed by a centre
crop keeps the aspect ratio (``mode="crop"``); ``"stretch"`` scales x and y independently as the official loader
does. Intrinsics follow exactly (pixel-centre rule, :mod:`tttlrm_ns.conventions`). uint8 images are resized with
PIL's Lanczos filter (the official loader's), float images with antialiased bicubic interpolation.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tttlrm_ns import conventions
from tttlrm_ns.data.scene import ResizeConfig, ResizePlan, plan_resize


def cameras_to_opencv(c2w_gl: Tensor, fx: Tensor, fy: Tensor, cx: Tensor, cy: Tensor) -> tuple[Tensor, Tensor]:
    """nerfstudio camera fields -> (OpenCV c2w [V, 4, 4] float64, fxfycxcy [V, 4] float64).

    Args:
        c2w_gl: [V, 3, 4] OpenGL camera-to-world. fx, fy, cx, cy: [V, 1] (or [V]) pixel intrinsics.
    """
    c2w = conventions.opengl_to_opencv_c2w(conventions.to_homogeneous_pose(c2w_gl.detach().double().cpu()))
    k = torch.stack([t.detach().reshape(-1).double().cpu() for t in (fx, fy, cx, cy)], dim=-1)
    return c2w, k


def dataparser_to_original(c2w: Tensor, transform: Tensor, scale: float) -> Tensor:
    """c2w [V, 4, 4] in a dataparser's frame -> float64 c2w in the frame of the original data.

    ``transform`` is nerfstudio's ``dataparser_transform`` [3, 4] (rigid) and ``scale`` its ``dataparser_scale``
    (:meth:`tttlrm_ns.conventions.Similarity.from_nerfstudio`). Works for OpenCV and OpenGL camera axes alike.
    """
    return conventions.Similarity.from_nerfstudio(transform, scale).invert(c2w.double())


def make_plan(
    width: int,
    height: int,
    patch: int,
    target_h: Optional[int] = None,
    target_w: Optional[int] = None,
    long_side: Optional[int] = None,
    mode: str = "crop",
) -> ResizePlan:
    """Resize plan of a ``width x height`` image for a model with ``patch``-pixel patches.

    ``target_h x target_w`` (both or neither), else ``long_side`` (aspect kept, short side rounded down to the patch
    multiple), else the stored size cropped down to patch multiples (:func:`tttlrm_ns.data.scene.plan_resize`).
    """
    cfg = ResizeConfig(
        height=target_h, width=target_w, long_side=long_side, mode=mode, patch_size=patch  # type: ignore[arg-type]
    )
    return plan_resize(width, height, cfg)


def _resize_one(img: Tensor, plan: ResizePlan) -> Tensor:
    """[H, W, 3] uint8 or float -> [3, out_h, out_w] float32 in [0, 1]."""
    if (plan.scaled_w, plan.scaled_h) != (plan.src_w, plan.src_h):
        if img.dtype == torch.uint8:
            from PIL import Image

            im = Image.fromarray(img.cpu().numpy()).resize((plan.scaled_w, plan.scaled_h), Image.LANCZOS)
            x = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255.0
        else:
            x = F.interpolate(
                img.permute(2, 0, 1)[None].float().cpu(), size=(plan.scaled_h, plan.scaled_w), mode="bicubic",
                antialias=True, align_corners=False,
            )[0].clamp(0, 1)
    else:
        x = img.permute(2, 0, 1).cpu()
        x = x.float() / 255.0 if img.dtype == torch.uint8 else x.float()
    return x[:, plan.y0 : plan.y0 + plan.out_h, plan.x0 : plan.x0 + plan.out_w]


def prepare_images(images: Sequence[Tensor], plan: ResizePlan, background: Tensor) -> Tensor:
    """Cached images ``[H, W, 3|4]`` (uint8 or float) -> model input [V, 3, out_h, out_w] float32 in [0, 1].

    RGBA images are composited over ``background`` [3] (in [0, 1]) first.
    """
    out = []
    for img in images:  # one resize per view (PIL works on single images)
        if img.shape[-1] == 4:
            f = img.float() / 255.0 if img.dtype == torch.uint8 else img.float()
            rgb = f[..., :3] * f[..., 3:] + background.to(f) * (1 - f[..., 3:])
            img = (rgb * 255).round().to(torch.uint8) if img.dtype == torch.uint8 else rgb
        elif img.shape[-1] != 3:
            raise ValueError(f"expected RGB or RGBA images, got {img.shape[-1]} channels")
        out.append(_resize_one(img, plan))
    return torch.stack(out)


__all__ = ["cameras_to_opencv", "dataparser_to_original", "make_plan", "prepare_images"]

"""Per-pixel rays and the 12-channel model input (``docs/reference_semantics.md`` §2).

Pixel-centre rule: pixel column ``u`` and row ``v`` sample the image at ``(u + 0.5, v + 0.5)`` in the
OpenCV pixel frame whose ``fx, fy, cx, cy`` the caller passes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _bf16(x: Tensor) -> Tensor:
    return x.to(torch.bfloat16).to(x.dtype)


def pixel_rays(c2w: Tensor, fxfycxcy: Tensor, height: int, width: int, bf16_compat: bool = False):
    """Ray origins and unit directions of every pixel centre.

    Args:
        c2w: [B, V, 4, 4] OpenCV camera-to-world. fxfycxcy: [B, V, 4] pixel intrinsics.
        bf16_compat: round the rotation, camera-frame directions and rotated directions to bfloat16 before
            normalising, as the official code does under autocast (§2.1, Q5).
    Returns:
        origins, directions: [B, V, 3, H, W], float32 (float64 for float64 cameras).
    """
    dt = torch.promote_types(c2w.dtype, torch.float32)
    c2w, fxfycxcy = c2w.to(dt), fxfycxcy.to(dt)
    b, v = c2w.shape[:2]
    dev = c2w.device
    ys, xs = torch.meshgrid(
        torch.arange(height, device=dev, dtype=dt),
        torch.arange(width, device=dev, dtype=dt),
        indexing="ij",
    )
    fx, fy, cx, cy = (fxfycxcy[..., i, None, None] for i in range(4))  # [B, V, 1, 1]
    x = (xs + 0.5 - cx) / fx
    y = (ys + 0.5 - cy) / fy
    d_cam = torch.stack([x, y, torch.ones_like(x)], dim=2).reshape(b * v, 3, height * width)  # [BV, 3, HW]
    rot = c2w[:, :, :3, :3].reshape(b * v, 3, 3)
    if bf16_compat:
        rot, d_cam = _bf16(rot), _bf16(d_cam)
    with torch.autocast(device_type=dev.type, enabled=False):
        d_world = torch.bmm(rot, d_cam)  # [BV, 3, HW]
    if bf16_compat:
        d_world = _bf16(d_world)
    d_world = F.normalize(d_world, dim=1).reshape(b, v, 3, height, width)
    origins = c2w[:, :, :3, 3, None, None].expand(b, v, 3, height, width)
    return origins, d_world


def ray_input(images: Tensor, c2w: Tensor, fxfycxcy: Tensor, bf16_compat: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Per-pixel model input ``[o, d, o x d, 2 rgb - 1]``.

    Args:
        images: [B, V, 3, H, W] in [0, 1]. c2w: [B, V, 4, 4]. fxfycxcy: [B, V, 4].
    Returns:
        (features [B, V, 12, H, W], origins [B, V, 3, H, W], directions [B, V, 3, H, W]).
    """
    h, w = images.shape[-2:]
    o, d = pixel_rays(c2w, fxfycxcy, h, w, bf16_compat)
    m = torch.cross(o, d, dim=2)
    feats = torch.cat([o, d, m, images.to(o.dtype) * 2 - 1], dim=2)
    return feats, o, d

"""Decoder output -> per-pixel Gaussians (``docs/reference_semantics.md`` §5).

Per Gaussian channel layout (``C = 11 + 3K``): ``[xyz(3) | SH(3K, coefficient-major, RGB last) | log-scale(3)
| quaternion(4) | opacity(1)]``. Gaussians are ordered patch-major: view, patch row, patch column, row in
patch, column in patch (§5.2), which is the order of the decoder's output channels.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..gaussians import Gaussians
from ..sh import C0
from .config import TttlrmConfig


def to_patch_major(x: Tensor, patch: int) -> Tensor:
    """[B, V, c, H, W] per-pixel maps -> [B, V*H*W, c] in the patch-major Gaussian order."""
    b, v, c, h, w = x.shape
    x = x.reshape(b, v, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 1, 3, 5, 4, 6, 2).reshape(b, v * h * w, c)


def from_patch_major(x: Tensor, views: int, height: int, width: int, patch: int) -> Tensor:
    """Inverse of :func:`to_patch_major`: [B, V*H*W, c] -> [B, V, c, H, W]."""
    b, _, c = x.shape
    x = x.reshape(b, views, height // patch, width // patch, patch, patch, c)
    return x.permute(0, 1, 6, 2, 4, 3, 5).reshape(b, views, c, height, width)


def decode_gaussians(
    raw: Tensor, origins: Tensor, directions: Tensor, cfg: TttlrmConfig, images: Optional[Tensor] = None,
    anchor: Optional[tuple[Tensor, Tensor]] = None,
) -> Gaussians:
    """Activate the decoder output.

    Args:
        raw: [B, V*n, p*p*C] decoder output (one row per token).
        origins, directions: [B, V, 3, H, W] pixel rays of the decoded views (unit directions).
        images: [B, V, 3, H, W] in [0, 1], the decoded views' pixels; required when ``cfg.rgb_skip``.
        anchor: (measured ray distance [B, V, 1, H, W], weight [B, V, 1, H, W] in [0, 1]); required when
            ``cfg.depth_anchor``: the log distance is ``w log(measured) + (1 - w) log(predicted)``.
    Returns:
        Gaussians with leading dims [B, V*H*W], float32.
    """
    b = raw.shape[0]
    c = cfg.gaussian_channels
    y = raw.to(torch.promote_types(raw.dtype, torch.float32)).reshape(b, -1, c)  # [B, N, C]; channel fastest, then pixel-in-patch (row-major)
    o = to_patch_major(origins, cfg.patch_size)
    d = to_patch_major(directions, cfg.patch_size)
    k = cfg.sh_coeffs
    xyz, sh, scale, quat, opacity = torch.split(y, [3, 3 * k, 3, 4, 1], dim=-1)
    sh = sh.reshape(b, -1, k, 3)
    if cfg.rgb_skip:  # the renderer's colour is C0 * sh0 + 0.5, so (rgb - 0.5) / C0 is the pixel itself
        if images is None:
            raise ValueError("rgb_skip=True needs the decoded views' images in decode_gaussians")
        rgb = to_patch_major(images.to(sh.dtype), cfg.patch_size)  # [B, N, 3]
        sh = torch.cat([sh[:, :, :1] + ((rgb - 0.5) / C0)[:, :, None], sh[:, :, 1:]], dim=2)
    # Distance along the unit ray; only the mean of the three position channels is used (Q16).
    dist = torch.sigmoid(xyz.mean(dim=-1, keepdim=True) + cfg.dist_shift) * cfg.max_dist
    if cfg.depth_anchor:
        if anchor is None:
            raise ValueError("depth_anchor=True needs the measured distances in decode_gaussians")
        measured, weight = (to_patch_major(t, cfg.patch_size) for t in anchor)  # [B, N, 1] each
        # Blend in log distance: a confident measurement pins the Gaussian, the prediction fills in elsewhere.
        dist = torch.exp(weight * torch.log(measured.clamp_min(1e-6)) + (1 - weight) * torch.log(dist.clamp_min(1e-6)))
    if cfg.geometry_bf16_compat:
        dist = dist.to(torch.bfloat16).float()
    return Gaussians(
        means=o + dist * d,
        sh=sh,
        log_scales=torch.clamp(scale + cfg.scale_shift, max=cfg.max_log_scale),
        quats=quat,
        opacity_logits=opacity + cfg.opacity_shift,
    )

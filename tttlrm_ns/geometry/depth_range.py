"""The scene's depth range, measured rather than guessed: from SfM points when the capture has them, otherwise
from the views themselves with a wide plane sweep.

Why: the official normalisation fixes the scale by the camera extent, so the depth of the subject in normalised
units depends on the trajectory (an orbit, a forward-facing sweep and a walk-through of the same object land at
depths 10x apart). Fixing the scale by the scene's median depth instead (``median_depth = 1``,
:mod:`tttlrm_ns.data.normalize`) needs that depth first; this module measures it.

* :func:`range_from_points`: project SfM points into the input cameras; the depths (camera ``z``) of the points
  that land inside an image give the percentiles.
* :func:`range_from_views`: a plane sweep over a very wide range (``wide_ratio`` x the camera spread on each side,
  planes log-uniform so no decade gets more planes than another) at low resolution; the depths of confident pixels
  give the percentiles.

Both return a :class:`DepthRange` whose ``source`` says where it came from, for the log.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from tttlrm_ns.conventions import invert_rigid
from tttlrm_ns.geometry.plane_sweep import PlaneSweepConfig, downsample_views, plane_sweep


@dataclass
class DepthRangeConfig:
    """How the depth range is measured (:func:`estimate_depth_range`)."""

    low_percentile: float = 2.0
    high_percentile: float = 98.0
    margin: float = 1.5
    """near = low percentile / margin, far = high percentile * margin."""
    sweep_long_side: int = 64
    """Long side (pixels) of the views for the wide sweep."""
    sweep_planes: int = 64
    wide_ratio: float = 100.0
    """The wide sweep covers ``[spread / wide_ratio, spread * wide_ratio]``, spread = RMS camera distance from
    their mean (or the nearest-view distance, whichever is larger)."""
    min_confidence: float = 0.3
    """Pixels that count as measured. At 0.5 a close orbit of a procedural room (training mix, 8 views at 36x64)
    kept under 1 % of its pixels; 0.3 keeps 10-50 % on the rooms of every trajectory class."""
    min_fraction: float = 0.01
    """Fewer confident pixels than this share: the range comes from this share of best-matched pixels instead (and
    the source says so); if even those did not match at all, the views do not measure the range."""


@dataclass
class DepthRange:
    near: float
    far: float
    median: float
    source: str
    """Where it came from, e.g. "SfM points (1234 seen)" or "plane sweep of the views (38% of pixels confident)"."""

    def describe(self) -> str:
        return f"depth range {self.near:.3g}-{self.far:.3g} (median {self.median:.3g}) from {self.source}"


class DepthRangeError(ValueError):
    """The depth range cannot be measured from what was given."""


def _finish(z: Tensor, cfg: DepthRangeConfig, source: str) -> DepthRange:
    z = z.double()
    lo, med, hi = torch.quantile(z, torch.tensor([cfg.low_percentile / 100, 0.5, cfg.high_percentile / 100],
                                                 dtype=torch.float64)).tolist()
    return DepthRange(near=lo / cfg.margin, far=hi * cfg.margin, median=med, source=source)


def range_from_points(points: Tensor, c2w: Tensor, fxfycxcy: Tensor, height: int, width: int,
                      cfg: Optional[DepthRangeConfig] = None) -> DepthRange:
    """Depth range of world points [N, 3] seen by OpenCV cameras ``c2w`` [V, 4, 4] with intrinsics [V, 4]."""
    cfg = cfg or DepthRangeConfig()
    if points.dim() != 2 or points.shape[-1] != 3 or points.shape[0] == 0:
        raise DepthRangeError(f"SfM points must be a non-empty [N, 3] tensor, got {tuple(points.shape)}")
    w2c = invert_rigid(c2w.double())
    cam = points.double()[None] @ w2c[:, :3, :3].transpose(1, 2) + w2c[:, None, :3, 3]  # [V, N, 3]
    z = cam[..., 2]
    k = fxfycxcy.double()
    u = cam[..., 0] / z.clamp_min(1e-12) * k[:, None, 0] + k[:, None, 2]
    v = cam[..., 1] / z.clamp_min(1e-12) * k[:, None, 1] + k[:, None, 3]
    seen = (z > 0) & (u >= 0) & (u <= width) & (v >= 0) & (v <= height)
    n = int(seen.sum())
    if n < 10:
        raise DepthRangeError(f"only {n} SfM point observations fall inside the input views (need >= 10)")
    return _finish(z[seen], cfg, f"SfM points ({int(seen.any(0).sum())} of {points.shape[0]} seen)")


def camera_spread(c2w: Tensor) -> float:
    """Scale of the camera layout: RMS distance of the centres from their mean, at least the median distance of a
    view to its nearest other view (a tight cluster with a few outliers still gets a sensible scale)."""
    c = c2w[:, :3, 3].double()
    rms = float((c - c.mean(0)).norm(dim=-1).pow(2).mean().sqrt())
    d = torch.cdist(c, c) + torch.eye(len(c), dtype=torch.float64) * 1e30
    return max(rms, float(d.min(1).values.median()) if len(c) > 1 else 0.0)


def range_from_views(images: Tensor, c2w: Tensor, fxfycxcy: Tensor,
                     cfg: Optional[DepthRangeConfig] = None) -> DepthRange:
    """Depth range measured by a wide, low-resolution plane sweep of the views [V, 3, H, W]."""
    cfg = cfg or DepthRangeConfig()
    v, _, h, w = images.shape
    spread = camera_spread(c2w)
    if not spread > 0:
        raise DepthRangeError("all camera centres coincide: without a baseline the views cannot measure depth")
    factor = max(1, math.ceil(max(h, w) / cfg.sweep_long_side))
    hh, ww = h // factor * factor, w // factor * factor
    imgs = images[..., :hh, :ww]
    small, k = downsample_views(imgs.float(), fxfycxcy.float(), factor)
    near0, far0 = spread / cfg.wide_ratio, spread * cfg.wide_ratio
    sweep = plane_sweep(small, c2w, k, near0, far0,
                        PlaneSweepConfig(num_planes=cfg.sweep_planes, downsample=1, spacing="log"))
    conf = sweep.confidence.flatten()
    ok = conf > cfg.min_confidence
    frac = float(ok.float().mean())
    if frac >= cfg.min_fraction:
        return _finish(sweep.depth.flatten()[ok], cfg,
                       f"a plane sweep of the {v} views ({100 * frac:.0f}% of pixels confident)")
    # A weak match (narrow lenses, little texture): the best-matched min_fraction of the pixels still measure the
    # scene's scale, which the median needs; the source says so. Views that match nowhere cannot.
    best = conf.topk(max(1, math.ceil(cfg.min_fraction * conf.numel()))).indices
    if float(conf[best].min()) <= 0:
        raise DepthRangeError(
            f"only {100 * frac:.1f}% of the pixels matched confidently across views and fewer than "
            f"{100 * cfg.min_fraction:.0f}% matched at all: the views overlap too little or are untextured")
    return _finish(sweep.depth.flatten()[best], cfg,
                   f"a weak plane sweep of the {v} views (only {100 * frac:.1f}% of pixels confident; the "
                   f"{100 * cfg.min_fraction:.0f}% best-matched pixels)")


__all__ = ["DepthRangeConfig", "DepthRange", "DepthRangeError", "range_from_points", "range_from_views",
           "camera_spread"]

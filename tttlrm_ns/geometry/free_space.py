"""Free-space consistency: drop the predicted points that other input views see through.

Why: a pixel-aligned prediction puts one Gaussian on the ray of every input pixel. A Gaussian of view ``i`` placed
at the wrong depth is invisible from view ``i`` itself (it sits on that view's own ray), but from the other views it
floats in front of the surface they see and covers it: on the orbit and close-up stress classes, each view's own
Gaussians reproduce that view at 18-28 dB, while all views' Gaussians together score 11-22 dB. The other views know
better: the space between a camera and the surface it sees is empty. The classical multi-view fusion test
(visibility-based depth-map fusion) turns that into a filter.

Definition (OpenCV cameras, planar depth = camera ``z``, pixel centres at ``(u + 0.5, v + 0.5)`` as in
:mod:`tttlrm_ns.conventions`): every pixel ``p`` of view ``i`` with depth ``D_i(p)`` is the point
``X = c2w_i (D_i(p) K_i^-1 [p, 1])``. For every other view ``j`` in whose image ``X`` lands (in front of the camera,
inside the image, at continuous position ``q``), ``X`` *violates free space in j* if

    ``z_j(X) < (1 - tolerance) * min(D_j at the 4 pixel centres nearest q)``,

i.e. ``X`` lies clearly in front of every surface view ``j`` sees around ``q``. (The minimum over the 4 nearest
pixels, not the nearest pixel alone, keeps the points on a silhouette: a foreground edge point lands half on the
background of view ``j``'s nearest pixel; with the nearest pixel, 1.2 % of the exact depths of a 24x32 analytic
orbit were dropped, with the minimum none.) ``X`` is dropped when it violates free
space in at least ``min_views`` views. One view alone can be wrong itself (an occluder it sees and others do not,
its own bad depth at ``q``), hence the count; the relative tolerance makes the test independent of the scene's
scale. Points behind the surface of view ``j`` are never dropped: they may just be occluded there.

Cost: ``O(V^2 H W)`` projections, in chunks of ``pairs_per_chunk`` (point, view) pairs.
:func:`free_space_violations_reference` computes the same count point by point, for tests on tiny inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from tttlrm_ns.conventions import c2w_to_w2c, camera_rays


@dataclass
class FreeSpaceConfig:
    """The free-space filter of a pixel-aligned prediction (:func:`free_space_violations`)."""

    tolerance: float = 0.0
    """Relative depth margin: a point counts as in front of view ``j``'s surface when its depth in ``j`` is below
    ``(1 - tolerance)`` of ``j``'s depth there. 0 turns the filter off."""
    min_views: int = 2
    """Drop a point that is in front of the surface of at least this many other views."""
    pairs_per_chunk: int = 1 << 22
    """(point, view) pairs tested at a time: bounds the filter's memory to about 40 bytes per pair (~170 MB)."""

    @property
    def enabled(self) -> bool:
        return self.tolerance > 0

    def check(self) -> None:
        if not 0 <= self.tolerance < 1:
            raise ValueError(f"free-space tolerance must lie in [0, 1) (0 = off), got {self.tolerance}")
        if self.min_views < 1:
            raise ValueError(f"free-space min_views must be >= 1, got {self.min_views}")
        if self.pairs_per_chunk < 1:
            raise ValueError(f"free-space pairs_per_chunk must be >= 1, got {self.pairs_per_chunk}")


def _points(depth: Tensor, c2w: Tensor, fxfycxcy: Tensor) -> Tensor:
    """[V, H, W] planar depth -> [V, H, W, 3] points in the frame of ``c2w``."""
    v, h, w = depth.shape
    cam = camera_rays(fxfycxcy, h, w) * depth[..., None]  # [V, H, W, 3]
    return torch.einsum("vij,vhwj->vhwi", c2w[:, :3, :3], cam) + c2w[:, None, None, :3, 3]


@torch.no_grad()
def free_space_violations(depth: Tensor, c2w: Tensor, fxfycxcy: Tensor, tolerance: float,
                          pairs_per_chunk: int = 1 << 22) -> Tensor:
    """For every pixel of every view, the number of other views whose free space its point violates.

    Args:
        depth: [V, H, W] planar depth (camera ``z``) of every view's pixels, > 0.
        c2w: [V, 4, 4] OpenCV camera-to-world. fxfycxcy: [V, 4] pixel intrinsics of ``depth``'s resolution.
        tolerance: relative depth margin in [0, 1).
        pairs_per_chunk: (point, view) pairs tested at a time; bounds the memory to about 40 bytes per pair.
    Returns:
        [V, H, W] int32 count in ``[0, V - 1]``.
    """
    v, h, w = depth.shape
    depth = depth.float()
    c2w, fxfycxcy = c2w.float().to(depth.device), fxfycxcy.float().to(depth.device)
    w2c = c2w_to_w2c(c2w)  # [V, 4, 4]
    # What every view sees around each continuous position: for the top-left pixel centre (r0, c0) of the 4 around
    # it, r0 in [-1, H-1] and c0 in [-1, W-1], the nearest of those 4 depths (indices clamped into the image, as
    # replicate padding does). Precomputed once per view so that each pair needs one gather instead of four.
    padded = F.pad(depth[:, None], (1, 1, 1, 1), mode="replicate")  # [V, 1, H+2, W+2]
    surfaces = -F.max_pool2d(-padded, 2, stride=1)[:, 0, :h + 1, :w + 1].reshape(v, (h + 1) * (w + 1))
    points = _points(depth, c2w, fxfycxcy).reshape(v, h * w, 3)
    counts = torch.zeros(v, h * w, dtype=torch.int32, device=depth.device)
    block = max(1, pairs_per_chunk // v)
    for i in range(v):  # source view; its points are tested against every view in one batch
        for s in range(0, h * w, block):
            cam = points[i, s : s + block] @ w2c[:, :3, :3].transpose(-1, -2) + w2c[:, None, :3, 3]  # [V, b, 3]
            z = cam[..., 2]
            front = z > 1e-8
            zs = torch.where(front, z, torch.ones_like(z))
            u = cam[..., 0] / zs * fxfycxcy[:, None, 0] + fxfycxcy[:, None, 2]  # continuous, centres at +0.5
            y = cam[..., 1] / zs * fxfycxcy[:, None, 1] + fxfycxcy[:, None, 3]
            inside = front & (u >= 0) & (u < w) & (y >= 0) & (y < h)
            c0, r0 = torch.floor(u - 0.5).long(), torch.floor(y - 0.5).long()  # top-left of the 4 nearest centres
            idx = (r0.clamp(-1, h - 1) + 1) * (w + 1) + (c0.clamp(-1, w - 1) + 1)
            surface = torch.gather(surfaces, 1, idx)  # [V, b]: the nearest of the 4 surfaces around the point
            violated = inside & (z < (1 - tolerance) * surface)
            violated[i] = False  # a view's own pixels lie on its own rays, at its own depth by construction
            counts[i, s : s + block] = violated.sum(0, dtype=torch.int32)
    return counts.reshape(v, h, w)


def free_space_mask(depth: Tensor, c2w: Tensor, fxfycxcy: Tensor, cfg: FreeSpaceConfig) -> Tensor:
    """[V, H, W] bool, True where the point survives the filter (all True when the filter is off)."""
    cfg.check()
    if not cfg.enabled:
        return torch.ones_like(depth, dtype=torch.bool)
    return free_space_violations(depth, c2w, fxfycxcy, cfg.tolerance, cfg.pairs_per_chunk) < cfg.min_views


def free_space_violations_reference(depth: Tensor, c2w: Tensor, fxfycxcy: Tensor, tolerance: float) -> Tensor:
    """:func:`free_space_violations` with explicit loops over views and pixels (tests on tiny inputs only)."""
    v, h, w = depth.shape
    counts = torch.zeros(v, h, w, dtype=torch.int32)
    c2w, fxfycxcy, depth = c2w.double(), fxfycxcy.double(), depth.double()
    for i in range(v):
        fx, fy, cx, cy = fxfycxcy[i].tolist()
        for r in range(h):
            for c in range(w):
                z = float(depth[i, r, c])
                cam = torch.tensor([(c + 0.5 - cx) / fx * z, (r + 0.5 - cy) / fy * z, z], dtype=torch.float64)
                x = c2w[i, :3, :3] @ cam + c2w[i, :3, 3]
                for j in range(v):
                    if j == i:
                        continue
                    rot, t = c2w[j, :3, :3], c2w[j, :3, 3]
                    p = rot.T @ (x - t)
                    if p[2] <= 1e-8:
                        continue
                    fxj, fyj, cxj, cyj = fxfycxcy[j].tolist()
                    u, y = float(p[0] / p[2] * fxj + cxj), float(p[1] / p[2] * fyj + cyj)
                    if not (0 <= u < w and 0 <= y < h):
                        continue
                    c0, r0 = math.floor(u - 0.5), math.floor(y - 0.5)
                    surface = min(float(depth[j, min(max(r0 + dr, 0), h - 1), min(max(c0 + dc, 0), w - 1)])
                                  for dr in (0, 1) for dc in (0, 1))
                    if p[2] < (1 - tolerance) * surface:
                        counts[i, r, c] += 1
    return counts


__all__ = ["FreeSpaceConfig", "free_space_violations", "free_space_mask", "free_space_violations_reference"]

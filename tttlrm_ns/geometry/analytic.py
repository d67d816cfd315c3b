"""Analytic test scenes: textured boxes ray-cast in torch, with exact depth, for any camera trajectory.

Why not the pyrender generator (:mod:`tttlrm_ns.synth`)? It needs OSMesa and seconds per scene; the geometry code
(plane sweep, depth range, normalisation) needs many small scenes with exact depth and cameras placed anywhere,
in tests that run in milliseconds. A scene is a room (an axis-aligned box seen from inside) plus solid boxes in
it, every face carrying a procedural texture that is a function of the world position, so views agree exactly.

Texture: a sum of products of sinusoids of random frequencies plus a coarse checker, in ``[0, 1]``, RGB with a
per-face tint; a face can be made flat (``textureless``) to test that flat regions get low confidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from tttlrm_ns.conventions import camera_rays, look_at_cv


@dataclass
class Box:
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    inside: bool = False
    """True: the room (seen from inside); False: a solid box seen from outside."""
    textureless: bool = False


@dataclass
class AnalyticScene:
    boxes: list[Box] = field(default_factory=list)
    seed: int = 0


def room_scene(seed: int = 0, size: float = 4.0, objects: int = 3, textureless_floor: bool = False) -> AnalyticScene:
    """A ``size`` cube room centred at the origin with ``objects`` random solid boxes near its centre."""
    g = torch.Generator().manual_seed(seed)
    s = size / 2
    boxes = [Box((-s, -s, -s), (s, s, s), inside=True, textureless=textureless_floor)]
    for _ in range(objects):
        c = (torch.rand(3, generator=g) - 0.5) * size * 0.4
        half = 0.15 + torch.rand(3, generator=g) * size * 0.08
        boxes.append(Box(tuple((c - half).tolist()), tuple((c + half).tolist())))
    return AnalyticScene(boxes, seed)


def _texture(points: Tensor, face_id: Tensor, seed: int) -> Tensor:
    """[N, 3] world points on faces with ids [N] -> RGB [N, 3] in [0, 1] (deterministic in the seed)."""
    g = torch.Generator().manual_seed(1000 + seed)
    freqs = torch.rand(6, 3, generator=g) * 6 + 1.5  # cycles per unit
    phase = torch.rand(6, 3, generator=g) * 2 * math.pi
    tints = 0.35 + 0.65 * torch.rand(64, 3, generator=g)
    wave = torch.sin(points[:, None, :] * freqs[None] * 2 * math.pi + phase[None]).prod(-1)  # [N, 6]
    checker = ((torch.floor(points * 2.0).sum(-1) % 2) - 0.5) * 0.4
    v = 0.5 + 0.25 * wave.mean(-1) * 2 + checker
    rgb = v.clamp(0.05, 0.95)[:, None] * tints[face_id % 64]
    return rgb.clamp(0, 1)


def render(scene: AnalyticScene, c2w: Tensor, fxfycxcy: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Images [V, 3, H, W] and camera-z depth [V, H, W] of OpenCV cameras ``c2w`` [V, 4, 4] (pixel-centre rule).

    Pixels that hit nothing get depth ``inf`` and colour white (only possible when no room box is in the scene).
    """
    v = c2w.shape[0]
    d_cam = camera_rays(fxfycxcy.double(), height, width).reshape(v, -1, 3)  # [V, HW, 3], z = 1
    rot = c2w[:, :3, :3].double()
    d = d_cam @ rot.transpose(1, 2)  # world directions scaled so that camera z = 1: t is the z-depth
    o = c2w[:, None, :3, 3].double().expand_as(d)
    best_t = torch.full(d.shape[:2], math.inf, dtype=torch.float64)
    best_face = torch.full(d.shape[:2], -1, dtype=torch.long)
    for bi, box in enumerate(scene.boxes):  # a loop over the few boxes and their 6 faces; rays are vectorised
        lo, hi = torch.tensor(box.lo, dtype=torch.float64), torch.tensor(box.hi, dtype=torch.float64)
        for axis in range(3):
            for side, plane in ((0, lo[axis]), (1, hi[axis])):
                with torch.no_grad():
                    t = (plane - o[..., axis]) / d[..., axis]
                p = o + t[..., None] * d
                others = [a for a in range(3) if a != axis]
                inside = torch.ones_like(t, dtype=torch.bool)
                for a in others:
                    inside &= (p[..., a] >= lo[a] - 1e-9) & (p[..., a] <= hi[a] + 1e-9)
                # a room is seen from inside, a solid box from outside: the face must face the camera
                facing = d[..., axis] > 0 if (side == 1) == box.inside else d[..., axis] < 0
                hit = inside & facing & (t > 1e-6) & (t < best_t)
                best_t = torch.where(hit, t, best_t)
                best_face = torch.where(hit, torch.full_like(best_face, bi * 6 + axis * 2 + side), best_face)
    p = o + best_t.clamp(max=1e6)[..., None] * d
    flat = torch.tensor([b.textureless for b in scene.boxes] + [False])[(best_face // 6).clamp(min=0)]
    rgb = _texture(p.reshape(-1, 3).float(), best_face.reshape(-1).clamp(min=0), scene.seed).reshape(v, -1, 3)
    tint = torch.tensor([0.6, 0.55, 0.5])
    rgb = torch.where(flat[..., None], tint.expand_as(rgb), rgb)
    rgb = torch.where((best_face < 0)[..., None], torch.ones_like(rgb), rgb)
    images = rgb.reshape(v, height, width, 3).permute(0, 3, 1, 2).contiguous()
    return images.float(), best_t.reshape(v, height, width).float()


def orbit_cameras(n: int, radius: float, target=(0.0, 0.0, 0.0), arc_deg: float = 90.0, height: float = 0.2) -> Tensor:
    """[n, 4, 4] OpenCV c2w on an arc of ``arc_deg`` around ``target`` (y is the world down axis)."""
    t = torch.tensor(target, dtype=torch.float32)
    out = []
    for a in torch.linspace(-arc_deg / 2, arc_deg / 2, n).tolist():
        r = math.radians(a)
        eye = t + torch.tensor([radius * math.sin(r), -height, -radius * math.cos(r)])
        out.append(torch.from_numpy(look_at_cv(eye.double().numpy(), t.double().numpy())).float())
    return torch.stack(out)


def forward_cameras(n: int, baseline: float, distance: float = 1.8, seed: int = 0) -> Tensor:
    """[n, 4, 4] forward-facing cameras on a ``baseline``-wide jittered patch at ``-distance`` on z, looking +z."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        off = (torch.rand(2, generator=g) - 0.5) * baseline
        eye = torch.tensor([off[0].item(), off[1].item(), -distance])
        target = eye + torch.tensor([0.0, 0.0, 1.0])
        out.append(torch.from_numpy(look_at_cv(eye.double().numpy(), target.double().numpy())).float())
    return torch.stack(out)


def intrinsics(n: int, height: int, width: int, fov_x_deg: float = 60.0) -> Tensor:
    """[n, 4] centred pinhole intrinsics with square pixels and horizontal field of view ``fov_x_deg``."""
    f = 0.5 * width / math.tan(math.radians(fov_x_deg) / 2)
    return torch.tensor([f, f, width / 2, height / 2]).expand(n, 4).clone()


__all__ = ["Box", "AnalyticScene", "room_scene", "render", "orbit_cameras", "forward_cameras",
           "intrinsics"]

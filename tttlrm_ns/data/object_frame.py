"""The object frame of the triplane model: a canonical similarity frame computed from the input cameras alone.

An object capture has cameras around one object, all looking at it. From the input views (OpenCV c2w) we take

* centre ``c``: the point closest (least squares) to all optical axes: where the cameras look;
* scale ``s = camera_distance / mean_i |t_i - c|``: the input cameras end up at mean distance ``camera_distance``
  (2.7, the distance of the training renders, whose objects fill the unit sphere);
* up ``z``: the normalised sum of the cameras' up vectors (``-y`` in OpenCV): turntable-style captures have no roll,
  so the horizontal parts cancel over views around the object;
* ``x``: the first input camera's direction from the centre, made orthogonal to ``z``; ``y = z x x``.

Every quantity is equivariant under a similarity of the world, so the frame (and the prediction) does not depend on
how a dataparser oriented, centred or scaled the world: a mean_cam-normalised sample of the trainer and the original
object renders give the same object-frame cameras.

A scene capture (cameras along a path looking outward, "unbounded") has no common look-at point: the least-squares
centre lies behind some cameras or far off their axes, or the camera distances differ wildly. :func:`object_frame`
refuses such input with :class:`ObjectCaptureError` instead of predicting garbage.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tttlrm_ns.conventions import invert_rigid
from tttlrm_ns.data.normalize import SceneTransform


class ObjectCaptureError(ValueError):
    """The cameras do not look at one bounded object (e.g. a room / scene capture given to the object model)."""


@dataclass
class ObjectFrameChecks:
    """Limits of what counts as an object capture."""

    max_off_axis_deg: float = 25.0
    """The centre must lie within this angle of every input camera's optical axis (objects are roughly centred)."""
    max_distance_ratio: float = 2.5
    """Largest / smallest camera distance from the centre."""
    min_view_spread_deg: float = 30.0
    """Largest angle between two cameras as seen from the centre must reach this (a forward-facing capture whose
    axes meet far ahead is no object capture: the box would be seen from one side only)."""


def look_at_point(c2w: Tensor) -> Tensor:
    """Least-squares point closest to the optical axes of c2w [V, 4, 4] (OpenCV, +z forward) -> [3] float64."""
    c2w = c2w.double()
    o, d = c2w[:, :3, 3], c2w[:, :3, 2]
    d = d / d.norm(dim=-1, keepdim=True)
    proj = torch.eye(3, dtype=torch.float64) - d[:, :, None] * d[:, None, :]  # [V, 3, 3], I - d d^T
    a = proj.sum(0)
    b = (proj @ o[:, :, None]).sum(0)[:, 0]
    # Parallel axes (one view, or all views looking the same way) make ``a`` singular: no object centre exists.
    if torch.linalg.matrix_rank(a, atol=1e-6 * float(a.abs().max().clamp_min(1e-12))) < 3:
        raise ObjectCaptureError(
            f"the {len(c2w)} input cameras' optical axes are (nearly) parallel, so they do not look at a common "
            "object; the triplane object model needs >= 2 views from different directions around the object")
    return torch.linalg.solve(a, b)


def object_frame(c2w: Tensor, camera_distance: float = 2.7, checks: ObjectFrameChecks = ObjectFrameChecks(),
                 where: str = "") -> SceneTransform:
    """The world -> object-frame similarity of the module docstring, from the input views c2w [V, 4, 4] (OpenCV).

    Raises :class:`ObjectCaptureError` (message prefixed by ``where``) when the cameras are not an object capture.
    """
    if c2w.dim() != 3 or c2w.shape[-2:] != (4, 4) or c2w.shape[0] < 2:
        raise ObjectCaptureError(f"{where}the object frame needs >= 2 input cameras [V, 4, 4], got "
                                 f"{tuple(c2w.shape)}")
    c2w = c2w.detach().double().cpu()
    centre = look_at_point(c2w)
    o, fwd = c2w[:, :3, 3], c2w[:, :3, 2]
    to_c = centre - o
    dist = to_c.norm(dim=-1)
    cos = (to_c * fwd).sum(-1) / (dist * fwd.norm(dim=-1)).clamp_min(1e-12)
    angle = torch.rad2deg(torch.arccos(cos.clamp(-1, 1)))
    bad = [int(i) for i in torch.nonzero(angle > checks.max_off_axis_deg).flatten()]
    ratio = float(dist.max() / dist.min().clamp_min(1e-12))
    dirs = -to_c / dist[:, None].clamp_min(1e-12)
    spread = float(torch.rad2deg(torch.arccos((dirs @ dirs.T).clamp(-1, 1))).max())
    if bad or ratio > checks.max_distance_ratio or spread < checks.min_view_spread_deg:
        why = []
        if bad:
            why.append(f"their common look-at point is {', '.join(f'{angle[i]:.0f}' for i in bad[:6])} degrees off the "
                       f"optical axis of input view(s) {bad[:6]} (limit {checks.max_off_axis_deg:g})")
        if ratio > checks.max_distance_ratio:
            why.append(f"the camera distances to it differ by a factor {ratio:.1f} (limit "
                       f"{checks.max_distance_ratio:g})")
        if spread < checks.min_view_spread_deg:
            why.append(f"seen from it the cameras span only {spread:.0f} degrees (limit {checks.min_view_spread_deg:g}; "
                       "a forward-facing capture)")
        raise ObjectCaptureError(
            f"{where}these input cameras do not look like an object capture: {'; '.join(why)}. The triplane object "
            "model reconstructs one object inside a bounded box seen from cameras around it; for a scene capture "
            "(unbounded, cameras looking outward or along a path) use ns-train tttlrm (Gaussians).")
    up = -c2w[:, :3, 1].sum(0)
    if float(up.norm()) < 1e-6 * len(c2w):
        raise ObjectCaptureError(f"{where}the input cameras' up vectors cancel out; cannot orient the object frame")
    z = up / up.norm()
    x = o[0] - centre
    x = x - (x @ z) * z
    if float(x.norm()) < 1e-9 * float(dist[0]):  # first camera straight above / below: use its right axis
        x = c2w[0, :3, 0] - (c2w[0, :3, 0] @ z) * z
    x = x / x.norm()
    y = torch.linalg.cross(z, x)
    frame = torch.eye(4, dtype=torch.float64)
    frame[:3, 0], frame[:3, 1], frame[:3, 2], frame[:3, 3] = x, y, z, centre
    return SceneTransform(align=invert_rigid(frame), scale=camera_distance / float(dist.mean()))


__all__ = ["ObjectCaptureError", "ObjectFrameChecks", "look_at_point", "object_frame"]

"""Camera conventions: the one place where axes, pose directions and intrinsics layouts are converted.

Axes
    * **OpenCV** (the model, ``opencv_cameras.json``, gsplat's ``viewmats``): camera x right, y down, z forward.
    * **OpenGL** (nerfstudio's ``Cameras.camera_to_worlds``): camera x right, y up, z backward.
    The two differ by flipping the camera's y and z axes, i.e. right-multiplying a camera-to-world matrix by
    ``diag(1, -1, -1, 1)``. The world frame is untouched by this conversion. Cameras aimed at a point are built
    with :func:`look_at_gl` (numpy, like the synthetic-data code that uses it most), or :func:`look_at_cv` for the
    same camera in OpenCV axes.

Poses
    ``c2w`` maps camera coordinates to world coordinates (its last column is the camera centre); ``w2c`` is its
    inverse. Poses here are rigid (rotation + translation), so the inverse is computed in closed form
    (``[R^T | -R^T t]``), which is exact and cheaper than a general inverse.

Similarities
    A world change ``x' = scale * (R x + t)`` with ``[R | t]`` rigid and ``scale > 0`` (:class:`Similarity`). Two
    producers use this one form: the camera normalisation the model expects (:mod:`tttlrm_ns.data.normalize`) and
    nerfstudio's dataparsers (``dataparser_transform`` [3, 4] = ``[R | t]``, ``dataparser_scale``). Camera poses,
    points and (in :mod:`tttlrm_ns.gaussians`) Gaussians are mapped through it and back.

Intrinsics
    ``fxfycxcy`` = ``[..., 4]`` pixel focal lengths and principal point, ``K`` = ``[..., 3, 3]`` matrix.

Pixel-centre rule (stated once, used everywhere)
    Pixel column ``u`` / row ``v`` (integers from 0) covers the continuous interval ``[u, u + 1)`` and is sampled
    at its centre ``(u + 0.5, v + 0.5)``; ``cx, cy`` are given in that continuous frame (an ideal centred camera of
    width ``W`` has ``cx = W / 2``). This is what the official model's rays, nerfstudio's ray generation and gsplat's
    rasteriser use. With this rule, resizing an image by ``s`` scales ``fx, fy, cx, cy`` by exactly ``s`` and
    cropping ``x0`` columns / ``y0`` rows from the left / top subtracts ``x0`` / ``y0`` from ``cx`` / ``cy``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

PIXEL_CENTER_OFFSET = 0.5
"""Offset from a pixel's integer index to the point it samples (see the module docstring)."""

_GL_CV_FLIP = (1.0, -1.0, -1.0)


def _flip(dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.tensor(_GL_CV_FLIP, dtype=dtype, device=device)


def opencv_to_opengl_c2w(c2w: Tensor) -> Tensor:
    """OpenCV camera-to-world [..., 3|4, 4] -> OpenGL camera-to-world (same shape): negate camera y and z columns."""
    out = c2w.clone()
    out[..., :3, :3] = c2w[..., :3, :3] * _flip(c2w.dtype, c2w.device)
    return out


def opengl_to_opencv_c2w(c2w: Tensor) -> Tensor:
    """OpenGL camera-to-world [..., 3|4, 4] -> OpenCV camera-to-world. The flip is its own inverse."""
    return opencv_to_opengl_c2w(c2w)


def opengl_c2w_to_opencv_w2c(c2w_gl: Tensor) -> Tensor:
    """OpenGL camera-to-world [..., 3|4, 4] (nerfstudio's ``camera_to_worlds``) -> OpenCV world-to-camera [..., 4, 4]
    (gsplat's ``viewmats``)."""
    return invert_rigid(opengl_to_opencv_c2w(c2w_gl))


def look_at_gl(eye: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 1.0, 0.0]),
               roll: float = 0.0) -> np.ndarray:
    """OpenGL camera-to-world [4, 4] (numpy) at ``eye`` looking at ``target``, rolled by ``roll`` radians about the
    view axis; ``up`` [3] is the world direction that appears upwards. The synthetic-data cameras use it directly, the
    procedural trainer scenes (world y down) with ``up = (0, -1, 0)`` and :func:`opengl_to_opencv_c2w`."""
    back = eye - target
    back = back / np.linalg.norm(back)
    right = np.cross(up, back)
    n = np.linalg.norm(right)
    if n < 1e-8:  # looking straight along ``up``: any perpendicular right vector will do
        right = np.cross(np.array([0.0, 0.0, 1.0]), back)
        n = np.linalg.norm(right)
    right = right / n
    cam_up = np.cross(back, right)
    if roll:
        c, s = math.cos(roll), math.sin(roll)
        right, cam_up = c * right + s * cam_up, -s * right + c * cam_up
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, cam_up, back, eye
    return c2w


def look_at_cv(eye: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 1.0, 0.0]),
               roll: float = 0.0) -> np.ndarray:
    """:func:`look_at_gl`'s camera as an OpenCV camera-to-world [4, 4] (numpy): +z looks at ``target`` and the
    image rows (y) run against ``up``. The analytic test scenes use it with y up, the procedural trainer scenes
    (world y down, like image rows) with ``up = (0, -1, 0)``."""
    return opengl_to_opencv_c2w(torch.from_numpy(look_at_gl(eye, target, up, roll))).numpy()


def invert_rigid(pose: Tensor) -> Tensor:
    """Inverse of rigid 4x4 transforms [..., 4, 4] (or [..., 3, 4], returned as [..., 4, 4]): ``[R^T | -R^T t]``.

    Assumes an orthonormal rotation block; use :func:`rigidity_error` to check that first.
    """
    rot = pose[..., :3, :3]
    t = pose[..., :3, 3:]
    rot_t = rot.transpose(-1, -2)
    out = torch.zeros(*pose.shape[:-2], 4, 4, dtype=pose.dtype, device=pose.device)
    out[..., :3, :3] = rot_t
    out[..., :3, 3:] = -rot_t @ t
    out[..., 3, 3] = 1
    return out


def w2c_to_c2w(w2c: Tensor) -> Tensor:
    """World-to-camera [..., 4, 4] -> camera-to-world [..., 4, 4] (rigid inverse)."""
    return invert_rigid(w2c)


def c2w_to_w2c(c2w: Tensor) -> Tensor:
    """Camera-to-world [..., 4, 4] -> world-to-camera [..., 4, 4] (rigid inverse)."""
    return invert_rigid(c2w)


def to_homogeneous_pose(pose: Tensor) -> Tensor:
    """[..., 3, 4] or [..., 4, 4] -> [..., 4, 4] with bottom row ``0 0 0 1``."""
    if pose.shape[-2:] == (4, 4):
        return pose
    if pose.shape[-2:] != (3, 4):
        raise ValueError(f"expected a [..., 3, 4] or [..., 4, 4] pose, got shape {tuple(pose.shape)}")
    bottom = torch.zeros(*pose.shape[:-2], 1, 4, dtype=pose.dtype, device=pose.device)
    bottom[..., 0, 3] = 1
    return torch.cat([pose, bottom], dim=-2)


def rigidity_error(pose: Tensor) -> Tensor:
    """How far the rotation block of [..., 3|4, 4] poses is from a proper rotation: ``max |R^T R - I|`` [...].

    A reflection (``det R = -1``) is orthonormal, so check the determinant separately with :func:`rotation_det`.
    """
    rot = pose[..., :3, :3]
    eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
    return (rot.transpose(-1, -2) @ rot - eye).abs().amax(dim=(-1, -2))


def rotation_det(pose: Tensor) -> Tensor:
    """Determinant of the rotation block of [..., 3|4, 4] poses: [...]."""
    return torch.linalg.det(pose[..., :3, :3])


@dataclass
class Similarity:
    """``x' = scale * (R x + t)``: ``align = [R | t]`` [4, 4] rigid (stored in float64), ``scale`` > 0.

    The maps keep the dtype of their input and compute in float64.
    """

    align: Tensor
    scale: float

    @classmethod
    def identity(cls) -> "Similarity":
        return cls(torch.eye(4, dtype=torch.float64), 1.0)

    @classmethod
    def from_nerfstudio(cls, transform: Tensor, scale: float) -> "Similarity":
        """From nerfstudio's ``dataparser_transform`` ``[R | t]`` [3, 4] and ``dataparser_scale`` ``s``, which map a
        point of the data's frame to ``x_ns = s (R x + t)``."""
        return cls(to_homogeneous_pose(transform.detach().to("cpu", torch.float64)), float(scale))

    def matrix(self) -> Tensor:
        """[4, 4] float64 homogeneous matrix of the map."""
        s = torch.diag(torch.tensor([self.scale, self.scale, self.scale, 1.0], dtype=torch.float64))
        return s @ self.align.double()

    def apply(self, c2w: Tensor) -> Tensor:
        """Camera-to-world [..., 4, 4] -> the same cameras in the new frame (axes rotated, centres mapped)."""
        out = self.align.to(c2w.device, torch.float64) @ c2w.double()
        out[..., :3, 3] *= self.scale
        return out.to(c2w.dtype)

    def invert(self, c2w: Tensor) -> Tensor:
        """Camera-to-world [..., 3|4, 4] in the new frame -> the original frame (inverse of :meth:`apply`).

        Works for OpenCV and OpenGL camera axes alike: only the world side of the matrix changes.
        """
        rot = self.align[:3, :3].to(c2w.device, torch.float64)
        out = c2w.double().clone()
        out[..., :3, :3] = rot.T @ out[..., :3, :3]
        out[..., :3, 3] = self.invert_points(out[..., :3, 3])
        return out.to(c2w.dtype)

    def apply_points(self, x: Tensor) -> Tensor:
        """Points [..., 3] -> the new frame."""
        a = self.align.to(x.device, torch.float64)
        return (self.scale * (x.double() @ a[:3, :3].T + a[:3, 3])).to(x.dtype)

    def invert_points(self, x: Tensor) -> Tensor:
        """Points [..., 3] in the new frame -> the original frame: ``R^T (x / scale - t)``."""
        a = self.align.to(x.device, torch.float64)
        return ((x.double() / self.scale - a[:3, 3]) @ a[:3, :3]).to(x.dtype)


def fxfycxcy_to_K(fxfycxcy: Tensor) -> Tensor:
    """Intrinsics [..., 4] = (fx, fy, cx, cy) -> K [..., 3, 3]."""
    fx, fy, cx, cy = fxfycxcy.unbind(-1)
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)
    rows = [
        torch.stack([fx, zero, cx], -1),
        torch.stack([zero, fy, cy], -1),
        torch.stack([zero, zero, one], -1),
    ]
    return torch.stack(rows, dim=-2)


def K_to_fxfycxcy(K: Tensor) -> Tensor:
    """K [..., 3, 3] -> (fx, fy, cx, cy) [...,4]. Skew (``K[0, 1]``) is not representable and must be zero."""
    if (K[..., 0, 1].abs() > 1e-9 * K[..., 0, 0].abs()).any():
        raise ValueError("K has a non-zero skew term K[0, 1]; fxfycxcy cannot represent it")
    return torch.stack([K[..., 0, 0], K[..., 1, 1], K[..., 0, 2], K[..., 1, 2]], dim=-1)


def scale_intrinsics(fxfycxcy: Tensor, sx: float, sy: float) -> Tensor:
    """Intrinsics [..., 4] of an image resized by ``sx`` horizontally and ``sy`` vertically (pixel-centre rule)."""
    s = torch.tensor([sx, sy, sx, sy], dtype=fxfycxcy.dtype, device=fxfycxcy.device)
    return fxfycxcy * s


def crop_intrinsics(fxfycxcy: Tensor, x0: float, y0: float) -> Tensor:
    """Intrinsics [..., 4] after removing ``x0`` columns on the left and ``y0`` rows on the top."""
    d = torch.tensor([0.0, 0.0, x0, y0], dtype=fxfycxcy.dtype, device=fxfycxcy.device)
    return fxfycxcy - d


def pixel_centers(height: int, width: int, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """Continuous coordinates of every pixel centre, [H, W, 2] holding ``(u + 0.5, v + 0.5)``."""
    v, u = torch.meshgrid(
        torch.arange(height, dtype=dtype, device=device),
        torch.arange(width, dtype=dtype, device=device),
        indexing="ij",
    )
    return torch.stack([u, v], dim=-1) + PIXEL_CENTER_OFFSET


def camera_rays(fxfycxcy: Tensor, height: int, width: int) -> Tensor:
    """Camera-frame rays through every pixel centre, scaled to ``z = 1``: ``K^-1 [u + 0.5, v + 0.5, 1]``.

    fxfycxcy [..., 4] -> [..., H, W, 3]; a point at camera depth ``z`` on the ray of pixel ``(u, v)`` is
    ``z * rays[..., v, u, :]``. (The model's world-frame unit rays, with their bfloat16 compatibility mode, are
    :func:`tttlrm_ns.model.rays.pixel_rays`.)
    """
    uv = pixel_centers(height, width, fxfycxcy.dtype, fxfycxcy.device)  # [H, W, 2]
    k = fxfycxcy[..., None, None, :]
    x = (uv[..., 0] - k[..., 2]) / k[..., 0]
    y = (uv[..., 1] - k[..., 3]) / k[..., 1]
    return torch.stack([x, y, torch.ones_like(x)], dim=-1)


def project_points(points_world: Tensor, w2c: Tensor, fxfycxcy: Tensor) -> Tensor:
    """Project world points [..., N, 3] with OpenCV ``w2c`` [..., 4, 4] and intrinsics [..., 4] -> pixels [..., N, 2].

    Returned coordinates are continuous (pixel-centre rule): the centre of pixel ``(u, v)`` projects to
    ``(u + 0.5, v + 0.5)``.
    """
    cam = points_world @ w2c[..., :3, :3].transpose(-1, -2) + w2c[..., None, :3, 3]
    xy = cam[..., :2] / cam[..., 2:3]
    return xy * fxfycxcy[..., None, :2] + fxfycxcy[..., None, 2:]

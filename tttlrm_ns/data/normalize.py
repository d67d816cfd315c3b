"""Camera normalisation (``reference_semantics.md`` §1.3) and mapping Gaussians back to the world frame (§5.5).

The model expects cameras in a normalised frame. :func:`normalize_cameras` computes it and returns, besides the
normalised poses, an explicit :class:`SceneTransform` (the official code keeps only a mislabelled inverse, and
nothing at all for ``first_cam``, Q11). With ``T = SceneTransform(align, scale)`` a world point maps to
``x_n = scale * (R_a x_w + t_a)`` where ``align = [R_a | t_a]`` is rigid.

Methods:
  * ``mean_cam`` (full model): ``c = mean_i t_i``, ``z = normalize(sum_i z_i)``, ``u = sum_i y_i`` (summed *down*
    axes), ``x = normalize(u x z)``, ``y = normalize(z x x)``; ``M = [x y z c]``, ``align = M^-1``. The mean camera
    becomes the identity (looking along +z, y down).
  * ``first_cam`` (AR model): ``align = c2w_0^-1``: the first view becomes the identity.
  * ``none``: identity alignment (scale still applies unless ``scale_to_unit=False``).
  * scale (all): ``scale = 1 / max_{i,k} |t_{i,k}|`` over the aligned centres, so every centre lies in [-1, 1]^3.
    A single camera or coincident centres give ``max = 0``; then ``scale = 1`` (the official code divides by zero).

Which views give the statistics is the caller's choice (``stats_c2w``): the clean default is the input views only
(test poses must not shape the frame); the official code uses all loaded views, inputs and targets (compat).

SH rotation: rotating a Gaussian by ``R`` must rotate its view-dependent colour, ``c'(d) = c(R^T d)``. Each SH band
``l`` transforms by a ``(2l+1) x (2l+1)`` matrix ``D_l(R)`` (the real Wigner matrix in gsplat's basis). We obtain it
by exact least squares on fixed, well-spread directions: band ``l`` of the basis evaluated at ``R^T d`` is a linear
function of the same band at ``d``, so ``A D = B`` (``A = Y_l(d_i)``, ``B = Y_l(R^T d_i)``) has an exact solution
that least squares recovers to float64 precision. No basis-convention bookkeeping (signs, orderings) is needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

import torch
from torch import Tensor

from tttlrm_ns.conventions import invert_rigid
from tttlrm_ns.render.sh import sh_bases

NormMethod = Literal["mean_cam", "first_cam", "none"]

# The real SH basis of gsplat / 3DGS (one implementation, shared with the rasterizer).
sh_basis = sh_bases


def _fibonacci_sphere(n: int) -> Tensor:
    """n well-spread unit vectors [n, 3] (float64)."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    r = torch.sqrt(1 - z * z)
    phi = i * math.pi * (3 - math.sqrt(5))
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], dim=-1)


def sh_rotation_matrix(rotation: Tensor, degree: int) -> Tensor:
    """Block-diagonal SH rotation [K, K] (K = (degree+1)^2, float64) for a 3x3 rotation.

    Rotated coefficients ``f' = D f`` (per colour channel) satisfy ``sum_k f'_k Y_k(d) = sum_k f_k Y_k(R^T d)``.
    """
    rot = rotation.detach().to("cpu", torch.float64)
    dirs = _fibonacci_sphere(64)  # 64 >> 7 unknowns per row of the largest band: well conditioned
    a = sh_basis(degree, dirs)  # [M, K]
    b = sh_basis(degree, dirs @ rot)  # rows R^T d_i
    k = (degree + 1) ** 2
    d = torch.zeros(k, k, dtype=torch.float64)
    d[0, 0] = 1.0
    for band in range(1, degree + 1):
        s = slice(band * band, (band + 1) ** 2)
        d[s, s] = torch.linalg.lstsq(a[:, s], b[:, s]).solution  # A X = B  =>  f' = X f
    return d


def rotation_to_quat(rot: Tensor) -> Tensor:
    """3x3 rotation(s) [..., 3, 3] -> unit quaternion(s) [..., 4] (w, x, y, z), w >= 0. Stable for all angles."""
    m = rot
    t = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    # Four candidate formulas; pick per matrix the one with the largest (most stable) denominator.
    cands = torch.stack(
        [
            torch.stack([1 + t, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
            torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + 2 * m[..., 0, 0] - t, m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
            torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], 1 + 2 * m[..., 1, 1] - t, m[..., 1, 2] + m[..., 2, 1]], -1),
            torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1], 1 + 2 * m[..., 2, 2] - t], -1),
        ],
        dim=-2,
    )  # [..., 4 candidates, 4]
    diag = torch.stack([t, m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]], -1)
    best = diag.argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product ``a ⊗ b`` of quaternions [..., 4] (w, x, y, z); broadcasts."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def transform_gaussians(
    means: Tensor,
    quats: Tensor,
    log_scales: Tensor,
    sh: Tensor,
    rotation: Tensor,
    translation: Tensor,
    scale: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Apply the similarity ``x -> scale * R x + t`` to Gaussians.

    Args:
        means: [N, 3]. quats: [N, 4] raw (w, x, y, z), norm preserved. log_scales: [N, 3]. sh: [N, K, 3] with
            K in {1, 4, 9, 16}. rotation: [3, 3] proper rotation. translation: [3]. scale: > 0.
    Returns:
        (means [N, 3], quats [N, 4], log_scales [N, 3], sh [N, K, 3]) in the input dtypes / devices.
    """
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    k = sh.shape[-2]
    degree = math.isqrt(k) - 1
    if (degree + 1) ** 2 != k or degree > 3:
        raise ValueError(f"sh has {k} coefficients per channel; expected 1, 4, 9 or 16")
    rot = rotation.to(means.device, torch.float64)
    new_means = (scale * means.double() @ rot.T + translation.to(means.device, torch.float64)).to(means.dtype)
    q_r = rotation_to_quat(rot).to(quats.dtype)
    new_quats = quat_multiply(q_r, quats)
    new_log_scales = log_scales + math.log(scale)
    if degree == 0:
        new_sh = sh.clone()
    else:
        d = sh_rotation_matrix(rot, degree).to(sh.device, sh.dtype)
        new_sh = torch.einsum("kj,njc->nkc", d, sh)  # [N, K, 3]
    return new_means, new_quats, new_log_scales, new_sh


@dataclass
class SceneTransform:
    """Similarity world -> normalised frame: ``x_n = scale * (R_a x_w + t_a)``, ``align = [R_a | t_a]`` [4, 4] float64."""

    align: Tensor
    scale: float

    @staticmethod
    def identity() -> "SceneTransform":
        return SceneTransform(torch.eye(4, dtype=torch.float64), 1.0)

    def matrix(self) -> Tensor:
        """[4, 4] float64 world -> normalised similarity."""
        s = torch.diag(torch.tensor([self.scale, self.scale, self.scale, 1.0], dtype=torch.float64))
        return s @ self.align.double()

    def apply(self, c2w: Tensor) -> Tensor:
        """World c2w [..., 4, 4] -> normalised c2w (rotations rotated, centres mapped); dtype preserved."""
        out = self.align.to(c2w.device, torch.float64) @ c2w.double()
        out[..., :3, 3] *= self.scale
        return out.to(c2w.dtype)

    def invert(self, c2w: Tensor) -> Tensor:
        """Normalised c2w [..., 4, 4] -> world c2w; dtype preserved."""
        c = c2w.double().clone()
        c[..., :3, 3] /= self.scale
        return (invert_rigid(self.align.to(c2w.device, torch.float64)) @ c).to(c2w.dtype)

    def apply_points(self, x: Tensor) -> Tensor:
        """World points [..., 3] -> normalised."""
        a = self.align.to(x.device, torch.float64)
        return (self.scale * (x.double() @ a[:3, :3].T + a[:3, 3])).to(x.dtype)

    def invert_points(self, x: Tensor) -> Tensor:
        """Normalised points [..., 3] -> world."""
        a = self.align.to(x.device, torch.float64)
        return ((x.double() / self.scale - a[:3, 3]) @ a[:3, :3]).to(x.dtype)

    def gaussians_to_world(self, means: Tensor, quats: Tensor, log_scales: Tensor, sh: Tensor):
        """Map Gaussians predicted in the normalised frame back to the world (see :func:`transform_gaussians`)."""
        rot_t = self.align[:3, :3].double().T
        return transform_gaussians(
            means, quats, log_scales, sh, rot_t, -(rot_t @ self.align[:3, 3].double()), 1.0 / self.scale
        )

    def gaussians_to_normalized(self, means: Tensor, quats: Tensor, log_scales: Tensor, sh: Tensor):
        """Inverse of :meth:`gaussians_to_world`."""
        return transform_gaussians(
            means, quats, log_scales, sh, self.align[:3, :3].double(), self.scale * self.align[:3, 3].double(),
            self.scale,
        )


def _safe_normalize(v: Tensor, fallback: Tensor) -> Tensor:
    n = v.norm()
    return v / n if n > 1e-9 else fallback / fallback.norm()


def compute_transform(c2w_stats: Tensor, method: NormMethod = "mean_cam", scale_to_unit: bool = True) -> SceneTransform:
    """The normalisation defined by the statistics views ``c2w_stats`` [V, 4, 4] (OpenCV, world frame)."""
    if c2w_stats.dim() != 3 or c2w_stats.shape[-2:] != (4, 4) or c2w_stats.shape[0] == 0:
        raise ValueError(f"c2w_stats must be [V, 4, 4] with V >= 1, got {tuple(c2w_stats.shape)}")
    c2w = c2w_stats.double()
    if method == "mean_cam":
        centre = c2w[:, :3, 3].mean(0)
        # Degenerate sums (cameras facing each other; down axes parallel to the forward axis) fall back to the
        # first camera's axes instead of producing NaNs.
        z = _safe_normalize(c2w[:, :3, 2].sum(0), c2w[0, :3, 2])
        up = c2w[:, :3, 1].sum(0)
        x = _safe_normalize(torch.linalg.cross(up, z), torch.linalg.cross(c2w[0, :3, 1], z))
        y = _safe_normalize(torch.linalg.cross(z, x), c2w[0, :3, 1])
        mean_cam = torch.eye(4, dtype=torch.float64)
        mean_cam[:3, 0], mean_cam[:3, 1], mean_cam[:3, 2], mean_cam[:3, 3] = x, y, z, centre
        align = invert_rigid(mean_cam)
    elif method == "first_cam":
        align = invert_rigid(c2w[0])
    elif method == "none":
        align = torch.eye(4, dtype=torch.float64)
    else:
        raise ValueError(f"normalisation method must be 'mean_cam', 'first_cam' or 'none', got {method!r}")
    scale = 1.0
    if scale_to_unit:
        centres = c2w[:, :3, 3] @ align[:3, :3].T + align[:3, 3]
        extent = float(centres.abs().max())
        # Coincident centres (incl. a single camera): the extent is ~0 up to rounding of the world coordinates.
        tol = 1e-9 * max(1.0, float(c2w[:, :3, 3].abs().max()))
        scale = 1.0 / extent if extent > tol else 1.0
    return SceneTransform(align=align, scale=scale)


def normalize_cameras(
    c2w: Tensor,
    method: NormMethod = "mean_cam",
    stats_c2w: Optional[Tensor] = None,
    scale_to_unit: bool = True,
) -> tuple[Tensor, SceneTransform]:
    """Normalise camera poses.

    Args:
        c2w: [V, 4, 4] OpenCV camera-to-world in the world frame.
        method: see the module docstring.
        stats_c2w: [S, 4, 4] views that define the frame (clean: the input views); default ``c2w`` itself
            (compat when ``c2w`` holds all loaded views).
    Returns:
        (normalised c2w [V, 4, 4] in c2w's dtype, SceneTransform).
    """
    transform = compute_transform(c2w if stats_c2w is None else stats_c2w, method, scale_to_unit)
    return transform.apply(c2w), transform


@dataclass
class NormalizeConfig:
    """Camera normalisation for the model (one config per component)."""

    method: NormMethod = "mean_cam"
    """'mean_cam' (full model), 'first_cam' (AR model) or 'none'."""
    stats: Literal["inputs", "all"] = "inputs"
    """Which views define the frame: 'inputs' (clean: targets never shape it) or 'all' loaded views, inputs then
    targets (official behaviour, Q11)."""


def normalize_views(
    input_c2w: Tensor, target_c2w: Optional[Tensor] = None, config: NormalizeConfig = NormalizeConfig()
) -> tuple[Tensor, Optional[Tensor], SceneTransform]:
    """Normalise input views [V, 4, 4] and optional target views [T, 4, 4] into one frame.

    Returns (normalised inputs, normalised targets or None, SceneTransform).
    """
    if config.stats == "all" and target_c2w is not None:
        stats = torch.cat([input_c2w, target_c2w.to(input_c2w.dtype)], 0)  # official load order: inputs first
    elif config.stats in ("inputs", "all"):
        stats = input_c2w
    else:
        raise ValueError(f"normalisation stats must be 'inputs' or 'all', got {config.stats!r}")
    tf = compute_transform(stats, config.method)
    return tf.apply(input_c2w), None if target_c2w is None else tf.apply(target_c2w), tf

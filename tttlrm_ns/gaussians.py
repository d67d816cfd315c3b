"""Gaussians container: pre-activation parameters in splatfacto's conventions, pruning, and similarity transforms.

Stored forms (what a renderer activates): ``means`` [..., N, 3]; ``sh`` [..., N, K, 3] raw SH coefficients
(``K = (degree+1)^2``; colour = ``max(0, sum_k sh_k Y_k(dir) + 0.5)``, gsplat / INRIA convention);
``log_scales`` [..., N, 3] (``exp`` at render); ``quats`` [..., N, 4] raw w, x, y, z (normalised at render);
``opacity_logits`` [..., N, 1] (``sigmoid`` at render). Leading dims are batch dims (possibly none).

Similarity transforms (:func:`transform_gaussians`): mapping a Gaussian by ``x -> s R x + t`` moves its mean, turns
its quaternion by ``R``, adds ``log s`` to its log scales, and must rotate its view-dependent colour,
``c'(d) = c(R^T d)``. Each SH band ``l`` transforms by a ``(2l+1) x (2l+1)`` matrix ``D_l(R)`` (the real Wigner
matrix in gsplat's basis). We obtain it by exact least squares on fixed, well-spread directions: band ``l`` of the
basis evaluated at ``R^T d`` is a linear function of the same band at ``d``, so ``A D = B`` (``A = Y_l(d_i)``,
``B = Y_l(R^T d_i)``) has an exact solution that least squares recovers to float64 precision. No basis-convention
bookkeeping (signs, orderings) is needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Mapping, Optional

import torch
from torch import Tensor

from tttlrm_ns.conventions import Similarity
from tttlrm_ns.sh import sh_bases

SPLATFACTO_NAMES = {"means": "means", "log_scales": "scales", "quats": "quats", "opacity_logits": "opacities"}
"""Field -> splatfacto ``gauss_params`` key; the SH are split into ``features_dc`` [N, 3] and ``features_rest``."""


@dataclass
class Gaussians:
    means: Tensor
    sh: Tensor
    log_scales: Tensor
    quats: Tensor
    opacity_logits: Tensor

    def __post_init__(self) -> None:
        n = self.means.shape[:-1]
        expect = {"means": 3, "log_scales": 3, "quats": 4, "opacity_logits": 1}
        for name, last in expect.items():
            t = getattr(self, name)
            if t.shape[:-1] != n or t.shape[-1] != last:
                raise ValueError(f"Gaussians.{name} has shape {tuple(t.shape)}, expected {(*n, last)}")
        if self.sh.shape[:-2] != n or self.sh.shape[-1] != 3 or self.sh.shape[-2] not in (1, 4, 9, 16):
            raise ValueError(f"Gaussians.sh has shape {tuple(self.sh.shape)}, expected {(*n, 'K in 1/4/9/16', 3)}")

    @property
    def num(self) -> int:
        return self.means.shape[-2]

    @property
    def sh_degree(self) -> int:
        return int(math.isqrt(self.sh.shape[-2])) - 1

    def map(self, fn) -> "Gaussians":
        return Gaussians(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def index(self, idx: Tensor) -> "Gaussians":
        """Select Gaussians along the N axis of an unbatched container (``idx`` long [M] or bool [N])."""
        return self.map(lambda t: t[idx])

    def __getitem__(self, b: int) -> "Gaussians":
        """Batch element ``b`` of a batched container."""
        return self.map(lambda t: t[b])

    @classmethod
    def cat(cls, parts: list["Gaussians"], dim: int = -2) -> "Gaussians":
        """Concatenate containers along the Gaussian axis (``dim`` counts from the end of ``means``)."""
        return cls(**{f.name: torch.cat([getattr(p, f.name) for p in parts], dim=dim - (f.name == "sh"))
                      for f in fields(cls)})

    def to(self, *args, **kwargs) -> "Gaussians":
        return self.map(lambda t: t.to(*args, **kwargs))

    @classmethod
    def from_splatfacto(cls, params: Mapping[str, Tensor]) -> "Gaussians":
        """Splatfacto's ``gauss_params`` (``means``, ``scales``, ``quats``, ``features_dc`` [N, 3],
        ``features_rest`` [N, K-1, 3], ``opacities``) as a container; the tensors are used as they are (no copy
        except the SH concatenation), so gradients reach the parameters."""
        sh = torch.cat([params["features_dc"][:, None, :], params["features_rest"]], dim=1)  # [N, K, 3]
        return cls(sh=sh, **{f: params[k] for f, k in SPLATFACTO_NAMES.items()})


@dataclass
class PruneConfig:
    """Opacity-based pruning of the official model, as kept fractions (``docs/reference_semantics.md`` §5.4,
    Q8).

    The official key ``prune_ratio`` is the *kept* top fraction (0.4) and ``random_ratio`` the share of the
    remainder kept at random (0.1); with 64 or more input views 0.30 / 0.05 apply. ``keep_top = 0``
    disables pruning.
    """

    keep_top: float = 0.0
    """Fraction of Gaussians kept by highest opacity (0 disables pruning)."""
    keep_random: float = 0.0
    """Share of the remaining Gaussians kept uniformly at random."""
    keep_top_many_views: float = 0.30
    """``keep_top`` when the input has at least ``many_views`` views."""
    keep_random_many_views: float = 0.05
    """``keep_random`` when the input has at least ``many_views`` views."""
    many_views: int = 64
    """View count from which the ``*_many_views`` fractions apply."""


def prune_indices(
    opacity_logits: Tensor, keep_top: float, keep_random: float, generator: Optional[torch.Generator] = None
) -> Tensor:
    """Indices kept by opacity pruning of one sample (``opacity_logits`` [N, 1] or [N]).

    Returns the ``floor(keep_top N)`` most opaque Gaussians by decreasing opacity, followed by
    ``floor((1 - keep_top) keep_random N)`` drawn uniformly without replacement from the rest (seeded by
    ``generator``). ``keep_top <= 0`` keeps everything in the original order.
    """
    logits = opacity_logits.reshape(-1)
    n = logits.numel()
    if keep_top <= 0:
        return torch.arange(n, device=logits.device)
    if not (0 < keep_top <= 1 and 0 <= keep_random <= 1):
        raise ValueError(f"keep fractions must lie in [0, 1], got keep_top={keep_top}, keep_random={keep_random}")
    order = torch.argsort(logits.detach(), descending=True, stable=True)
    k1 = int(math.floor(keep_top * n))
    k2 = int(math.floor((1 - keep_top) * keep_random * n))
    rest = order[k1:]
    perm = torch.randperm(rest.numel(), generator=generator, device="cpu")[:k2].to(rest.device)
    return torch.cat([order[:k1], rest[perm]])


def prune(g: Gaussians, cfg: PruneConfig, num_views: int, generator: Optional[torch.Generator] = None) -> Gaussians:
    """Prune an unbatched container according to ``cfg`` (see :func:`prune_indices`)."""
    if cfg.keep_top <= 0:
        return g
    many = num_views >= cfg.many_views
    top = cfg.keep_top_many_views if many else cfg.keep_top
    rnd = cfg.keep_random_many_views if many else cfg.keep_random
    return g.index(prune_indices(g.opacity_logits, top, rnd, generator))


# ---------------------------------------------------------------------------------------------------------------
# similarity transforms (see the module docstring)


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
    a = sh_bases(degree, dirs)  # [M, K]
    b = sh_bases(degree, dirs @ rot)  # rows R^T d_i
    k = (degree + 1) ** 2
    d = torch.zeros(k, k, dtype=torch.float64)
    d[0, 0] = 1.0
    for band in range(1, degree + 1):  # at most 3 bands
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


def map_gaussians(
    sim: Similarity, means: Tensor, quats: Tensor, log_scales: Tensor, sh: Tensor, inverse: bool = False
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gaussians (shapes as in :func:`transform_gaussians`) through ``sim`` (``x' = s (R x + t)``), or back through
    it with ``inverse=True`` (``x = R^T x' / s - R^T t``)."""
    rot = sim.align[:3, :3].double()
    t = sim.align[:3, 3].double()
    if inverse:
        return transform_gaussians(means, quats, log_scales, sh, rot.T, -(rot.T @ t), 1.0 / sim.scale)
    return transform_gaussians(means, quats, log_scales, sh, rot, sim.scale * t, sim.scale)


# ---------------------------------------------------------------------------------------------------------------
# input-resolution footprint (a 3D smoothing filter)
#
# A feed-forward model is trained on renders at its input resolution, whose rasteriser adds eps2d = 0.3 px^2 to every
# projected covariance; it is free to predict Gaussians far smaller than an input pixel, because that blur fills the
# gaps between them. Rendered finer than the input (an object model that saw 64^2 views rendering 512^2 frames) the
# blur shrinks with the pixels and the surfaces fall apart into separate dots. Widening each Gaussian to at least the
# footprint of an input pixel at its position -- Mip-Splatting's 3D filter (Yu et al., CVPR 2024, eq. 7:
# Sigma + (s / nu)^2 I, nu the highest sampling rate f / z over the views that see the point) with the input views as
# the "training" views -- renders what the model was trained to produce at any resolution. The opacity is left as
# it is (no energy compensation): at the input resolution the rasteriser's blur also kept it.


def input_footprint(means: Tensor, c2w: Tensor, fxfycxcy: Tensor, height: int, width: int,
                    chunk: int = 1 << 16) -> Tensor:
    """World-space size of one input pixel at each Gaussian: min over the input views whose image the mean
    projects into of ``z / f`` (``f = sqrt(fx fy)``); views it does not project into are ignored, and a mean seen by
    none gets the min over the views it lies in front of (``inf`` if behind all).

    Args:
        means: [N, 3] in the cameras' world frame.
        c2w: [V, 4, 4] OpenCV camera-to-world of the input views.
        fxfycxcy: [V, 4] pixel intrinsics at the input resolution ``height`` x ``width``.
    Returns:
        [N] float32 (same device as ``means``).
    """
    w2c = torch.linalg.inv(c2w.double()).float().to(means.device)  # [V, 4, 4]
    k = fxfycxcy.float().to(means.device)  # [V, 4]
    f = (k[:, 0] * k[:, 1]).sqrt()  # [V]
    out = []
    for s in range(0, means.shape[0], chunk):  # [n, V] temporaries: bounded memory for scene-sized outputs
        m = means[s:s + chunk].float()
        cam = torch.einsum("vij,nj->nvi", w2c[:, :3, :3], m) + w2c[:, :3, 3]  # [n, V, 3]
        z = cam[..., 2]
        zc = z.clamp_min(1e-8)
        u = k[:, 0] * cam[..., 0] / zc + k[:, 2]
        v = k[:, 1] * cam[..., 1] / zc + k[:, 3]
        ahead = z > 1e-6
        inside = ahead & (u >= 0) & (u <= width) & (v >= 0) & (v <= height)
        size = z / f  # [n, V]
        inf = torch.full_like(size, float("inf"))
        seen = torch.where(inside, size, inf).amin(dim=1)
        front = torch.where(ahead, size, inf).amin(dim=1)
        out.append(torch.where(torch.isfinite(seen), seen, front))
    return torch.cat(out) if out else means.new_zeros(0)


def widen_to_footprint(g: Gaussians, footprint: Tensor, variance: float) -> Gaussians:
    """Add ``variance * footprint^2`` to every axis' variance of an unbatched container (``footprint`` [N] from
    :func:`input_footprint`); ``variance`` is in input pixels squared (0 returns ``g`` unchanged). Means, colours,
    rotations and opacities are kept."""
    if variance < 0:
        raise ValueError(f"footprint filter variance must be >= 0 (input pixels^2), got {variance}")
    if footprint.shape != g.opacity_logits.shape[:-1]:
        raise ValueError(f"footprint of shape {tuple(footprint.shape)} for {g.num} Gaussians")
    if variance == 0:
        return g
    extra = (variance * footprint.clamp_max(1e6).to(g.log_scales.dtype) ** 2)[:, None]  # [N, 1]
    log_scales = 0.5 * torch.log(torch.exp(2 * g.log_scales) + extra)
    return Gaussians(means=g.means, sh=g.sh, log_scales=log_scales, quats=g.quats, opacity_logits=g.opacity_logits)

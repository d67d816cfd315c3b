"""Real spherical-harmonics colours in gsplat's convention (degree 0-3).

A leaf module (torch only) because two layers need the same basis: the renderers evaluate colours with it
(:mod:`tttlrm_ns.render`) and :mod:`tttlrm_ns.gaussians` rotates SH coefficients with it.

Basis: the real SH basis with the sign convention of the INRIA 3DGS / gsplat CUDA code (Sloan, "Efficient
Spherical Harmonic Evaluation", JCGT 2013). Directions are normalised here; the caller adds the +0.5 offset and
clamps at 0 (gsplat's `rasterization` does that after `spherical_harmonics`).
"""

from __future__ import annotations

import torch
from torch import Tensor

# Normalisation constants of the real SH basis, band by band (facts of the basis, see Sloan 2013).
C0 = 0.28209479177387814
C1 = 0.4886025119029199
C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)

MAX_SH_DEGREE = 3


def num_sh_bases(degree: int) -> int:
    """Number of coefficients K = (degree + 1)**2 used by `degree`."""
    return (degree + 1) ** 2


def sh_bases(degree: int, dirs: Tensor) -> Tensor:
    """Evaluate the basis at unit directions.

    dirs [..., 3] (unit) -> [..., (degree+1)**2]
    """
    if not 0 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"sh_degree must be in [0, {MAX_SH_DEGREE}], got {degree}")
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, C0)]
    if degree >= 1:
        out += [-C1 * y, C1 * z, -C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            C2[0] * x * y,
            C2[1] * y * z,
            C2[2] * (2.0 * zz - xx - yy),
            C2[3] * x * z,
            C2[4] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            C3[0] * y * (3.0 * xx - yy),
            C3[1] * x * y * z,
            C3[2] * y * (4.0 * zz - xx - yy),
            C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
            C3[4] * x * (4.0 * zz - xx - yy),
            C3[5] * z * (xx - yy),
            C3[6] * x * (xx - 3.0 * yy),
        ]
    return torch.stack(out, dim=-1)


def spherical_harmonics(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """SH colour (without the +0.5 offset) along `dirs` (not necessarily unit length).

    dirs [..., 3], coeffs [..., K, 3] with K >= (degree+1)**2 (extra bands are ignored) -> [..., 3]
    """
    k = num_sh_bases(degree)
    if coeffs.shape[-2] < k:
        raise ValueError(f"sh_degree={degree} needs at least {k} SH coefficients, got {coeffs.shape[-2]}")
    # Same normalisation as F.normalize(eps=1e-12): a zero direction gives the degree-0 term only.
    unit = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    bases = sh_bases(degree, unit)  # [..., k]
    return (bases[..., None] * coeffs[..., :k, :]).sum(dim=-2)


def sh_to_rgb(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """gsplat's colour from SH: clamp_min(SH(dirs) + 0.5, 0).  dirs [..., 3], coeffs [..., K, 3] -> [..., 3]"""
    return torch.clamp_min(spherical_harmonics(degree, dirs, coeffs) + 0.5, 0.0)

"""Pure-torch reference rasterizer: slow, obvious, differentiable by autograd. It is the oracle for the C++
extension and follows gsplat 1.4.0's CUDA semantics exactly (fully_fused_projection + isect_tiles +
rasterize_to_pixels, packed=False, pinhole cameras):

* projection: EWA splatting with the perspective Jacobian evaluated at the tan-fov clamped mean (1.3x the image
  extent, gsplat's `persp_proj`), eps2d blur, optional antialiasing compensation, culling of Gaussians with
  z < near or z > far, det <= 0, or whose 3-sigma square (radius = ceil(3*sqrt(max eigenvalue))) misses the image;
* binning: a Gaussian is composited onto every pixel of every tile its radius square touches (so pixels slightly
  beyond 3 sigma still receive it, exactly as on the GPU), per-tile order = depth (ties: Gaussian index);
* compositing front to back at pixel centres (x + 0.5, y + 0.5): alpha = min(0.999, o * exp(-sigma)), skipped when
  sigma < 0 or alpha < 1/255, and a pixel stops *before* the Gaussian that would bring its transmittance to
  <= 1e-4.

Everything here is vectorised; the only Python loops are over cameras and tiles (pixel chunks), which keeps memory
bounded. All functions keep the input dtype, so float64 gradchecks work.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from tttlrm_ns.sh import sh_to_rgb  # noqa: F401  (the SH colour path of this backend)

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
T_MIN = 1e-4


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices from (unnormalised) w, x, y, z quaternions.  quats [..., 4] -> [..., 3, 3]"""
    q = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(*quats.shape[:-1], 3, 3)


def quat_scale_to_covar(quats: Tensor, scales: Tensor) -> Tensor:
    """3D covariance R S S^T R^T.  quats [N, 4], scales [N, 3] (activated) -> [N, 3, 3]"""
    m = quat_to_rotmat(quats) * scales[..., None, :]
    return m @ m.transpose(-1, -2)


def project_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    calc_compensations: bool = False,
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Optional[Tensor]]:
    """EWA projection of N Gaussians into C pinhole cameras.

    means [N, 3], quats [N, 4], scales [N, 3], viewmats [C, 4, 4] (world-to-camera), Ks [C, 3, 3]
    -> radii [C, N] int32 (0 = culled), means2d [C, N, 2], depths [C, N], conics [C, N, 3] (upper triangle of the
       inverse 2D covariance: a, b, c), compensations [C, N] or None.
    Culled entries of means2d/depths/conics/compensations are zero (like gsplat's CUDA kernel), so no gradient
    reaches the inputs through them.
    """
    covars = quat_scale_to_covar(quats, scales)  # [N, 3, 3]
    R = viewmats[:, :3, :3]
    t = viewmats[:, :3, 3]
    means_c = torch.einsum("cij,nj->cni", R, means) + t[:, None, :]  # [C, N, 3]
    covars_c = torch.einsum("cij,njk,clk->cnil", R, covars, R)  # [C, N, 3, 3]

    x, y, z = means_c.unbind(-1)
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    # The Jacobian is evaluated at the mean clamped to 1.3x the field of view: Gaussians far outside the image
    # would otherwise get huge, useless footprints (gsplat persp_proj).
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = cx / fx + 0.3 * tan_fovx
    lim_y_pos = (height - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = cy / fy + 0.3 * tan_fovy
    # Depth-culled Gaussians get z = 1 for the arithmetic only, so no inf/NaN can leak into gradients.
    in_depth = (z >= near_plane) & (z <= far_plane)
    zs = torch.where(in_depth, z, torch.ones_like(z))
    tx = zs * torch.minimum(torch.maximum(x / zs, -lim_x_neg), lim_x_pos)
    ty = zs * torch.minimum(torch.maximum(y / zs, -lim_y_neg), lim_y_pos)
    zero = torch.zeros_like(zs)
    J = torch.stack([fx / zs, zero, -fx * tx / zs**2, zero, fy / zs, -fy * ty / zs**2], dim=-1)
    J = J.reshape(*zs.shape, 2, 3)
    cov2d = J @ covars_c @ J.transpose(-1, -2)  # [C, N, 2, 2]
    means2d = torch.stack([fx * x / zs + cx, fy * y / zs + cy], dim=-1)

    a, b, c = cov2d[..., 0, 0], 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0]), cov2d[..., 1, 1]
    det_orig = a * c - b * b
    a, c = a + eps2d, c + eps2d
    det = a * c - b * b
    valid = (det > 0) & in_depth
    det_safe = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)
    comps = None
    if calc_compensations:
        comps = torch.sqrt(torch.clamp(det_orig / det_safe, min=0.0))

    with torch.no_grad():
        half_trace = 0.5 * (a + c)
        v1 = half_trace + torch.sqrt(torch.clamp(half_trace**2 - det, min=0.01))
        radius = torch.ceil(3.0 * torch.sqrt(v1.clamp_min(0)))
        mx, my = means2d[..., 0], means2d[..., 1]
        inside = (mx + radius > 0) & (mx - radius < width) & (my + radius > 0) & (my - radius < height)
        keep = valid & inside & torch.isfinite(radius)
        radii = torch.where(keep, radius, torch.zeros_like(radius)).to(torch.int32)

    k = keep.to(means.dtype)
    means2d = means2d * k[..., None]
    conics = conics * k[..., None]
    depths = z * k
    if comps is not None:
        comps = comps * k
    return radii, means2d, depths, conics, comps


def tile_bounds(means2d: Tensor, radii: Tensor, tile_size: int, tiles_x: int, tiles_y: int) -> Tuple[Tensor, Tensor]:
    """Tile rectangle [min, max) touched by each Gaussian's radius square (gsplat isect_tiles).

    means2d [C, N, 2], radii [C, N] -> tmin [C, N, 2] int64, tmax [C, N, 2] int64 (x, y); empty when radius 0.
    """
    tm = means2d.detach() / tile_size
    tr = radii.to(tm.dtype)[..., None] / tile_size
    hi = torch.tensor([tiles_x, tiles_y], device=means2d.device)
    tmin = torch.minimum(torch.floor(tm - tr).clamp_min(0).long(), hi)
    tmax = torch.minimum(torch.ceil(tm + tr).clamp_min(0).long(), hi)
    tmax = torch.where((radii > 0)[..., None], tmax, tmin)
    return tmin, tmax


def bin_gaussians(
    means2d: Tensor, radii: Tensor, depths: Tensor, tile_size: int, tiles_x: int, tiles_y: int
) -> Tuple[Tensor, Tensor]:
    """(camera, tile)-sorted intersection list, each tile's run in depth order (ties by index).

    -> offsets [C * tiles_y * tiles_x + 1] int64 into flat_ids, flat_ids [n_isects] int64 (Gaussian index in
       0..N-1 of the camera the run belongs to).
    """
    C, N = radii.shape
    n_tiles = tiles_x * tiles_y
    tmin, tmax = tile_bounds(means2d, radii, tile_size, tiles_x, tiles_y)
    ext = (tmax - tmin).clamp_min(0)
    counts = (ext[..., 0] * ext[..., 1]).reshape(-1)  # [C*N]
    total = int(counts.sum())
    flat = torch.arange(C * N, device=radii.device).repeat_interleave(counts)  # [M]
    start = torch.cumsum(counts, 0) - counts
    local = torch.arange(total, device=radii.device) - start.repeat_interleave(counts)
    w = ext.reshape(-1, 2)[flat, 0]
    tx = tmin.reshape(-1, 2)[flat, 0] + local % w.clamp_min(1)
    ty = tmin.reshape(-1, 2)[flat, 1] + local // w.clamp_min(1)
    cam = flat // N
    # Rank of each Gaussian in its camera's stable depth order; the sort key (camera, tile, rank) is unique.
    order = torch.argsort(depths.detach(), dim=1, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(N, device=radii.device).expand(C, N).contiguous())
    key = ((cam * n_tiles + ty * tiles_x + tx) * N) + rank.reshape(-1)[flat]
    key, perm = torch.sort(key)
    flat_ids = (flat % N)[perm]
    tile_of = key // N
    offsets = torch.zeros(C * n_tiles + 1, dtype=torch.long, device=radii.device)
    offsets[1:] = torch.cumsum(torch.bincount(tile_of, minlength=C * n_tiles), 0)
    return offsets, flat_ids


def composite_pixels(
    pix: Tensor, means2d: Tensor, conics: Tensor, opacities: Tensor, colors: Tensor
) -> Tuple[Tensor, Tensor]:
    """Front-to-back compositing of depth-ordered Gaussians at pixel centres.

    pix [P, 2] pixel centres, means2d [G, 2], conics [G, 3], opacities [G], colors [G, D]
    -> accumulated colour [P, D] (no background), accumulated alpha [P]
    """
    d = means2d[None, :, :] - pix[:, None, :]  # [P, G, 2]
    dx, dy = d[..., 0], d[..., 1]
    sigma = 0.5 * (conics[:, 0] * dx * dx + conics[:, 2] * dy * dy) + conics[:, 1] * dx * dy
    alpha = torch.clamp_max(opacities * torch.exp(-sigma), ALPHA_MAX)
    used = (sigma >= 0) & (alpha >= ALPHA_MIN)
    alpha = torch.where(used, alpha, torch.zeros_like(alpha))
    one_minus = 1.0 - alpha
    # Transmittance in front of each Gaussian; a Gaussian is composited only if the transmittance after it stays
    # above T_MIN. T is non-increasing, so once one fails every later one fails too (gsplat's early stop).
    trans = torch.cumprod(torch.cat([torch.ones_like(one_minus[:, :1]), one_minus[:, :-1]], dim=1), dim=1)
    used = used & (trans * one_minus > T_MIN)
    weights = torch.where(used, alpha * trans, torch.zeros_like(alpha))  # [P, G]
    return weights @ colors, weights.sum(dim=1)


def rasterize_to_pixels(
    means2d: Tensor,
    conics: Tensor,
    colors: Tensor,
    opacities: Tensor,
    radii: Tensor,
    depths: Tensor,
    width: int,
    height: int,
    tile_size: int = 16,
    backgrounds: Optional[Tensor] = None,
    max_elements: int = 1 << 22,
) -> Tuple[Tensor, Tensor]:
    """Composite projected Gaussians into C images (gsplat rasterize_to_pixels semantics, packed=False).

    means2d [C, N, 2], conics [C, N, 3], colors [C, N, D], opacities [C, N], radii [C, N], depths [C, N],
    backgrounds [C, D] or None -> render_colors [C, H, W, D], render_alphas [C, H, W, 1]
    """
    C, N = radii.shape
    D = colors.shape[-1]
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    offsets, flat_ids = bin_gaussians(means2d, radii, depths, tile_size, tiles_x, tiles_y)
    offsets = offsets.tolist()
    dev, dt = means2d.device, means2d.dtype
    tile_cols, tile_alphas, tile_pix = [], [], []
    for cam in range(C):
        for ty in range(tiles_y):
            for tx in range(tiles_x):
                tile = (cam * tiles_y + ty) * tiles_x + tx
                lo, hi = offsets[tile], offsets[tile + 1]
                if lo == hi:
                    continue
                ids = flat_ids[lo:hi]
                x0, y0 = tx * tile_size, ty * tile_size
                x1, y1 = min(x0 + tile_size, width), min(y0 + tile_size, height)
                ys, xs = torch.meshgrid(
                    torch.arange(y0, y1, device=dev), torch.arange(x0, x1, device=dev), indexing="ij"
                )
                ys, xs = ys.reshape(-1), xs.reshape(-1)
                pix = torch.stack([xs, ys], dim=-1).to(dt) + 0.5
                m2, co, op, col = means2d[cam, ids], conics[cam, ids], opacities[cam, ids], colors[cam, ids]
                chunk = max(1, max_elements // len(ids))
                for p0 in range(0, pix.shape[0], chunk):
                    c_, a_ = composite_pixels(pix[p0 : p0 + chunk], m2, co, op, col)
                    tile_cols.append(c_)
                    tile_alphas.append(a_)
                tile_pix.append((cam * height + ys) * width + xs)
    # One scatter at the end: pixels never touched by a Gaussian stay at zero colour / zero alpha.
    out_c = torch.zeros(C * height * width, D, device=dev, dtype=colors.dtype)
    out_a = torch.zeros(C * height * width, device=dev, dtype=dt)
    if tile_pix:
        idx = torch.cat(tile_pix)
        out_c = out_c.index_put((idx,), torch.cat(tile_cols))
        out_a = out_a.index_put((idx,), torch.cat(tile_alphas))
    out_c = out_c.reshape(C, height, width, D)
    out_a = out_a.reshape(C, height, width)
    out_a = out_a[..., None]
    if backgrounds is not None:
        out_c = out_c + (1.0 - out_a) * backgrounds[:, None, None, :]
    return out_c, out_a

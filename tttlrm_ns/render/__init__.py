"""Gaussian rasterization with gsplat 1.4.0's `rasterization` semantics on any device.

`rasterize(...)` dispatches to gsplat's CUDA kernels for CUDA tensors and to our C++ extension
(`render/cpu/`) for CPU tensors; `backend="reference"` selects the pure-torch oracle (`render/reference.py`).
Cameras are OpenCV (x right, y down, z forward): viewmats are world-to-camera [C, 4, 4], Ks pixel intrinsics.
It takes activated parameters; `tttlrm_ns.render.splat.render_gaussians` renders a `Gaussians` container (or
splatfacto's parameters) from camera poses and is what the rest of the package calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from tttlrm_ns import sh as _sh

RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")
RASTERIZE_MODES = ("classic", "antialiased")
BACKENDS = ("auto", "gsplat", "cpu", "reference")

__all__ = ["rasterize", "RasterSettings", "RENDER_MODES", "BACKENDS"]


@dataclass(frozen=True)
class RasterSettings:
    """Scalar options shared by the projection and compositing stages of every backend."""

    width: int
    height: int
    near_plane: float = 0.01
    far_plane: float = 1e10
    eps2d: float = 0.3
    tile_size: int = 16
    antialiased: bool = False


def _fail(msg: str) -> None:
    raise ValueError(f"rasterize: {msg}")


def _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree, backgrounds,
                  render_mode, rasterize_mode, tile_size, backend) -> Tuple[int, int]:
    if backend not in BACKENDS:
        _fail(f"backend must be one of {BACKENDS}, got {backend!r}")
    if render_mode not in RENDER_MODES:
        _fail(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
    if rasterize_mode not in RASTERIZE_MODES:
        _fail(f"rasterize_mode must be one of {RASTERIZE_MODES}, got {rasterize_mode!r}")
    if not (isinstance(width, int) and isinstance(height, int)) or width < 1 or height < 1:
        _fail(f"width and height must be positive ints, got {width!r} x {height!r}")
    if not isinstance(tile_size, int) or tile_size < 1:
        _fail(f"tile_size must be a positive int, got {tile_size!r}")
    if means.dim() != 2 or means.shape[1] != 3:
        _fail(f"means must be [N, 3], got {tuple(means.shape)}")
    N = means.shape[0]
    if viewmats.dim() != 3 or viewmats.shape[1:] != (4, 4):
        _fail(f"viewmats must be [C, 4, 4] world-to-camera matrices, got {tuple(viewmats.shape)}")
    C = viewmats.shape[0]
    for name, t, shape in (("quats", quats, (N, 4)), ("scales", scales, (N, 3)), ("opacities", opacities, (N,)),
                           ("Ks", Ks, (C, 3, 3))):
        if tuple(t.shape) != shape:
            _fail(f"{name} must have shape {list(shape)}, got {list(t.shape)}")
    if sh_degree is None:
        if not ((colors.dim() == 2 and colors.shape[0] == N) or (colors.dim() == 3 and colors.shape[:2] == (C, N))):
            _fail(f"colors must be [N, D] or [C, N, D] with N={N}, C={C} (or pass sh_degree for SH "
                  f"coefficients), got {list(colors.shape)}")
    else:
        if not isinstance(sh_degree, int) or not 0 <= sh_degree <= _sh.MAX_SH_DEGREE:
            _fail(f"sh_degree must be None or an int in [0, {_sh.MAX_SH_DEGREE}], got {sh_degree!r}")
        ok = (colors.dim() == 3 and colors.shape[0] == N) or (colors.dim() == 4 and colors.shape[:2] == (C, N))
        if not ok or colors.shape[-1] != 3 or colors.shape[-2] < _sh.num_sh_bases(sh_degree):
            _fail(f"SH colors must be [N, K, 3] or [C, N, K, 3] with K >= {_sh.num_sh_bases(sh_degree)} for "
                  f"sh_degree={sh_degree}, got {list(colors.shape)}")
    if backgrounds is not None:
        d = 3 if sh_degree is not None else colors.shape[-1]
        if tuple(backgrounds.shape) != (C, d):
            _fail(f"backgrounds must be [C, D] = [{C}, {d}], got {list(backgrounds.shape)}")
    tensors = [means, quats, scales, opacities, colors, viewmats, Ks] + ([backgrounds] if backgrounds is not None
                                                                         else [])
    devices = {t.device for t in tensors}
    if len(devices) != 1:
        _fail(f"all tensors must be on one device, got {sorted(str(d) for d in devices)}")
    if not all(t.is_floating_point() for t in tensors):
        _fail("all tensors must be floating point")
    return C, N


def rasterize(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    sh_degree: Optional[int] = None,
    backgrounds: Optional[Tensor] = None,
    render_mode: str = "RGB",
    rasterize_mode: str = "classic",
    packed: bool = False,
    tile_size: int = 16,
    backend: str = "auto",
    absgrad: bool = False,
) -> Tuple[Tensor, Tensor, Dict]:
    """Render N 3D Gaussians into C pinhole cameras (gsplat 1.4.0 `rasterization`, packed=False semantics).

    means [N, 3], quats [N, 4] (w, x, y, z, unnormalised), scales [N, 3] (activated), opacities [N] (activated),
    colors [N, D] / [C, N, D] (post-activation features) or [N, K, 3] / [C, N, K, 3] SH coefficients when
    sh_degree is given (colour = max(SH(dir) + 0.5, 0), dir = mean - camera centre), viewmats [C, 4, 4]
    world-to-camera (OpenCV), Ks [C, 3, 3], backgrounds [C, D] or None.

    Returns (render_colors [C, H, W, X], render_alphas [C, H, W, 1], meta) with X = D for "RGB", 1 for "D"/"ED",
    D + 1 for "RGB+D"/"RGB+ED" ("ED" divides the accumulated depth by the alpha). meta holds "radii" [C, N] int32,
    "means2d" [C, N, 2] (retain_grad() is called on it when it requires grad, so .grad after backward gives the
    screen-space gradient used for densification; with absgrad=True also .absgrad), "depths" [C, N],
    "conics" [C, N, 3], "opacities" [C, N], "width", "height", "tile_size", "n_cameras", "backend".

    backend: "auto" (gsplat for CUDA tensors, the C++ extension for CPU tensors), "gsplat", "cpu", "reference".
    """
    C, N = _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree,
                         backgrounds, render_mode, rasterize_mode, tile_size, backend)
    if backend == "auto":
        backend = "gsplat" if means.is_cuda else "cpu"
    if backend == "gsplat":
        if not means.is_cuda:
            _fail("backend='gsplat' needs CUDA tensors; use backend='cpu' for CPU tensors")
        from tttlrm_ns.render.gsplat_backend import rasterize_gsplat

        out = rasterize_gsplat(means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane,
                               far_plane, eps2d, sh_degree, backgrounds, render_mode, rasterize_mode, packed,
                               tile_size, absgrad)
        out[2]["backend"] = "gsplat"
        if out[2]["means2d"].requires_grad:
            out[2]["means2d"].retain_grad()
        return out
    if means.is_cuda:
        _fail(f"backend={backend!r} runs on CPU tensors only; move them with .cpu() or use backend='gsplat'")
    if packed:
        _fail("packed=True is only implemented by the gsplat backend; the CPU backends return [C, N] layouts "
              "(packed=False), which render identically")
    if backend == "reference":
        from tttlrm_ns.render import reference as ops

        if absgrad:
            _fail("absgrad=True is not supported by backend='reference' (use 'cpu' or 'gsplat')")
    else:
        from tttlrm_ns.render import cpu_backend as ops

    settings = RasterSettings(width, height, near_plane, far_plane, eps2d, tile_size,
                              rasterize_mode == "antialiased")
    return _rasterize_with(ops, settings, means, quats, scales, opacities, colors, viewmats, Ks, sh_degree,
                           backgrounds, render_mode, absgrad, backend)


def _rasterize_with(ops, s: RasterSettings, means, quats, scales, opacities, colors, viewmats, Ks, sh_degree,
                    backgrounds, render_mode, absgrad, backend_name):
    """Shared pipeline of the CPU backends: project -> colours -> composite, mirroring gsplat's `rasterization`."""
    C, N = viewmats.shape[0], means.shape[0]
    radii, means2d, depths, conics, comps = ops.project_gaussians(
        means, quats, scales, viewmats, Ks, s.width, s.height, s.eps2d, s.near_plane, s.far_plane, s.antialiased)
    opac = opacities[None, :].expand(C, N)
    if comps is not None:
        opac = opac * comps

    if sh_degree is None:
        feats = colors if colors.dim() == 3 else colors[None].expand(C, -1, -1)
    else:
        # Camera centres in world space [C, 3]. A general inverse, as gsplat's `rasterization` computes it, not
        # conventions.invert_rigid: the two agree on values and on gradients along rigid motions, but only this one
        # gives gsplat's viewmats gradient in every direction (the CUDA agreement check compares it).
        campos = torch.linalg.inv(viewmats)[:, :3, 3]
        dirs = means[None, :, :] - campos[:, None, :]  # [C, N, 3]
        coeffs = colors if colors.dim() == 4 else colors[None].expand(C, -1, -1, -1)
        feats = ops.sh_to_rgb(sh_degree, dirs, coeffs)

    if render_mode in ("RGB+D", "RGB+ED"):
        feats = torch.cat([feats, depths[..., None].to(feats.dtype)], dim=-1)
        if backgrounds is not None:
            backgrounds = torch.cat([backgrounds, backgrounds.new_zeros(C, 1)], dim=-1)
    elif render_mode in ("D", "ED"):
        feats = depths[..., None].to(feats.dtype)
        if backgrounds is not None:
            backgrounds = backgrounds.new_zeros(C, 1)

    kwargs = {"absgrad": True} if absgrad else {}
    render_colors, render_alphas = ops.rasterize_to_pixels(
        means2d, conics, feats, opac, radii, depths, s.width, s.height, s.tile_size, backgrounds, **kwargs)
    if render_mode in ("ED", "RGB+ED"):
        render_colors = torch.cat(
            [render_colors[..., :-1], render_colors[..., -1:] / render_alphas.clamp(min=1e-10)], dim=-1)
    if means2d.requires_grad:
        means2d.retain_grad()
    meta = {
        "radii": radii,
        "means2d": means2d,
        "depths": depths,
        "conics": conics,
        "opacities": opac,
        "width": s.width,
        "height": s.height,
        "tile_size": s.tile_size,
        "tile_width": -(-s.width // s.tile_size),
        "tile_height": -(-s.height // s.tile_size),
        "n_cameras": C,
        "backend": backend_name,
    }
    return render_colors, render_alphas, meta

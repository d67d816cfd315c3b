"""Thin wrapper around gsplat 1.4.0's CUDA rasterizer (imported lazily: gsplat's CUDA code is only JIT-built or
loaded when it is actually used, which never happens on CPU-only machines)."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

from torch import Tensor


def rasterize_gsplat(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float,
    far_plane: float,
    eps2d: float,
    sh_degree: Optional[int],
    backgrounds: Optional[Tensor],
    render_mode: str,
    rasterize_mode: str,
    packed: bool,
    tile_size: int,
    absgrad: bool,
) -> Tuple[Tensor, Tensor, Dict]:
    """Call `gsplat.rendering.rasterization` with our argument set (all tensors on one CUDA device)."""
    try:
        from gsplat.rendering import rasterization
    except ImportError as exc:  # pragma: no cover - gsplat is a hard dependency
        raise RuntimeError("backend='gsplat' needs the gsplat package (pip install gsplat==1.4.0)") from exc
    return rasterization(
        means=means,
        quats=quats,
        scales=scales,
        opacities=opacities,
        colors=colors,
        viewmats=viewmats,
        Ks=Ks,
        width=width,
        height=height,
        near_plane=near_plane,
        far_plane=far_plane,
        eps2d=eps2d,
        sh_degree=sh_degree,
        packed=packed,
        tile_size=tile_size,
        backgrounds=backgrounds,
        render_mode=render_mode,
        absgrad=absgrad,
        rasterize_mode=rasterize_mode,
    )

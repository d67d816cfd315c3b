"""Deferred backpropagation through the rasteriser (memory-saving rendering for training).

Rendering ``C`` target views of ``N`` Gaussians with autograd keeps every view's projection, tile lists and
per-pixel compositing state alive until ``backward`` -- memory grows linearly with the number of views and
pixels. Long-LRM / tttLRM avoid this (``docs/reference_semantics.md`` §6.2): a custom autograd
function

* **forward**: renders all views (optionally patch by patch) under ``torch.no_grad`` and saves only the
  Gaussian tensors and the cameras;
* **backward**: re-renders one view (or one patch of one view) at a time with gradients enabled into detached
  copies of the Gaussian tensors, back-propagates that slice of the incoming image gradient, and accumulates the
  parameter gradients over views / patches.

Peak rasteriser memory is therefore one view (or one patch) regardless of ``C``; the price is a second forward
pass per view. The image loss itself is computed on the full stack of rendered images by the caller.

Patches are sub-windows of the full image rendered exactly as the full image would render them. Simply shifting
the principal point (``cx -> cx - x0``) and rendering at the window size is *not* exact under gsplat's semantics:
the EWA Jacobian is evaluated at the mean clamped to 1.3x the image's field of view, so a window has its own,
narrower clamp and Gaussians outside it get different footprints (errors of ~1e-2 in colour at 16 px patches).
Instead the Gaussians are projected once with the full camera and image size, their 2D means are shifted by
``(-x0, -y0)`` and only the window's pixels are composited (``_WindowOps``, on the CPU backends' projection and
compositing ops). This equals the full render provided the window origin lies on the rasteriser's tile grid: a
Gaussian is composited into every pixel of every tile its 3-sigma box touches (not only pixels inside the box),
so windows whose tiles are offset from the full image's tiles would give slightly different tails. Hence
``patch_size`` must be a multiple of ``tile_size``. Patch rendering is implemented for the CPU backends ("cpu",
"reference"); on CUDA (gsplat) use whole views (``patch_size=None``).

Cameras get no gradient (as in the official code); pass detached ``viewmats`` / ``Ks``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch import Tensor

# Keyword arguments of ``rasterize`` that hold one entry per camera and must be sliced with the view.
_PER_CAMERA_KWARGS = ("backgrounds",)
# Keyword arguments that make no sense here: they change the output layout or need the full batch at once.
_REJECTED_KWARGS = ("packed", "absgrad", "sparse_grad", "distributed")


@dataclass
class DeferredSettings:
    """Non-tensor state of one deferred render (what ``forward`` hands to ``backward``)."""

    width: int
    height: int
    patch_size: Optional[Tuple[int, int]]
    """(patch height, patch width) in pixels, or None for whole views."""
    rasterize_fn: Callable[..., Tuple[Tensor, Tensor, Dict[str, Any]]]
    kwargs: Dict[str, Any] = field(default_factory=dict)
    """Remaining ``rasterize`` keyword arguments (render_mode, sh_degree, near_plane, backgrounds, ...)."""
    per_camera_colors: bool = False
    """True when ``colors`` is [C, N, ...] (one colour set per camera, gsplat allows it)."""


def _windows(height: int, width: int, patch: Optional[Tuple[int, int]]) -> Iterator[Tuple[int, int, int, int]]:
    """Yield ``(y0, y1, x0, x1)`` sub-windows covering the image in raster order (last ones may be smaller)."""
    if patch is None:
        yield 0, height, 0, width
        return
    ph, pw = patch
    for y0 in range(0, height, ph):
        for x0 in range(0, width, pw):
            yield y0, min(y0 + ph, height), x0, min(x0 + pw, width)


class _WindowOps:
    """Projection/compositing ops of a CPU backend that render the window at ``(x0, y0)`` of a W x H image.

    ``tttlrm_ns.render._rasterize_with`` calls ``project_gaussians(..., width, height, ...)`` and
    ``rasterize_to_pixels(..., width, height, ...)`` with the settings' size, which here is the window's. The
    projection is redone at the full image size (so frustum clamping and culling match the full render) and its
    2D means are moved into window coordinates; compositing then covers just the window's pixels. Every other op
    (e.g. SH evaluation) is the base backend's.
    """

    def __init__(self, base: Any, full_width: int, full_height: int, x0: int, y0: int) -> None:
        self._base, self._W, self._H, self._x0, self._y0 = base, full_width, full_height, x0, y0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)

    def project_gaussians(self, means, quats, scales, viewmats, Ks, width, height, *args, **kwargs):
        radii, means2d, depths, conics, comps = self._base.project_gaussians(
            means, quats, scales, viewmats, Ks, self._W, self._H, *args, **kwargs)
        means2d = means2d - means2d.new_tensor([self._x0, self._y0])
        return radii, means2d, depths, conics, comps


def _rasterize_window(
    s: "DeferredSettings", means, quats, scales, opacities, colors, viewmats, Ks, win: Tuple[int, int, int, int],
    **kwargs: Any,
) -> Tuple[Tensor, Tensor]:
    """Pixels ``win = (y0, y1, x0, x1)`` of the full ``s.width x s.height`` render, through a CPU backend."""
    from tttlrm_ns import render

    backend = kwargs.pop("backend", "auto")
    if means.is_cuda or backend == "gsplat":
        raise ValueError("patch rendering needs the CPU backends (gsplat has no window rendering); "
                         "use patch_size=None for CUDA tensors")
    if backend == "reference":
        from tttlrm_ns.render import reference as base
    else:
        from tttlrm_ns.render import cpu_backend as base
    y0, y1, x0, x1 = win
    settings = render.RasterSettings(
        width=x1 - x0,
        height=y1 - y0,
        near_plane=kwargs.pop("near_plane", 0.01),
        far_plane=kwargs.pop("far_plane", 1e10),
        eps2d=kwargs.pop("eps2d", 0.3),
        tile_size=kwargs.pop("tile_size", 16),
        antialiased=kwargs.pop("rasterize_mode", "classic") == "antialiased",
    )
    sh_degree = kwargs.pop("sh_degree", None)
    backgrounds = kwargs.pop("backgrounds", None)
    render_mode = kwargs.pop("render_mode", "RGB")
    if kwargs:
        raise ValueError(f"unsupported rasterize arguments for patch rendering: {sorted(kwargs)}")
    colors_out, alphas_out, _ = render._rasterize_with(
        _WindowOps(base, s.width, s.height, x0, y0), settings, means, quats, scales, opacities, colors, viewmats,
        Ks, sh_degree, backgrounds, render_mode, False, f"{backend}-window")
    return colors_out, alphas_out


def _render_window(
    s: DeferredSettings,
    gauss: Tuple[Tensor, Tensor, Tensor, Tensor, Tensor],
    viewmats: Tensor,
    Ks: Tensor,
    c: int,
    win: Tuple[int, int, int, int],
) -> Tuple[Tensor, Tensor]:
    """Render window ``win`` of camera ``c``: colours [1, h, w, D], alphas [1, h, w, 1]."""
    means, quats, scales, opacities, colors = gauss
    kwargs = dict(s.kwargs)
    for key in _PER_CAMERA_KWARGS:
        if kwargs.get(key) is not None:
            kwargs[key] = kwargs[key][c : c + 1]
    cam_colors = colors[c : c + 1] if s.per_camera_colors else colors
    if s.patch_size is None:
        out_colors, out_alphas, _ = s.rasterize_fn(
            means, quats, scales, opacities, cam_colors, viewmats[c : c + 1], Ks[c : c + 1], s.width, s.height,
            **kwargs)
        return out_colors, out_alphas
    return _rasterize_window(s, means, quats, scales, opacities, cam_colors, viewmats[c : c + 1], Ks[c : c + 1],
                             win, **kwargs)


class _DeferredRasterize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, settings: DeferredSettings, means, quats, scales, opacities, colors, viewmats, Ks):
        C = viewmats.shape[0]
        gauss = (means, quats, scales, opacities, colors)
        out_colors: Optional[Tensor] = None
        out_alphas: Optional[Tensor] = None
        # Already under no_grad inside Function.forward; the explicit context documents the intent.
        with torch.no_grad():
            for c in range(C):
                for win in _windows(settings.height, settings.width, settings.patch_size):
                    col, alp = _render_window(settings, gauss, viewmats, Ks, c, win)
                    if out_colors is None:  # D (3, 1, 4, ...) is only known after the first render
                        out_colors = col.new_empty(C, settings.height, settings.width, col.shape[-1])
                        out_alphas = alp.new_empty(C, settings.height, settings.width, 1)
                    y0, y1, x0, x1 = win
                    out_colors[c, y0:y1, x0:x1] = col[0]
                    out_alphas[c, y0:y1, x0:x1] = alp[0]
        ctx.settings = settings
        ctx.save_for_backward(means, quats, scales, opacities, colors, viewmats, Ks)
        return out_colors, out_alphas

    @staticmethod
    def backward(ctx, grad_colors: Tensor, grad_alphas: Tensor):
        s: DeferredSettings = ctx.settings
        means, quats, scales, opacities, colors, viewmats, Ks = ctx.saved_tensors
        needs = ctx.needs_input_grad[1:6]
        # Detached leaves: each re-render builds a small graph that ends here; .grad accumulates over views.
        leaves = [t.detach().requires_grad_(n) for t, n in zip((means, quats, scales, opacities, colors), needs)]
        wanted = [leaf for leaf in leaves if leaf.requires_grad]
        if wanted:
            for c in range(viewmats.shape[0]):
                for win in _windows(s.height, s.width, s.patch_size):
                    y0, y1, x0, x1 = win
                    g_col = grad_colors[c : c + 1, y0:y1, x0:x1]
                    g_alp = grad_alphas[c : c + 1, y0:y1, x0:x1]
                    use_col, use_alp = bool(g_col.any()), bool(g_alp.any())
                    if not (use_col or use_alp):
                        continue  # nothing flows back from this window: skip the re-render
                    with torch.enable_grad():
                        col, alp = _render_window(s, tuple(leaves), viewmats, Ks, c, win)
                        outs: List[Tensor] = []
                        grads: List[Tensor] = []
                        if use_col:
                            outs.append(col)
                            grads.append(g_col)
                        if use_alp:
                            outs.append(alp)
                            grads.append(g_alp)
                        # Windows where no Gaussian lands produce outputs without a graph.
                        if any(o.requires_grad for o in outs):
                            pairs = [(o, g) for o, g in zip(outs, grads) if o.requires_grad]
                            torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
        result = [None if not leaf.requires_grad else (leaf.grad if leaf.grad is not None else torch.zeros_like(leaf))
                  for leaf in leaves]
        # settings, 5 Gaussian tensors, viewmats, Ks (cameras receive no gradient, as in the official code).
        return (None, *result, None, None)


def deferred_rasterize(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    colors: Tensor,  # [(C,) N, D] or [(C,) N, K, 3] with sh_degree
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    patch_size: Optional[int | Tuple[int, int]] = None,
    rasterize_fn: Optional[Callable[..., Tuple[Tensor, Tensor, Dict[str, Any]]]] = None,
    **rasterize_kwargs: Any,
) -> Tuple[Tensor, Tensor]:
    """Render ``C`` views with deferred backpropagation (see module docstring).

    Args:
        means, quats, scales, opacities, colors: activated Gaussian parameters exactly as ``rasterize`` takes
            them (quats need not be normalised). Gradients flow to every one that requires grad.
        viewmats: [C, 4, 4] world-to-camera (OpenCV); Ks: [C, 3, 3]. Must not require grad.
        width, height: image size in pixels.
        patch_size: None renders whole views; an int ``p`` or ``(ph, pw)`` renders ``ph x pw`` windows (edge
            windows are cropped to the image). Must be a multiple of ``tile_size`` (see module docstring).
        rasterize_fn: renderer with ``rasterize``'s signature for whole views (patch_size=None); defaults to
            ``tttlrm_ns.render.rasterize``. Patches always use the CPU backends' window rendering.
        **rasterize_kwargs: forwarded to the renderer (near_plane, far_plane, eps2d, sh_degree, backgrounds [C, D],
            render_mode, rasterize_mode, tile_size, backend). ``packed``/``absgrad``/``sparse_grad`` are rejected.

    Returns:
        colors [C, H, W, D] and alphas [C, H, W, 1], identical to ``rasterize``'s first two outputs; the
        per-Gaussian metadata (radii, means2d) is not returned because it would need the graph kept alive.
    """
    custom_fn = rasterize_fn
    if rasterize_fn is None:
        from tttlrm_ns.render import rasterize as rasterize_fn  # late import: render/__init__ may import us
    for key in _REJECTED_KWARGS:
        if rasterize_kwargs.get(key):
            raise ValueError(f"deferred_rasterize does not support {key}=True; call rasterize directly for that")
        rasterize_kwargs.pop(key, None)
    if viewmats.requires_grad or Ks.requires_grad:
        raise ValueError(
            "deferred_rasterize propagates no gradient to cameras (as in Long-LRM/tttLRM); "
            "pass viewmats.detach() and Ks.detach(), or use rasterize for camera optimisation"
        )
    if viewmats.dim() != 3 or viewmats.shape[1:] != (4, 4) or Ks.shape != (viewmats.shape[0], 3, 3):
        raise ValueError(f"expected viewmats [C, 4, 4] and Ks [C, 3, 3], got {tuple(viewmats.shape)} and {tuple(Ks.shape)}")
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got width={width}, height={height}")

    patch: Optional[Tuple[int, int]] = None
    if patch_size is not None:
        patch = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)  # type: ignore[assignment]
        tile = int(rasterize_kwargs.get("tile_size", 16))
        if len(patch) != 2 or any(p <= 0 or p % tile for p in patch):
            raise ValueError(
                f"patch_size {patch_size} must be a positive multiple of tile_size={tile} so that patch renders "
                f"reproduce the full image's tile binning exactly (e.g. {4 * tile})"
            )

        if means.is_cuda or rasterize_kwargs.get("backend") == "gsplat":
            raise ValueError("patch rendering needs the CPU backends (gsplat has no window rendering); "
                             "use patch_size=None for CUDA tensors")
        if custom_fn is not None:
            raise ValueError("rasterize_fn applies to whole-view rendering only (patch_size=None)")

    n = means.shape[0]
    per_camera_colors = colors.dim() == (3 if rasterize_kwargs.get("sh_degree") is None else 4)
    if per_camera_colors and colors.shape[:2] != (viewmats.shape[0], n):
        raise ValueError(f"per-camera colors must be [C={viewmats.shape[0]}, N={n}, ...], got {tuple(colors.shape)}")

    settings = DeferredSettings(
        width=int(width),
        height=int(height),
        patch_size=patch,
        rasterize_fn=rasterize_fn,
        kwargs=rasterize_kwargs,
        per_camera_colors=per_camera_colors,
    )
    return _DeferredRasterize.apply(settings, means, quats, scales, opacities, colors, viewmats, Ks)

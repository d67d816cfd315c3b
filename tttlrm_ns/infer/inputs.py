"""The chosen input views, as stored, -> what the model reads: size, memory check, images, the model's frame.

Pure torch, no nerfstudio. :func:`prepare_inputs` takes the input views as a capture stores them (images
``[H, W, 3|4]``, OpenCV world cameras, pixel intrinsics of the stored size) and an :class:`InputSpec`, and

1. chooses the input size (:func:`choose_long_side`: explicit sizes as given, else the stored size capped per
   device, never upsampled) and the resize (aspect kept + centre crop to the patch multiple, or stretched;
   intrinsics follow exactly, :mod:`tttlrm_ns.data.scene`);
2. says how many Gaussians the prediction makes and estimates its peak memory, refusing
   (:class:`InsufficientMemoryError`) *before* any weight is loaded when it cannot fit;
3. resizes the images (RGBA composited over the background; :func:`prepare_images`) and, for object weights, checks
   that the captures' border is the background the weights were trained on;
4. chooses the normalisation (``auto``: ``mean_cam`` for the full scan, ``first_cam`` for the autoregressive ones;
   the scale as the weights were trained, ``median_depth`` for the ``mvs`` initialiser) and puts the cameras in the
   model's frame (:func:`tttlrm_ns.infer.scene.normalise_for_model`: SfM points when given, else a plane sweep).

:func:`tttlrm_ns.infer.run.reconstruct_scene` takes the result (:class:`PreparedInputs`) to world-frame Gaussians.
What is decided is logged through ``log``; messages name the ``ns-train`` flag (``--pipeline.*``) of each knob, as
the nerfstudio method (:class:`tttlrm_ns.ns.pipeline.TttlrmPipeline`) is where they are set; warnings start with
``WARNING:``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tttlrm_ns.data.scene import ResizeConfig, ResizePlan, plan_resize
from tttlrm_ns.gaussians import PruneConfig
from tttlrm_ns.geometry.depth_range import DepthRangeError
from tttlrm_ns.geometry.free_space import FreeSpaceConfig
from tttlrm_ns.infer.predict import GIB, MemoryEstimate, available_memory, estimate_memory, keep_fraction
from tttlrm_ns.infer.scene import Normalised, normalise_for_model
from tttlrm_ns.model import TttlrmConfig

Log = Callable[[str], None]


def _quiet(message: str) -> None:
    pass


class PredictionError(ValueError):
    """The feed-forward prediction cannot run with this data / configuration; the message says what to change."""


class InsufficientMemoryError(PredictionError, MemoryError):
    """The predicted peak memory exceeds what is available; raised before any weight is loaded."""


BACKGROUND_TOLERANCE = 0.25
"""Largest per-channel difference between the image border's median colour and an object model's background that
still counts as the same background (JPEG noise, vignetting and shadows reach the border)."""


# --- resize --------------------------------------------------------------------------------------------------------
def make_plan(
    width: int,
    height: int,
    patch: int,
    target_h: Optional[int] = None,
    target_w: Optional[int] = None,
    long_side: Optional[int] = None,
    mode: str = "crop",
) -> ResizePlan:
    """Resize plan of a ``width x height`` image for a model with ``patch``-pixel patches.

    ``target_h x target_w`` (both or neither), else ``long_side`` (aspect kept, short side rounded down to the patch
    multiple), else the stored size cropped down to patch multiples (:func:`tttlrm_ns.data.scene.plan_resize`).
    """
    cfg = ResizeConfig(
        height=target_h, width=target_w, long_side=long_side, mode=mode, patch_size=patch  # type: ignore[arg-type]
    )
    return plan_resize(width, height, cfg)


def _resize_one(img: Tensor, plan: ResizePlan) -> Tensor:
    """[H, W, 3] uint8 or float -> [3, out_h, out_w] float32 in [0, 1]."""
    if (plan.scaled_w, plan.scaled_h) != (plan.src_w, plan.src_h):
        if img.dtype == torch.uint8:
            from PIL import Image

            im = Image.fromarray(img.cpu().numpy()).resize((plan.scaled_w, plan.scaled_h), Image.LANCZOS)
            x = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255.0
        else:
            x = F.interpolate(
                img.permute(2, 0, 1)[None].float().cpu(), size=(plan.scaled_h, plan.scaled_w), mode="bicubic",
                antialias=True, align_corners=False,
            )[0].clamp(0, 1)
    else:
        x = img.permute(2, 0, 1).cpu()
        x = x.float() / 255.0 if img.dtype == torch.uint8 else x.float()
    return x[:, plan.y0 : plan.y0 + plan.out_h, plan.x0 : plan.x0 + plan.out_w]


def prepare_images(images: Sequence[Tensor], plan: ResizePlan, background: Tensor) -> Tensor:
    """Stored images ``[H, W, 3|4]`` (uint8 or float) -> model input [V, 3, out_h, out_w] float32 in [0, 1].

    uint8 images are resized with PIL's Lanczos filter (the official loader's), float images with antialiased
    bicubic interpolation. RGBA images are composited over ``background`` [3] (in [0, 1]) first.
    """
    out = []
    for img in images:  # one resize per view (PIL works on single images)
        if img.shape[-1] == 4:
            f = img.float() / 255.0 if img.dtype == torch.uint8 else img.float()
            rgb = f[..., :3] * f[..., 3:] + background.to(f) * (1 - f[..., 3:])
            img = (rgb * 255).round().to(torch.uint8) if img.dtype == torch.uint8 else rgb
        elif img.shape[-1] != 3:
            raise ValueError(f"expected RGB or RGBA images, got {img.shape[-1]} channels")
        out.append(_resize_one(img, plan))
    return torch.stack(out)


# --- what the run asks for -------------------------------------------------------------------------------------------
@dataclass
class InputSize:
    """The input size knobs (:func:`choose_long_side`). No defaults: they are ``--pipeline.*`` knobs of the nerfstudio
    method (:class:`tttlrm_ns.ns.pipeline.TttlrmPipelineConfig`, which documents them and holds their one default)."""

    long_side: Optional[int]
    height: Optional[int]
    width: Optional[int]
    auto_long_side_cuda: int
    auto_long_side_cpu: int
    resize_mode: str


@dataclass
class InputSpec:
    """How the input views become the model's input. No defaults: each field is a ``--pipeline.*`` knob of the
    nerfstudio method (:class:`tttlrm_ns.ns.pipeline.TttlrmPipelineConfig`, which documents them and holds their one
    default) or a property of the weights."""

    model: TttlrmConfig
    """The backbone's configuration (patch size, SH degree, scan and its chunk, bf16: the size rounding, the view
    count check and the memory estimate)."""
    init: str
    """``model`` (the network) or ``mvs`` (plane-sweep Gaussians, no network: no memory estimate, median-depth
    scale)."""
    device: str
    size: InputSize
    normalization: str
    """``auto``, ``mean_cam`` or ``first_cam``."""
    normalization_scale: str
    """``auto``, ``extent`` or ``median_depth``."""
    trained_scale: Optional[str]
    """The weights' ``trained.scale`` (what ``auto`` means; None: not recorded, ``extent``)."""
    background: Tensor
    """[3] in [0, 1]: RGBA images are composited over it; the render background of the plausibility check."""
    check_background: bool
    """Object weights trained on a fixed background: compare the captures' border with ``background``."""
    prune: PruneConfig
    free_space: FreeSpaceConfig
    chunk_views: int
    memory_budget_gb: Optional[float]
    """None: free GPU memory, or available RAM on CPU."""
    export_sh_degree: int
    """Highest SH degree the export writes (the nerfstudio model's), for the size of the ``.ply``."""


@dataclass
class PreparedInputs:
    """The model's input views in its frame (what :func:`tttlrm_ns.infer.run.reconstruct_scene` reads)."""

    images: Tensor
    """[V, 3, h, w] float32 in [0, 1] (CPU)."""
    c2w: Tensor
    """[V, 4, 4] OpenCV camera-to-world in the model's frame (float32)."""
    fxfycxcy: Tensor
    """[V, 4] intrinsics of ``images`` (float32)."""
    norm: Normalised
    """World -> model frame, and the measured depth range (median-depth scale)."""
    background: Tensor
    """[3] the background of the images' transparent pixels and of the plausibility renders."""
    init: str
    """``model`` or ``mvs``."""

    @property
    def num_views(self) -> int:
        return int(self.images.shape[0])

    @property
    def height(self) -> int:
        return int(self.images.shape[-2])

    @property
    def width(self) -> int:
        return int(self.images.shape[-1])


def choose_long_side(width: int, height: int, patch: int, size: InputSize, device: str) -> tuple[Optional[int], str]:
    """Input long side (None: the stored size) and why: explicit sizes as given, else the device's cap, never above
    the stored size (upsampling only adds Gaussians, not detail)."""
    if size.height is not None or size.width is not None:
        return None, "--pipeline.input-height / --pipeline.input-width"
    stored = max(width, height)
    if size.long_side is not None:
        up = " (upsampled, as asked)" if size.long_side > stored else ""
        return size.long_side, f"--pipeline.input-long-side {size.long_side}{up}"
    dev = torch.device(device).type
    cap = size.auto_long_side_cuda if dev == "cuda" else size.auto_long_side_cpu
    cap -= cap % patch
    flag = f"--pipeline.auto-long-side-{'cuda' if dev == 'cuda' else 'cpu'}"
    if stored <= cap:
        return None, f"automatic: the stored size (at most {cap} on {dev}, {flag}; never upsampled)"
    return cap, f"automatic: long side capped at {cap} on {dev} ({flag}, or --pipeline.input-long-side)"


def output_size_message(views: int, height: int, width: int, degree: int, prune: PruneConfig,
                        free_space: FreeSpaceConfig) -> str:
    """How many Gaussians the prediction makes and how large their ``ns-export gaussian-splat`` .ply is (SH of
    ``degree``)."""
    predicted = views * height * width  # one Gaussian per input pixel
    kept = math.ceil(keep_fraction(prune, views) * predicted)
    props = 3 + 3 + 3 * (degree + 1) ** 2 + 1 + 3 + 4  # xyz, normals, SH, opacity, scale, rotation (float32)
    mib = kept * props * 4 / 2**20
    at_most = "at most " if free_space.enabled else ""  # the free-space filter removes more
    return (
        f"will make {at_most}{kept:,} Gaussians ({views} views x {height}x{width} pixels = {predicted:,}, "
        f"kept {at_most}{kept / predicted:.0%} by opacity pruning); `ns-export gaussian-splat` writes about "
        f"{at_most}{mib:,.0f} MiB "
        f"({props} float32 per Gaussian; nerfstudio writes it value by value, about a minute per 0.75 M "
        "Gaussians on a 2-core CPU). Fewer: --pipeline.views.num-views, --pipeline.input-long-side"
    )


def check_memory(spec: InputSpec, views: int, height: int, width: int) -> MemoryEstimate:
    """The estimated peak of the prediction; :class:`InsufficientMemoryError` (naming what to reduce) when it
    exceeds ``spec.memory_budget_gb`` or the memory available on ``spec.device``."""
    cfg = spec.model
    est = estimate_memory(cfg, views, height, width, keep_fraction(spec.prune, views), spec.chunk_views,
                          free_space=spec.free_space)
    budget = (int(spec.memory_budget_gb * GIB) if spec.memory_budget_gb is not None
              else available_memory(spec.device))
    if est.total > budget:
        raise InsufficientMemoryError(
            f"tttLRM prediction from {views} views of {height}x{width} pixels needs about "
            f"{est.describe()} but only {budget / GIB:.2f} GiB are available on "
            f"{torch.device(spec.device).type}. Reduce it with "
            f"fewer input views (--pipeline.views.num-views, now {views}), a lower resolution "
            f"(--pipeline.input-long-side or --pipeline.input-height / --pipeline.input-width, now "
            f"{height}x{width}), fewer views per "
            f"decoding chunk (--pipeline.chunk-views, now {spec.chunk_views})"
            + ("" if cfg.autocast_bf16 else " or bf16 activations (--pipeline.model.bf16 on)")
            + "; --pipeline.memory-budget-gb overrides the available amount."
        )
    return est


def _rgb(c: Tensor) -> str:
    return "(" + ", ".join(f"{float(x):.2f}" for x in c) + ")"


def check_background(images: Tensor, background: Tensor, log: Log = _quiet) -> bool:
    """Object weights assume the captures' background is the one they were trained on (``trained.background``,
    the render background). Compare with the median colour of the input views' border pixels (transparent pixels
    are already composited over that background) and say so when they differ; True when they match."""
    border = torch.cat([images[..., :2, :].flatten(2), images[..., -2:, :].flatten(2),
                        images[..., :, :2].flatten(2), images[..., :, -2:].flatten(2)], -1)  # [V, 3, n]
    seen = border.permute(1, 0, 2).reshape(3, -1).median(dim=1).values
    gap = float((seen - background).abs().max())
    if gap > BACKGROUND_TOLERANCE:
        log(f"WARNING: the input views' border is {_rgb(seen)} but this object model renders and was trained on a "
            f"{_rgb(background)} background: the model treats the border as part of the object and the "
            "reconstruction will be poor. Capture on the weights' background or with transparency (RGBA images), or "
            "use --pipeline.init mvs (no learned background).")
        return False
    log(f"object background {_rgb(seen)} at the image borders matches the weights' {_rgb(background)}")
    return True


def resolve_normalization(spec: InputSpec, log: Log = _quiet) -> tuple[str, str]:
    """(alignment, scale) of the model's frame: ``auto`` = as trained (``mean_cam`` for the full scan,
    ``first_cam`` for ``ar`` / ``stream``; the weights' ``trained.scale``, else ``extent``); the ``mvs`` initialiser
    measures the depth range anyway, so its frame is scaled by the median depth."""
    method = spec.normalization
    if method == "auto":
        method = "mean_cam" if spec.model.scan == "full" else "first_cam"
    scale = spec.normalization_scale
    if scale == "auto":
        scale = spec.trained_scale or "extent"
    if spec.init == "mvs" and scale == "extent":
        scale = "median_depth"  # the sweep needs the measured depth range anyway
        log("--pipeline.init mvs measures the scene's depth range, so the frame is scaled by the median depth "
            "(not the camera extent); the Gaussians are the same either way in the world")
    return method, scale


def prepare_inputs(images: Sequence[Tensor], c2w: Tensor, fxfycxcy: Tensor, spec: InputSpec,
                   points: Optional[Tensor] = None, sizes: Optional[Sequence[tuple[int, int]]] = None,
                   log: Log = _quiet) -> PreparedInputs:
    """The chosen input views, as stored, in the model's frame at the model's size (steps: module docstring).

    Args:
        images: per view ``[H, W, 3|4]`` uint8 or float in [0, 1], as stored.
        c2w: [V, 4, 4] OpenCV camera-to-world in the world frame. fxfycxcy: [V, 4] pixel intrinsics of the stored
            images.
        spec: what the run asks for (:class:`InputSpec`).
        points: [N, 3] SfM points in the world frame, if the capture has them (the median-depth scale prefers them).
        sizes: (W, H) per view as its camera says (None: the images' shapes); all views must have one size.
    Raises:
        PredictionError: views of different sizes, a view count the scan cannot chunk, a depth range that cannot be
            measured;
        InsufficientMemoryError: the prediction cannot fit (checked before anything is loaded).
    """
    v = len(images)
    found = set(sizes) if sizes is not None else {(int(im.shape[1]), int(im.shape[0])) for im in images}
    if len(found) > 1:
        raise PredictionError(
            f"the input views have different image sizes {sorted(found)} (WxH); tttLRM needs one size for all "
            "input views. Resize the images or restrict the views."
        )
    width, height = found.pop()
    cfg = spec.model
    if cfg.scan != "full" and v % cfg.ar_chunk_views:
        raise PredictionError(
            f"the '{cfg.scan}' scan updates its fast weights every {cfg.ar_chunk_views} views, but "
            f"{v} input views were selected; choose a multiple of {cfg.ar_chunk_views} with "
            "--pipeline.views.num-views (or change --pipeline.model.ar-chunk-views)"
        )
    long_side, why = choose_long_side(width, height, cfg.patch_size, spec.size, spec.device)
    plan = make_plan(width, height, cfg.patch_size, spec.size.height, spec.size.width, long_side,
                     spec.size.resize_mode)
    log(f"input size {plan.out_w}x{plan.out_h} from {width}x{height} stored images ({why})")
    if spec.init == "model":  # the network's size and memory (the sweep's is a small fraction)
        log(output_size_message(v, plan.out_h, plan.out_w, min(cfg.sh_degree, spec.export_sh_degree), spec.prune,
                                spec.free_space))
        est = check_memory(spec, v, plan.out_h, plan.out_w)
        log(f"{v} input views at {plan.out_h}x{plan.out_w} ({width}x{height} stored), scan={cfg.scan}, "
            f"estimated peak {est.describe()}")

    k = plan.apply_to_intrinsics(fxfycxcy)
    background = spec.background.detach().float().cpu()
    image_t = prepare_images(images, plan, background)
    if spec.check_background:
        check_background(image_t, background, log)
    method, scale = resolve_normalization(spec, log)
    try:
        norm = normalise_for_model(image_t, c2w, k, method, scale, points if scale == "median_depth" else None)
    except DepthRangeError as e:
        raise PredictionError(f"cannot measure the scene's depth for the median-depth normalisation: {e}. "
                              "Use a capture with SfM points (ns-process-data, colmap) or more overlapping views, "
                              "or --pipeline.normalization-scale extent") from None
    log(f"{method} alignment, {norm.describe()}")
    return PreparedInputs(images=image_t, c2w=norm.c2w, fxfycxcy=k.float(), norm=norm, background=background,
                          init=spec.init)


__all__ = ["PredictionError", "InsufficientMemoryError", "BACKGROUND_TOLERANCE", "make_plan", "prepare_images",
           "InputSize", "InputSpec", "PreparedInputs", "choose_long_side", "output_size_message", "check_memory",
           "check_background", "resolve_normalization", "prepare_inputs"]

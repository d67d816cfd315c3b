"""From prepared input views to Gaussians in the world frame: normalise -> reconstruct -> world.

Pure torch, no nerfstudio: the nerfstudio pipeline (:class:`tttlrm_ns.ns.pipeline.TttlrmPipeline`), the stress
set evaluation (:mod:`tttlrm_ns.eval.stress`) and the held-out evaluation (:mod:`tttlrm_ns.train.holdout`) call the
same functions, so the frame the model sees and what happens to its output are decided in one place.

:func:`reconstruct` (with :class:`ReconstructConfig`): the chunked prediction (:mod:`tttlrm_ns.infer.predict`),
the free-space filter, opacity pruning and the footprint filter, in the model's frame.

Normalisation (:func:`normalise_for_model`): the weights' ``trained.normalization`` (``mean_cam`` / ``first_cam``
alignment) and ``trained.scale``: ``extent`` (official: camera extent) or ``median_depth`` (the scene's median depth
= 1, measured from SfM points when the capture has them, else by a wide plane sweep of the input views;
:mod:`tttlrm_ns.geometry.depth_range`). The returned :class:`~tttlrm_ns.geometry.depth_range.DepthRange` says
where the depth came from, for the log.

Two more things a prediction needs and that live here:

* :func:`mvs_gaussians`, the non-learned initialiser: Gaussians at the plane-sweep depth of every pixel (unmeasured
  pixels filled from their measured surroundings) with the input colours (``--pipeline.init mvs``), a baseline the
  learned model must beat and an explicit fallback for captures the model does not suit.
* :func:`check_plausibility`: renders the prediction into a few of its own input views; a reconstruction that cannot
  even reproduce the views it was made from is implausible, and the log says so with the likely cause.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from tttlrm_ns.conventions import camera_rays, fxfycxcy_to_K
from tttlrm_ns.data.normalize import SceneTransform, compute_transform, scale_to_depth
from tttlrm_ns.eval.metrics import psnr_from_mse
from tttlrm_ns.gaussians import Gaussians, PruneConfig, input_footprint, rotation_to_quat, widen_to_footprint
from tttlrm_ns.geometry.depth_range import DepthRange, range_from_points, range_from_views
from tttlrm_ns.geometry.free_space import FreeSpaceConfig, free_space_mask
from tttlrm_ns.geometry.plane_sweep import PlaneSweepConfig, fill_depth, plane_sweep
from tttlrm_ns.infer.predict import predict_gaussians
from tttlrm_ns.model import TttlrmModel
from tttlrm_ns.sh import C0


@dataclass
class Normalised:
    """Input cameras in the model's frame and how they got there."""

    c2w: Tensor
    """[V, 4, 4] OpenCV camera-to-world in the model's frame (float32)."""
    transform: SceneTransform
    """World -> model frame."""
    depth_range: Optional[DepthRange]
    """The measured depth range in world units (``median_depth`` scale only)."""

    def frame_range(self) -> tuple[float, float]:
        """The measured (near, far) in the model's frame (``median_depth`` scale only)."""
        if self.depth_range is None:
            raise ValueError("no measured depth range: the cameras were scaled by their extent, not by depth")
        s = float(self.transform.scale)
        return self.depth_range.near * s, self.depth_range.far * s

    def describe(self) -> str:
        if self.depth_range is None:
            return f"scale {self.transform.scale:.4g} from the camera extent"
        return f"scale {self.transform.scale:.4g} = 1 / median depth; {self.depth_range.describe()}"


def normalise_for_model(
    images: Tensor,
    c2w: Tensor,
    fxfycxcy: Tensor,
    method: str = "mean_cam",
    scale: str = "extent",
    points: Optional[Tensor] = None,
) -> Normalised:
    """Cameras of the input views in the frame the weights expect.

    Args:
        images: [V, 3, H, W] in [0, 1] (used only to measure depth when ``scale="median_depth"`` and no points).
        c2w: [V, 4, 4] OpenCV camera-to-world, world frame. fxfycxcy: [V, 4] intrinsics of ``images``.
        method: alignment, ``mean_cam`` / ``first_cam`` / ``none`` (:mod:`tttlrm_ns.data.normalize`).
        scale: ``extent`` or ``median_depth``.
        points: [N, 3] SfM points in the world frame, if the capture has them (``median_depth`` prefers them).
    """
    tf = compute_transform(c2w, method)  # type: ignore[arg-type]
    rng = None
    if scale == "median_depth":
        h, w = images.shape[-2:]
        if points is not None and len(points) > 0:
            rng = range_from_points(points, c2w, fxfycxcy, h, w)
        else:
            rng = range_from_views(images, c2w, fxfycxcy)
        tf = scale_to_depth(tf, rng.median)
    elif scale != "extent":
        raise ValueError(f"normalisation scale must be 'extent' or 'median_depth', got {scale!r}")
    return Normalised(tf.apply(c2w.double()).float(), tf, rng)


def to_world(g: Gaussians, transform: SceneTransform) -> Gaussians:
    """Gaussians of the model's frame -> the world frame (means, rotations, scales and SH)."""
    means, quats, log_scales, sh = transform.gaussians_to_world(g.means, g.quats, g.log_scales, g.sh)
    return Gaussians(means=means, sh=sh, log_scales=log_scales, quats=quats, opacity_logits=g.opacity_logits)


def footprint_filtered(g: Gaussians, c2w: Tensor, fxfycxcy: Tensor, height: int, width: int,
                       variance: float) -> Gaussians:
    """Widen every Gaussian by ``variance`` input pixels^2 at its input-pixel footprint (0: unchanged)."""
    if variance < 0:
        raise ValueError(f"footprint filter must be >= 0 (input pixels^2 of variance), got {variance}")
    if variance == 0:
        return g
    fp = input_footprint(g.means, c2w.to(g.means.device), fxfycxcy.to(g.means.device), height, width)
    return widen_to_footprint(g, fp, variance)


SCENE_FREE_SPACE_TOLERANCE = 0.05
"""Default of the free-space filter for scene weights (with ``min_views = 2``), chosen on the held-out stress set
(docs/stress/free_space_sweep.md: the mean feed-forward PSNR over the 7 room classes at 8 and 16 views of the shipped
scene weights rose monotonically as the tolerance fell from 0.5 to 0.05, every class above the unfiltered
prediction). Object weights keep it off: on the object classes every tolerance tried lost PSNR
(docs/stress/free_space_objects.md)."""


@dataclass
class ReconstructConfig:
    """What happens to the network's per-pixel Gaussians before they leave :func:`reconstruct` (the defaults are
    the nerfstudio pipeline's and the benchmarks')."""

    prune: PruneConfig = field(default_factory=lambda: PruneConfig(keep_top=0.4, keep_random=0.1))
    """Opacity pruning (official: keep the 40 % most opaque + 10 % of the rest at random)."""
    free_space: FreeSpaceConfig = field(default_factory=lambda: FreeSpaceConfig(tolerance=SCENE_FREE_SPACE_TOLERANCE,
                                                                                min_views=2))
    """Drop the Gaussians that other input views see through, before pruning (:mod:`tttlrm_ns.geometry.free_space`;
    tolerance 0: off). Scene default; :meth:`for_kind` gives the object default."""
    footprint_filter: float = 0.1
    """Variance, in input pixels squared, added to every Gaussian at the size of an input pixel where it sits
    (:func:`footprint_filtered`); 0: the model's raw output (the official pipeline)."""
    chunk_views: int = 8
    """Views per chunk of ray encoding / Gaussian decoding (bounds per-pixel memory; the backbone sees all)."""
    seed: int = 777
    """Seed of the random part of pruning (official: 777 + rank)."""

    @classmethod
    def for_kind(cls, kind: str) -> "ReconstructConfig":
        """The defaults for ``scene`` or ``object`` weights (they differ only in the free-space filter)."""
        if kind == "scene":
            return cls()
        if kind == "object":
            return cls(free_space=FreeSpaceConfig(tolerance=0.0, min_views=2))
        raise ValueError(f"weights kind must be 'scene' or 'object', got {kind!r}")




@torch.no_grad()
def reconstruct(model: TttlrmModel, images: Tensor, c2w: Tensor, fxfycxcy: Tensor,
                cfg: Optional[ReconstructConfig] = None) -> Gaussians:
    """The feed-forward reconstruction in the model's frame: predict (chunked) -> free-space filter -> prune ->
    footprint filter.

    Args:
        model: the backbone, on the device of the inputs.
        images: [V, 3, H, W] in [0, 1]. c2w: [V, 4, 4] OpenCV in the model's frame (:func:`normalise_for_model`).
        fxfycxcy: [V, 4] intrinsics of ``images``.
    Returns:
        Unbatched Gaussians [M, ...] in the frame of ``c2w`` (:func:`to_world` takes them to the world).
    """
    cfg = cfg or ReconstructConfig()
    h, w = images.shape[-2:]
    g = predict_gaussians(model, images, c2w, fxfycxcy, cfg.prune, cfg.chunk_views,
                          torch.Generator().manual_seed(cfg.seed), free_space=cfg.free_space)
    return footprint_filtered(g, c2w, fxfycxcy, h, w, cfg.footprint_filter)


@dataclass
class MvsInitConfig:
    """The non-learned initialiser (:func:`mvs_gaussians`)."""

    downsample: int = 2
    """Sweep (and Gaussians) at 1 / this of the input resolution: one Gaussian per downsampled pixel."""
    num_planes: int = 48
    neighbours: int = 4
    min_confidence: float = 0.1
    """Pixels whose sweep confidence is below this are unmeasured: filled (``fill_holes``) or left out."""
    fill_holes: bool = True
    """Give unmeasured pixels the depth of the measured pixels around them
    (:func:`tttlrm_ns.geometry.plane_sweep.fill_depth`) instead of leaving a hole through which the background
    shows. (The classical fusion filter, which drops pixels whose depth no neighbour confirms, was measured and left
    out: its holes cost more than the wrong depths it removes, 17.6 / 19.7 dB against 14.2 / 17.2 dB on the input
    views of the analytic orbit / forward-facing test scenes.)"""
    sigma_pixels: float = 0.5
    """Gaussian standard deviation in (downsampled) pixels at its depth: 0.5 tiles the pixels without blurring."""
    opacity: float = 0.9
    free_space: FreeSpaceConfig = field(default_factory=lambda: FreeSpaceConfig(tolerance=0.0, min_views=2))
    """Leave out the pixels whose point other views see through (:mod:`tttlrm_ns.geometry.free_space`, on the
    filled depth maps; tolerance 0: off)."""


@torch.no_grad()
def mvs_gaussians(images: Tensor, c2w: Tensor, fxfycxcy: Tensor, near: float, far: float,
                  cfg: Optional[MvsInitConfig] = None) -> Gaussians:
    """One Gaussian per (downsampled) input pixel at the plane-sweep depth, coloured by the input (degree-0 SH).

    Pixels the sweep measured confidently sit at their measured depth; the others take the depth of the measured
    pixels around them (``fill_holes``) or get no Gaussian. Each is a disc of ``sigma_pixels`` pixels at its depth,
    flattened along its camera's view direction, so each view is tiled without gaps.

    Args:
        images: [V, 3, H, W] in [0, 1]. c2w: [V, 4, 4] (any frame). fxfycxcy: [V, 4].
        near, far: the sweep's depth range in that frame.
    Returns:
        Unbatched Gaussians [M, ...] in the frame of ``c2w``.
    """
    cfg = cfg or MvsInitConfig()
    sweep = plane_sweep(images, c2w, fxfycxcy, near, far,
                        PlaneSweepConfig(num_planes=cfg.num_planes, neighbours=cfg.neighbours,
                                         downsample=cfg.downsample))
    v, h, w = sweep.depth.shape
    k = sweep.fxfycxcy
    depth = fill_depth(sweep.depth, sweep.confidence, cfg.min_confidence) if cfg.fill_holes else sweep.depth
    cam = camera_rays(k, h, w) * depth[..., None]  # [V, h, w, 3] camera frame
    rot = c2w[:, :3, :3].float()
    world = torch.einsum("vij,vhwj->vhwi", rot, cam) + c2w[:, None, None, :3, 3].float()
    colours = F.avg_pool2d(images.float(), cfg.downsample) if cfg.downsample > 1 else images.float()
    keep = torch.ones_like(depth, dtype=torch.bool) if cfg.fill_holes else sweep.confidence > cfg.min_confidence
    if cfg.free_space.enabled:
        keep &= free_space_mask(depth, c2w, k, cfg.free_space)
    n = int(keep.sum())
    size = (depth / k[:, 0, None, None] * cfg.sigma_pixels)[keep]  # sigma_pixels pixels at the measured depth
    log_scales = torch.log(torch.stack([size, size, size * 0.1], -1).clamp_min(1e-8))
    quats = rotation_to_quat(rot)[:, None, None].expand(v, h, w, 4)[keep]  # disc axes = camera axes
    rgb = colours.permute(0, 2, 3, 1)[keep]
    return Gaussians(
        means=world[keep],
        sh=((rgb - 0.5) / C0)[:, None, :],
        log_scales=log_scales,
        quats=quats,
        opacity_logits=torch.full((n, 1), math.log(cfg.opacity / (1 - cfg.opacity))),
    )


@dataclass
class Plausibility:
    """:func:`check_plausibility` result."""

    input_psnr: float
    """Mean PSNR of the prediction rendered into the checked input views against those views."""
    views: list[int]
    warning: Optional[str]
    """None if plausible, else what looks wrong, the likely cause and the flag to try."""


PLAUSIBLE_INPUT_PSNR = 16.0
"""Below this the prediction cannot reproduce its own input views. Rendering the exact input views is the easiest
case for any reconstruction; a flat mean-colour image of a textured scene scores 11-16 dB there (the analytic test
scenes: 15.2 dB), so a prediction below 16 dB does no better than no geometry at all."""


@torch.no_grad()
def check_plausibility(g: Gaussians, images: Tensor, c2w: Tensor, fxfycxcy: Tensor, render: Callable,
                       num_views: int = 4, threshold: float = PLAUSIBLE_INPUT_PSNR,
                       source: str = "model") -> Plausibility:
    """Render ``g`` into up to ``num_views`` evenly spread input views and compare with the images.

    Args:
        g: unbatched Gaussians in the frame of ``c2w``. images: [V, 3, H, W]. c2w: [V, 4, 4]. fxfycxcy: [V, 4].
        render: ``render(g, c2w [C, 4, 4], K [C, 3, 3], width, height) -> [C, H, W, 3]`` (the caller's renderer).
        source: where ``g`` came from, ``model`` or ``mvs`` (the warning names the likely cause accordingly).
    """
    v, _, h, w = images.shape
    idx = sorted({round(i * (v - 1) / max(num_views - 1, 1)) for i in range(min(num_views, v))})
    pred = render(g, c2w[idx], fxfycxcy_to_K(fxfycxcy[idx].float()), w, h).permute(0, 3, 1, 2).clamp(0, 1)
    psnr = float(psnr_from_mse(((pred.cpu() - images[idx].cpu()) ** 2).flatten(1).mean(1)).mean())
    warning = None
    if psnr < threshold and source == "mvs":
        warning = (f"the plane-sweep Gaussians reproduce their own input views at only {psnr:.1f} dB (views {idx}; "
                   f"plausible: >= {threshold:g} dB): the views match too little (untextured surfaces, little "
                   "overlap) and leave holes. Try the model's prediction (--pipeline.init model), refinement steps "
                   "(--max-num-iterations), or more overlapping input views (--pipeline.views.num-views).")
    elif psnr < threshold:
        warning = (f"the prediction reproduces its own input views at only {psnr:.1f} dB (views {idx}; plausible: "
                   f">= {threshold:g} dB): the model's depth does not fit this capture (a trajectory or scale it was "
                   "not trained on). Try --pipeline.init mvs (Gaussians at the depth measured by a plane sweep), "
                   "refinement steps (--max-num-iterations), or more overlapping input views "
                   "(--pipeline.views.num-views).")
    return Plausibility(psnr, idx, warning)


__all__ = ["Normalised", "normalise_for_model", "to_world", "footprint_filtered", "ReconstructConfig", "reconstruct",
           "MvsInitConfig", "mvs_gaussians",
           "Plausibility", "check_plausibility", "PLAUSIBLE_INPUT_PSNR", "PruneConfig"]

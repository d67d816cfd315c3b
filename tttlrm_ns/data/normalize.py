"""Camera normalisation and the transform that maps Gaussians back to the world frame.

Behaviour of the official code: ``docs/reference_semantics.md`` §1.3 (normalisation), §5.5 (output frame) and Q11;
this docstring states what we implement.

The model expects cameras in a normalised frame. :func:`normalize_cameras` computes it and returns, besides the
normalised poses, an explicit :class:`SceneTransform` (the official code keeps only a mislabelled inverse, and
nothing at all for ``first_cam``). With ``T = SceneTransform(align, scale)`` a world point maps to
``x_n = scale * (R_a x_w + t_a)`` where ``align = [R_a | t_a]`` is rigid (a :class:`tttlrm_ns.conventions.Similarity`).

Methods:
  * ``mean_cam`` (full model): ``c = mean_i t_i``, ``z = normalize(sum_i z_i)``, ``u = sum_i y_i`` (summed *down*
    axes), ``x = normalize(u x z)``, ``y = normalize(z x x)``; ``M = [x y z c]``, ``align = M^-1``. The mean camera
    becomes the identity (looking along +z, y down).
  * ``first_cam`` (AR model): ``align = c2w_0^-1``: the first view becomes the identity.
  * ``none``: identity alignment (scale still applies unless ``scale_to_unit=False``).
  * scale (all): ``scale = 1 / max_{i,k} |t_{i,k}|`` over the aligned centres, so every centre lies in [-1, 1]^3.
    A single camera or coincident centres give ``max = 0``; then ``scale = 1`` (the official code divides by zero).

Scale by depth (extension, :func:`scale_to_depth`): instead of the camera extent, divide by the scene's median
depth (measured: SfM points or a plane sweep, :mod:`tttlrm_ns.geometry.depth_range`; in training, the renders'
exact depth), so the subject sits at depth ~1 whatever the trajectory. Under the extent scale the subject's
normalised depth varies ~10x between an orbit, a forward-facing capture and a walk-through, which one learned
depth prior cannot fit. The official presets keep the extent scale.

Which views give the statistics is the caller's choice (``stats_c2w``): the clean default is the input views only
(test poses must not shape the frame); the official code uses all loaded views, inputs and targets (compat).

Mapping Gaussians (positions, rotations, scales and SH colours) through the transform is
:func:`tttlrm_ns.gaussians.map_gaussians`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch
from torch import Tensor

from tttlrm_ns.conventions import Similarity, invert_rigid
from tttlrm_ns.gaussians import map_gaussians

NormMethod = Literal["mean_cam", "first_cam", "none"]


class SceneTransform(Similarity):
    """World -> normalised frame (:class:`tttlrm_ns.conventions.Similarity`), which also maps Gaussians."""

    def gaussians_to_world(self, means: Tensor, quats: Tensor, log_scales: Tensor, sh: Tensor):
        """Gaussians predicted in the normalised frame -> the world (see :func:`tttlrm_ns.gaussians.map_gaussians`)."""
        return map_gaussians(self, means, quats, log_scales, sh, inverse=True)

    def gaussians_to_normalized(self, means: Tensor, quats: Tensor, log_scales: Tensor, sh: Tensor):
        """Inverse of :meth:`gaussians_to_world`."""
        return map_gaussians(self, means, quats, log_scales, sh)


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


def scale_to_depth(transform: SceneTransform, median_depth: float) -> SceneTransform:
    """The same alignment with the scale that puts ``median_depth`` (world units, camera z) at depth 1.

    Depths are invariant under the rigid alignment, so only the scale changes."""
    if not (median_depth > 0 and median_depth < float("inf")):
        raise ValueError(f"median depth must be a positive finite number, got {median_depth}")
    return SceneTransform(align=transform.align, scale=1.0 / float(median_depth))


ScaleMode = Literal["extent", "median_depth"]


@dataclass
class NormalizeConfig:
    """Camera normalisation for the model (one config per component)."""

    method: NormMethod = "mean_cam"
    """'mean_cam' (full model), 'first_cam' (AR model) or 'none'."""
    stats: Literal["inputs", "all"] = "inputs"
    """Which views define the frame: 'inputs' (clean: targets never shape it) or 'all' loaded views, inputs then
    targets (the official behaviour)."""


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

"""Training loss terms as *partial sums over global counts* (``docs/reference_semantics.md`` §6.3).

Under sequence parallelism a rank holds a share of the target views and of the Gaussians. Each term is therefore
``sum over the local elements / number of elements of the whole sample``: summing the ranks' values gives exactly
the single-process mean, and the same holds for the gradients (see :mod:`tttlrm_ns.train.parallel`). Without
sequence parallelism the local share is everything and the terms are plain means.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from tttlrm_ns.eval.lpips_weights import LpipsWeightsError
from tttlrm_ns.eval.metrics import Lpips
from tttlrm_ns.model.head import to_patch_major


def mse_partial(render: Tensor, target: Tensor, total_views: int) -> Tensor:
    """``render``, ``target`` [T_loc, 3, H, W] -> sum of squared errors / (total_views * 3 * H * W)."""
    return (render - target).square().sum() / (total_views * render[0].numel())


def perceptual_lpips(net: str = "vgg") -> Lpips:
    """The frozen LPIPS network of the perceptual term (:class:`tttlrm_ns.eval.metrics.Lpips`, the package's one).

    Replaces the official VGG-19 feature loss, whose MatConvNet weights are not available offline; LPIPS-VGG is a
    VGG feature distance of the same kind. Missing backbone files raise the metric's error, which here also names
    the switch that turns the term off.
    """
    try:
        return Lpips(net)  # type: ignore[arg-type]
    except LpipsWeightsError as e:
        raise LpipsWeightsError(f"{e}\nOr disable the perceptual loss with --loss.perceptual 0.") from None


def perceptual_partial(lpips: Lpips, render: Tensor, target: Tensor, total_views: int) -> Tensor:
    """``render``, ``target`` [T_loc, 3, H, W] -> sum of the per-view LPIPS distances / ``total_views``, with
    gradients w.r.t. ``render`` (``lpips`` from :func:`perceptual_lpips`)."""
    # LPIPS clamps to [0, 1]; the render is composited on a white background so it is already in range.
    return lpips(render.float(), target.float()).sum() / total_views


def opacity_partial(opacity_logits: Tensor, total_gaussians: int) -> Tensor:
    """Sum of ``sigmoid(logit)`` over the local (pre-pruning) Gaussians / the sample's total Gaussian count."""
    return torch.sigmoid(opacity_logits.float()).sum() / total_gaussians


def mask_partial(opacity_logits: Tensor, depth: Tensor, patch: int, total_pixels: int) -> Tensor:
    """Silhouette term: binary cross-entropy between each input pixel's Gaussian opacity and whether the data has a
    surface at that pixel (depth > 0), summed / ``total_pixels``.

    Args:
        opacity_logits: [V_loc * H * W, 1] logits of the local input views' Gaussians (patch-major, one per pixel).
        depth: [V_loc, H, W] data z-depth, 0 where the ray hits nothing (object renders on a background).
    Meant for object data: it tells every background pixel's Gaussian to vanish and every object pixel's to be
    solid from the first step, a dense per-pixel signal that the photometric loss gives only through the render.
    Scene data has a surface at every pixel, where the term would only push all opacities up.
    """
    target = (to_patch_major(depth[:, None, None], patch).reshape(-1) > 0).float()
    logits = opacity_logits.float().reshape(-1)
    return F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / total_pixels


def _normalized_disparity(disp: Tensor) -> Tensor:
    """Per view: ``(d - median) / (mean |d - median| + 1e-6)`` over the pixels (lower median); disp [V, P]."""
    med = disp.median(dim=-1, keepdim=True).values
    dev = disp - med
    return dev / (dev.abs().mean(dim=-1, keepdim=True) + 1e-6)


def _camera_depth(means: Tensor, c2w: Tensor, depth: Tensor, patch: int) -> tuple[Tensor, Tensor]:
    """(z of the Gaussians in their own view's camera [V, P], data z-depth in the same pixel order [V, P])."""
    from tttlrm_ns.conventions import invert_rigid

    v, h, w = depth.shape
    pts = means.view(v, h * w, 3).float()
    w2c = invert_rigid(c2w.float())  # [V, 4, 4]
    z = torch.einsum("vj,vpj->vp", w2c[:, 2, :3], pts) + w2c[:, 2, 3:4]
    return z, to_patch_major(depth[:, None, None], patch).view(v, h * w)


def log_depth_partial(means: Tensor, c2w: Tensor, depth: Tensor, patch: int, total_pixels: int) -> Tensor:
    """L1 between ``log z`` of the Gaussians and ``log z`` of the data (exact, metric depth), summed over the valid
    pixels / ``total_pixels`` (V * H * W of the whole sample). Shapes as :func:`depth_partial`; ``depth`` must be in
    the normalised frame of ``c2w``. log: a relative error, the same weight near and far; z is clamped at 1e-3 so a
    Gaussian behind the camera still gets a gradient towards the front."""
    z, gt = _camera_depth(means, c2w, depth, patch)
    valid = gt > 0
    err = (torch.log(z.clamp_min(1e-3)) - torch.log(gt.clamp_min(1e-3))).abs()
    return torch.where(valid, err, torch.zeros_like(err)).sum() / total_pixels


def depth_partial(means: Tensor, c2w: Tensor, depth: Tensor, patch: int, total_pixels: int) -> Tensor:
    """Normalised-disparity SmoothL1 (beta 1) between the Gaussians' camera depth and the data's depth.

    Args:
        means: [V_loc * H * W, 3] Gaussian centres of the local input views (patch-major order, one per pixel).
        c2w: [V_loc, 4, 4] those views' normalised cameras. depth: [V_loc, H, W] z-depth of the data (0 = unknown:
            such pixels are excluded from the statistics and the loss).
        total_pixels: V * H * W of the whole sample.
    The official teacher is Depth-Anything-V2's relative disparity; here the data carries metric depth, which
    gives the same normalised disparity up to the teacher's error.
    """
    z, gt_depth = _camera_depth(means, c2w, depth, patch)  # [V, P] each, the Gaussians' pixel order
    pred = 1.0 / z.clamp_min(0.01)
    valid = gt_depth > 0
    teacher = torch.where(valid, 1.0 / gt_depth.clamp_min(0.01), torch.zeros_like(gt_depth))
    if not bool(valid.all()):
        # Fill unknown pixels with the per-view median so they do not move the statistics, then mask them out.
        fill = torch.stack([t[m].median() if m.any() else t.new_zeros(()) for t, m in zip(teacher, valid)])
        teacher = torch.where(valid, teacher, fill[:, None])
        pred_fill = torch.stack([p[m].median() if m.any() else p.new_zeros(()) for p, m in zip(pred.detach(), valid)])
        pred = torch.where(valid, pred, pred_fill[:, None])
    loss = F.smooth_l1_loss(_normalized_disparity(pred), _normalized_disparity(teacher).detach(), beta=1.0,
                            reduction="none")
    return (loss * valid).sum() / total_pixels


__all__ = ["depth_partial", "log_depth_partial", "mask_partial", "mse_partial", "opacity_partial", "perceptual_lpips",
           "perceptual_partial"]

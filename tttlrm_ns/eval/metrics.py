"""Image metrics: PSNR, SSIM and LPIPS on images in [0, 1], as the paper's protocol computes them
(``docs/reference_semantics.md`` §1.4).

All functions take batched images ``[B, 3, H, W]`` (or a single ``[3, H, W]``), clip them to [0, 1] first (the
evaluation protocol clips renders before scoring) and return one value per image ``[B]``; averaging is left to the
caller (scene score = mean over views, benchmark = mean over scenes).

* PSNR: ``-10 log10(MSE)`` over C, H, W. Identical images would give ``+inf``, which poisons averages, so the MSE is
  floored at ``1e-10`` (PSNR capped at 100 dB).
* SSIM: ``kind="skimage"`` (default) reproduces the paper protocol, scikit-image's ``structural_similarity`` with a
  7x7 uniform window, sample covariances, ``data_range=1``, per channel then averaged, borders of 3 pixels excluded
  from the mean; ``kind="gaussian"`` is torchmetrics' 11x11 Gaussian window (what nerfstudio's ``ns-eval`` reports).
* LPIPS: the network of torchmetrics' ``LearnedPerceptualImagePatchSimilarity`` (bit-identical to the ``lpips``
  package) with ``normalize=True``; ``net="vgg"`` is the paper's metric, ``"alex"`` the common alternative (and
  splatfacto's). The ImageNet backbones come from our own files (``python -m tttlrm_ns.eval.lpips_weights``), never
  from torchvision's cache; a missing file raises a clear error instead of a download attempt. :class:`Lpips` is the package's one LPIPS: the evaluation (:func:`lpips`), the trainer's
  perceptual loss (:func:`tttlrm_ns.train.losses.perceptual_partial`, through its input gradients) and the metrics of
  ``splatfacto-cpu`` all use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from tttlrm_ns.eval.lpips_weights import load_backbone, require_weights

PSNR_MSE_FLOOR = 1e-10


def _prep(pred: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
    if pred.shape != gt.shape:
        raise ValueError(f"prediction and ground truth shapes differ: {tuple(pred.shape)} vs {tuple(gt.shape)}")
    if pred.dim() == 3:
        pred, gt = pred[None], gt[None]
    if pred.dim() != 4 or pred.shape[1] != 3:
        raise ValueError(f"expected images [B, 3, H, W] or [3, H, W], got {tuple(pred.shape)}")
    return pred.float().clamp(0, 1), gt.float().clamp(0, 1)


def psnr_from_mse(mse: Tensor | float) -> Tensor | float:
    """PSNR in dB of mean squared errors of images in [0, 1], ``-10 log10(mse)`` with the MSE floored at
    :data:`PSNR_MSE_FLOOR`: element-wise for a tensor, a float for a number (the MSE a trainer or benchmark logged)."""
    if isinstance(mse, Tensor):
        return -10.0 * torch.log10(mse.clamp_min(PSNR_MSE_FLOOR))
    return -10.0 * math.log10(max(float(mse), PSNR_MSE_FLOOR))


def psnr(pred: Tensor, gt: Tensor) -> Tensor:
    """PSNR in dB per image [B] for [B, 3, H, W] images in [0, 1] (capped at 100 dB)."""
    pred, gt = _prep(pred, gt)
    return psnr_from_mse((pred - gt).pow(2).mean(dim=(1, 2, 3)))


def _ssim_skimage(pred: Tensor, gt: Tensor, win: int = 7) -> Tensor:
    """scikit-image's default SSIM (uniform window, sample covariance), per image [B]."""
    k1, k2, data_range = 0.01, 0.03, 1.0
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    b, c, h, w = pred.shape
    if h < win or w < win:
        raise ValueError(f"SSIM needs images of at least {win}x{win} pixels, got {h}x{w}")
    x = torch.cat([pred, gt, pred * pred, gt * gt, pred * gt], dim=1).double()  # [B, 5C, H, W]
    # Valid-mode box filter == skimage's filtered maps with the (win-1)/2 border cropped afterwards.
    m = F.avg_pool2d(x, win, stride=1)
    ux, uy, uxx, uyy, uxy = m.split(c, dim=1)
    cov_norm = win * win / (win * win - 1.0)  # sample (unbiased) covariance, skimage's default
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3)).float()


def ssim(pred: Tensor, gt: Tensor, kind: Literal["skimage", "gaussian"] = "skimage") -> Tensor:
    """SSIM per image [B] for [B, 3, H, W] images in [0, 1] (see the module docstring for ``kind``)."""
    pred, gt = _prep(pred, gt)
    if kind == "skimage":
        return _ssim_skimage(pred, gt)
    if kind == "gaussian":
        from torchmetrics.functional.image import structural_similarity_index_measure

        return structural_similarity_index_measure(pred, gt, data_range=1.0, reduction="none")
    raise ValueError(f"SSIM kind must be 'skimage' or 'gaussian', got {kind!r}")


class Lpips(torch.nn.Module):
    """LPIPS distance per image [B] for [B, 3, H, W] images in [0, 1]; differentiable w.r.t. the images.

    The network is frozen (no parameter requires a gradient). Keep one instance around: construction loads the
    backbone (:func:`lpips` caches one per network and device).
    """

    def __init__(self, net: Literal["vgg", "alex"] = "vgg"):
        super().__init__()
        require_weights(net)  # the actionable error before the network is built
        from torchmetrics.functional.image.lpips import _NoTrainLpips

        self.net_type = net
        # torchmetrics' frozen LPIPS network (the public metric's), built with a random backbone (torchvision's
        # weights=None: no download, nothing read from torch.hub's cache) that our backbone files then fill; called
        # directly to get per-image values with input gradients.
        self.net = _NoTrainLpips(net=net, pnet_rand=True)
        load_backbone(self.net.net, net)
        self.net.eval()

    def train(self, mode: bool = True) -> "Lpips":
        # Dropout-free, but keep the backbone in eval mode whatever the parent module does.
        super().train(False)
        return self

    def forward(self, pred: Tensor, gt: Tensor) -> Tensor:
        if pred.shape != gt.shape:
            raise ValueError(f"prediction and ground truth shapes differ: {tuple(pred.shape)} vs {tuple(gt.shape)}")
        if pred.dim() == 3:
            pred, gt = pred[None], gt[None]
        pred, gt = pred.float().clamp(0, 1), gt.float().clamp(0, 1)
        return self.net(pred, gt, normalize=True).reshape(pred.shape[0])


_LPIPS_CACHE: dict[tuple[str, str], Lpips] = {}


def lpips(pred: Tensor, gt: Tensor, net: Literal["vgg", "alex"] = "vgg") -> Tensor:
    """LPIPS per image [B] (no gradient), with a cached network per (net, device)."""
    key = (net, str(pred.device))
    if key not in _LPIPS_CACHE:
        _LPIPS_CACHE[key] = Lpips(net).to(pred.device)
    with torch.no_grad():
        return _LPIPS_CACHE[key](pred, gt)


@dataclass
class MetricsConfig:
    """Which metrics :class:`ImageMetrics` computes."""

    ssim_kind: Literal["skimage", "gaussian"] = "skimage"
    """'skimage' = the paper protocol (7x7 uniform window); 'gaussian' = torchmetrics / nerfstudio default."""
    lpips_nets: tuple[str, ...] = ("vgg",)
    """LPIPS backbones to report ('vgg' is the paper's; add 'alex' for the common alternative)."""


class ImageMetrics:
    """Callable computing ``{"psnr", "ssim", "lpips" | "lpips_<net>"}`` per image [B] for a prediction / target pair."""

    def __init__(self, config: MetricsConfig = MetricsConfig()):
        self.config = config
        for net in config.lpips_nets:
            require_weights(net)  # fail at construction, not after an expensive reconstruction

    def __call__(self, pred: Tensor, gt: Tensor) -> dict[str, Tensor]:
        out = {"psnr": psnr(pred, gt), "ssim": ssim(pred, gt, self.config.ssim_kind)}
        for net in self.config.lpips_nets:
            key = "lpips" if net == "vgg" else f"lpips_{net}"
            out[key] = lpips(pred, gt, net)  # type: ignore[arg-type]
        return out


def mean_metrics(rows: list[dict[str, Tensor]]) -> dict[str, float]:
    """Average per-image metric tensors (each [B]) over all images of all rows: the scene score of the protocol.

    Apply it again to a list of scene scores (as 0-d tensors or floats) for the benchmark score (mean over scenes).
    """
    if not rows:
        raise ValueError("no metric rows to average")
    keys = rows[0].keys()
    out = {}
    for k in keys:
        vals = torch.cat([torch.as_tensor(r[k], dtype=torch.float64).reshape(-1) for r in rows])
        out[k] = float(vals.mean())
    return out

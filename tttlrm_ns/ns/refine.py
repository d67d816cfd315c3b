"""Refinement of the predicted Gaussians: a few-step photometric fit, bounded by a step count and/or a time budget.

The feed-forward prediction is the result by default (``steps = 0``). With ``steps > 0`` the Gaussians are
optimised for up to that many nerfstudio iterations, one image per iteration, with splatfacto's loss
(``(1 - ssim_lambda) L1 + ssim_lambda (1 - SSIM)``) and one Adam per Gaussian parameter group. ``seconds``
additionally stops the run once that much wall-clock time has been spent refining (measured from the first
refinement step, so the prediction is not counted).

What makes a refinement step cheap and useful (measured in ``docs/benchmarks.md``, chosen on synthetic scenes
with ``scripts/bench_refine.py``):

* **fewer Gaussians** -- ``max_gaussians`` (50k) merges the prediction (one Gaussian per input pixel, ~540k for
  32 views at 144x256) into moment-matched Gaussians on a voxel grid before refining; projection, SH, backward and
  Adam are linear in the count, and the merged set renders *better* than the full one (18.1 vs 17.5 dB on the
  sample scene: the many per-view copies of a surface disagree), while keeping only the most opaque 100k loses
  2.4 dB;
* **reduced resolution** -- the budget renders at ``1 / initial_downscale`` of the image size at first (splatfacto
  does the same for its first 6000 steps), halving evenly until ``full_resolution_at`` of the budget. The default
  (1.0) ends the budget at 1/2 resolution: a full-resolution step costs 4.6x a 1/4-resolution one, and time budgets
  of 10-120 s that switched to full resolution at half the budget scored at or below staying at 1/4 resolution
  (sample scene, 30 s budget: 25.1 vs 25.7 dB after the same 21 CPU seconds), while 1/2 resolution overtakes 1/4
  after about a minute (``docs/benchmarks.md``);
* **learning rates** -- 4x splatfacto's initial rates for the centres, log-scales and colours (means 6.4e-4,
  scales 0.02, DC 0.01): with the rgb_skip weights they gain 0.3-1.3 dB over splatfacto's rates at 10-120 s on the
  sample scene at 1/4 resolution and 0.6-1.7 dB at full resolution (``docs/benchmarks.md``; splatfacto starts
  from random points and needs smaller steps, a prediction is already close). ``lr_final_factor`` decays every
  rate exponentially over the budget (steps or seconds, whichever ends first; default constant).

Schedules are functions of the *progress* ``max(step / steps, elapsed / seconds)``, so a time budget gets the
whole schedule whatever the speed of the machine. Densification is off by default (``strategy``): predicted
Gaussians are already dense and short refinements give its statistics nothing to accumulate.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any, Dict, Literal, Optional

import torch
from torch import Tensor

from nerfstudio.engine.optimizers import AdamOptimizerConfig

from tttlrm_ns.gaussians import Gaussians

GAUSSIAN_GROUPS = ("means", "scales", "quats", "features_dc", "features_rest", "opacities")


@dataclass
class FusedAdamOptimizerConfig(AdamOptimizerConfig):
    """nerfstudio's Adam config with torch's single-kernel (``fused``) update; the step result is the same Adam."""

    fused: Optional[bool] = None
    """torch.optim.Adam(fused=...): True = one fused kernel per step (CPU and CUDA), None = torch's default."""


@dataclass
class RefineConfig:
    """Refinement of the predicted Gaussians: budget (steps / seconds), Gaussian count, resolution and rates."""

    steps: int = 0
    """Maximum number of optimisation steps after the prediction (0 = pure feed-forward; the paper uses 3 / 10)."""
    seconds: Optional[float] = None
    """Time budget: stop refining once this many wall-clock seconds were spent on it (None = only `steps`)."""
    views: Literal["input", "train"] = "input"
    """Images the loss is computed on: the model's input views (paper) or every image of the train split."""
    max_gaussians: Optional[int] = 50000
    """Before refining reduce the prediction to at most this many Gaussians (None keeps the prediction's set)."""
    reduce: Literal["opacity", "merge"] = "merge"
    """How max_gaussians is reached: keep the most opaque ('opacity'), or merge the Gaussians of each cell of a
    voxel grid sized to the budget into one moment-matched Gaussian ('merge', keeps the coverage)."""
    initial_downscale: int = 4
    """Render the first part of the budget at 1/initial_downscale resolution (a power of two; 1 = always full)."""
    full_resolution_at: float = 1.0
    """Progress (0..1) from which the render is at full resolution; the downscale halves evenly before it (1.0:
    with initial_downscale 4, 1/4 resolution for the first half of the budget, 1/2 for the second)."""
    lr_means: float = 6.4e-4
    """Adam learning rate of the Gaussian centres (dataparser world units; 4x splatfacto's, see the module doc)."""
    lr_scales: float = 0.02
    """Adam learning rate of the log-scales (4x splatfacto's)."""
    lr_quats: float = 0.001
    """Adam learning rate of the raw quaternions."""
    lr_features_dc: float = 0.01
    """Adam learning rate of the SH DC coefficients (4x splatfacto's)."""
    lr_features_rest: float = 0.0025 / 20
    """Adam learning rate of the higher SH bands."""
    lr_opacities: float = 0.05
    """Adam learning rate of the opacity logits."""
    lr_final_factor: float = 1.0
    """Every rate decays exponentially to this fraction of its start over the budget (1 = constant)."""
    max_opacity: Optional[float] = None
    """Clamp the predicted opacities to at most this value before refining (an opacity reset; None = off)."""
    fused_adam: bool = True
    """Use torch's fused Adam kernel for the Gaussian groups (same update, fewer passes over memory)."""
    strategy: Literal["none", "default"] = "none"
    """Densification: 'none' keeps the predicted set; 'default' = gsplat's DefaultStrategy (splatfacto's settings)."""

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"refine.steps must be >= 0, got {self.steps}")
        if self.seconds is not None and not self.seconds > 0:
            raise ValueError(f"refine.seconds must be > 0 (or unset), got {self.seconds}")
        bad = [g for g in GAUSSIAN_GROUPS if not getattr(self, f"lr_{g}") >= 0]
        if bad:
            raise ValueError(f"refine learning rates must be >= 0: {', '.join('lr_' + g for g in bad)}")
        if self.max_gaussians is not None and self.max_gaussians < 1:
            raise ValueError(f"refine.max_gaussians must be >= 1 (or unset), got {self.max_gaussians}")
        d = self.initial_downscale
        if d < 1 or d & (d - 1):
            raise ValueError(f"refine.initial_downscale must be a power of two >= 1, got {d}")
        if not 0 <= self.full_resolution_at <= 1:
            raise ValueError(f"refine.full_resolution_at must lie in [0, 1], got {self.full_resolution_at}")
        if not self.lr_final_factor > 0:
            raise ValueError(f"refine.lr_final_factor must be > 0, got {self.lr_final_factor}")
        if self.max_opacity is not None and not 0 < self.max_opacity < 1:
            raise ValueError(f"refine.max_opacity must lie in (0, 1) (or unset), got {self.max_opacity}")

    @property
    def active(self) -> bool:
        return self.steps > 0

    def reduces(self, num: int) -> bool:
        """Whether the count reduction of :func:`prepare_gaussians` applies to a prediction of ``num`` Gaussians."""
        return self.max_gaussians is not None and num > self.max_gaussians

    def preparation(self, num: int) -> Optional[str]:
        """What :func:`prepare_gaussians` does to a prediction of ``num`` Gaussians, in a few words ('merged',
        'most opaque kept', 'opacity capped'); None when the refinement starts from the prediction unchanged."""
        parts = []
        if self.reduces(num):
            parts.append("merged" if self.reduce == "merge" else "most opaque kept")
        if self.max_opacity is not None:
            parts.append("opacity capped")
        return ", ".join(parts) or None

    def learning_rates(self) -> Dict[str, float]:
        return {g: float(getattr(self, f"lr_{g}")) for g in GAUSSIAN_GROUPS}

    def optimizer_configs(self) -> Dict[str, Dict[str, Any]]:
        """nerfstudio ``optimizers`` entries: one Adam per Gaussian group; the rate schedule is applied by
        :class:`RefineController` (progress-based, so it also covers time budgets), hence no nerfstudio scheduler."""
        fused = True if self.fused_adam else None
        return {
            g: {"optimizer": FusedAdamOptimizerConfig(lr=lr, eps=1e-15, fused=fused), "scheduler": None}
            for g, lr in self.learning_rates().items()
        }

    def progress(self, step: int, elapsed: float) -> float:
        """Fraction of the budget used after ``step`` completed steps and ``elapsed`` seconds, in [0, 1]."""
        p = step / self.steps if self.steps > 0 else 1.0
        if self.seconds is not None:
            p = max(p, elapsed / self.seconds)
        return min(max(p, 0.0), 1.0)

    def downscale_at(self, progress: float) -> int:
        """Render downscale factor at ``progress``: initial_downscale halving evenly until full_resolution_at."""
        d = self.initial_downscale
        if d == 1 or progress >= self.full_resolution_at:
            return 1
        levels = int(math.log2(d))  # e.g. 4 -> 4, 2 over [0, full_resolution_at)
        level = int(progress / self.full_resolution_at * levels)
        return d >> level

    def lr_factor_at(self, progress: float) -> float:
        return self.lr_final_factor**progress


def _voxel_keys(means: Tensor, size: float) -> Tensor:
    """Cell index [N] (long) of each centre on a grid of cell edge ``size``."""
    cell = torch.floor((means - means.min(0).values) / size).long()
    dims = cell.max(0).values + 1
    return (cell[:, 0] * dims[1] + cell[:, 1]) * dims[2] + cell[:, 2]


def merge_gaussians(g: Gaussians, target: int) -> Gaussians:
    """Reduce ``g`` [N] to at most ``target`` Gaussians by merging those that share a cell of a voxel grid.

    The cell edge is found by bisection (on a log scale) so that the occupied cells number at most ``target``.
    Each cell becomes one Gaussian that matches the opacity-weighted first and second moments of its members
    (mean; covariance = weighted mean of ``R S^2 R^T + (mu_i - mu)(mu_i - mu)^T``, whose eigen-decomposition
    gives the scales and rotation), with opacity-weighted SH and the members' largest opacity (they mostly model
    the same surface seen from several input views, so their opacities must not add up).
    """
    from tttlrm_ns.gaussians import rotation_to_quat
    from tttlrm_ns.render.reference import quat_to_rotmat

    means = g.means.float()
    extent = float((means.max(0).values - means.min(0).values).max().clamp_min(1e-6))
    lo, hi = math.log(extent * 1e-5), math.log(extent)  # hi: one cell holds everything
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        n = int(torch.unique(_voxel_keys(means, math.exp(mid))).numel())
        if n > target:
            lo = mid
        else:
            hi = mid
        if n <= target and n > 0.97 * target:
            break
    _, inv = torch.unique(_voxel_keys(means, math.exp(hi)), return_inverse=True)
    m = int(inv.max()) + 1
    alpha = torch.sigmoid(g.opacity_logits.float().reshape(-1))
    w = alpha.clamp_min(1e-6)
    wsum = torch.zeros(m).index_add_(0, inv, w)
    wn = w / wsum[inv]  # normalised weight within the cell [N]

    def wmean(x: Tensor) -> Tensor:
        flat = x.reshape(x.shape[0], -1)
        out = torch.zeros(m, flat.shape[1]).index_add_(0, inv, flat * wn[:, None])
        return out.reshape(m, *x.shape[1:])

    mu = wmean(means)
    rot = quat_to_rotmat(g.quats.float())
    scales = torch.exp(g.log_scales.float())
    cov = (rot * scales[:, None, :] ** 2) @ rot.transpose(1, 2)  # R S^2 R^T [N, 3, 3]
    d = means - mu[inv]
    cov = wmean(cov + d[:, :, None] * d[:, None, :])
    evals, evecs = torch.linalg.eigh(cov)  # ascending eigenvalues, orthonormal eigenvector columns
    evecs = evecs * torch.where(torch.det(evecs) < 0, -1.0, 1.0)[:, None, None]  # proper rotation
    new_scales = evals.clamp_min(1e-12).sqrt()
    opac = torch.zeros(m).scatter_reduce_(0, inv, alpha, "amax", include_self=False)
    opac = opac.clamp(1e-4, 1 - 1e-4)
    return Gaussians(
        means=mu.to(g.means.dtype),
        sh=wmean(g.sh.float()).to(g.sh.dtype),
        log_scales=torch.log(new_scales).to(g.log_scales.dtype),
        quats=rotation_to_quat(evecs).to(g.quats.dtype),
        opacity_logits=torch.logit(opac)[:, None].to(g.opacity_logits.dtype),
    )


@torch.no_grad()
def prepare_gaussians(g: Gaussians, cfg: RefineConfig) -> Gaussians:
    """The Gaussians refinement starts from: at most ``max_gaussians`` (see ``reduce``), opacities clamped.

    ``g`` is unbatched ([N, ...]); returns a new container (the input is not modified).
    """
    if cfg.reduces(g.num):
        if cfg.reduce == "merge":
            g = merge_gaussians(g, cfg.max_gaussians)
        else:
            keep = torch.topk(g.opacity_logits.reshape(-1), cfg.max_gaussians, sorted=False).indices
            keep = keep.sort().values  # keep the prediction's order (pixel order), cache friendlier than by opacity
            g = g.index(keep)
    if cfg.max_opacity is not None:
        cap = math.log(cfg.max_opacity / (1 - cfg.max_opacity))
        g = replace(g, opacity_logits=g.opacity_logits.clamp(max=cap))
    return g


class RefineController:
    """Applies the refinement schedule around each nerfstudio iteration and enforces the time budget.

    ``before_step`` (BEFORE_TRAIN_ITERATION) starts the clock on the first step, sets the learning rates of the
    Gaussian optimizers and returns the render downscale for this step; ``after_step`` (AFTER_TRAIN_ITERATION)
    asks the trainer to stop once ``seconds`` are spent (nerfstudio's loop checks ``trainer.stop_training``
    before every iteration and saves the final checkpoint as after a full run).
    """

    def __init__(self, cfg: RefineConfig) -> None:
        # Checked here, not in RefineConfig.__post_init__: --max-num-iterations may set the steps after parsing.
        if cfg.seconds is not None and cfg.steps == 0:
            raise ValueError(
                "--pipeline.model.refine.seconds is set but there are no refinement steps: give the upper bound of "
                "iterations with --pipeline.model.refine.steps (or --max-num-iterations), e.g. 100000"
            )
        self.cfg = cfg
        self.start: Optional[float] = None
        self.steps_done = 0
        self.stopped_by_time = False

    def elapsed(self) -> float:
        return 0.0 if self.start is None else time.perf_counter() - self.start

    def before_step(self, step: int, optimizers: Optional[Dict[str, torch.optim.Optimizer]]) -> int:
        if self.start is None:
            self.start = time.perf_counter()
        p = self.cfg.progress(self.steps_done, self.elapsed())
        if optimizers is not None:
            factor = self.cfg.lr_factor_at(p)
            for name, lr in self.cfg.learning_rates().items():
                opt = optimizers.get(name)
                if opt is not None:
                    for group in opt.param_groups:
                        group["lr"] = lr * factor
        return self.cfg.downscale_at(p)

    def after_step(self, trainer: Any, step: int) -> None:
        self.steps_done += 1
        if self.cfg.seconds is not None and self.elapsed() >= self.cfg.seconds:
            self.stopped_by_time = True
            if trainer is not None:
                trainer.stop_training = True


REFINE_PRESETS: Dict[str, RefineConfig] = {
    "none": RefineConfig(steps=0),
    # The merged 50k set already renders better than the full prediction and a step costs ~1/10 as much; a handful
    # of steps is cheap at full resolution, where it corrects what the evaluation sees.
    "3": RefineConfig(steps=3, initial_downscale=1),
    "10": RefineConfig(steps=10, initial_downscale=1),
}
"""Refinement settings by name: pure feed-forward and the paper's 3- and 10-step budgets. Time budgets use the
class defaults: ``--pipeline.model.refine.steps 100000 --pipeline.model.refine.seconds S``."""


def refine_preset(name: str, **overrides: Any) -> RefineConfig:
    if name not in REFINE_PRESETS:
        raise ValueError(f"unknown refinement preset {name!r}; choose one of {sorted(REFINE_PRESETS)}")
    return replace(REFINE_PRESETS[name], **overrides)


__all__ = [
    "RefineConfig",
    "RefineController",
    "REFINE_PRESETS",
    "refine_preset",
    "prepare_gaussians",
    "GAUSSIAN_GROUPS",
    "FusedAdamOptimizerConfig",
]

"""Optional few-step refinement of the predicted Gaussians (photometric loss on the input views).

The feed-forward prediction is the result by default (``steps = 0``). With ``steps > 0`` the Gaussians are
optimised for that many nerfstudio iterations, one image per iteration, with splatfacto's loss
(``(1 - ssim_lambda) L1 + ssim_lambda (1 - SSIM)``) and one Adam group per Gaussian parameter. The paper reports
3- and 10-step settings; :data:`REFINE_PRESETS` holds ours for those budgets (the paper does not publish its
learning rates, so these are splatfacto's initial rates, which move the Gaussians by at most a few
learning rates per step: a gentle correction, never a re-fit).

Densification (splitting / cloning / culling) is off by default: predicted Gaussians are already dense
(one per input pixel) and a handful of steps gives densification statistics nothing to accumulate.
``strategy="default"`` enables gsplat's ``DefaultStrategy`` with splatfacto's thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Dict, Literal

from nerfstudio.engine.optimizers import AdamOptimizerConfig

GAUSSIAN_GROUPS = ("means", "scales", "quats", "features_dc", "features_rest", "opacities")


@dataclass
class RefineConfig:
    """Refinement of the predicted Gaussians: number of steps, per-group learning rates, densification."""

    steps: int = 0
    """Optimisation steps after the feed-forward prediction (0 = pure feed-forward; the paper uses 3 or 10)."""
    views: Literal["input", "train"] = "input"
    """Images the loss is computed on: the model's input views (paper) or every image of the train split."""
    lr_means: float = 1.6e-4
    """Adam learning rate of the Gaussian centres (dataparser world units)."""
    lr_scales: float = 0.005
    """Adam learning rate of the log-scales."""
    lr_quats: float = 0.001
    """Adam learning rate of the raw quaternions."""
    lr_features_dc: float = 0.0025
    """Adam learning rate of the SH DC coefficients."""
    lr_features_rest: float = 0.0025 / 20
    """Adam learning rate of the higher SH bands."""
    lr_opacities: float = 0.05
    """Adam learning rate of the opacity logits."""
    strategy: Literal["none", "default"] = "none"
    """Densification: 'none' keeps the predicted set; 'default' = gsplat's DefaultStrategy (splatfacto's settings)."""

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"refine.steps must be >= 0, got {self.steps}")
        bad = [g for g in GAUSSIAN_GROUPS if not getattr(self, f"lr_{g}") >= 0]
        if bad:
            raise ValueError(f"refine learning rates must be >= 0: {', '.join('lr_' + g for g in bad)}")

    def learning_rates(self) -> Dict[str, float]:
        return {g: float(getattr(self, f"lr_{g}")) for g in GAUSSIAN_GROUPS}

    def optimizer_configs(self) -> Dict[str, Dict[str, Any]]:
        """nerfstudio ``optimizers`` entries (one Adam per Gaussian group, constant rate: a few steps need no decay)."""
        return {
            g: {"optimizer": AdamOptimizerConfig(lr=lr, eps=1e-15), "scheduler": None}
            for g, lr in self.learning_rates().items()
        }


REFINE_PRESETS: Dict[str, RefineConfig] = {
    "none": RefineConfig(steps=0),
    "3": RefineConfig(steps=3),
    "10": RefineConfig(steps=10),
}
"""Refinement settings by name: pure feed-forward and the paper's 3- and 10-step budgets."""


def refine_preset(name: str, **overrides: Any) -> RefineConfig:
    if name not in REFINE_PRESETS:
        raise ValueError(f"unknown refinement preset {name!r}; choose one of {sorted(REFINE_PRESETS)}")
    return replace(REFINE_PRESETS[name], **overrides)


__all__ = ["RefineConfig", "REFINE_PRESETS", "refine_preset", "GAUSSIAN_GROUPS"]

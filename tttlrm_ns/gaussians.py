"""Gaussians container: pre-activation parameters in splatfacto's conventions.

Stored forms (what a renderer activates): ``means`` [..., N, 3]; ``sh`` [..., N, K, 3] raw SH coefficients
(``K = (degree+1)^2``; colour = ``max(0, sum_k sh_k Y_k(dir) + 0.5)``, gsplat / INRIA convention);
``log_scales`` [..., N, 3] (``exp`` at render); ``quats`` [..., N, 4] raw w, x, y, z (normalised at render);
``opacity_logits`` [..., N, 1] (``sigmoid`` at render). Leading dims are batch dims (possibly none).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Optional

import torch
from torch import Tensor


@dataclass
class Gaussians:
    means: Tensor
    sh: Tensor
    log_scales: Tensor
    quats: Tensor
    opacity_logits: Tensor

    def __post_init__(self) -> None:
        n = self.means.shape[:-1]
        expect = {"means": 3, "log_scales": 3, "quats": 4, "opacity_logits": 1}
        for name, last in expect.items():
            t = getattr(self, name)
            if t.shape[:-1] != n or t.shape[-1] != last:
                raise ValueError(f"Gaussians.{name} has shape {tuple(t.shape)}, expected {(*n, last)}")
        if self.sh.shape[:-2] != n or self.sh.shape[-1] != 3 or self.sh.shape[-2] not in (1, 4, 9, 16):
            raise ValueError(f"Gaussians.sh has shape {tuple(self.sh.shape)}, expected {(*n, 'K in 1/4/9/16', 3)}")

    @property
    def num(self) -> int:
        return self.means.shape[-2]

    @property
    def sh_degree(self) -> int:
        return int(math.isqrt(self.sh.shape[-2])) - 1

    def map(self, fn) -> "Gaussians":
        return Gaussians(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def index(self, idx: Tensor) -> "Gaussians":
        """Select Gaussians along the N axis of an unbatched container (``idx`` long [M] or bool [N])."""
        return self.map(lambda t: t[idx])

    def __getitem__(self, b: int) -> "Gaussians":
        """Batch element ``b`` of a batched container."""
        return self.map(lambda t: t[b])

    @classmethod
    def cat(cls, parts: list["Gaussians"], dim: int = -2) -> "Gaussians":
        """Concatenate containers along the Gaussian axis (``dim`` counts from the end of ``means``)."""
        return cls(**{f.name: torch.cat([getattr(p, f.name) for p in parts], dim=dim - (f.name == "sh"))
                      for f in fields(cls)})

    def to(self, *args, **kwargs) -> "Gaussians":
        return self.map(lambda t: t.to(*args, **kwargs))


@dataclass
class PruneConfig:
    """Opacity-based pruning (``docs/reference_semantics.md`` §5.4), expressed as kept fractions.

    The official key ``prune_ratio`` is the *kept* top fraction (0.4) and ``random_ratio`` the share of the
    remainder kept at random (0.1); with 64 or more input views 0.30 / 0.05 apply. ``keep_top = 0``
    disables pruning.
    """

    keep_top: float = 0.0
    """Fraction of Gaussians kept by highest opacity (0 disables pruning)."""
    keep_random: float = 0.0
    """Share of the remaining Gaussians kept uniformly at random."""
    keep_top_many_views: float = 0.30
    """``keep_top`` when the input has at least ``many_views`` views."""
    keep_random_many_views: float = 0.05
    """``keep_random`` when the input has at least ``many_views`` views."""
    many_views: int = 64
    """View count from which the ``*_many_views`` fractions apply."""


def prune_indices(
    opacity_logits: Tensor, keep_top: float, keep_random: float, generator: Optional[torch.Generator] = None
) -> Tensor:
    """Indices kept by opacity pruning of one sample (``opacity_logits`` [N, 1] or [N]).

    Returns the ``floor(keep_top N)`` most opaque Gaussians by decreasing opacity, followed by
    ``floor((1 - keep_top) keep_random N)`` drawn uniformly without replacement from the rest (seeded by
    ``generator``). ``keep_top <= 0`` keeps everything in the original order.
    """
    logits = opacity_logits.reshape(-1)
    n = logits.numel()
    if keep_top <= 0:
        return torch.arange(n, device=logits.device)
    if not (0 < keep_top <= 1 and 0 <= keep_random <= 1):
        raise ValueError(f"keep fractions must lie in [0, 1], got keep_top={keep_top}, keep_random={keep_random}")
    order = torch.argsort(logits.detach(), descending=True, stable=True)
    k1 = int(math.floor(keep_top * n))
    k2 = int(math.floor((1 - keep_top) * keep_random * n))
    rest = order[k1:]
    perm = torch.randperm(rest.numel(), generator=generator, device="cpu")[:k2].to(rest.device)
    return torch.cat([order[:k1], rest[perm]])


def prune(g: Gaussians, cfg: PruneConfig, num_views: int, generator: Optional[torch.Generator] = None) -> Gaussians:
    """Prune an unbatched container according to ``cfg`` (see :func:`prune_indices`)."""
    if cfg.keep_top <= 0:
        return g
    many = num_views >= cfg.many_views
    top = cfg.keep_top_many_views if many else cfg.keep_top
    rnd = cfg.keep_random_many_views if many else cfg.keep_random
    return g.index(prune_indices(g.opacity_logits, top, rnd, generator))

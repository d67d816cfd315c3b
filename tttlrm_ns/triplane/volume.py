"""Volume rendering inside a bounded object box, in plain vectorised torch.

Why not nerfstudio's samplers / renderers here: the triplane model is pure torch (the trainer and the tests import
it without nerfstudio), and for a fixed axis-aligned box the whole pipeline is a slab intersection, uniform
(stratified) samples and the usual alpha compositing. ``tests/test_triplane.py`` checks the weights against
nerfstudio's ``RaySamples.get_weights`` so the two stay the same quadrature.

Quadrature: ``n`` samples at ``t_i = near + (far - near) (i + u_i) / n`` (``u_i = 0.5`` at evaluation, uniform in
[0, 1) when stratified), each interval of length ``delta = (far - near) / n``;
``alpha_i = 1 - exp(-sigma_i delta)``, ``T_i = prod_{j<i} (1 - alpha_j)``, ``w_i = T_i alpha_i``,
``rgb = sum_i w_i c_i + (1 - sum_i w_i) background``. Rays that miss the box get ``near = far`` (all weights 0).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def ray_box(origins: Tensor, dirs: Tensor, half: float) -> tuple[Tensor, Tensor]:
    """Entry / exit distances of rays through the cube ``[-half, half]^3`` (slab method).

    Args:
        origins, dirs: [..., 3] (directions need not be unit; distances are in units of ``|dirs|``).
    Returns:
        (near [...], far [...]) with ``near >= 0``; rays that miss the box (or start behind it) get ``near = far``.
    """
    # Division by an exact zero component gives +-inf, which the min/max below handle (the slab is then unbounded
    # along that axis unless the origin lies outside it, where (+-half - o) * inf gives +-inf of matching sign).
    inv = 1.0 / dirs
    t0 = (-half - origins) * inv
    t1 = (half - origins) * inv
    near = torch.minimum(t0, t1).nan_to_num(nan=-torch.inf).amax(-1).clamp_min(0.0)
    far = torch.maximum(t0, t1).nan_to_num(nan=torch.inf).amin(-1)
    far = torch.maximum(far, near)
    return near, far


def sample_distances(near: Tensor, far: Tensor, n: int, stratified: bool = False,
                     generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
    """Sample distances [..., n] and interval lengths [..., 1] between ``near`` and ``far`` [...] (see module doc)."""
    i = torch.arange(n, device=near.device, dtype=near.dtype)
    if stratified:
        u = torch.rand((*near.shape, n), generator=generator, device="cpu" if generator is not None else near.device,
                       dtype=near.dtype).to(near.device)
    else:
        u = torch.full((), 0.5, device=near.device, dtype=near.dtype)
    span = (far - near)[..., None]
    return near[..., None] + span * (i + u) / n, span / n


def composite(sigma: Tensor, rgb: Tensor, delta: Tensor, background: Tensor) -> dict[str, Tensor]:
    """Alpha-composite samples along rays.

    Args:
        sigma: [..., n] densities >= 0. rgb: [..., n, 3] colours. delta: [..., 1] or [..., n] interval lengths.
        background: [3] (or broadcastable to [..., 3]) colour behind the box.
    Returns:
        ``rgb`` [..., 3], ``accumulation`` [...], ``weights`` [..., n].
    """
    alpha = 1.0 - torch.exp(-sigma * delta)
    # Exclusive cumulative product of (1 - alpha) in log space: T_i = exp(-sum_{j<i} sigma_j delta_j).
    tau = sigma * delta
    trans = torch.exp(-(torch.cumsum(tau, dim=-1) - tau))
    weights = trans * alpha
    acc = weights.sum(-1)
    color = (weights[..., None] * rgb).sum(-2) + (1.0 - acc[..., None]) * background
    return {"rgb": color, "accumulation": acc, "weights": weights}


__all__ = ["composite", "ray_box", "sample_distances"]

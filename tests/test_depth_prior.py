"""The depth-range prior of the Gaussian head (``dist_shift``), the metric log-depth and the silhouette training terms."""

from __future__ import annotations

import math

import torch

from tttlrm_ns.model.config import TttlrmConfig
from tttlrm_ns.model.head import decode_gaussians
from tttlrm_ns.train.losses import depth_partial, log_depth_partial


def _rays(v: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Identity cameras at the origin, unit rays through a 60-degree field of view: [1, V, 3, H, W] each."""
    ys, xs = torch.meshgrid(torch.linspace(-0.5, 0.5, h), torch.linspace(-0.5, 0.5, w), indexing="ij")
    d = torch.stack([xs, ys, torch.ones_like(xs)])
    d = d / d.norm(dim=0, keepdim=True)
    return torch.zeros(1, v, 3, h, w), d.expand(1, v, 3, h, w).contiguous()


def test_dist_shift_sets_the_initial_distance():
    cfg = TttlrmConfig(d=64, n_layer=1, attn_head_dim=32, ttt_head_dim=64, patch_size=4, sh_degree=0,
                       max_dist=500.0, dist_shift=math.log(2.0 / 498.0))  # logit(2 / 500)
    o, d = _rays(1, 4, 4)
    raw = torch.zeros(1, 1, 16 * cfg.gaussian_channels)  # a decoder output of zeros: the prior alone
    g = decode_gaussians(raw, o, d, cfg)
    torch.testing.assert_close(g.means.norm(dim=-1), torch.full((1, 16), 2.0))
    # the official value 0 puts every Gaussian at max_dist / 2
    g0 = decode_gaussians(raw, o, d, cfg.replace(dist_shift=0.0))
    torch.testing.assert_close(g0.means.norm(dim=-1), torch.full((1, 16), 250.0))


def test_log_depth_term_is_zero_on_truth_and_sees_scale():
    torch.manual_seed(0)
    v, h, w, p = 2, 4, 8, 4
    gt = torch.rand(v, h, w) * 3 + 0.5
    gt[0, 0, 0] = 0.0  # unknown pixel: ignored
    c2w = torch.eye(4).expand(v, 4, 4).clone()
    c2w[1, :3, 3] = torch.tensor([0.3, -0.2, 0.1])
    # Gaussians exactly at the data's depth along each view's pixel grid (patch-major order like the head)
    from tttlrm_ns.model.head import to_patch_major

    ys, xs = torch.meshgrid(torch.arange(h) - h / 2, torch.arange(w) - w / 2, indexing="ij")
    cam = torch.stack([xs * gt / 5, ys * gt / 5, gt], 1)  # [V, 3, H, W] camera-frame points with z = gt
    world = torch.einsum("vij,vjhw->vihw", c2w[:, :3, :3], cam) + c2w[:, :3, 3, None, None]
    means = to_patch_major(world[None], p)[0]  # [V*H*W, 3]
    total = v * h * w
    assert float(log_depth_partial(means, c2w, gt, p, total)) < 1e-6
    # a global scale error of 2x: the invariant disparity term cannot see it, the log-depth term reports log 2
    assert float(depth_partial(means * 1.0, c2w, gt, p, total)) < 1e-6
    scaled = means.clone().view(v, h * w, 3)
    scaled = (scaled - c2w[:, None, :3, 3]) * 2 + c2w[:, None, :3, 3]
    scaled = scaled.view(-1, 3)
    assert float(depth_partial(scaled, c2w, gt, p, total)) < 1e-4
    valid = int((gt > 0).sum())
    torch.testing.assert_close(log_depth_partial(scaled, c2w, gt, p, total), torch.tensor(math.log(2) * valid / total))


def test_mask_term_rewards_opacity_only_where_the_data_has_a_surface():
    from tttlrm_ns.train.losses import mask_partial

    v, h, w, p = 1, 4, 4, 2
    depth = torch.zeros(v, h, w)
    depth[0, :, :2] = 1.5  # left half: object, right half: background
    surface = to_patch_major_depth(depth, p)
    right = torch.where(surface, 8.0, -8.0)[:, None]  # opaque on the object, transparent on the background
    wrong = -right
    total = v * h * w
    assert float(mask_partial(right, depth, p, total)) < 1e-3
    assert float(mask_partial(wrong, depth, p, total)) > 7.0
    # the pixel order is the head's (patch-major): a row-major guess of the same logits scores badly
    row_major = torch.where(depth.reshape(-1) > 0, 8.0, -8.0)[:, None]
    assert float(mask_partial(row_major, depth, p, total)) > 1.0


def to_patch_major_depth(depth: torch.Tensor, p: int) -> torch.Tensor:
    from tttlrm_ns.model.head import to_patch_major

    return to_patch_major(depth[:, None, None], p).reshape(-1) > 0

"""Gaussians container and opacity pruning."""

import pytest
import torch

from tttlrm_ns.gaussians import Gaussians, PruneConfig, prune, prune_indices


def _g(n=1000, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return Gaussians(r(n, 3), r(n, 16, 3), r(n, 3), r(n, 4), r(n, 1))


def test_shapes_are_checked():
    g = _g(10)
    with pytest.raises(ValueError, match=r"Gaussians.quats has shape \(10, 3\)"):
        Gaussians(g.means, g.sh, g.log_scales, g.quats[:, :3], g.opacity_logits)
    with pytest.raises(ValueError, match="Gaussians.sh"):
        Gaussians(g.means, g.sh[:, :5], g.log_scales, g.quats, g.opacity_logits)
    assert g.sh_degree == 3 and g.num == 10


def test_prune_official_fractions():
    g = _g(1000)
    idx = prune_indices(g.opacity_logits, 0.4, 0.1, torch.Generator().manual_seed(0))
    # 400 most opaque by decreasing opacity, then floor(0.6 * 0.1 * 1000) = 60 random others
    assert idx.numel() == 460 and idx.unique().numel() == 460
    top = torch.argsort(g.opacity_logits[:, 0], descending=True)[:400]
    assert torch.equal(idx[:400], top)
    assert not set(idx[400:].tolist()) & set(top.tolist())
    # seeded: same generator seed, same picks; another seed, other picks
    again = prune_indices(g.opacity_logits, 0.4, 0.1, torch.Generator().manual_seed(0))
    other = prune_indices(g.opacity_logits, 0.4, 0.1, torch.Generator().manual_seed(1))
    assert torch.equal(idx, again) and not torch.equal(idx, other)


def test_prune_disabled_and_many_views():
    g = _g(1000)
    assert prune(g, PruneConfig(), num_views=8) is g
    cfg = PruneConfig(keep_top=0.4, keep_random=0.1)
    assert prune(g, cfg, num_views=32).num == 460
    assert prune(g, cfg, num_views=64).num == 300 + int(0.7 * 0.05 * 1000)  # 0.30 + 0.05 share: 335


def test_prune_rejects_bad_fractions():
    with pytest.raises(ValueError, match="keep fractions"):
        prune_indices(torch.zeros(10, 1), 1.5, 0.0)


def test_cat_along_gaussian_axis():
    a, b = _g(5, 0), _g(7, 1)
    c = Gaussians.cat([a, b])
    assert c.num == 12 and c.sh.shape == (12, 16, 3)
    assert torch.equal(c.sh[5:], b.sh) and torch.equal(c.means[:5], a.means)
    batched = Gaussians.cat([a.map(lambda t: t[None]), b.map(lambda t: t[None])])
    assert batched.means.shape == (1, 12, 3) and batched.sh.shape == (1, 12, 16, 3)

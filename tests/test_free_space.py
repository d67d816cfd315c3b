"""The free-space filter (tttlrm_ns.geometry.free_space) on analytic scenes with exact depth, and its place in the
chunked prediction (tttlrm_ns.infer.predict_gaussians)."""

from __future__ import annotations

import pytest
import torch

from tttlrm_ns.geometry import analytic as A
from tttlrm_ns.geometry.free_space import (
    FreeSpaceConfig,
    free_space_mask,
    free_space_violations,
    free_space_violations_reference,
)


def _orbit(n: int = 6, h: int = 24, w: int = 32):
    cams = A.orbit_cameras(n, 1.5, arc_deg=90)
    k = A.intrinsics(n, h, w, 60.0)
    _, depth = A.render(A.room_scene(2), cams, k, h, w)
    return depth.float(), cams, k


def test_vectorised_count_matches_the_per_point_reference():
    depth, cams, k = _orbit(4, 6, 8)
    g = torch.Generator().manual_seed(0)
    depth = depth * (0.5 + torch.rand(depth.shape, generator=g))  # wrong depths of every kind
    fast = free_space_violations(depth, cams, k, 0.2, pairs_per_chunk=7)  # odd chunks: every block boundary
    ref = free_space_violations_reference(depth, cams, k, 0.2)
    assert fast.dtype == torch.int32 and fast.shape == depth.shape
    assert torch.equal(fast, ref)
    assert int(fast.max()) > 0  # the check is not vacuous


def test_exact_depth_survives_and_a_view_pulled_towards_its_camera_is_dropped():
    """Exact depth maps of one scene are consistent: nothing violates the free space of two views. One view's points
    moved to 60 % of their depth float in front of the surfaces the other views see: most are dropped (measured
    70 %; the rest land outside the other views' images, where nothing can be said), and the other views' exact
    points all stay, although they now lie behind that view's wrong surface."""
    depth, cams, k = _orbit()
    cfg = FreeSpaceConfig(tolerance=0.15, min_views=2)
    assert bool(free_space_mask(depth, cams, k, cfg).all())
    wrong = torch.zeros(depth.shape, dtype=torch.bool)
    wrong[0] = True
    keep = free_space_mask(torch.where(wrong, depth * 0.6, depth), cams, k, cfg)
    assert float(keep[wrong].float().mean()) < 0.45
    assert bool(keep[~wrong].all())


def test_min_views_and_off_switch():
    depth, cams, k = _orbit()
    near = depth * 0.5
    counts = free_space_violations(near, cams, k, 0.15)
    for m in (1, 3):
        keep = free_space_mask(near, cams, k, FreeSpaceConfig(tolerance=0.15, min_views=m))
        assert torch.equal(keep, counts < m)
    assert bool(free_space_mask(near, cams, k, FreeSpaceConfig(tolerance=0.0)).all())  # 0 = off


@pytest.mark.parametrize("bad", [dict(tolerance=-0.1), dict(tolerance=1.0), dict(min_views=0),
                                 dict(pairs_per_chunk=0)])
def test_bad_config_is_refused(bad):
    depth, cams, k = _orbit(2, 4, 4)
    with pytest.raises(ValueError, match="free-space"):
        free_space_mask(depth, cams, k, FreeSpaceConfig(**{"tolerance": 0.2, **bad}))

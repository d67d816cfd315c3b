"""Plane-sweep stereo (tttlrm_ns.geometry.plane_sweep) and the depth range (tttlrm_ns.geometry.depth_range) on
analytic scenes with exact depth (tttlrm_ns.geometry.analytic)."""

from __future__ import annotations

import math

import pytest
import torch

from tttlrm_ns.conventions import look_at_cv
from tttlrm_ns.geometry import analytic as A
from tttlrm_ns.geometry.depth_range import DepthRangeError, range_from_points, range_from_views
from tttlrm_ns.geometry.plane_sweep import (
    PlaneSweepConfig,
    depth_planes,
    plane_sweep,
    plane_sweep_reference,
    select_neighbours,
)


def _aim(eye: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """OpenCV c2w [4, 4] (float32) at ``eye`` looking at ``target``, world y up."""
    return torch.from_numpy(look_at_cv(eye.double().numpy(), target.double().numpy())).float()


def _scene(cams: torch.Tensor, h: int, w: int, seed: int = 1, fov: float = 60.0):
    k = A.intrinsics(len(cams), h, w, fov)
    img, dep = A.render(A.room_scene(seed), cams, k, h, w)
    return img, dep, k


def _within(depth: torch.Tensor, true: torch.Tensor, tol: float = 0.05) -> float:
    return float(((depth / true - 1).abs() < tol).float().mean())


def test_fast_sweep_matches_per_pixel_reference():
    cams = A.orbit_cameras(3, 1.5, arc_deg=30)
    img, dep, k = _scene(cams, 12, 16)
    cfg = PlaneSweepConfig(num_planes=6, neighbours=2, window=3, downsample=1)
    fast = plane_sweep(img, cams, k, 0.6, 5.0, cfg)
    ref = plane_sweep_reference(img, cams, k, 0.6, 5.0, cfg)
    assert torch.equal(fast.neighbours, ref.neighbours)
    assert torch.allclose(fast.best_score.double(), ref.best_score, atol=2e-4)
    assert torch.allclose(fast.confidence.double(), ref.confidence, atol=2e-3)
    assert torch.allclose(fast.depth.double(), ref.depth, rtol=2e-3)


@pytest.mark.parametrize("h,w", [(72, 128), (128, 72)])  # landscape and portrait
@pytest.mark.parametrize("trajectory", ["orbit", "forward"])
def test_depth_accuracy_floor_and_shuffled_cameras_fail(trajectory, h, w):
    """Share of pixels within 5 % of the exact depth. Measured when written (48 planes, full resolution, 8 views,
    landscape / portrait): all pixels: orbit 0.66 / 0.74, forward-facing 0.68 / 0.62; pixels with confidence > 0.7
    (40-59 % of them): orbit 0.94 / 0.95, forward-facing 0.77 / 0.73. The same images with the cameras shuffled
    (poses no longer match the images): 0.04-0.06 overall, and at most 5 % of pixels confident."""
    n = 8
    cams = A.orbit_cameras(n, 1.5, arc_deg=60) if trajectory == "orbit" else A.forward_cameras(n, 0.4, seed=3)
    img, dep, k = _scene(cams, h, w)
    cfg = PlaneSweepConfig(num_planes=48, downsample=1)
    near, far = float(dep.min()) * 0.8, float(dep.max()) * 1.2
    r = plane_sweep(img, cams, k, near, far, cfg)
    confident = r.confidence > 0.7
    assert float(confident.float().mean()) > 0.3
    assert _within(r.depth, dep) > 0.55
    assert _within(r.depth[confident], dep[confident]) > (0.9 if trajectory == "orbit" else 0.65)
    shuffled = plane_sweep(img, cams[torch.tensor([3, 6, 0, 7, 1, 5, 2, 4])], k, near, far, cfg)
    assert _within(shuffled.depth, dep) < 0.15
    assert float((shuffled.confidence > 0.7).float().mean()) < 0.1


def test_no_overlap_gives_low_confidence():
    """Two cameras looking in opposite directions share no pixel: every plane is unseen (score -1), confidence 0."""
    eye = torch.zeros(3)
    cams = torch.stack([_aim(eye, torch.tensor([0.0, 0.0, 1.0])),
                        _aim(eye + 0.1, torch.tensor([0.1, 0.1, -1.0]))])
    img, dep, k = _scene(cams, 24, 32, fov=50)
    r = plane_sweep(img, cams, k, 0.3, 5.0, PlaneSweepConfig(num_planes=16, downsample=1))
    assert float(r.confidence.max()) == 0.0
    assert float(r.best_score.max()) == -1.0


def test_textureless_surface_gives_low_confidence():
    cams = A.forward_cameras(6, 0.4, seed=1)
    k = A.intrinsics(6, 48, 64, 60)
    scene = A.AnalyticScene([A.Box((-2, -2, -2), (2, 2, 2), inside=True, textureless=True)])
    img, _ = A.render(scene, cams, k, 48, 64)
    r = plane_sweep(img, cams, k, 0.3, 6.0, PlaneSweepConfig(num_planes=16, downsample=1))
    assert float(r.confidence.max()) == 0.0  # flat windows carry no evidence


def test_neighbours_prefer_close_similar_views():
    cams = A.forward_cameras(5, 0.2, seed=0)
    far = _aim(torch.tensor([5.0, 0.0, 0.0]), torch.zeros(3))
    nbr = select_neighbours(torch.cat([cams, far[None]]), 3)
    assert nbr.shape == (6, 3)
    assert 5 not in nbr[:5].flatten().tolist()  # nobody picks the far, turned-away view while others are there


def test_planes_uniform_in_inverse_or_log_depth():
    z = depth_planes(0.5, 8.0, 5)
    assert torch.allclose(torch.diff(1 / z), torch.full((4,), (1 / 8 - 1 / 0.5) / 4), atol=1e-6)
    zl = depth_planes(0.01, 100.0, 5, spacing="log")
    assert torch.allclose(zl.double(), torch.tensor([0.01, 0.1, 1.0, 10.0, 100.0], dtype=torch.float64), rtol=1e-5)
    with pytest.raises(ValueError, match="near < far"):
        depth_planes(2.0, 1.0, 4)


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="odd"):
        PlaneSweepConfig(window=4).validate()
    with pytest.raises(ValueError, match="divisible"):
        plane_sweep(torch.rand(2, 3, 10, 10), A.forward_cameras(2, 0.1), A.intrinsics(2, 10, 10), 0.5, 5.0,
                    PlaneSweepConfig(downsample=4))


@pytest.mark.parametrize("scale", [0.1, 1.0, 30.0])
def test_depth_range_from_views_is_scale_equivariant_and_brackets_the_scene(scale):
    cams = A.forward_cameras(10, 0.4, seed=2)
    img, dep, k = _scene(cams, 72, 128)
    cams = cams.clone()
    cams[:, :3, 3] *= scale
    r = range_from_views(img, cams, k)
    true_median = float(dep.median()) * scale
    assert r.near < true_median < r.far
    assert abs(math.log(r.median / true_median)) < math.log(1.6)
    assert "plane sweep" in r.source


def test_depth_range_from_points():
    cams = A.forward_cameras(4, 0.3, seed=0)
    k = A.intrinsics(4, 48, 64)
    pts = torch.tensor([[0.0, 0.0, 1.0], [0.1, 0.0, 2.0], [0.0, 0.1, 3.0]]).repeat(5, 1)
    pts = torch.cat([pts, torch.tensor([[0.0, 0.0, -10.0]])])  # behind every camera: not seen
    r = range_from_points(pts, cams, k, 48, 64)
    assert 2.0 < r.median < 5.5 and r.near < 2.8 and r.far > 4.8
    assert "15 of 16" in r.source
    with pytest.raises(DepthRangeError, match="inside the input views"):
        range_from_points(pts[-1:], cams, k, 48, 64)


def test_depth_range_refuses_views_without_baseline():
    cams = A.forward_cameras(3, 0.0)
    img, _, k = _scene(cams, 24, 32)
    with pytest.raises(DepthRangeError, match="coincide"):
        range_from_views(img, cams, k)


def test_fill_depth_takes_the_nearest_measured_surface():
    from tttlrm_ns.geometry.plane_sweep import fill_depth

    depth = torch.full((2, 20, 30), 7.0)  # unmeasured pixels hold an arbitrary best plane
    conf = torch.zeros(2, 20, 30)
    depth[0, :, :10], conf[0, :, :10] = 1.0, 0.9  # left third of view 0 measured at 1, right third at 4
    depth[0, :, 20:], conf[0, :, 20:] = 4.0, 0.9
    out = fill_depth(depth, conf, 0.1)
    assert torch.equal(out[0, :, :10], depth[0, :, :10]) and torch.allclose(out[0, :, 20:], depth[0, :, 20:])
    assert torch.allclose(out[0, :, 11], torch.full((20,), 1.0), rtol=1e-5)  # next to the near surface: near
    assert torch.allclose(out[0, :, 18], torch.full((20,), 4.0), rtol=1e-5)
    assert float(out[0, :, 15].min()) >= 1.0 and float(out[0, :, 15].max()) <= 4.0
    # a view with nothing measured takes the scene's confidence-weighted mean log depth (here: exp(mean(log 1, log 4)))
    assert torch.allclose(out[1], torch.full((20, 30), 2.0), rtol=1e-5)


def test_depth_range_from_a_weak_match_says_so_and_no_match_is_refused():
    from tttlrm_ns.geometry.depth_range import DepthRangeConfig

    cams = A.forward_cameras(10, 0.4, seed=2)
    img, dep, k = _scene(cams, 72, 128)
    weak = range_from_views(img, cams, k, DepthRangeConfig(min_confidence=0.9999))  # almost nothing "confident"
    assert "weak plane sweep" in weak.source and "best-matched" in weak.source
    # the best-matched pixels are the nearest textured surfaces (most parallax): a scale from the scene, biased near
    assert float(dep.min()) < weak.median < float(dep.max()) and weak.near < weak.median < weak.far
    eye = torch.zeros(3)
    apart = torch.stack([_aim(eye, torch.tensor([0.0, 0.0, 1.0])),
                         _aim(eye + 0.1, torch.tensor([0.1, 0.1, -1.0]))])  # no shared pixel
    img2, _, k2 = _scene(apart, 24, 32, fov=50)
    with pytest.raises(DepthRangeError, match="matched at all"):
        range_from_views(img2, apart, k2)

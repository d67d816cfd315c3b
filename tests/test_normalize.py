"""Camera normalisation (``docs/reference_semantics.md`` §1.3), SceneTransform and mapping
Gaussians back to the world. SH rotation and the Gaussian similarity transform itself: tests/test_gaussians.py."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from test_gaussians import random_gaussian_fields
from tttlrm_ns.data.normalize import (
    NormalizeConfig,
    SceneTransform,
    compute_transform,
    normalize_cameras,
    normalize_views,
)
from tttlrm_ns.data.scene import load_scene

MINI = Path(__file__).parent / "assets" / "mydesk_mini"


def official_mean_cam_numpy(c2w):
    """The official mean-camera normalisation written directly in numpy (M^-1 · c2w_i, then t_i / max |t|)."""
    c2w = np.asarray(c2w, dtype=np.float64)
    c = c2w[:, :3, 3].mean(0)
    z = c2w[:, :3, 2].sum(0)
    z = z / np.linalg.norm(z)
    u = c2w[:, :3, 1].sum(0)
    x = np.cross(u, z)
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    y = y / np.linalg.norm(y)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, y, z, c
    out = np.linalg.inv(m) @ c2w
    s = np.abs(out[:, :3, 3]).max()
    out[:, :3, 3] /= s
    return out, 1.0 / s


def test_mean_cam_matches_reference_formula_and_mean_camera_is_identity():
    scene = load_scene(MINI)
    norm, tf = normalize_cameras(scene.c2w, "mean_cam")
    ref, ref_scale = official_mean_cam_numpy(scene.c2w.numpy())
    np.testing.assert_allclose(norm.numpy(), ref, atol=1e-12)
    assert math.isclose(tf.scale, ref_scale, rel_tol=1e-12)
    # Centres in [-1, 1]^3 with one coordinate at +-1.
    assert math.isclose(float(norm[:, :3, 3].abs().max()), 1.0, rel_tol=1e-12)
    # The mean camera of the normalised poses is the identity.
    again, tf2 = normalize_cameras(norm, "mean_cam", scale_to_unit=False)
    torch.testing.assert_close(tf2.align, torch.eye(4, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(again, norm, atol=1e-12, rtol=0)
    # Rotations stay rotations.
    r = norm[:, :3, :3]
    torch.testing.assert_close(r.transpose(-1, -2) @ r, torch.eye(3, dtype=torch.float64).expand(10, 3, 3))


def test_first_cam_and_none():
    scene = load_scene(MINI)
    norm, tf = normalize_cameras(scene.c2w, "first_cam")
    torch.testing.assert_close(norm[0], torch.eye(4, dtype=torch.float64), atol=1e-12, rtol=0)
    assert math.isclose(float(norm[:, :3, 3].abs().max()), 1.0, rel_tol=1e-12)
    # Relative poses are preserved up to the translation scale.
    rel = torch.linalg.inv(scene.c2w[0]) @ scene.c2w[5]
    rel_n = torch.linalg.inv(norm[0]) @ norm[5]
    torch.testing.assert_close(rel_n[:3, :3], rel[:3, :3])
    torch.testing.assert_close(rel_n[:3, 3], rel[:3, 3] * tf.scale)
    none, tf0 = normalize_cameras(scene.c2w, "none")
    torch.testing.assert_close(tf0.align, torch.eye(4, dtype=torch.float64))
    torch.testing.assert_close(none[:, :3, :3], scene.c2w[:, :3, :3])


def test_statistics_from_subset_only():
    """Clean protocol: stats from the input views; targets are mapped but do not shape the frame."""
    c2w = load_scene(MINI).c2w
    inputs = c2w[[1, 2, 3, 5, 6, 7]]
    norm_all, tf = normalize_cameras(c2w, "mean_cam", stats_c2w=inputs)
    ref, _ = official_mean_cam_numpy(inputs.numpy())
    np.testing.assert_allclose(norm_all[[1, 2, 3, 5, 6, 7]].numpy(), ref, atol=1e-12)
    assert not torch.allclose(compute_transform(c2w).align, tf.align)


def test_normalize_views_clean_and_official_stats():
    c2w = load_scene(MINI).c2w
    inputs, targets = c2w[[1, 2, 3, 5, 6, 7]], c2w[[0, 8]]
    ni, nt, tf = normalize_views(inputs, targets, NormalizeConfig(stats="inputs"))
    ref, _ = official_mean_cam_numpy(inputs.numpy())
    np.testing.assert_allclose(ni.numpy(), ref, atol=1e-12)
    torch.testing.assert_close(tf.invert(nt), targets, atol=1e-12, rtol=0)
    ni2, nt2, _ = normalize_views(inputs, targets, NormalizeConfig(stats="all"))
    ref_all, _ = official_mean_cam_numpy(torch.cat([inputs, targets]).numpy())
    np.testing.assert_allclose(torch.cat([ni2, nt2]).numpy(), ref_all, atol=1e-12)
    ni3, _, _ = normalize_views(inputs, targets, NormalizeConfig(method="first_cam", stats="all"))
    torch.testing.assert_close(ni3[0], torch.eye(4, dtype=torch.float64), atol=1e-12, rtol=0)


def test_single_camera_and_coincident_centres_do_not_divide_by_zero():
    c2w = load_scene(MINI).c2w
    for method in ("mean_cam", "first_cam"):
        norm, tf = normalize_cameras(c2w[:1], method)
        assert tf.scale == 1.0 and torch.isfinite(norm).all()
        torch.testing.assert_close(norm[0], torch.eye(4, dtype=torch.float64), atol=1e-12, rtol=0)
    same = c2w[:3].clone()
    same[:, :3, 3] = c2w[0, :3, 3]
    norm, tf = normalize_cameras(same, "mean_cam")
    assert tf.scale == 1.0 and torch.isfinite(norm).all()
    torch.testing.assert_close(norm[:, :3, 3], torch.zeros(3, 3, dtype=torch.float64), atol=1e-12, rtol=0)


def test_scene_transform_round_trips():
    c2w = load_scene(MINI).c2w
    norm, tf = normalize_cameras(c2w, "mean_cam")
    torch.testing.assert_close(tf.invert(norm), c2w, atol=1e-12, rtol=0)
    pts = torch.randn(50, 3, dtype=torch.float64) * 5
    torch.testing.assert_close(tf.invert_points(tf.apply_points(pts)), pts, atol=1e-12, rtol=0)
    hom = torch.cat([pts, torch.ones(50, 1, dtype=torch.float64)], 1)
    torch.testing.assert_close((hom @ tf.matrix().T)[:, :3], tf.apply_points(pts))
    # Camera centres move like points.
    torch.testing.assert_close(tf.apply_points(c2w[:, :3, 3]), norm[:, :3, 3])
    # float32 inputs keep their dtype.
    assert tf.apply(c2w.float()).dtype == torch.float32
    ident = SceneTransform.identity()
    torch.testing.assert_close(ident.apply(c2w), c2w)


@pytest.mark.parametrize("k", [1, 4, 9, 16])
def test_gaussians_world_normalised_world_round_trip(k):
    c2w = load_scene(MINI).c2w
    _, tf = normalize_cameras(c2w, "mean_cam")
    means, quats, log_scales, sh = random_gaussian_fields(200, k)
    world = tf.gaussians_to_world(means, quats, log_scales, sh)
    assert all(a.dtype == torch.float32 and a.shape == b.shape for a, b in zip(world, (means, quats, log_scales, sh)))
    back = tf.gaussians_to_normalized(*world)
    torch.testing.assert_close(back[0], means, atol=1e-5, rtol=1e-5)
    # Quaternions are equal up to sign (q and -q are the same rotation).
    dots = (F.normalize(back[1], dim=-1) * F.normalize(quats, dim=-1)).sum(-1).abs()
    torch.testing.assert_close(dots, torch.ones_like(dots), atol=1e-5, rtol=0)
    torch.testing.assert_close(back[2], log_scales, atol=1e-5, rtol=0)
    torch.testing.assert_close(back[3], sh, atol=1e-5, rtol=1e-5)
    # Means map exactly as camera centres do.
    torch.testing.assert_close(world[0].double(), tf.invert_points(means.double()), atol=1e-5, rtol=1e-5)

"""Camera normalisation (§1.3), SceneTransform, SH rotation and mapping Gaussians back to the world (§5.5)."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tttlrm_ns.data.normalize import (
    NormalizeConfig,
    SceneTransform,
    compute_transform,
    normalize_cameras,
    normalize_views,
    quat_multiply,
    rotation_to_quat,
    sh_basis,
    sh_rotation_matrix,
    transform_gaussians,
)
from tttlrm_ns.data.scene import load_scene

MINI = Path(__file__).parent / "assets" / "mydesk_mini"


def quat_to_rotmat(q):  # independent reference: gsplat's convention (w, x, y, z)
    w, x, y, z = F.normalize(q, dim=-1).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        -1,
    ).reshape(*q.shape[:-1], 3, 3)


def random_rotations(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return quat_to_rotmat(torch.randn(n, 4, generator=g, dtype=torch.float64))


def official_mean_cam_numpy(c2w):
    """§1.3 written directly in numpy (M^-1 · c2w_i, then t_i / max |t|)."""
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


# ---------------------------------------------------------------------------------------------------------------
# SH


def test_sh_basis_equals_gsplat():
    from gsplat.cuda._torch_impl import _eval_sh_bases_fast

    d = F.normalize(torch.randn(200, 3, dtype=torch.float64), dim=-1)
    for degree in range(4):
        k = (degree + 1) ** 2
        torch.testing.assert_close(sh_basis(degree, d), _eval_sh_bases_fast(k, d), atol=1e-12, rtol=0)


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_sh_rotation_evaluates_consistently(degree):
    """Rotated coefficients evaluated at R d equal the original coefficients evaluated at d."""
    k = (degree + 1) ** 2
    d = F.normalize(torch.randn(300, 3, dtype=torch.float64), dim=-1)
    for rot in random_rotations(5, seed=degree):
        dmat = sh_rotation_matrix(rot, degree)
        coeffs = torch.randn(k, 3, dtype=torch.float64)
        lhs = sh_basis(degree, d @ rot.T) @ (dmat @ coeffs)
        rhs = sh_basis(degree, d) @ coeffs
        torch.testing.assert_close(lhs, rhs, atol=1e-10, rtol=0)
        # Wigner matrices of real SH are orthogonal, and compose like the rotations.
        torch.testing.assert_close(dmat @ dmat.T, torch.eye(k, dtype=torch.float64), atol=1e-10, rtol=0)
    r1, r2 = random_rotations(2, seed=10 + degree)
    torch.testing.assert_close(
        sh_rotation_matrix(r1 @ r2, degree),
        sh_rotation_matrix(r1, degree) @ sh_rotation_matrix(r2, degree),
        atol=1e-10,
        rtol=0,
    )


def test_rotation_to_quat_all_branches():
    # Random rotations plus near-180-degree ones (w ~ 0), where naive formulas lose precision.
    rots = torch.cat([random_rotations(50, seed=3), quat_to_rotmat(torch.tensor([[1e-9, 1.0, 2.0, -0.5], [0.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]], dtype=torch.float64))])
    q = rotation_to_quat(rots)
    torch.testing.assert_close(quat_to_rotmat(q), rots, atol=1e-12, rtol=0)
    assert (q[:, 0] >= 0).all()
    # Hamilton product composes rotations.
    qa, qb = q[:5], q[5:10]
    torch.testing.assert_close(quat_to_rotmat(quat_multiply(qa, qb)), rots[:5] @ rots[5:10], atol=1e-12, rtol=0)


def _random_gaussians(n, k, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, 3, generator=g).to(dtype),
        torch.randn(n, 4, generator=g).to(dtype) * 2,  # raw, unnormalised
        torch.randn(n, 3, generator=g).to(dtype) - 3,
        torch.randn(n, k, 3, generator=g).to(dtype),
    )


def test_transform_gaussians_geometry_and_colour():
    """Means, covariances and view-dependent colour all transform as the similarity says."""
    means, quats, log_scales, sh = _random_gaussians(64, 16, dtype=torch.float64)
    rot = random_rotations(1, seed=7)[0]
    t = torch.tensor([0.3, -2.0, 5.0], dtype=torch.float64)
    s = 2.5
    m2, q2, ls2, sh2 = transform_gaussians(means, quats, log_scales, sh, rot, t, s)
    torch.testing.assert_close(m2, s * means @ rot.T + t)
    torch.testing.assert_close(ls2, log_scales + math.log(s))
    torch.testing.assert_close(q2.norm(dim=-1), quats.norm(dim=-1))  # raw magnitude kept

    def cov(q, ls):
        r = quat_to_rotmat(q)
        return r @ torch.diag_embed(torch.exp(2 * ls)) @ r.transpose(-1, -2)

    torch.testing.assert_close(cov(q2, ls2), s * s * rot @ cov(quats, log_scales) @ rot.T, atol=1e-9, rtol=1e-9)
    # Colour seen from a camera: move the camera with the scene, the colour must not change.
    cam = torch.tensor([4.0, 1.0, -3.0], dtype=torch.float64)
    cam2 = s * rot @ cam + t
    col = (sh_basis(3, F.normalize(means - cam, dim=-1))[..., None] * sh).sum(-2)
    col2 = (sh_basis(3, F.normalize(m2 - cam2, dim=-1))[..., None] * sh2).sum(-2)
    torch.testing.assert_close(col2, col, atol=1e-10, rtol=0)


@pytest.mark.parametrize("k", [1, 4, 9, 16])
def test_gaussians_world_normalised_world_round_trip(k):
    c2w = load_scene(MINI).c2w
    _, tf = normalize_cameras(c2w, "mean_cam")
    means, quats, log_scales, sh = _random_gaussians(200, k)
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


def test_transform_gaussians_rejects_bad_input():
    means, quats, log_scales, sh = _random_gaussians(4, 5)
    with pytest.raises(ValueError, match="1, 4, 9 or 16"):
        transform_gaussians(means, quats, log_scales, sh, torch.eye(3), torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match="scale must be positive"):
        transform_gaussians(means, quats, log_scales, sh[:, :4], torch.eye(3), torch.zeros(3), 0.0)

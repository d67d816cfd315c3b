"""Camera conventions: OpenCV<->OpenGL, pose inversion, intrinsics layouts, pixel-centre rule."""

import math

import pytest
import torch

from tttlrm_ns import conventions as cv


def random_rigid(n: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, 3, 3, generator=g, dtype=dtype))
    q = q * torch.sign(torch.linalg.det(q))[:, None, None]  # proper rotations
    pose = torch.eye(4, dtype=dtype).repeat(n, 1, 1)
    pose[:, :3, :3] = q
    pose[:, :3, 3] = torch.randn(n, 3, generator=g, dtype=dtype) * 3
    return pose


def test_invert_rigid_matches_general_inverse_and_round_trips():
    c2w = random_rigid(16)
    w2c = cv.c2w_to_w2c(c2w)
    torch.testing.assert_close(w2c, torch.linalg.inv(c2w), atol=1e-12, rtol=0)
    torch.testing.assert_close(cv.w2c_to_c2w(w2c), c2w, atol=1e-12, rtol=0)
    torch.testing.assert_close(cv.invert_rigid(c2w[:, :3, :]), w2c, atol=1e-12, rtol=0)  # [.., 3, 4] input


def test_opencv_opengl_round_trip_and_axes():
    c2w = random_rigid(8, seed=1)
    gl = cv.opencv_to_opengl_c2w(c2w)
    torch.testing.assert_close(cv.opengl_to_opencv_c2w(gl), c2w, atol=0, rtol=0)
    # Same camera centre and right axis; OpenGL up = -OpenCV down, OpenGL backward = -OpenCV forward.
    torch.testing.assert_close(gl[:, :3, 3], c2w[:, :3, 3])
    torch.testing.assert_close(gl[:, :3, 0], c2w[:, :3, 0])
    torch.testing.assert_close(gl[:, :3, 1], -c2w[:, :3, 1])
    torch.testing.assert_close(gl[:, :3, 2], -c2w[:, :3, 2])
    assert torch.allclose(torch.linalg.det(gl[:, :3, :3]), torch.ones(8, dtype=torch.float64))
    # Works on [..., 3, 4] too.
    torch.testing.assert_close(cv.opencv_to_opengl_c2w(c2w[:, :3]), gl[:, :3])


def test_opengl_point_in_front_has_negative_z():
    c2w = random_rigid(4, seed=2)
    p_cam_cv = torch.tensor([0.3, -0.2, 2.0], dtype=torch.float64)  # in front of an OpenCV camera (z > 0)
    p_world = c2w[:, :3, :3] @ p_cam_cv + c2w[:, :3, 3]
    gl_w2c = cv.c2w_to_w2c(cv.opencv_to_opengl_c2w(c2w))
    p_cam_gl = (gl_w2c[:, :3, :3] @ p_world[..., None])[..., 0] + gl_w2c[:, :3, 3]
    torch.testing.assert_close(p_cam_gl, torch.tensor([0.3, 0.2, -2.0], dtype=torch.float64).expand(4, 3))


def test_K_round_trip_and_skew_rejected():
    k4 = torch.tensor([[500.0, 510.0, 320.5, 240.25], [100.0, 90.0, 50.0, 40.0]])
    K = cv.fxfycxcy_to_K(k4)
    assert K.shape == (2, 3, 3)
    torch.testing.assert_close(K[0], torch.tensor([[500.0, 0, 320.5], [0, 510.0, 240.25], [0, 0, 1]]))
    torch.testing.assert_close(cv.K_to_fxfycxcy(K), k4)
    K[0, 0, 1] = 1.0
    with pytest.raises(ValueError, match="skew"):
        cv.K_to_fxfycxcy(K)


def test_pixel_centre_rule_projection():
    """The centre of pixel (u, v) back-projected with +0.5 and projected again lands on (u+0.5, v+0.5)."""
    h, w = 6, 10
    k4 = torch.tensor([12.0, 11.0, 5.0, 3.0], dtype=torch.float64)
    centers = cv.pixel_centers(h, w, torch.float64)  # [H, W, 2]
    assert centers[0, 0].tolist() == [0.5, 0.5] and centers[2, 7].tolist() == [7.5, 2.5]
    d_cam = torch.cat([(centers - k4[2:]) / k4[:2], torch.ones(h, w, 1, dtype=torch.float64)], -1)  # z = 1
    pts_cam = d_cam.reshape(-1, 3) * 4.0
    c2w = random_rigid(1, seed=3)[0]
    pts_world = pts_cam @ c2w[:3, :3].T + c2w[:3, 3]
    uv = cv.project_points(pts_world, cv.c2w_to_w2c(c2w), k4)
    torch.testing.assert_close(uv, centers.reshape(-1, 2), atol=1e-9, rtol=0)
    # An ideal centred camera (cx = W/2) puts the image centre between the two middle pixels.
    assert (w / 2 - cv.PIXEL_CENTER_OFFSET) == (w - 1) / 2


def test_resize_and_crop_intrinsics_are_exact():
    """Scaling by s maps the continuous point x to s*x; a crop subtracts the offset (pixel-centre rule)."""
    k4 = torch.tensor([400.0, 410.0, 239.5, 135.2], dtype=torch.float64)
    x = torch.tensor([[0.1, -0.05, 1.0]], dtype=torch.float64)
    uv = x[:, :2] / x[:, 2:] * k4[:2] + k4[2:]
    k_s = cv.scale_intrinsics(k4, 2.0, 0.5)
    uv_s = x[:, :2] / x[:, 2:] * k_s[:2] + k_s[2:]
    torch.testing.assert_close(uv_s, uv * torch.tensor([2.0, 0.5], dtype=torch.float64))
    k_c = cv.crop_intrinsics(k4, 7, 3)
    uv_c = x[:, :2] / x[:, 2:] * k_c[:2] + k_c[2:]
    torch.testing.assert_close(uv_c, uv - torch.tensor([7.0, 3.0], dtype=torch.float64))


def test_rigidity_checks():
    pose = random_rigid(3, seed=4)
    assert cv.rigidity_error(pose).max() < 1e-12
    assert torch.allclose(cv.rotation_det(pose), torch.ones(3, dtype=torch.float64))
    scaled = pose.clone()
    scaled[:, :3, :3] *= 1.1
    assert cv.rigidity_error(scaled).min() > 0.2
    refl = pose.clone()
    refl[:, :3, 0] *= -1
    assert cv.rigidity_error(refl).max() < 1e-12 and torch.allclose(cv.rotation_det(refl), -torch.ones(3, dtype=torch.float64))
    assert cv.to_homogeneous_pose(pose[:, :3]).shape == (3, 4, 4)
    assert math.isclose(float(cv.to_homogeneous_pose(pose[:, :3])[1, 3, 3]), 1.0)


def test_model_rays_follow_the_pixel_centre_rule():
    """The model's per-pixel rays (tttlrm_ns.model.rays) project back onto the pixel centres (u+0.5, v+0.5)."""
    from tttlrm_ns.model.rays import pixel_rays

    h, w = 4, 6
    c2w = random_rigid(2, seed=5)
    k4 = torch.tensor([[7.0, 8.0, 3.1, 1.9], [5.0, 5.0, 3.0, 2.0]], dtype=torch.float64)
    o, d = pixel_rays(c2w[None], k4[None], h, w)  # [1, V, 3, H, W]
    for v in range(2):
        pts = (o[0, v] + 3.0 * d[0, v]).permute(1, 2, 0).reshape(-1, 3)
        uv = cv.project_points(pts, cv.c2w_to_w2c(c2w[v]), k4[v])
        torch.testing.assert_close(uv, cv.pixel_centers(h, w, torch.float64).reshape(-1, 2), atol=1e-9, rtol=0)


def test_opengl_c2w_to_opencv_w2c_is_flip_then_inverse():
    """The viewmat of a nerfstudio camera: the OpenCV inverse of the flipped pose, for [.., 4, 4] and [.., 3, 4]."""
    gl = cv.opencv_to_opengl_c2w(random_rigid(6, seed=6))
    want = torch.linalg.inv(cv.opengl_to_opencv_c2w(gl))
    torch.testing.assert_close(cv.opengl_c2w_to_opencv_w2c(gl), want, atol=1e-12, rtol=0)
    torch.testing.assert_close(cv.opengl_c2w_to_opencv_w2c(gl[:, :3]), want, atol=1e-12, rtol=0)
    # float32, as the renderers use it: the closed form stays within rounding of the general inverse.
    torch.testing.assert_close(cv.c2w_to_w2c(gl.float()), torch.linalg.inv(gl.float()), atol=2e-6, rtol=0)


def _similarity(seed: int = 7) -> cv.Similarity:
    return cv.Similarity.from_nerfstudio(random_rigid(1, seed=seed)[0, :3], 0.37)


def test_similarity_maps_cameras_and_points_consistently():
    sim = _similarity()
    assert sim.align.dtype == torch.float64 and sim.align.shape == (4, 4)
    c2w = random_rigid(5, seed=8)
    moved = sim.apply(c2w)
    torch.testing.assert_close(sim.invert(moved), c2w, atol=1e-12, rtol=0)
    torch.testing.assert_close(sim.invert(moved[:, :3]), c2w[:, :3], atol=1e-12, rtol=0)  # [.., 3, 4] too
    # Centres move like points; rotations stay rotations; points use the homogeneous matrix.
    torch.testing.assert_close(moved[:, :3, 3], sim.apply_points(c2w[:, :3, 3]), atol=1e-12, rtol=0)
    assert float(cv.rigidity_error(moved).max()) < 1e-12
    pts = torch.randn(30, 3, dtype=torch.float64)
    hom = torch.cat([pts, torch.ones(30, 1, dtype=torch.float64)], 1)
    torch.testing.assert_close(sim.apply_points(pts), (hom @ sim.matrix().T)[:, :3], atol=1e-12, rtol=0)
    torch.testing.assert_close(sim.invert_points(pts), (hom @ torch.linalg.inv(sim.matrix()).T)[:, :3],
                               atol=1e-12, rtol=0)
    # Only the world side changes: inverting commutes with the OpenCV <-> OpenGL flip.
    torch.testing.assert_close(sim.invert(cv.opencv_to_opengl_c2w(moved)), cv.opencv_to_opengl_c2w(c2w),
                               atol=1e-12, rtol=0)
    assert sim.invert(moved.float()).dtype == torch.float32
    torch.testing.assert_close(cv.Similarity.identity().apply(c2w), c2w, atol=0, rtol=0)


def test_nerfstudio_camera_pose_helpers_are_the_similarity():
    """ns/inputs.dataparser_to_original (used by the pipelines) is Similarity.invert of the dataparser transform."""
    from tttlrm_ns.ns import inputs

    transform = random_rigid(1, seed=9)[0, :3]
    c2w = random_rigid(4, seed=10)
    got = inputs.dataparser_to_original(c2w, transform, 0.5)
    assert torch.equal(got, cv.Similarity.from_nerfstudio(transform, 0.5).invert(c2w))
    back = cv.Similarity.from_nerfstudio(transform, 0.5).apply(got)
    torch.testing.assert_close(back, c2w, atol=1e-12, rtol=0)


def test_one_look_at_for_opengl_and_opencv_worlds():
    """The OpenGL look-at of the synthetic data, in OpenCV axes, serves the procedural trainer scenes' (y-down world)
    cameras: +z looks at the target, x is horizontal, image rows (y) go down the world."""
    import numpy as np

    from tttlrm_ns.synth.cameras import gl_c2w_to_cv_w2c

    eye, target = np.array([1.0, 0.2, 0.5]), np.array([-0.3, 0.0, 0.1])
    c2w = cv.look_at_cv(eye, target, up=np.array([0.0, -1.0, 0.0]))
    fwd = (target - eye) / np.linalg.norm(target - eye)
    np.testing.assert_allclose(c2w[:3, 2], fwd, atol=1e-12)
    assert abs(c2w[1, 0]) < 1e-12 and c2w[1, 1] > 0
    np.testing.assert_allclose(c2w[:3, 3], eye)
    gl = cv.look_at_gl(eye, target, roll=0.2)
    np.testing.assert_allclose(gl_c2w_to_cv_w2c(gl), np.linalg.inv(gl @ np.diag([1.0, -1.0, -1.0, 1.0])), atol=1e-12)


def test_camera_rays_project_back_to_their_pixel_centres():
    from tttlrm_ns.conventions import camera_rays, pixel_centers, project_points

    k = torch.tensor([[50.0, 52.0, 30.5, 19.0], [40.0, 41.0, 16.0, 12.0]], dtype=torch.float64)
    rays = camera_rays(k, 24, 32)  # [2, 24, 32, 3], z = 1
    assert rays.shape == (2, 24, 32, 3) and torch.equal(rays[..., 2], torch.ones(2, 24, 32, dtype=torch.float64))
    pts = (rays * 3.0).reshape(2, -1, 3)
    px = project_points(pts, torch.eye(4, dtype=torch.float64).expand(2, 4, 4), k)
    torch.testing.assert_close(px, pixel_centers(24, 32, torch.float64).reshape(1, -1, 2).expand(2, -1, 2))

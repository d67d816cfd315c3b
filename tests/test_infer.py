"""tttlrm_ns.infer: normalisation for the weights, the mvs initialiser and the plausibility check (no nerfstudio)."""

from __future__ import annotations

import math

import torch

from tttlrm_ns import infer
from tttlrm_ns.conventions import fxfycxcy_to_K
from tttlrm_ns.data.normalize import compute_transform
from tttlrm_ns.geometry import analytic as A
from tttlrm_ns.render.splat import render_gaussians

H, W = 48, 80


def _scene(n: int = 8, seed: int = 4):
    cams = A.orbit_cameras(n, 1.6, arc_deg=50)
    k = A.intrinsics(n, H, W, 60)
    img, dep = A.render(A.room_scene(seed), cams, k, H, W)
    return img, cams, k, dep


def _render(g, c2w, ks, width, height):
    return render_gaussians(g, c2w, ks, width, height, background=torch.ones(3)).rgb


def _psnr(a, b):
    return float(-10 * torch.log10(((a - b) ** 2).mean()))


def test_extent_normalisation_is_the_official_one():
    img, cams, k, _ = _scene()
    n = infer.normalise_for_model(img, cams, k, "mean_cam", "extent")
    tf = compute_transform(cams, "mean_cam")
    assert n.depth_range is None and math.isclose(n.transform.scale, tf.scale)
    assert torch.allclose(n.c2w, tf.apply(cams.double()).float())


def test_median_depth_normalisation_measures_the_depth():
    img, cams, k, dep = _scene()
    for s in (0.2, 5.0):  # any world scale lands at the same frame
        c = cams.clone()
        c[:, :3, 3] *= s
        n = infer.normalise_for_model(img, c, k, "mean_cam", "median_depth")
        assert "plane sweep" in n.depth_range.source
        measured_median_in_frame = n.depth_range.median * n.transform.scale
        assert math.isclose(measured_median_in_frame, 1.0, rel_tol=1e-6)
        assert abs(math.log(n.depth_range.median / (s * float(dep.median())))) < math.log(2.0)
    pts = torch.tensor([[0.3, 0.2, 0.1], [-0.2, 0.1, 0.0], [0.1, -0.1, 0.2]]).repeat(4, 1)
    n = infer.normalise_for_model(img, cams, k, "mean_cam", "median_depth", points=pts)
    assert "SfM points" in n.depth_range.source


def test_mvs_initialiser_reproduces_the_views_and_sits_on_the_surfaces():
    img, cams, k, dep = _scene()
    g = infer.mvs_gaussians(img, cams, k, float(dep.min()) * 0.8, float(dep.max()) * 1.2)
    assert g.num > 0.3 * 8 * (H // 2) * (W // 2)
    mean_colour = img.mean((0, 2, 3))[None, :, None, None].expand_as(img)
    pred = _render(g, cams, fxfycxcy_to_K(k), W, H).permute(0, 3, 1, 2)
    assert _psnr(pred.clamp(0, 1), img) > _psnr(mean_colour, img) + 1.5  # measured: 17.6 against 15.2 dB
    # camera-z of every Gaussian against the exact depth of the pixel it came from, in the first view
    w2c = torch.linalg.inv(cams[0])
    cam = g.means @ w2c[:3, :3].T + w2c[:3, 3]
    u = (cam[:, 0] / cam[:, 2] * k[0, 0] + k[0, 2]).long()
    v = (cam[:, 1] / cam[:, 2] * k[0, 1] + k[0, 3]).long()
    inside = (cam[:, 2] > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    rel = (cam[inside, 2] / dep[0, v[inside], u[inside]] - 1).abs()
    assert float((rel < 0.1).float().mean()) > 0.6  # many points are occluded in view 0: a loose floor


def test_plausibility_check_flags_a_broken_prediction():
    img, cams, k, dep = _scene()
    g = infer.mvs_gaussians(img, cams, k, float(dep.min()) * 0.8, float(dep.max()) * 1.2)
    ok = infer.check_plausibility(g, img, cams, k, _render)
    assert ok.warning is None and ok.input_psnr > infer.PLAUSIBLE_INPUT_PSNR
    assert ok.views == [0, 2, 5, 7]
    broken = g.map(lambda t: t)
    broken.means = broken.means + torch.randn_like(broken.means) * 2.0  # geometry scrambled
    bad = infer.check_plausibility(broken, img, cams, k, _render)
    assert bad.warning is not None and "--pipeline.init mvs" in bad.warning
    assert bad.input_psnr < ok.input_psnr - 3

"""The one render helper (tttlrm_ns.render.splat.render_gaussians) against ``rasterize`` called by hand, the render
code it replaced (the nerfstudio models' and the trainer's, written out here as they were), and its deferred paths."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.scene_box import SceneBox

from tttlrm_ns import conventions
from tttlrm_ns.gaussians import Gaussians
from tttlrm_ns.render import rasterize
from tttlrm_ns.render.splat import render_gaussians

H, W = 24, 32


def _gaussians(n=60, degree=2, seed=0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * 0.4
    means[:, 2] += 3.0  # in front of OpenCV cameras near the origin looking down +z
    return Gaussians(
        means=means,
        sh=torch.randn(n, (degree + 1) ** 2, 3, generator=g) * 0.3,
        log_scales=torch.full((n, 3), -2.5) + 0.2 * torch.randn(n, 3, generator=g),
        quats=torch.randn(n, 4, generator=g),
        opacity_logits=torch.randn(n, 1, generator=g) + 1.0,
    )


def _cameras(c=2) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenCV c2w [C, 4, 4] (small rotations about y, shifted centres) and Ks [C, 3, 3]."""
    c2w = torch.eye(4).repeat(c, 1, 1)
    for i in range(c):
        a = 0.08 * i
        c2w[i, :3, :3] = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
        c2w[i, :3, 3] = torch.tensor([0.15 * i, -0.05 * i, 0.1])
    k = torch.tensor([[30.0, 31.0, W / 2, H / 2], [28.0, 28.0, W / 2 + 0.7, H / 2 - 0.4]])[:c]
    return c2w, conventions.fxfycxcy_to_K(k)


def _activated(g: Gaussians):
    return g.means, g.quats, g.log_scales.exp(), torch.sigmoid(g.opacity_logits[:, 0])


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_equals_rasterize_by_hand(backend):
    """Activation, viewmats, SH degree, background compositing and the depth fill, each written out."""
    g = _gaussians()
    c2w, Ks = _cameras()
    bg = torch.tensor([[1.0, 1.0, 1.0], [0.2, 0.4, 0.6]])
    out = render_gaussians(g, c2w, Ks, W, H, background=bg, depth=True, backend=backend)
    viewmats = conventions.c2w_to_w2c(c2w)  # [C, 4, 4]
    ref, alpha, meta = rasterize(*_activated(g), g.sh, viewmats, Ks, W, H, sh_degree=2, render_mode="RGB+ED",
                                 backend=backend)
    assert float(alpha.mean()) > 0.1  # the Gaussians are in view
    assert torch.equal(out.alpha, alpha)
    assert torch.equal(out.rgb, ref[..., :3] + (1 - alpha) * bg[:, None, None])
    d = ref[..., 3:]
    assert torch.equal(out.depth, torch.where(alpha > 0, d, d.max()))
    assert out.rgb.shape == (2, H, W, 3) and out.depth.shape == (2, H, W, 1)
    assert torch.equal(out.meta["radii"], meta["radii"])
    # Fewer SH bands, plain colours instead of SH, no background (black).
    low = render_gaussians(g, c2w, Ks, W, H, sh_degree=0, backend=backend)
    ref0, _, _ = rasterize(*_activated(g), g.sh, viewmats, Ks, W, H, sh_degree=0, backend=backend)
    assert torch.equal(low.rgb, ref0)
    rgb = torch.rand(g.num, 3)
    flat = render_gaussians(g, c2w, Ks, W, H, colors=rgb, backend=backend)
    ref1, _, _ = rasterize(*_activated(g), rgb, viewmats, Ks, W, H, backend=backend)
    assert torch.equal(flat.rgb, ref1) and flat.depth is None


def test_equals_the_trainer_render_it_replaced():
    """The trainer used to pass the background to the rasteriser and invert poses with torch.linalg.inv; the
    helper composites afterwards and inverts in closed form. Same image up to float32 rounding (measured here:
    8e-7, from the two inverses' last bits moving the projected means), values and gradients."""
    g = _gaussians(degree=1)
    params = [t.clone().requires_grad_(True) for t in (g.means, g.sh, g.log_scales, g.quats, g.opacity_logits)]
    g = Gaussians(*params)
    c2w, Ks = _cameras()
    bg = torch.tensor([1.0, 1.0, 1.0])
    new = render_gaussians(g, c2w, Ks, W, H, background=bg).rgb
    old, _, _ = rasterize(*_activated(g), g.sh, torch.linalg.inv(c2w), Ks, W, H, sh_degree=1,
                          backgrounds=bg.expand(2, 3), rasterize_mode="classic")
    torch.testing.assert_close(new, old, rtol=0, atol=2e-6)
    w = torch.rand_like(new)
    g_new = torch.autograd.grad((new * w).sum(), params)
    g_old = torch.autograd.grad((old * w).sum(), params)
    for a, b in zip(g_new, g_old):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6 * float(b.abs().max()))


@pytest.mark.parametrize("patch", [None, 16])
def test_deferred_paths_equal_direct_rendering(patch):
    """Deferred rendering (whole views through rasterize_fn, or 16-pixel windows) gives the direct render and its
    gradients (the composite happens after the deferred function, so the alpha gradient must flow too)."""
    g0 = _gaussians(degree=1, seed=3)
    c2w, Ks = _cameras()
    bg = torch.tensor([[1.0, 1.0, 1.0], [0.3, 0.1, 0.0]])
    results = []
    for deferred in (False, True):
        params = [t.clone().requires_grad_(True) for t in (g0.means, g0.sh, g0.log_scales, g0.quats,
                                                           g0.opacity_logits)]
        out = render_gaussians(Gaussians(*params), c2w, Ks, W, H, background=bg, deferred=deferred,
                               deferred_patch=patch)
        w = torch.linspace(0, 1, out.rgb.numel()).view_as(out.rgb)
        results.append((out.rgb.detach(), torch.autograd.grad((out.rgb * w).sum(), params)))
    (direct, g_direct), (deferred, g_deferred) = results
    torch.testing.assert_close(deferred, direct, rtol=0, atol=1e-6)
    for a, b in zip(g_deferred, g_direct):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6 * float(b.abs().max()))


def test_injected_renderer_and_unbatched_only():
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return rasterize(*args, **kwargs)

    g = _gaussians()
    c2w, Ks = _cameras(1)
    out = render_gaussians(g, c2w, Ks, W, H, rasterize_fn=spy, near_plane=0.2, eps2d=0.1)
    assert len(calls) == 1 and calls[0]["near_plane"] == 0.2 and calls[0]["eps2d"] == 0.1
    assert out.rgb.shape == (1, H, W, 3)
    with pytest.raises(ValueError, match="unbatched"):
        render_gaussians(g.map(lambda t: t[None]), c2w, Ks, W, H)


# --------------------------------------------------------------------- the nerfstudio models' former render code


def _ns_camera(w=W, h=H) -> Cameras:
    c2w_cv = _cameras(2)[0][1]
    c2w_gl = conventions.opencv_to_opengl_c2w(c2w_cv)[:3][None]  # [1, 3, 4] nerfstudio camera
    return Cameras(camera_to_worlds=c2w_gl, fx=torch.tensor([[28.0]]), fy=torch.tensor([[29.0]]),
                   cx=torch.tensor([[w / 2 + 0.3]]), cy=torch.tensor([[h / 2 - 0.2]]), width=torch.tensor([[w]]),
                   height=torch.tensor([[h]]), camera_type=CameraType.PERSPECTIVE)


def _former_ns_render(params, camera, sh_degree, background, depth, backend="auto"):
    """The body both ``get_outputs`` had before they shared ``render_camera`` (OpenGL -> OpenCV viewmat, activation,
    rasterize, composite after, clamp, farthest-depth fill)."""
    c2w = camera.camera_to_worlds
    viewmats = conventions.c2w_to_w2c(conventions.opengl_to_opencv_c2w(conventions.to_homogeneous_pose(c2w)))
    colors = torch.cat([params["features_dc"][:, None, :], params["features_rest"]], dim=1)
    if sh_degree is None:
        colors = torch.sigmoid(colors[:, 0, :])
    render, alpha, _ = rasterize(
        params["means"], params["quats"], torch.exp(params["scales"]), torch.sigmoid(params["opacities"]).squeeze(-1),
        colors, viewmats, camera.get_intrinsics_matrices(), W, H, near_plane=0.01, far_plane=1e10,
        sh_degree=sh_degree, packed=False, render_mode="RGB+ED" if depth else "RGB", backend=backend)
    rgb = torch.clamp(render[..., :3] + (1 - alpha) * background, 0.0, 1.0)
    d = None
    if depth:
        d = render[..., 3:4]
        d = torch.where(alpha > 0, d, d.detach().max()).squeeze(0)
    return rgb.squeeze(0), d, alpha.squeeze(0)


def test_tttlrm_model_get_outputs_is_unchanged():
    from tttlrm_ns.ns.model import TttlrmNSModelConfig

    m = TttlrmNSModelConfig(background_color="black").setup(
        scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=4, metadata={}, device="cpu")
    m.set_gaussians(_gaussians(degree=3))
    m.eval()
    out = m.get_outputs(_ns_camera())
    rgb, depth, alpha = _former_ns_render(dict(m.gauss_params.items()), _ns_camera(), 3, torch.zeros(3), True)
    assert float(alpha.mean()) > 0.1
    for a, b in ((out["rgb"], rgb), (out["depth"], depth), (out["accumulation"], alpha)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("sh_degree", [0, 2])
def test_splatfacto_cpu_get_outputs_is_unchanged(sh_degree):
    from tttlrm_ns.ns.splatfacto_cpu import SplatfactoCPUModelConfig

    g = torch.Generator().manual_seed(1)
    xyz = torch.randn(200, 3, generator=g) * 0.3 + torch.tensor([0.0, 0.0, 3.0])
    rgb255 = torch.randint(0, 256, (200, 3), generator=g).to(torch.uint8)
    model = SplatfactoCPUModelConfig(sh_degree=sh_degree, sh_degree_interval=1, background_color="white").setup(
        scene_box=SceneBox(aabb=torch.tensor([[-5.0] * 3, [5.0] * 3])), num_train_data=4, seed_points=(xyz, rgb255))
    with torch.no_grad():
        model.gauss_params["features_rest"].normal_(0, 0.2, generator=g)
    model.eval()
    model.step = 5  # past splatfacto's progressive SH schedule: every band renders
    out = model.get_outputs(_ns_camera())
    ref_rgb, ref_depth, ref_alpha = _former_ns_render(dict(model.gauss_params.items()), _ns_camera(),
                                                      sh_degree or None, torch.ones(3), True)
    assert float(ref_alpha.mean()) > 0.1
    for a, b in ((out["rgb"], ref_rgb), (out["depth"], ref_depth), (out["accumulation"], ref_alpha)):
        assert torch.equal(a, b)


def test_trainer_render_views_uses_the_helper():
    from tttlrm_ns.train.config import TrainConfig
    from tttlrm_ns.train.render import render_views, resolve_rasterize

    cfg = TrainConfig()
    cfg = dataclasses.replace(cfg, render=dataclasses.replace(cfg.render, deferred=False))
    g = _gaussians(degree=1)
    c2w, Ks = _cameras()
    k = conventions.K_to_fxfycxcy(Ks)
    got = render_views(g, c2w, k, H, W, cfg, resolve_rasterize("auto"))  # [C, 3, H, W]
    bg = torch.tensor(cfg.data.background, dtype=torch.float32)
    want = render_gaussians(g, c2w, Ks, W, H, background=bg).rgb.permute(0, 3, 1, 2)
    assert torch.equal(got, want)

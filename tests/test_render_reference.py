"""The pure-torch reference rasterizer (tttlrm_ns.render.reference) against gsplat 1.4.0's own torch formulas and
an independent per-pixel scalar oracle; autograd gradchecks in float64; rasterize() input validation."""

from __future__ import annotations

import math

import pytest
import torch

from tttlrm_ns import sh
from tttlrm_ns.render import rasterize, reference

gsplat_impl = pytest.importorskip("gsplat.cuda._torch_impl")


def make_scene(n=40, c=1, width=40, height=32, seed=0, dtype=torch.float32, sh_degree=None, feat_dim=3):
    """Random Gaussians in front of C cameras (plus a few degenerate ones)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g, dtype=dtype) * 0.5
    means[:, 2] += 3.0
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = torch.rand(n, 3, generator=g, dtype=dtype) * 0.12 + 0.02
    opacities = torch.rand(n, generator=g, dtype=dtype) * 0.8 + 0.1
    if sh_degree is None:
        colors = torch.rand(n, feat_dim, generator=g, dtype=dtype)
    else:
        colors = torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g, dtype=dtype) * 0.3
    viewmats = torch.eye(4, dtype=dtype).repeat(c, 1, 1)
    for i in range(1, c):  # small rotations + translations for extra cameras
        ang = 0.1 * i
        viewmats[i, 0, 0], viewmats[i, 0, 2] = math.cos(ang), math.sin(ang)
        viewmats[i, 2, 0], viewmats[i, 2, 2] = -math.sin(ang), math.cos(ang)
        viewmats[i, :3, 3] = torch.tensor([0.1 * i, -0.05 * i, 0.2 * i], dtype=dtype)
    f = 0.9 * width
    Ks = torch.tensor([[f, 0, width / 2 + 0.3], [0, f * 1.05, height / 2 - 0.7], [0, 0, 1]], dtype=dtype)
    return dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors, viewmats=viewmats,
                Ks=Ks.repeat(c, 1, 1))


# ------------------------------------------------------------------------------------------ SH and projection
@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_sh_matches_gsplat(degree):
    g = torch.Generator().manual_seed(degree)
    dirs = torch.randn(200, 3, generator=g, dtype=torch.float64) * 3
    coeffs = torch.randn(200, 16, 3, generator=g, dtype=torch.float64)  # extra bands must be ignored
    ours = sh.spherical_harmonics(degree, dirs, coeffs)
    theirs = gsplat_impl._spherical_harmonics(degree, dirs, coeffs)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_sh_rejects_bad_degree_and_too_few_coeffs():
    with pytest.raises(ValueError, match=r"sh_degree must be in \[0, 3\], got 4"):
        sh.sh_bases(4, torch.zeros(1, 3))
    with pytest.raises(ValueError, match="sh_degree=2 needs at least 9 SH coefficients, got 4"):
        sh.spherical_harmonics(2, torch.ones(1, 3), torch.zeros(1, 4, 3))


@pytest.mark.parametrize("antialiased", [False, True])
def test_projection_matches_gsplat(antialiased):
    s = make_scene(n=300, c=2, width=64, height=48, seed=1, dtype=torch.float64)
    s["means"][:10, 2] = -1.0  # behind the camera
    s["means"][10:20, :2] += 40.0  # far outside the image
    s["scales"][20:30] *= 80.0  # huge
    s["scales"][30:40] *= 1e-4  # tiny
    covars, _ = gsplat_impl._quat_scale_to_covar_preci(s["quats"], s["scales"], compute_preci=False)
    r1, m1, d1, c1, comp1 = gsplat_impl._fully_fused_projection(
        s["means"], covars, s["viewmats"], s["Ks"], 64, 48, calc_compensations=antialiased)
    r2, m2, d2, c2, comp2 = reference.project_gaussians(
        s["means"], s["quats"], s["scales"], s["viewmats"], s["Ks"], 64, 48, calc_compensations=antialiased)
    assert torch.equal(r1, r2)
    v = r1 > 0
    assert 0 < v.sum() < v.numel()  # both culled and visible Gaussians are exercised
    for a, b in ((m1, m2), (d1, d2), (c1, c2)) + (((comp1, comp2),) if antialiased else ()):
        torch.testing.assert_close(b[v], a[v], rtol=1e-10, atol=1e-10)
    # culled entries are zero (like gsplat's CUDA kernel)
    assert (m2[~v] == 0).all() and (c2[~v] == 0).all() and (d2[~v] == 0).all()


# ------------------------------------------------------------------------------------------ compositing oracle
def scalar_oracle(means2d, conics, colors, opacities, radii, depths, width, height, tile_size, bg):
    """gsplat's per-pixel loop written out literally (tiny scenes only)."""
    C, N = radii.shape
    D = colors.shape[-1]
    out = torch.zeros(C, height, width, D, dtype=torch.float64)
    alpha_out = torch.zeros(C, height, width, 1, dtype=torch.float64)
    for cam in range(C):
        order = sorted(range(N), key=lambda i: (float(depths[cam, i]), i))
        for y in range(height):
            for x in range(width):
                tx, ty = x // tile_size, y // tile_size
                T, acc = 1.0, torch.zeros(D, dtype=torch.float64)
                for i in order:
                    r = int(radii[cam, i])
                    if r <= 0:
                        continue
                    mx, my = float(means2d[cam, i, 0]), float(means2d[cam, i, 1])
                    x0 = min(max(0, math.floor(mx / tile_size - r / tile_size)), 10**9)
                    x1 = max(0, math.ceil(mx / tile_size + r / tile_size))
                    y0 = max(0, math.floor(my / tile_size - r / tile_size))
                    y1 = max(0, math.ceil(my / tile_size + r / tile_size))
                    if not (x0 <= tx < x1 and y0 <= ty < y1):
                        continue
                    a, b, c = (float(v) for v in conics[cam, i])
                    dx, dy = mx - (x + 0.5), my - (y + 0.5)
                    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
                    alpha = min(0.999, float(opacities[cam, i]) * math.exp(-sigma))
                    if sigma < 0 or alpha < 1 / 255:
                        continue
                    if T * (1 - alpha) <= 1e-4:
                        break
                    acc += colors[cam, i].double() * alpha * T
                    T *= 1 - alpha
                out[cam, y, x] = acc + (T * bg[cam] if bg is not None else 0)
                alpha_out[cam, y, x] = 1 - T
    return out, alpha_out


@pytest.mark.parametrize("with_bg", [False, True])
def test_compositing_matches_scalar_oracle(with_bg):
    s = make_scene(n=25, c=2, width=20, height=13, seed=3, dtype=torch.float64)
    s["opacities"][:5] = 0.999  # saturating Gaussians: clamp + early stop paths
    s["means"][:5] = torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64) + 0.01 * torch.arange(5)[:, None]
    radii, means2d, depths, conics, _ = reference.project_gaussians(
        s["means"], s["quats"], s["scales"], s["viewmats"], s["Ks"], 20, 13)
    C, N = radii.shape
    colors = s["colors"].expand(C, N, 3)
    opac = s["opacities"].expand(C, N)
    bg = torch.rand(C, 3, dtype=torch.float64) if with_bg else None
    col, alpha = reference.rasterize_to_pixels(means2d, conics, colors, opac, radii, depths, 20, 13, 8, bg)
    col2, alpha2 = scalar_oracle(means2d, conics, colors, opac, radii, depths, 20, 13, 8, bg)
    torch.testing.assert_close(col, col2, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(alpha, alpha2, rtol=1e-10, atol=1e-10)
    assert alpha.max() > 0.99  # the saturated pixels are really exercised


# ------------------------------------------------------------------------------------------ gradcheck
@pytest.mark.parametrize("mode,aa,deg", [("RGB", "classic", None), ("RGB+ED", "antialiased", 2), ("D", "classic", 1)])
def test_reference_gradcheck(mode, aa, deg):
    s = make_scene(n=6, c=2, width=10, height=7, seed=5, dtype=torch.float64, sh_degree=deg)
    s["scales"] = s["scales"] * 2
    bg = torch.rand(2, 3, dtype=torch.float64)
    names = ["means", "quats", "scales", "opacities", "colors", "viewmats"]
    leaves = [s[k].clone().requires_grad_(True) for k in names] + [bg.requires_grad_(True)]

    def f(means, quats, scales, opacities, colors, viewmats, bgs):
        c, a, _ = rasterize(means, quats, scales, opacities, colors, viewmats, s["Ks"], 10, 7, sh_degree=deg,
                            backgrounds=bgs, render_mode=mode, rasterize_mode=aa, tile_size=8, backend="reference")
        return c, a

    with torch.no_grad():
        assert f(*leaves)[1].max() > 0.3  # the scene really covers the image
    # fast_mode checks J^T u for random u: the full Jacobian is too slow for the per-tile Python loop.
    assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


# ------------------------------------------------------------------------------------------ rasterize() semantics
def test_render_modes_are_consistent():
    s = make_scene(n=50, c=2, seed=7)
    bg = torch.tensor([[0.2, 0.4, 0.6], [1.0, 0.0, 0.5]])
    args = [s[k] for k in ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks")] + [40, 32]
    rgb, a, _ = rasterize(*args, backgrounds=bg, backend="reference")
    d, a_d, _ = rasterize(*args, backgrounds=bg, render_mode="D", backend="reference")
    ed, _, _ = rasterize(*args, render_mode="ED", backend="reference")
    rgbd, _, meta = rasterize(*args, backgrounds=bg, render_mode="RGB+D", backend="reference")
    rgbed, _, _ = rasterize(*args, render_mode="RGB+ED", backend="reference")
    assert rgb.shape == (2, 32, 40, 3) and d.shape == (2, 32, 40, 1) and rgbd.shape == (2, 32, 40, 4)
    torch.testing.assert_close(rgbd[..., :3], rgb)
    torch.testing.assert_close(rgbd[..., 3:], d)  # background never enters the depth channel
    torch.testing.assert_close(a_d, a)
    torch.testing.assert_close(ed, d / a.clamp_min(1e-10))
    torch.testing.assert_close(rgbed[..., 3:], ed)
    # depth of a pixel lies within the visible depth range where alpha is substantial
    dep = meta["depths"][meta["radii"] > 0]
    sel = a[..., 0] > 0.5
    assert (ed[..., 0][sel] >= dep.min() - 1e-4).all() and (ed[..., 0][sel] <= dep.max() + 1e-4).all()
    assert meta["radii"].dtype == torch.int32 and meta["radii"].shape == (2, 50)
    assert meta["means2d"].shape == (2, 50, 2) and meta["n_cameras"] == 2


def test_empty_scene_and_tiny_images():
    s = make_scene(n=0, c=1)
    bg = torch.tensor([[0.1, 0.2, 0.3]])
    args = [s[k] for k in ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks")]
    c, a, meta = rasterize(*args, 5, 3, backgrounds=bg, backend="reference")
    assert c.shape == (1, 3, 5, 3) and (a == 0).all()
    torch.testing.assert_close(c, bg[:, None, None, :].expand(1, 3, 5, 3))
    s = make_scene(n=10, c=1, width=1, height=1)
    c, a, _ = rasterize(*[s[k] for k in ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks")],
                        1, 1, backend="reference")
    assert c.shape == (1, 1, 1, 3) and torch.isfinite(c).all()


def _args(s):
    return [s[k] for k in ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks")]


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(render_mode="RGBD"), "render_mode must be one of"),
        (dict(rasterize_mode="fancy"), "rasterize_mode must be one of"),
        (dict(backend="vulkan"), "backend must be one of"),
        (dict(sh_degree=4), r"sh_degree must be None or an int in \[0, 3\], got 4"),
        (dict(sh_degree=1), r"SH colors must be \[N, K, 3\] or \[C, N, K, 3\] with K >= 4"),
        (dict(backgrounds=torch.zeros(1, 4)), r"backgrounds must be \[C, D\] = \[1, 3\], got \[1, 4\]"),
        (dict(packed=True), "packed=True is only implemented by the gsplat backend"),
        (dict(backend="gsplat"), "backend='gsplat' needs CUDA tensors"),
        (dict(absgrad=True), "absgrad=True is not supported by backend='reference'"),
    ],
)
def test_bad_arguments_raise(change, message):
    s = make_scene(n=5)
    kw = dict(backend="reference")
    kw.update(change)
    with pytest.raises(ValueError, match=message):
        rasterize(*_args(s), 40, 32, **kw)


def test_bad_shapes_raise():
    s = make_scene(n=5)
    a = _args(s)
    with pytest.raises(ValueError, match=r"quats must have shape \[5, 4\], got \[5, 3\]"):
        rasterize(a[0], a[1][:, :3], *a[2:], 40, 32, backend="reference")
    with pytest.raises(ValueError, match=r"viewmats must be \[C, 4, 4\]"):
        rasterize(*a[:5], a[5][0], a[6], 40, 32, backend="reference")
    with pytest.raises(ValueError, match="width and height must be positive ints"):
        rasterize(*a, 0, 32, backend="reference")

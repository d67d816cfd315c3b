"""The C++ CPU rasterizer (backend="cpu") held to the pure-torch reference: forward outputs and gradients on random
and degenerate scenes, float64 gradchecks of the extension itself, absgrad, compile-failure message, and (with
CUDA) agreement with gsplat."""

from __future__ import annotations

import pytest
import torch

from tttlrm_ns.render import cpu_backend, rasterize, reference
from test_render_reference import make_scene  # tests/ is on sys.path (rootdir conftest, no package)

NAMES = ("means", "quats", "scales", "opacities", "colors", "viewmats")
# float32 tolerances: outputs to ~1e-5 (abs + rel; depths are O(3)), gradients relative to their largest entry.
OUT_ATOL = 2e-5
OUT_RTOL = 2e-5
GRAD_RTOL = 2e-4


def run(backend, s, width, height, seed=0, **kw):
    leaves = {k: s[k].clone().requires_grad_(True) for k in NAMES}
    bg = kw.pop("backgrounds", None)
    if bg is not None:
        bg = bg.clone().requires_grad_(True)
    colors, alphas, meta = rasterize(*(leaves[k] for k in NAMES), s["Ks"], width, height, backgrounds=bg,
                                     backend=backend, **kw)
    g = torch.Generator().manual_seed(seed)  # CPU generator: the same loss weights for every device
    wc = torch.randn(colors.shape, generator=g, dtype=colors.dtype).to(colors.device)
    wa = torch.randn(alphas.shape, generator=g, dtype=alphas.dtype).to(alphas.device)
    loss = (colors * wc).sum() + (alphas * wa).sum()
    if loss.requires_grad:
        loss.backward()
    grads = {k: v.grad for k, v in leaves.items()}
    grads["backgrounds"] = None if bg is None else bg.grad
    grads["means2d"] = meta["means2d"].grad
    return colors.detach(), alphas.detach(), meta, grads


def assert_match(s, width, height, **kw):
    c1, a1, m1, g1 = run("reference", s, width, height, **dict(kw))
    c2, a2, m2, g2 = run("cpu", s, width, height, **dict(kw))
    assert torch.equal(m1["radii"], m2["radii"])
    torch.testing.assert_close(c2, c1, atol=OUT_ATOL, rtol=OUT_RTOL)
    torch.testing.assert_close(a2, a1, atol=OUT_ATOL, rtol=OUT_RTOL)
    for k, ref in g1.items():
        got = g2[k]
        if ref is None:
            assert got is None or got.numel() == 0 or not got.abs().max() > 0, k
            continue
        if ref.numel() == 0:
            continue
        scale = float(ref.abs().max()) or 1.0
        err = float((got - ref).abs().max())
        assert err <= GRAD_RTOL * scale + 1e-7, f"{k}: max err {err:.3g} vs scale {scale:.3g}"
    return c2, a2, m2, g2


# ------------------------------------------------------------------------------------------ parity
@pytest.mark.parametrize("mode", ["RGB", "D", "ED", "RGB+D", "RGB+ED"])
def test_render_modes_match_reference(mode):
    s = make_scene(n=120, c=2, width=40, height=28, seed=11)
    bg = torch.tensor([[0.3, 0.2, 0.1], [0.0, 1.0, 0.5]])
    assert_match(s, 40, 28, render_mode=mode, backgrounds=bg)


@pytest.mark.parametrize("deg", [0, 1, 2, 3])
@pytest.mark.parametrize("aa", ["classic", "antialiased"])
def test_sh_degrees_match_reference(deg, aa):
    s = make_scene(n=100, c=2, width=36, height=30, seed=20 + deg, sh_degree=deg)
    if deg == 1:  # extra (ignored) bands, per-camera SH coefficients
        s["colors"] = torch.cat([s["colors"], torch.randn(100, 5, 3)], dim=1)[None].repeat(2, 1, 1, 1)
    _, a, _, _ = assert_match(s, 36, 30, sh_degree=deg, rasterize_mode=aa)
    assert a.max() > 0.5


def test_per_camera_features_and_generic_channel_count():
    s = make_scene(n=80, c=2, width=33, height=17, seed=4, feat_dim=6)  # D=6: the runtime-D code path
    s["colors"] = s["colors"][None].repeat(2, 1, 1) * torch.tensor([1.0, 0.5])[:, None, None]
    assert_match(s, 33, 17, backgrounds=torch.rand(2, 6), render_mode="RGB+ED")


@pytest.mark.parametrize("tile_size", [1, 8, 16, 20])
def test_tile_sizes(tile_size):
    s = make_scene(n=60, width=24, height=19, seed=8)
    assert_match(s, 24, 19, tile_size=tile_size)


def test_degenerate_gaussians():
    s = make_scene(n=120, c=2, width=32, height=24, seed=9)
    s["means"][:10, 2] = -2.0  # behind the camera
    s["means"][10:15, 2] = 0.005  # closer than the near plane
    s["scales"][15:25] *= 30.0  # huge
    s["scales"][25:35] *= 1e-5  # tiny (eps2d dominates)
    s["opacities"][35:45] = 0.0  # invisible
    s["opacities"][45:50] = 1.0  # clamped alpha
    s["quats"][50:55] = torch.tensor([0.0, 0.0, 0.0, 1e-3])  # near-zero quaternion
    s["means"][55:60, :2] += 20.0  # outside the image: culled or clamped Jacobian
    c, a, meta, g = assert_match(s, 32, 24, rasterize_mode="antialiased", backgrounds=torch.rand(2, 3))
    assert (meta["radii"][:, :10] == 0).all() and (meta["radii"][0, 10:15] == 0).all()
    for k, v in g.items():
        assert v is None or torch.isfinite(v).all(), k
    assert (g["means"][:10] == 0).all()  # culled in every camera -> no gradient


def test_many_gaussians_on_one_pixel():
    # 200 opaque Gaussians stacked on the same pixel: transmittance early stop and deep per-pixel lists.
    n = 200
    s = make_scene(n=n, width=16, height=12, seed=13)
    s["means"] = torch.tensor([0.05, -0.02, 2.0]) + torch.stack(
        [torch.zeros(n), torch.zeros(n), torch.linspace(0, 1, n)], dim=1)
    s["opacities"] = torch.full((n,), 0.6)
    s["scales"] = torch.full((n, 3), 0.05)
    _, a, _, _ = assert_match(s, 16, 12, backgrounds=torch.ones(1, 3))
    assert a.max() > 0.999


def test_empty_and_one_pixel_images():
    s = make_scene(n=0, c=2)
    c, a, _, _ = assert_match(s, 7, 5, backgrounds=torch.rand(2, 3))
    assert (a == 0).all()
    s = make_scene(n=30, width=1, height=1, seed=2)
    s["Ks"][:, 0, 2] = s["Ks"][:, 1, 2] = 0.5
    assert_match(s, 1, 1)


# ------------------------------------------------------------------------------------------ float64 gradcheck
# The extension is templated on float/double, so its own backward can be gradchecked in float64. The full
# Jacobian check runs on the smallest scene; the others use fast_mode (random projections J^T u).
@pytest.mark.parametrize(
    "mode,aa,deg,cams,fast",
    [("RGB", "classic", None, 1, False), ("RGB+ED", "antialiased", 3, 2, True), ("D", "classic", 0, 2, True)],
)
def test_cpu_gradcheck_float64(mode, aa, deg, cams, fast):
    s = make_scene(n=6, c=cams, width=10, height=7, seed=5, dtype=torch.float64, sh_degree=deg)
    s["scales"] = s["scales"] * 2
    leaves = [s[k].clone().requires_grad_(True) for k in NAMES] + [torch.rand(cams, 3, dtype=torch.float64,
                                                                             requires_grad=True)]

    def f(means, quats, scales, opacities, colors, viewmats, bg):
        c, a, _ = rasterize(means, quats, scales, opacities, colors, viewmats, s["Ks"], 10, 7, sh_degree=deg,
                            backgrounds=bg, render_mode=mode, rasterize_mode=aa, tile_size=8, backend="cpu")
        return c, a

    with torch.no_grad():
        assert f(*leaves)[1].max() > 0.3
    assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=fast)


def test_cpu_float64_equals_reference_float64():
    s = make_scene(n=150, c=2, width=30, height=22, seed=14, dtype=torch.float64, sh_degree=3)
    kw = dict(sh_degree=3, render_mode="RGB+ED", rasterize_mode="antialiased",
              backgrounds=torch.rand(2, 3, dtype=torch.float64))
    c1, a1, _, g1 = run("reference", s, 30, 22, **dict(kw))
    c2, a2, _, g2 = run("cpu", s, 30, 22, **dict(kw))
    torch.testing.assert_close(c2, c1, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(a2, a1, atol=1e-10, rtol=1e-10)
    for k in NAMES + ("backgrounds", "means2d"):
        torch.testing.assert_close(g2[k], g1[k], atol=1e-9, rtol=1e-7, msg=k)


# ------------------------------------------------------------------------------------------ meta, absgrad, errors
def test_means2d_grad_and_absgrad():
    s = make_scene(n=60, width=30, height=20, seed=6)
    leaves = {k: s[k].clone().requires_grad_(True) for k in NAMES}
    c, a, meta = rasterize(*(leaves[k] for k in NAMES), s["Ks"], 30, 20, absgrad=True)
    assert meta["backend"] == "cpu"
    (c * torch.randn_like(c)).sum().backward()
    grad, absgrad = meta["means2d"].grad, meta["means2d"].absgrad
    assert grad.shape == absgrad.shape == (1, 60, 2)
    assert (absgrad >= grad.abs() - 1e-6).all() and absgrad.sum() > grad.abs().sum()
    assert (grad[meta["radii"] == 0] == 0).all()


def test_rejects_half_precision():
    s = make_scene(n=5)
    with pytest.raises(ValueError, match="float32/float64"):
        rasterize(*(s[k].half() for k in NAMES), s["Ks"].half(), 8, 8)


def test_compile_failure_message(monkeypatch):
    from torch.utils import cpp_extension

    def broken(*args, **kwargs):
        raise RuntimeError("g++: fatal error: no input files")

    monkeypatch.setattr(cpu_backend, "_ext", None)
    monkeypatch.setattr(cpp_extension, "load", broken)
    with pytest.raises(RuntimeError) as info:
        cpu_backend.load_extension()
    msg = str(info.value)
    assert "building the C++ CPU rasterizer failed" in msg and "apt-get install g++" in msg
    assert "CXX" in msg and "g++: fatal error: no input files" in msg


# ------------------------------------------------------------------------------------------ CUDA (gsplat)
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode,deg", [("RGB", None), ("RGB+ED", 3)])
def test_cpu_matches_gsplat_cuda(mode, deg):
    compare_cpu_with("gsplat", "cuda", mode, deg)


@pytest.mark.parametrize("mode,deg", [("RGB", None), ("RGB+ED", 3)])
def test_cuda_comparison_runs_on_cpu_against_the_reference(mode, deg):
    """The CUDA test's code path (device moves, radii bound, every gradient) exercised without a GPU."""
    compare_cpu_with("reference", "cpu", mode, deg)


def compare_cpu_with(backend: str, device: str, mode: str, deg) -> None:
    """The C++ CPU backend against ``backend`` run on ``device``: outputs to 1e-4, radii to one pixel, and the
    gradient of every input (viewmats and backgrounds included) to 1e-3 of its own largest entry."""
    torch.manual_seed(0)
    s = make_scene(n=300, c=2, width=64, height=48, seed=21, sh_degree=deg)
    bg = torch.rand(2, 3)
    c1, a1, m1, g1 = run("cpu", s, 64, 48, sh_degree=deg, render_mode=mode, backgrounds=bg)
    sc = {k: v.to(device) for k, v in s.items()}
    c2, a2, m2, g2 = run(backend, sc, 64, 48, sh_degree=deg, render_mode=mode, backgrounds=bg.to(device))
    # Radii are ceil(3 sigma) in pixels: a last-bit difference of sigma at an integer flips one by a pixel.
    r1, r2 = m1["radii"], m2["radii"].cpu()
    assert int((r1 - r2).abs().max()) <= 1 and float((r1 != r2).float().mean()) < 0.02
    assert int((r1 > 0).sum()) > 100  # most of the scene is visible, so the comparison covers it
    torch.testing.assert_close(c2.cpu(), c1, atol=1e-4, rtol=0)
    torch.testing.assert_close(a2.cpu(), a1, atol=1e-4, rtol=0)
    for k in ("means", "quats", "scales", "opacities", "colors", "viewmats", "backgrounds"):
        scale = float(g1[k].abs().max())
        assert scale > 0, f"{k}: zero gradient on CPU"  # every input gets a gradient here, viewmats included
        assert float((g2[k].cpu() - g1[k]).abs().max()) <= 1e-3 * scale, k


# ------------------------------------------------------------------------------------------ binning vs gsplat
def test_binning_matches_gsplat_isect_tiles():
    gsplat_impl = pytest.importorskip("gsplat.cuda._torch_impl")
    s = make_scene(n=70, c=2, width=45, height=30, seed=17)
    s["scales"][:5] *= 20  # Gaussians spanning many tiles
    radii, means2d, depths, _, _ = cpu_backend.project_gaussians(
        s["means"], s["quats"], s["scales"], s["viewmats"], s["Ks"], 45, 30)
    tile, tx, ty = 8, 6, 4
    _, isect_ids, flatten_ids = gsplat_impl._isect_tiles(means2d, radii, depths, tile, tx, ty)
    offsets_g = gsplat_impl._isect_offset_encode(isect_ids, 2, tx, ty).flatten()
    offsets, ids = cpu_backend.load_extension().bin_gaussians(means2d, radii, depths, tile, tx, ty)
    assert torch.equal(ids.long(), flatten_ids.long())  # same (camera, tile, depth) order, same members
    assert torch.equal(offsets[:-1], offsets_g.long()) and offsets[-1] == len(flatten_ids)
    assert len(ids) > 200
    offsets_r, ids_r = reference.bin_gaussians(means2d, radii, depths, tile, tx, ty)
    assert torch.equal(offsets_r, offsets) and torch.equal(ids_r, ids.long() % 70)

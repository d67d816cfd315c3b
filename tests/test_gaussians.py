"""Gaussians container, opacity pruning, splatfacto layout, and similarity transforms (SH rotation)."""

import math

import pytest
import torch
import torch.nn.functional as F

from tttlrm_ns.conventions import Similarity
from tttlrm_ns.gaussians import (
    Gaussians,
    PruneConfig,
    input_footprint,
    map_gaussians,
    prune,
    prune_indices,
    quat_multiply,
    rotation_to_quat,
    sh_rotation_matrix,
    transform_gaussians,
    widen_to_footprint,
)
from tttlrm_ns.sh import sh_bases


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


# ---------------------------------------------------------------------------------------------------------------
# similarity transforms and SH rotation


def test_sh_basis_equals_gsplat():
    from gsplat.cuda._torch_impl import _eval_sh_bases_fast

    d = F.normalize(torch.randn(200, 3, dtype=torch.float64), dim=-1)
    for degree in range(4):
        k = (degree + 1) ** 2
        torch.testing.assert_close(sh_bases(degree, d), _eval_sh_bases_fast(k, d), atol=1e-12, rtol=0)


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_sh_rotation_evaluates_consistently(degree):
    """Rotated coefficients evaluated at R d equal the original coefficients evaluated at d."""
    k = (degree + 1) ** 2
    d = F.normalize(torch.randn(300, 3, dtype=torch.float64), dim=-1)
    for rot in random_rotations(5, seed=degree):
        dmat = sh_rotation_matrix(rot, degree)
        coeffs = torch.randn(k, 3, dtype=torch.float64)
        lhs = sh_bases(degree, d @ rot.T) @ (dmat @ coeffs)
        rhs = sh_bases(degree, d) @ coeffs
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


def random_gaussian_fields(n, k, seed=0, dtype=torch.float32):
    """(means [n, 3], raw quats [n, 4], log_scales [n, 3], sh [n, k, 3]) of random Gaussians."""
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, 3, generator=g).to(dtype),
        torch.randn(n, 4, generator=g).to(dtype) * 2,  # raw, unnormalised
        torch.randn(n, 3, generator=g).to(dtype) - 3,
        torch.randn(n, k, 3, generator=g).to(dtype),
    )


def test_transform_gaussians_geometry_and_colour():
    """Means, covariances and view-dependent colour all transform as the similarity says."""
    means, quats, log_scales, sh = random_gaussian_fields(64, 16, dtype=torch.float64)
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
    col = (sh_bases(3, F.normalize(means - cam, dim=-1))[..., None] * sh).sum(-2)
    col2 = (sh_bases(3, F.normalize(m2 - cam2, dim=-1))[..., None] * sh2).sum(-2)
    torch.testing.assert_close(col2, col, atol=1e-10, rtol=0)


def test_transform_gaussians_rejects_bad_input():
    means, quats, log_scales, sh = random_gaussian_fields(4, 5)
    with pytest.raises(ValueError, match="1, 4, 9 or 16"):
        transform_gaussians(means, quats, log_scales, sh, torch.eye(3), torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match="scale must be positive"):
        transform_gaussians(means, quats, log_scales, sh[:, :4], torch.eye(3), torch.zeros(3), 0.0)


def test_map_gaussians_follows_the_similarity_and_back():
    """Means move exactly as Similarity.apply_points moves points; inverse=True undoes the map."""
    rot = random_rotations(1, seed=11)[0]
    align = torch.eye(4, dtype=torch.float64)
    align[:3, :3], align[:3, 3] = rot, torch.tensor([0.4, -1.0, 2.0], dtype=torch.float64)
    sim = Similarity(align, 0.8)
    means, quats, log_scales, sh = random_gaussian_fields(40, 9, dtype=torch.float64)
    fwd = map_gaussians(sim, means, quats, log_scales, sh)
    torch.testing.assert_close(fwd[0], sim.apply_points(means), atol=1e-12, rtol=0)
    torch.testing.assert_close(fwd[2], log_scales + math.log(0.8), atol=1e-12, rtol=0)
    back = map_gaussians(sim, *fwd, inverse=True)
    for a, b in zip(back, (means, quats, log_scales, sh)):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_from_splatfacto_layout():
    g = _g(5)
    params = {"means": g.means, "scales": g.log_scales, "quats": g.quats, "features_dc": g.sh[:, 0],
              "features_rest": g.sh[:, 1:], "opacities": g.opacity_logits}
    back = Gaussians.from_splatfacto(params)
    assert back.means is g.means and back.opacity_logits is g.opacity_logits  # no copies: gradients reach them
    assert torch.equal(back.sh, g.sh) and back.sh_degree == 3


# ---------------------------------------------------------------------------------------------------------------
# input-resolution footprint


def _look_down_z(x: float = 0.0) -> torch.Tensor:
    """OpenCV camera at (x, 0, 0) looking along +z (identity rotation) [4, 4]."""
    c2w = torch.eye(4)
    c2w[0, 3] = x
    return c2w


def test_input_footprint_is_depth_over_focal_of_the_closest_view_that_sees_the_point():
    c2w = torch.stack([_look_down_z(0.0), _look_down_z(0.0)])
    c2w[1, 2, 3] = 1.0  # second camera 1 unit closer to the points (at z = 1)
    k = torch.tensor([[100.0, 100.0, 32.0, 32.0], [50.0, 200.0, 32.0, 32.0]])  # sqrt(fx fy) = 100 for both
    means = torch.tensor([[0.0, 0.0, 4.0],  # seen by both: z 4 and 3 -> 3 / 100
                          [1.5, 0.0, 4.0],  # u = 100 * 1.5 / 4 + 32 = 69.5 > 64 in view 0; view 1: 25 + 32 = 57
                          [3.5, 0.0, 4.0],  # outside both images: the closest view it lies in front of
                          [0.0, 0.0, -1.0]])  # behind both cameras
    fp = input_footprint(means, c2w, k, 64, 64)
    assert torch.allclose(fp[:3], torch.tensor([0.03, 0.03, 0.03]))
    assert torch.isinf(fp[3])
    means[1, 2] = 2.0
    means[1, 0] = 0.5  # view 0: u = 100 * 0.5 / 2 + 32 = 57 (inside); view 1: 50 * 0.5 / 1 + 32 = 57 (inside)
    assert torch.allclose(input_footprint(means[1:2], c2w, k, 64, 64), torch.tensor([0.01]))
    means[1, 0] = 0.9  # view 0: u = 77 (outside); view 1: u = 77 (outside) -> min over both: 1 / 100
    assert torch.allclose(input_footprint(means[1:2], c2w, k, 64, 64), torch.tensor([0.01]))
    # chunked and unchunked agree
    pts = torch.randn(500, 3) + torch.tensor([0.0, 0.0, 5.0])
    assert torch.equal(input_footprint(pts, c2w, k, 64, 64, chunk=7), input_footprint(pts, c2w, k, 64, 64))


def test_widen_to_footprint_adds_the_variance_and_keeps_the_rest():
    g = _g(50)
    fp = torch.rand(50) + 0.1
    assert widen_to_footprint(g, fp, 0.0) is g
    w = widen_to_footprint(g, fp, 0.3)
    assert torch.allclose(torch.exp(2 * w.log_scales), torch.exp(2 * g.log_scales) + 0.3 * fp[:, None] ** 2,
                          rtol=1e-5)
    for name in ("means", "sh", "quats", "opacity_logits"):
        assert torch.equal(getattr(w, name), getattr(g, name))
    with pytest.raises(ValueError, match="footprint of shape"):
        widen_to_footprint(g, fp[:10], 0.3)
    with pytest.raises(ValueError, match=">= 0"):
        widen_to_footprint(g, fp, -0.1)


def test_footprint_filter_fills_the_gaps_between_pixel_sized_gaussians_in_a_finer_render():
    """One tiny Gaussian per input pixel of a 16x16 view on a plane: at the input resolution the rasteriser's blur
    covers the plane; rendered 8x finer without the filter only dots remain; with it the plane is covered again."""
    from tttlrm_ns.render.splat import render_gaussians

    n, z, f = 16, 2.0, 16.0
    ij = (torch.arange(n) + 0.5 - n / 2) * z / f  # pixel centres of the 16x16 view on the plane z = 2
    yy, xx = torch.meshgrid(ij, ij, indexing="ij")
    means = torch.stack([xx.reshape(-1), yy.reshape(-1), torch.full((n * n,), z)], -1)
    g = Gaussians(means, torch.zeros(n * n, 1, 3), torch.full((n * n, 3), math.log(1e-4)),
                  torch.tensor([1.0, 0, 0, 0]).repeat(n * n, 1), torch.full((n * n, 1), 6.0))
    c2w = _look_down_z()[None]
    k_in = torch.tensor([[f, f, n / 2, n / 2]])
    fp = input_footprint(means, c2w, k_in, n, n)
    assert torch.allclose(fp, torch.full_like(fp, z / f))

    def coverage(gs, s):  # mean accumulated opacity of the central half of a render at s x the input size
        K = torch.tensor([[[f * s, 0, n * s / 2], [0, f * s, n * s / 2], [0, 0, 1]]])
        a = render_gaussians(gs, c2w, K, n * s, n * s, backend="reference").alpha[0, ..., 0]
        q = n * s // 4
        return float(a[q:-q, q:-q].mean())

    native, dots = coverage(g, 1), coverage(g, 8)
    # 0.3 input px^2 is the rasteriser's blur at the input size: the finer render is covered as the native one is;
    # the pipeline's default 0.1 covers most of it (sigma of a third of a pixel between centres one pixel apart)
    half, matched = coverage(widen_to_footprint(g, fp, 0.1), 8), coverage(widen_to_footprint(g, fp, 0.3), 8)
    assert native > 0.95 and dots < 0.1 and half > 0.5 and matched > 0.9, (native, dots, half, matched)

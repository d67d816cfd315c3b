"""Deferred backpropagation (tttlrm_ns.render.deferred) against direct backprop through the rasteriser."""

import math

import pytest
import torch

from tttlrm_ns.render import rasterize as RASTERIZE  # backend "auto": the C++ extension for CPU tensors
from tttlrm_ns.render.deferred import deferred_rasterize


def _scene(n=60, C=3, H=40, W=56, seed=0, sh_degree=None):
    """Random Gaussians in front of C cameras on a ring looking at the origin (OpenCV w2c)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * 0.6
    quats = torch.randn(n, 4, generator=g)
    scales = torch.rand(n, 3, generator=g) * 0.15 + 0.03
    opacities = torch.rand(n, generator=g) * 0.9 + 0.05
    if sh_degree is None:
        colors = torch.rand(n, 3, generator=g)
    else:
        colors = torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g) * 0.3
    viewmats = []
    for c in range(C):
        a = 2 * math.pi * c / C + 0.3
        eye = torch.tensor([3 * math.sin(a), 0.4, -3 * math.cos(a)])
        fwd = -eye / eye.norm()
        right = torch.linalg.cross(torch.tensor([0.0, 1.0, 0.0]), fwd)
        right = right / right.norm()
        down = torch.linalg.cross(fwd, right)
        Rwc = torch.stack([right, down, fwd], 0)  # rows = camera axes in world
        vm = torch.eye(4)
        vm[:3, :3] = Rwc
        vm[:3, 3] = -Rwc @ eye
        viewmats.append(vm)
    viewmats = torch.stack(viewmats)
    f = 0.9 * W
    Ks = torch.tensor([[f, 0, W / 2 - 1.3], [0, f, H / 2 + 0.7], [0, 0, 1]]).expand(C, 3, 3).clone()
    return [means, quats, scales, opacities, colors], viewmats, Ks


def _loss(colors, alphas, seed=1):
    g = torch.Generator().manual_seed(seed)
    wc = torch.randn(colors.shape, generator=g)
    wa = torch.randn(alphas.shape, generator=g)
    return (colors * wc).sum() + (alphas * wa).sum() + 0.5 * (colors**2).sum()


def _grads(render, params):
    leaves = [p.clone().requires_grad_(True) for p in params]
    colors, alphas = render(leaves)
    _loss(colors, alphas).backward()
    return colors.detach(), alphas.detach(), [leaf.grad for leaf in leaves]


@pytest.mark.parametrize("patch_size", [None, 16, 32, (16, 48)])
def test_deferred_matches_direct_backprop(patch_size):
    # 40x56 is not divisible by 32 or by 48: edge patches are cropped.
    params, viewmats, Ks = _scene()
    H, W = 40, 56
    bg = torch.rand(viewmats.shape[0], 3, generator=torch.Generator().manual_seed(3))

    def direct(p):
        c, a, _ = RASTERIZE(*p, viewmats, Ks, W, H, backgrounds=bg)
        return c, a

    def deferred(p):
        return deferred_rasterize(*p, viewmats, Ks, W, H, patch_size=patch_size, backgrounds=bg)

    c0, a0, g0 = _grads(direct, params)
    c1, a1, g1 = _grads(deferred, params)
    assert a0.max() > 0.5, "scene should cover the images"
    torch.testing.assert_close(c1, c0, rtol=0, atol=1e-5)
    torch.testing.assert_close(a1, a0, rtol=0, atol=1e-5)
    for name, a, b in zip(["means", "quats", "scales", "opacities", "colors"], g1, g0):
        assert b.abs().max() > 0, f"direct gradient of {name} is zero: test scene is degenerate"
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()), msg=lambda m: f"{name}: {m}")


def test_deferred_sh_depth_and_per_camera_background():
    """SH colours (degree 2) with the RGB+ED render mode: 4 output channels, per-camera backgrounds sliced."""
    params, viewmats, Ks = _scene(seed=2, sh_degree=2)
    H, W = 40, 56
    kw = dict(sh_degree=2, render_mode="RGB+ED", backgrounds=torch.rand(3, 3, generator=torch.Generator().manual_seed(4)))

    def direct(p):
        c, a, _ = RASTERIZE(*p, viewmats, Ks, W, H, **kw)
        return c, a

    c0, a0, g0 = _grads(direct, params)
    c1, a1, g1 = _grads(lambda p: deferred_rasterize(*p, viewmats, Ks, W, H, patch_size=32, **kw), params)
    assert c1.shape == (3, H, W, 4)
    torch.testing.assert_close(c1, c0, rtol=0, atol=1e-5)
    for name, a, b in zip(["means", "quats", "scales", "opacities", "colors"], g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()), msg=lambda m: f"{name}: {m}")


def test_deferred_partial_requires_grad_and_colors_only_loss():
    """Only some inputs need grad, and the loss ignores alphas (zero alpha gradient skips nothing it needs)."""
    params, viewmats, Ks = _scene(seed=5)
    H, W = 40, 56
    means = params[0].clone().requires_grad_(True)
    colors = params[4].clone().requires_grad_(True)
    ref_means = params[0].clone().requires_grad_(True)
    ref_colors = params[4].clone().requires_grad_(True)
    out, _ = deferred_rasterize(means, params[1], params[2], params[3], colors, viewmats, Ks, W, H,
                                patch_size=16)
    ref, _, _ = RASTERIZE(ref_means, params[1], params[2], params[3], ref_colors, viewmats, Ks, W, H)
    (out**2).sum().backward()
    (ref**2).sum().backward()
    torch.testing.assert_close(means.grad, ref_means.grad, rtol=1e-4, atol=1e-5 * float(ref_means.grad.abs().max()))
    torch.testing.assert_close(colors.grad, ref_colors.grad, rtol=1e-4, atol=1e-6)


def _saved_bytes(fn):
    """Total bytes autograd saves for backward while ``fn`` runs (pack hook over every saved tensor)."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return total[0], out


def test_graph_memory_does_not_scale_with_views():
    H, W = 32, 32
    saved_direct, saved_deferred, rerender_peak = {}, {}, {}
    for C in (1, 4):
        params, viewmats, Ks = _scene(n=80, C=C, H=H, W=W)
        leaves = [p.clone().requires_grad_(True) for p in params]
        saved_direct[C], _ = _saved_bytes(lambda: RASTERIZE(*leaves, viewmats, Ks, W, H))
        per_call = []

        def counting_rasterize(*args, **kwargs):
            # Called in forward (no graph: nothing saved) and once per view in backward (one view's graph).
            nbytes, out = _saved_bytes(lambda: RASTERIZE(*args, **kwargs))
            per_call.append(nbytes)
            return out

        saved_deferred[C], (colors, alphas) = _saved_bytes(
            lambda: deferred_rasterize(*leaves, viewmats, Ks, W, H, rasterize_fn=counting_rasterize)
        )
        assert per_call == [0] * C, "forward renders must not save tensors"
        per_call.clear()
        _loss(colors, alphas).backward()
        assert len(per_call) == C and min(per_call) > 0
        rerender_peak[C] = max(per_call)
    # Direct autograd keeps every view's intermediates; deferred keeps the inputs only, and each backward
    # re-render holds a single view's graph.
    assert saved_direct[4] > 2.5 * saved_direct[1]
    inputs = sum(p.numel() * p.element_size() for p in params)
    cams = 4 * (16 + 9) * 4
    assert saved_deferred[1] <= inputs + (16 + 9) * 4
    assert saved_deferred[4] <= inputs + cams
    assert rerender_peak[4] <= 1.2 * rerender_peak[1]
    assert rerender_peak[4] < 0.5 * saved_direct[4]


def test_bad_arguments_are_rejected():
    params, viewmats, Ks = _scene(C=1)
    with pytest.raises(ValueError, match="multiple of tile_size=16"):
        deferred_rasterize(*params, viewmats, Ks, 56, 40, patch_size=24)
    with pytest.raises(ValueError, match="rasterize_fn applies to whole-view rendering only"):
        deferred_rasterize(*params, viewmats, Ks, 56, 40, patch_size=32, rasterize_fn=RASTERIZE)
    with pytest.raises(ValueError, match="no gradient to cameras"):
        deferred_rasterize(*params, viewmats.clone().requires_grad_(True), Ks, 56, 40)
    with pytest.raises(ValueError, match="does not support packed=True"):
        deferred_rasterize(*params, viewmats, Ks, 56, 40, packed=True)
    with pytest.raises(ValueError, match=r"expected viewmats \[C, 4, 4\]"):
        deferred_rasterize(*params, viewmats[0], Ks, 56, 40)


def test_window_render_is_exact_where_principal_point_shift_is_not():
    """Why patches re-project at full size: a shifted-K render of a window clamps the EWA Jacobian to the window's
    field of view and so differs from the full image; the window path reproduces it."""
    from tttlrm_ns.render.deferred import DeferredSettings, _rasterize_window

    params, viewmats, Ks = _scene(seed=7, C=1)
    H, W = 40, 56
    full, _, _ = RASTERIZE(*params, viewmats, Ks, W, H)
    y0, x0, h, w = 16, 16, 16, 32
    K_shift = Ks.clone()
    K_shift[:, 0, 2] -= x0
    K_shift[:, 1, 2] -= y0
    shifted, _, _ = RASTERIZE(*params, viewmats, K_shift, w, h)
    s = DeferredSettings(width=W, height=H, patch_size=(16, 32), rasterize_fn=RASTERIZE)
    window, _ = _rasterize_window(s, *params, viewmats, Ks, (y0, y0 + h, x0, x0 + w))
    ref = full[:, y0 : y0 + h, x0 : x0 + w]
    assert (shifted - ref).abs().max() > 1e-3
    torch.testing.assert_close(window, ref, rtol=0, atol=1e-6)

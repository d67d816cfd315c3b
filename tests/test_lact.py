"""The fast-weight update, Newton-Schulz and the TTT schedule."""

import pytest
import torch
import torch.nn.functional as F

from tttlrm_ns.model import TttlrmConfig
from tttlrm_ns.model.blocks import FastWeightLayer
from tttlrm_ns.model.lact import (
    TTTHyper,
    apply_fast_weights,
    ar_schedule,
    full_schedule,
    emulate_bf16_on,
    newton_schulz,
    newton_schulz_reference,
    ttt_scan,
    update_deltas,
)


def _random_state(b=2, s=24, dh=8, m=32, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g, dtype=dtype)  # noqa: E731
    w0, w2, w1 = r(b, dh, m) / dh**0.5, r(b, dh, m) / dh**0.5, r(b, m, dh) / m**0.5
    k, v = F.normalize(r(b, s, dh), dim=-1), r(b, s, dh)
    lrs = [F.softplus(r(b, s, 1)) for _ in range(3)]
    return (w0, w1, w2), k, v, lrs


def test_update_is_negative_gradient_of_inner_loss():
    """dW_j = -d/dW_j sum_t lr^j_t <f_W(k_t), v_t>, each weight with its own rates."""
    (w0, w1, w2), k, v, (lr0, lr1, lr2) = _random_state()
    deltas = update_deltas(w0, w1, w2, k, v, lr0, lr1, lr2)
    for j, lr in enumerate((lr0, lr1, lr2)):
        ws = [w.clone().requires_grad_(True) for w in (w0, w1, w2)]
        loss = -(lr * apply_fast_weights(*ws, k) * v).sum()
        (grad,) = torch.autograd.grad(loss, ws[j])
        torch.testing.assert_close(deltas[j], -grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", [(3, 16, 64), (3, 64, 16)])
def test_newton_schulz_orthogonalises(shape):
    g = torch.randn(*shape, dtype=torch.float64)
    x = newton_schulz(g, 5, torch.float32)
    assert x.dtype == torch.float64 and x.shape == g.shape  # "float32" means at least float32
    sv = torch.linalg.svdvals(x)
    # The quintic Muon iteration maps singular values into roughly [0.7, 1.2], not exactly 1.
    assert sv.min() > 0.5 and sv.max() < 1.3
    # Same result whichever orientation: NS(G^T) = NS(G)^T
    torch.testing.assert_close(newton_schulz(g.mT, 5, torch.float32), x.mT)
    # bf16 path returns bf16 and stays close
    xb = newton_schulz(g.float(), 5, torch.bfloat16)
    assert xb.dtype == torch.bfloat16
    assert (xb.double() - x).abs().max() < 0.05


@pytest.mark.parametrize("shape", [(2, 16, 48), (2, 48, 16), (3, 32, 32)])
@pytest.mark.parametrize("steps", [0, 1, 5])
def test_emulated_bf16_newton_schulz_is_bitwise_the_native_one(shape, steps):
    # Small inner dimensions: torch's bfloat16 GEMM and our float32 GEMM on bfloat16-rounded values sum in the
    # same order, so every rounding must agree bit for bit; a missing or extra rounding shows up as a mismatch
    # (the float32 iteration differs by ~3e-2 after 5 steps).
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(steps))
    native = newton_schulz_reference(g, steps, torch.bfloat16)
    emulated = newton_schulz(g, steps, torch.bfloat16, emulate_bf16=True)
    assert emulated.dtype == native.dtype == torch.bfloat16
    assert torch.equal(emulated, native)


def test_emulated_bf16_newton_schulz_large_within_rounding():
    # Large inner dimensions: the summation order may differ, so a few last-bit flips are allowed; the result is
    # still far closer to the native bfloat16 iteration than the float32 iteration is.
    g = torch.randn(2, 96, 384, generator=torch.Generator().manual_seed(0))
    native = newton_schulz_reference(g, 5, torch.bfloat16).float()
    emulated = newton_schulz(g, 5, torch.bfloat16, emulate_bf16=True).float()
    fp32 = newton_schulz_reference(g, 5, torch.float32)
    err = ((emulated - native).norm() / native.norm()).item()
    assert err < 0.5 * ((fp32 - native).norm() / native.norm()).item(), err


def test_bf16_emulation_switch_resolution():
    cpu = torch.device("cpu")
    assert emulate_bf16_on(cpu, "on") and not emulate_bf16_on(cpu, "off")
    assert not emulate_bf16_on(torch.device("cuda"), "auto")  # GPUs have bfloat16 tensor cores
    with pytest.raises(ValueError, match="ns_bf16_emulation"):
        emulate_bf16_on(cpu, "sometimes")


def test_newton_schulz_zero_steps_only_normalises():
    g = torch.randn(2, 8, 12, dtype=torch.float64) * 7
    x = newton_schulz(g, 0, torch.float32)
    torch.testing.assert_close(x.norm(dim=(-2, -1)), torch.ones(2, dtype=torch.float64), rtol=1e-6, atol=0)
    torch.testing.assert_close(x * g.norm(dim=(-2, -1), keepdim=True), g, rtol=1e-6, atol=1e-6)


def test_renormalisation_keeps_initial_column_norms():
    w, k, v, lrs = _random_state(dtype=torch.float32)
    ops = full_schedule(24, 24)
    _, final = ttt_scan(k, k, v, lrs, w, ops, TTTHyper(ns_dtype=torch.float32))
    for w0, w1 in zip(w, final.weights):
        torch.testing.assert_close(w1.norm(dim=1), w0.norm(dim=1), rtol=1e-4, atol=1e-4)
        assert (w1 - w0).abs().max() > 1e-3  # and the weights did move


def test_schedules():
    assert full_schedule(8, 16) == [(0, 8, True, False), (0, 16, False, True)]
    assert ar_schedule(8, 16, 4) == [(0, 4, True, False), (4, 8, True, False), (0, 16, False, True)]
    with pytest.raises(ValueError, match="multiple of ar_chunk_views"):
        ar_schedule(10, 20, 4)


def test_ar_with_one_chunk_equals_full():
    w, k, v, lrs = _random_state(dtype=torch.float32)
    h = TTTHyper(ns_dtype=torch.float32)
    o1, w1 = ttt_scan(k, k, v, lrs, w, full_schedule(24, 24), h)
    o2, w2 = ttt_scan(k, k, v, lrs, w, ar_schedule(24, 24, 24), h)
    torch.testing.assert_close(o1, o2, rtol=0, atol=0)


def test_ar_chunks_differ_from_full():
    w, k, v, lrs = _random_state(dtype=torch.float32)
    h = TTTHyper(ns_dtype=torch.float32)
    o1, _ = ttt_scan(k, k, v, lrs, w, full_schedule(24, 24), h)
    o2, _ = ttt_scan(k, k, v, lrs, w, ar_schedule(24, 24, 8), h)
    assert (o1 - o2).abs().max() > 1e-3


def test_blocked_inference_update_matches_single_block():
    w, k, v, lrs = _random_state(s=40, dtype=torch.float32)
    h = TTTHyper(ns_dtype=torch.float32)
    with torch.no_grad():
        o1, _ = ttt_scan(k, k, v, lrs, w, full_schedule(40, 40), h)
        o2, _ = ttt_scan(k, k, v, lrs, w, full_schedule(40, 40), h, token_block=7)
    torch.testing.assert_close(o1, o2, rtol=1e-5, atol=1e-6)


def test_elastic_zero_lambda_is_plain_and_positive_lambda_pulls_back():
    w, k, v, lrs = _random_state(dtype=torch.float32)
    ops = ar_schedule(24, 24, 8)
    _, plain = ttt_scan(k, k, v, lrs, w, ops, TTTHyper(ns_dtype=torch.float32))
    _, zero = ttt_scan(k, k, v, lrs, w, ops, TTTHyper(ns_dtype=torch.float32, elastic_lambda=0.0))
    _, el = ttt_scan(k, k, v, lrs, w, ops, TTTHyper(ns_dtype=torch.float32, elastic_lambda=0.5))
    for a, b, c, w0 in zip(plain.weights, zero.weights, el.weights, w):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        # elastic weights stay closer to the initial weights
        assert (c - w0).norm() < (a - w0).norm()


def test_elastic_clean_normaliser_is_per_sample():
    """Clean mode: one sample's update magnitudes don't change the other's pull (compat couples them)."""
    w, k, v, lrs = _random_state(dtype=torch.float32)
    ops = ar_schedule(24, 24, 8)
    v2 = v.clone()
    v2[1] = torch.randn_like(v2[1]) * 10  # change sample 1 only
    for compat in (True, False):
        hyp = TTTHyper(ns_dtype=torch.float32, elastic_lambda=0.5, elastic_compat=compat)
        _, a = ttt_scan(k, k, v, lrs, w, ops, hyp)
        _, b = ttt_scan(k, k, v2, lrs, w, ops, hyp)
        same0 = all(torch.allclose(x[0], y[0], atol=1e-6) for x, y in zip(a.weights, b.weights))
        # official: the Fisher max is shared by the batch, so sample 0 moves; clean: it must not
        assert same0 == (not compat)


def test_multihead_heads_are_independent():
    """LaCT layout: the layer with 2 heads equals running each head alone with its own rate channels."""
    cfg = TttlrmConfig(d=32, ttt_head_dim=16, attn_head_dim=16, ns_dtype="float32", n_layer=1)
    layer = FastWeightLayer(cfg).double()
    x = torch.randn(2, 12, 32, dtype=torch.float64)
    ops = full_schedule(8, 12)
    y, final = layer(x, ops)
    b, L, h, dh = 2, 12, 2, 16
    qkv = F.silu(layer.to_qkv(x)).view(b, L, 3, h, dh)
    lr = F.softplus(F.linear(x, layer.lr_fc.weight, layer.lr_fc.bias) + cfg.base_lr_inv)  # [b, L, 3h]
    outs = []
    for j in range(h):
        q, k, v = (qkv[:, :, i, j] for i in range(3))
        q, k = q / (q.norm(dim=-1, keepdim=True) + 1e-5), k / (k.norm(dim=-1, keepdim=True) + 1e-5)
        lrs = tuple(lr[..., wi * h + j : wi * h + j + 1] for wi in range(3))
        ws = tuple(p[j].expand(b, -1, -1) for p in (layer.w0, layer.w1, layer.w2))
        o, _ = ttt_scan(q, k, v, lrs, ws, ops, layer.hyper)
        outs.append(o)
    o = torch.stack(outs, 2).reshape(b, L, 32)
    torch.testing.assert_close(y, layer.c_proj(layer.o_norm(o)))
    assert final.weights[0].shape == (b * h, dh, 4 * dh)


def test_official_layout_refuses_multihead():
    with pytest.raises(ValueError, match="only works with one TTT head"):
        TttlrmConfig(d=32, ttt_head_dim=16, attn_head_dim=16, ttt_lr_layout="official").validate()

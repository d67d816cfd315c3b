"""The measured-geometry model options (geometry_input, depth_anchor), their weight surgery, the median-depth
normalisation and the metadata that records them."""

from __future__ import annotations

import math

import pytest
import torch

from tttlrm_ns.data.normalize import normalize_cameras, scale_to_depth
from tttlrm_ns.geometry import analytic as A
from tttlrm_ns.model import TttlrmConfig, TttlrmModel
from tttlrm_ns.model.checkpoint import TrainedFor, load_model, read_trained_for, save_model
from tttlrm_ns.model.surgery import add_geometry, tokenizer_columns
from tttlrm_ns.infer.predict import predict_gaussians

TINY = dict(d=32, n_layer=1, attn_head_dim=16, ttt_head_dim=32, patch_size=8, sh_degree=0, ns_dtype="float32",
            rgb_skip=True, dist_shift=-4.8202816)


def _views(v: int = 4, h: int = 32, w: int = 48):
    cams = A.orbit_cameras(v, 1.5, arc_deg=50)
    k = A.intrinsics(v, h, w, 60)
    img, dep = A.render(A.room_scene(2), cams, k, h, w)
    _, tf = normalize_cameras(cams)
    tf = scale_to_depth(tf, float(dep.median()))
    return img, tf.apply(cams).float(), k, dep * tf.scale


def test_surgery_keeps_the_old_tokens_and_rescales_depth():
    torch.manual_seed(0)
    src = TttlrmModel(TttlrmConfig(**TINY)).eval()
    model = add_geometry(src, geometry_input=True, depth_anchor=False, old_median=4.0).eval()
    img, c2w, k, _ = _views()
    with torch.no_grad():
        old = src.encode(img[None], c2w[None], k[None])
        new = model.encode(img[None], c2w[None], k[None])
        assert torch.allclose(old, new, atol=1e-5)  # zero weights on the two new channels
        d_old = (src(img[None], c2w[None], k[None]).gaussians.means - c2w[None, :, None, :3, 3].repeat_interleave(
            32 * 48, 2).reshape(1, -1, 3)).norm(dim=-1)
        d_new = (model(img[None], c2w[None], k[None]).gaussians.means - c2w[None, :, None, :3, 3].repeat_interleave(
            32 * 48, 2).reshape(1, -1, 3)).norm(dim=-1)
    # distances far below max_dist scale by exp(shift) = 1/4 to within the sigmoid's curvature
    assert torch.allclose(d_new, d_old / 4, rtol=0.05)
    cols = tokenizer_columns(2, 12, 14)
    assert cols[:13].tolist() == list(range(12)) + [14]


def test_depth_anchor_places_confident_pixels_at_the_measured_depth():
    torch.manual_seed(0)
    model = TttlrmModel(TttlrmConfig(**TINY, depth_anchor=True, anchor_confidence=0.5)).eval()
    img, c2w, k, dep = _views()
    geo = model.measure_geometry(img[None], c2w[None], k[None])
    assert geo.shape == (1, 4, 2, 32, 48)
    x = model.encode(img[None], c2w[None], k[None], geometry=geo)
    x = model.run_blocks(x, model.tokens_per_view(32, 48)).tokens
    # confidence 1: the Gaussian sits at the measured z; confidence 0: where the network put it
    full = geo.clone()
    full[:, :, 1] = 1.0
    g = model.decode(x, c2w[None], k[None], 32, 48, img[None], full).gaussians
    w2c = torch.linalg.inv(c2w)
    cam = (g.means[0].reshape(4, -1, 3) @ w2c[:, :3, :3].transpose(1, 2) + w2c[:, None, :3, 3])
    from tttlrm_ns.model.head import to_patch_major

    z_meas = to_patch_major(full[:, :, :1], 8)[0, :, 0].reshape(4, -1)
    assert torch.allclose(cam[..., 2], z_meas, rtol=1e-4)
    none = geo.clone()
    none[:, :, 1] = 0.0
    g0 = model.decode(x, c2w[None], k[None], 32, 48, img[None], none).gaussians
    plain = TttlrmModel(TttlrmConfig(**TINY))
    plain.load_state_dict(model.state_dict())
    g1 = plain.decode(x, c2w[None], k[None], 32, 48, img[None]).gaussians
    assert torch.allclose(g0.means, g1.means, atol=1e-5)


def test_geometry_model_predict_equals_forward():
    torch.manual_seed(1)
    model = TttlrmModel(TttlrmConfig(**TINY, geometry_input=True, depth_anchor=True)).eval()
    img, c2w, k, _ = _views()
    with torch.no_grad():
        full = model(img[None], c2w[None], k[None]).gaussians
        chunked = predict_gaussians(model, img, c2w, k, chunk_views=3)
    assert torch.allclose(full.means[0], chunked.means, atol=1e-5)


def test_geometry_options_are_validated():
    with pytest.raises(ValueError, match="stream"):
        TttlrmConfig(**TINY, geometry_input=True, scan="stream").validate()
    with pytest.raises(ValueError, match="sweep_near"):
        TttlrmConfig(**TINY, depth_anchor=True, sweep_near=2.0, sweep_far=1.0).validate()
    model = TttlrmModel(TttlrmConfig(**TINY, geometry_input=True))
    img, c2w, k, _ = _views(v=1)
    with pytest.raises(ValueError, match="at least 2 input views"):
        model(img[None], c2w[None], k[None])


def test_trained_for_records_the_scale_and_reads_old_files(tmp_path):
    model = TttlrmModel(TttlrmConfig(**TINY, geometry_input=True))
    tf = TrainedFor(kind="scene", scan="full", normalization="mean_cam", resolution="32x48", background="white",
                    scale="median_depth")
    path = save_model(model, tmp_path / "g.safetensors", trained_for=tf)
    got, missing = read_trained_for(path)
    assert got == tf and not missing
    assert load_model(path).cfg.geometry_input
    meta = {k: v for k, v in tf.to_metadata().items() if k != "trained.scale"}  # a file written before the field
    old, missing = TrainedFor.from_metadata(meta)
    assert old is not None and old.scale == "extent" and not missing


def test_scale_to_depth_puts_the_median_at_one():
    cams = A.forward_cameras(5, 0.3, seed=1)
    _, tf = normalize_cameras(cams)
    tf2 = scale_to_depth(tf, 3.0)
    assert math.isclose(tf2.scale, 1 / 3)
    assert torch.equal(tf2.align, tf.align)
    with pytest.raises(ValueError, match="positive"):
        scale_to_depth(tf, 0.0)

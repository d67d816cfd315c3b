"""``rgb_skip``: the Gaussian's own input pixel colour feeds its degree-0 SH coefficient (``model/head.py``), and the
surgery that switches it on for a model trained without it (``python -m tttlrm_ns.model.surgery --rgb-skip``)."""

from __future__ import annotations

import pytest
import torch

from tttlrm_ns.model import TttlrmModel
from tttlrm_ns.model.checkpoint import load_model, save_model
from tttlrm_ns.model.config import TttlrmConfig
from tttlrm_ns.model.head import decode_gaussians, to_patch_major
from tttlrm_ns.model.surgery import main as surgery_main
from tttlrm_ns.sh import C0


def _cfg(**kw) -> TttlrmConfig:
    base = dict(d=64, n_layer=1, attn_head_dim=32, ttt_head_dim=64, patch_size=4, sh_degree=1)
    base.update(kw)
    return TttlrmConfig(**base)


def _inputs(v=2, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(1, v, 3, h, w, generator=g)
    c2w = torch.eye(4).expand(1, v, 4, 4).clone()
    c2w[0, 1, :3, 3] = torch.tensor([0.2, 0.0, 0.0])
    fxfycxcy = torch.tensor([8.0, 8.0, w / 2, h / 2]).expand(1, v, 4).clone()
    return images, c2w, fxfycxcy


def test_zero_decoder_output_reproduces_the_input_pixel():
    cfg = _cfg(rgb_skip=True)
    images, _, _ = _inputs()
    v, h, w = images.shape[1], images.shape[3], images.shape[4]
    raw = torch.zeros(1, v * (h // 4) * (w // 4), 16 * cfg.gaussian_channels)
    o = torch.zeros(1, v, 3, h, w)
    d = torch.zeros(1, v, 3, h, w)
    d[:, :, 2] = 1
    g = decode_gaussians(raw, o, d, cfg, images)
    rgb = g.sh[0, :, 0] * C0 + 0.5  # degree-0 colour as the renderer evaluates it
    torch.testing.assert_close(rgb, to_patch_major(images, 4)[0])
    assert torch.all(g.sh[0, :, 1:] == 0)  # higher degrees untouched
    # off (the official head): the colour is the decoder's alone
    assert torch.all(decode_gaussians(raw, o, d, cfg.replace(rgb_skip=False)).sh == 0)


def test_skip_needs_the_images():
    cfg = _cfg(rgb_skip=True)
    raw = torch.zeros(1, 4, 16 * cfg.gaussian_channels)
    try:
        decode_gaussians(raw, torch.zeros(1, 1, 3, 8, 8), torch.ones(1, 1, 3, 8, 8), cfg)
    except ValueError as e:
        assert "rgb_skip" in str(e)
    else:
        raise AssertionError("rgb_skip without images must raise")


def test_surgery_keeps_geometry_and_makes_colour_the_input(tmp_path, capsys):
    torch.manual_seed(0)
    src = TttlrmModel(_cfg(sh_degree=0)).eval()
    with torch.no_grad():  # a decoder that emits sizeable colours, as a trained one does
        src.decoder[1].weight.normal_(std=0.3)
    from tttlrm_ns.model.checkpoint import TrainedFor, read_trained_for

    trained = TrainedFor(kind="scene", scan="full", normalization="mean_cam", resolution="8x8", background="white",
                         preset="custom")
    save_model(src, tmp_path / "src.safetensors", trained_for=trained)
    assert surgery_main([str(tmp_path / "src.safetensors"), str(tmp_path / "dst.safetensors"), "--rgb-skip"]) == 0
    dst = load_model(tmp_path / "dst.safetensors").eval()
    assert dst.cfg.rgb_skip
    assert read_trained_for(tmp_path / "dst.safetensors")[0] == trained  # what the weights are for is kept
    images, c2w, k = _inputs()
    with torch.no_grad():
        a, b = src(images, c2w, k).gaussians, dst(images, c2w, k).gaussians
    for name in ("means", "log_scales", "quats", "opacity_logits"):
        torch.testing.assert_close(getattr(b, name), getattr(a, name))
    torch.testing.assert_close(b.sh[0, :, 0] * C0 + 0.5, to_patch_major(images, 4)[0])
    assert not torch.allclose(a.sh, b.sh)
    # a second time is refused: the skip would add the colour twice
    capsys.readouterr()
    assert surgery_main([str(tmp_path / "dst.safetensors"), str(tmp_path / "again.safetensors"), "--rgb-skip"]) == 2
    assert "already have rgb_skip=True" in capsys.readouterr().err and not (tmp_path / "again.safetensors").exists()


def test_chunked_prediction_carries_the_skip():
    from tttlrm_ns.infer.predict import predict_gaussians

    torch.manual_seed(0)
    model = TttlrmModel(_cfg(rgb_skip=True)).eval()
    images, c2w, k = _inputs(v=3)
    with torch.no_grad():
        full = model(images, c2w, k).gaussians
    chunked = predict_gaussians(model, images[0], c2w[0], k[0], chunk_views=1)
    # chunked matmuls differ from the one-pass forward by ~1e-3 on random weights; a path that dropped the skip
    # would be off by |rgb - 0.5| / C0, up to 1.8
    torch.testing.assert_close(chunked.sh, full.sh[0], rtol=0, atol=5e-3)


def test_surgery_cli_refuses_incomplete_requests(tmp_path, capsys):
    """Each surgery's own arguments are checked before the weights are read (the paths need not exist)."""
    paths = [str(tmp_path / "src.safetensors"), str(tmp_path / "dst.safetensors")]
    for flags, message in [([], "choose --geometry-input"), (["--depth-anchor"], "need --old-median"),
                           (["--rgb-skip", "--old-median", "4"], "--old-median only applies")]:
        with pytest.raises(SystemExit) as e:
            surgery_main([*paths, *flags])
        assert e.value.code == 2 and message in capsys.readouterr().err

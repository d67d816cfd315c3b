"""The bundled demo checkpoint (tttlrm_ns/assets/weights/tttlrm_small.safetensors): loads, has the documented
configuration, and predicts finite Gaussians for the bundled sample scene."""

from __future__ import annotations

from pathlib import Path

import torch

import tttlrm_ns
from tttlrm_ns.data.normalize import NormalizeConfig, normalize_views
from tttlrm_ns.data.scene import ResizeConfig, load_scene, load_views
from tttlrm_ns.model.checkpoint import load_model, read_config

# = tttlrm_ns.ns.pipeline.BUNDLED_CHECKPOINT (not imported here: importing nerfstudio alone takes seconds)
ASSETS = Path(tttlrm_ns.__file__).resolve().parent / "assets"
BUNDLED_CHECKPOINT = ASSETS / "weights" / "tttlrm_small.safetensors"
SAMPLE = ASSETS / "sample_scene"


def test_bundled_checkpoint_is_installed_small_and_documented():
    assert BUNDLED_CHECKPOINT.is_file(), f"bundled weights missing: {BUNDLED_CHECKPOINT}"
    assert BUNDLED_CHECKPOINT.stat().st_size < 20 * 2**20
    cfg = read_config(BUNDLED_CHECKPOINT)
    # configs/sample_small.yaml and tttlrm_ns/assets/weights/README.md
    assert (cfg.d, cfg.n_layer, cfg.patch_size, cfg.sh_degree) == (128, 4, 8, 0)
    assert (cfg.attn_head_dim, cfg.ttt_head_dim, cfg.ns_dtype, cfg.scan) == (32, 128, "float32", "full")


def test_bundled_checkpoint_predicts_finite_gaussians_on_the_sample_scene():
    model = load_model(BUNDLED_CHECKPOINT).eval()
    assert 1.5e6 < sum(p.numel() for p in model.parameters()) < 3e6
    scene = load_scene(SAMPLE)
    idx = [0, 16]
    views = load_views(scene, idx, ResizeConfig(height=72, width=128, orientation="fixed", patch_size=8))
    c2w, _, _ = normalize_views(scene.c2w[idx], None, NormalizeConfig(method="mean_cam"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 2-view forward is tiny; two threads on a busy 2-core machine were 30x slower
    try:
        with torch.inference_mode():
            g = model(views.images[None], c2w[None].float(), views.fxfycxcy[None].float()).gaussians
    finally:
        torch.set_num_threads(threads)
    assert g.means.shape == (1, 2 * 72 * 128, 3)
    assert g.sh.shape == (1, 2 * 72 * 128, 1, 3)
    for t in (g.means, g.sh, g.log_scales, g.quats, g.opacity_logits):
        assert torch.isfinite(t).all()
    # a trained model puts the Gaussians in front of the input cameras (positive depth along the optical axis)
    w2c = torch.linalg.inv(c2w.float())
    cam0 = g.means[0, : 72 * 128] @ w2c[0, :3, :3].T + w2c[0, :3, 3]
    assert (cam0[:, 2] > 0).float().mean() > 0.99

"""tttlrm_ns.infer's whole run without nerfstudio: prepare_inputs (size, memory check, normalisation choice) and
reconstruct_scene (weights or mvs -> world-frame Gaussians), on the bundled mydesk_mini frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tttlrm_ns import conventions, infer
from tttlrm_ns.data.scene import load_scene
from tttlrm_ns.gaussians import PruneConfig
from tttlrm_ns.geometry.free_space import FreeSpaceConfig
from tttlrm_ns.infer.inputs import InputSize, InputSpec
from tttlrm_ns.model.head import to_patch_major

SCENE = Path(__file__).resolve().parent / "assets" / "mydesk_mini"  # 480x270 frames
VIEWS = [0, 3, 5, 8]


def _views(indices=VIEWS):
    scene = load_scene(SCENE)
    images = [torch.from_numpy(np.asarray(Image.open(scene.image_paths[i]).convert("RGB")).copy()) for i in indices]
    return images, scene.c2w[indices], scene.fxfycxcy[indices]


def _spec(model_cfg=None, **changes) -> InputSpec:
    from tttlrm_ns.model import presets

    spec = InputSpec(
        model=model_cfg or presets.tiny(sh_degree=1), init="model", device="cpu",
        size=InputSize(long_side=128, height=None, width=None, auto_long_side_cuda=960, auto_long_side_cpu=256,
                       resize_mode="crop"),
        normalization="auto", normalization_scale="auto", trained_scale=None, background=torch.ones(3),
        check_background=False, prune=PruneConfig(keep_top=0.0), free_space=FreeSpaceConfig(tolerance=0.0),
        chunk_views=3, memory_budget_gb=None, export_sh_degree=3,
    )
    for k, v in changes.items():
        setattr(spec, k, v)
    return spec


def test_prepare_inputs_resizes_scales_intrinsics_and_normalises():
    images, c2w, k = _views()
    logs: list[str] = []
    p = infer.prepare_inputs(images, c2w, k, _spec(), log=logs.append)
    assert p.images.shape == (4, 3, 72, 128) and p.images.dtype == torch.float32 and 0 <= p.images.min()
    assert (p.num_views, p.height, p.width, p.init) == (4, 72, 128, "model")
    torch.testing.assert_close(p.fxfycxcy.double(), k * 128 / 480, rtol=1e-6, atol=1e-6)  # uniform scale, no crop
    # auto = mean_cam for the full scan, extent for weights without trained.scale; the way back is exact
    assert p.norm.depth_range is None
    torch.testing.assert_close(p.norm.transform.invert(p.c2w.double()), c2w, rtol=0, atol=1e-5)
    assert any("input size 128x72 from 480x270" in m for m in logs)
    assert any(m.startswith("will make 36,864 Gaussians") for m in logs)  # 4 x 72 x 128, nothing pruned
    assert any("mean_cam alignment, scale" in m and "camera extent" in m for m in logs)


def test_prepare_inputs_refuses_before_anything_is_loaded():
    images, c2w, k = _views()
    with pytest.raises(infer.InsufficientMemoryError, match=r"only 0.00 GiB are available on cpu.*--pipeline.chunk-views"):
        infer.prepare_inputs(images, c2w, k, _spec(memory_budget_gb=0.001))
    from tttlrm_ns.model import presets

    ar = presets.tiny(sh_degree=1).replace(scan="ar", ar_chunk_views=4)
    with pytest.raises(infer.PredictionError, match=r"every 4 views, but 3 input views"):
        infer.prepare_inputs(images[:3], c2w[:3], k[:3], _spec(ar))
    with pytest.raises(infer.PredictionError, match=r"different image sizes \[\(240, 135\), \(480, 270\)\]"):
        infer.prepare_inputs(images, c2w, k, _spec(), sizes=[(480, 270)] * 3 + [(240, 135)])


def test_mvs_init_scales_by_the_measured_depth_and_uses_the_points_when_given():
    images, c2w, k = _views()
    logs: list[str] = []
    p = infer.prepare_inputs(images, c2w, k, _spec(init="mvs"), log=logs.append)
    assert any("--pipeline.init mvs measures the scene's depth range" in m for m in logs)
    assert "plane sweep" in p.norm.depth_range.source
    assert not any(m.startswith("will make") for m in logs)  # no network: no size / memory estimate
    # SfM points in front of the cameras: the median depth comes from them, not from a sweep
    centre = c2w[:, :3, 3].mean(0)
    ahead = centre + 2.0 * c2w[:, :3, 2].mean(0)
    points = ahead + 0.1 * torch.randn(200, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    q = infer.prepare_inputs(images, c2w, k, _spec(normalization_scale="median_depth"), points=points)
    assert "plane sweep" not in q.norm.depth_range.source


def test_rgba_is_composited_and_a_wrong_object_background_is_named():
    images, c2w, k = _views()
    rgba = [torch.cat([im, torch.zeros_like(im[..., :1])], -1) for im in images]  # fully transparent
    logs: list[str] = []
    p = infer.prepare_inputs(rgba, c2w, k, _spec(background=torch.tensor([0.0, 0.0, 0.0]), check_background=True),
                             log=logs.append)
    assert p.images.abs().max() == 0 and any("matches the weights' (0.00, 0.00, 0.00)" in m for m in logs)
    logs.clear()
    infer.prepare_inputs(images, c2w, k, _spec(check_background=True), log=logs.append)  # a room on white weights
    assert any(m.startswith("WARNING: the input views' border is (") for m in logs)


@torch.no_grad()
def test_reconstruct_scene_puts_every_pixel_on_its_ray_in_the_world(tiny_checkpoint):
    """Unpruned, unfiltered Gaussians of input view j project onto the centres of view j's resized pixels with the
    world cameras: resize, intrinsics, normalisation and the way back agree (the nerfstudio pipeline's geometry test,
    without nerfstudio)."""
    from tttlrm_ns.model.checkpoint import read_config

    images, c2w, k = _views()
    cfg = read_config(tiny_checkpoint)
    p = infer.prepare_inputs(images, c2w, k, _spec(cfg))
    rc = infer.ReconstructConfig(prune=PruneConfig(keep_top=0.0), free_space=FreeSpaceConfig(tolerance=0.0),
                                 footprint_filter=0.0, chunk_views=3)
    logs: list[str] = []
    out = infer.reconstruct_scene(p, rc, tiny_checkpoint, cfg, log=logs.append)
    g = out.gaussians
    h, w = 72, 128
    assert g.num == 4 * h * w and out.seconds > 0
    assert out.plausibility is not None and out.plausibility.warning  # random weights: flagged
    assert any(m.startswith("WARNING: the prediction reproduces its own input views") for m in logs)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    centres = to_patch_major(torch.stack([xs, ys])[None, None] + 0.5, 8)[0]
    for j in range(4):
        means = g.means[j * h * w : (j + 1) * h * w].double()
        px = conventions.project_points(means, conventions.c2w_to_w2c(c2w[j]), k[j] * 128 / 480)
        torch.testing.assert_close(px, centres, atol=2e-3, rtol=0)


@torch.no_grad()
def test_reconstruct_scene_is_normalise_reconstruct_to_world(tiny_checkpoint):
    """The steps it composes, by hand: the same Gaussians (defaults: free-space filter, pruning, footprint)."""
    from tttlrm_ns.model.checkpoint import load_any, read_config

    images, c2w, k = _views()
    cfg = read_config(tiny_checkpoint)
    p = infer.prepare_inputs(images, c2w, k, _spec(cfg))
    rc = infer.ReconstructConfig()
    got = infer.reconstruct_scene(p, rc, tiny_checkpoint, cfg, plausibility_check=False)
    assert got.plausibility is None
    model = load_any(tiny_checkpoint, cfg).eval()
    ref = infer.to_world(infer.reconstruct(model, p.images, p.c2w, p.fxfycxcy, rc), p.norm.transform)
    assert got.gaussians.num == ref.num > 0
    for f in ("means", "sh", "log_scales", "quats", "opacity_logits"):
        torch.testing.assert_close(getattr(got.gaussians, f), getattr(ref, f))


def test_reconstruct_scene_mvs_needs_no_weights():
    images, c2w, k = _views()
    p = infer.prepare_inputs(images, c2w, k, _spec(init="mvs"))
    logs: list[str] = []
    out = infer.reconstruct_scene(p, infer.ReconstructConfig(), log=logs.append)
    assert 0 < out.gaussians.num < 4 * 72 * 128 and torch.isfinite(out.gaussians.means).all()
    assert any("--pipeline.init mvs:" in m and "no network" in m for m in logs)
    assert out.plausibility is not None
    with pytest.raises(ValueError, match="needs the weights"):
        infer.reconstruct_scene(infer.prepare_inputs(images, c2w, k, _spec()), infer.ReconstructConfig())

"""The triplane object model: plane sampling, volume rendering, fast-weight reads, gradients, object frame, files."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from tttlrm_ns.conventions import look_at_cv
from tttlrm_ns.data.object_frame import ObjectCaptureError, object_frame
from tttlrm_ns.data.normalize import SceneTransform
from tttlrm_ns.model.checkpoint import CheckpointError
from tttlrm_ns.triplane.model import (TriplaneField, TriplaneModel, load_triplane, preset, sample_planes,
                                      save_triplane)
from tttlrm_ns.triplane.volume import composite, ray_box, sample_distances


def look_at_c2w(eye, target=(0.0, 0.0, 0.0)) -> torch.Tensor:
    """OpenCV c2w (x right, y down, z forward, float64) at ``eye`` looking at ``target``, world z up, no roll."""
    return torch.from_numpy(look_at_cv(np.asarray(eye, float), np.asarray(target, float), up=np.array([0.0, 0, 1])))


def ring_cameras(n=4, dist=2.7, elev_deg=20.0, centre=(0.0, 0.0, 0.0)) -> torch.Tensor:
    cams = []
    for i in range(n):
        az = 2 * math.pi * i / n + 0.3
        el = math.radians(elev_deg + 10 * (i % 2))
        eye = [centre[0] + dist * math.cos(el) * math.cos(az), centre[1] + dist * math.cos(el) * math.sin(az),
               centre[2] + dist * math.sin(el)]
        cams.append(look_at_c2w(eye, centre))
    return torch.stack(cams)


# --- plane sampling ------------------------------------------------------------------------------------------------


def test_sample_planes_matches_hand_computed_bilinear():
    r, half = 4, 2.0
    planes = torch.arange(3 * 2 * r * r, dtype=torch.float64).view(1, 3, 2, r, r) ** 1.5  # distinct values
    # Texel centres of a 4-texel axis lie at (-0.75, -0.25, 0.25, 0.75) * half. Point coordinates / half:
    # x = -0.625 -> 1/4 of the way from column 0 to 1; y = 0.5 -> half-way between 2 and 3; z = 0.125 -> 3/4 of the
    # way from 1 to 2.
    p = torch.tensor([[[-0.625 * half, 0.5 * half, 0.125 * half]]], dtype=torch.float64)
    got = sample_planes(planes, p, half)[0, 0]  # [3, C]

    def bilerp(img, row, col):  # row / col: list of (index, weight)
        return sum(wr * wc * img[:, i, j] for i, wr in row for j, wc in col)

    x = [(0, 0.75), (1, 0.25)]
    y = [(2, 0.5), (3, 0.5)]
    z = [(1, 0.25), (2, 0.75)]
    want = torch.stack([bilerp(planes[0, 0], y, x), bilerp(planes[0, 1], z, x), bilerp(planes[0, 2], z, y)])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_field_is_empty_outside_the_box():
    field = TriplaneField(preset("triplane_tiny")[1]).double()
    planes = torch.randn(1, 3, 8, 16, 16, dtype=torch.float64)
    pts = torch.tensor([[[0.2, 0.1, -0.3], [1.5, 0.0, 0.0], [0.0, -1.01, 0.0]]], dtype=torch.float64)
    sigma, rgb = field.query(planes, pts)
    assert sigma[0, 0] > 0 and sigma[0, 1] == 0 and sigma[0, 2] == 0
    assert ((rgb > 0) & (rgb < 1)).all()


# --- volume rendering ----------------------------------------------------------------------------------------------


def test_ray_box_hits_and_misses():
    o = torch.tensor([[0.0, 0.0, -3.0], [0.0, 5.0, -3.0], [0.2, 0.3, 0.0], [0.5, 0.5, -3.0]])
    d = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    near, far = ray_box(o, d, 1.0)
    torch.testing.assert_close(near[:3], torch.tensor([2.0, far[1].item(), 0.0]))
    torch.testing.assert_close(far[[0, 2]], torch.tensor([4.0, 0.8]))
    assert near[1] == far[1] and near[3] == far[3]  # parallel outside the slab / pointing away: empty interval


def test_composite_matches_nerfstudio_weights():
    from nerfstudio.cameras.rays import Frustums, RaySamples

    torch.manual_seed(0)
    near, far = torch.tensor([0.5, 1.0]), torch.tensor([2.5, 1.5])
    t, delta = sample_distances(near, far, 8)
    sigma = torch.rand(2, 8) * 4
    rgb = torch.rand(2, 8, 3)
    out = composite(sigma, rgb, delta, torch.ones(3))
    starts = (t - delta / 2)[..., None]
    frustums = Frustums(origins=torch.zeros(2, 8, 3), directions=torch.ones(2, 8, 3), starts=starts,
                        ends=starts + delta[..., None], pixel_area=torch.ones(2, 8, 1))
    ns_w = RaySamples(frustums=frustums, deltas=delta[..., None].expand(2, 8, 1)).get_weights(sigma[..., None])
    torch.testing.assert_close(out["weights"], ns_w[..., 0], rtol=1e-5, atol=1e-6)
    want = (ns_w * rgb).sum(1) + (1 - ns_w.sum(1))
    torch.testing.assert_close(out["rgb"], want, rtol=1e-5, atol=1e-6)


# --- the model -----------------------------------------------------------------------------------------------------


def _tiny_inputs(b=1, v=2, res=16, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(b, v, 3, res, res, generator=g, dtype=dtype)
    c2w = ring_cameras(v).to(dtype)[None].expand(b, -1, -1, -1).contiguous()
    k = torch.tensor([res * 1.1, res * 1.1, res / 2, res / 2], dtype=dtype).expand(b, v, 4).contiguous()
    return images, c2w, k


def test_planes_shape_and_query_tokens_only_read_the_fast_weights():
    cfg, tri = preset("triplane_tiny")
    torch.manual_seed(0)
    model = TriplaneModel(cfg, tri).eval()
    images, c2w, k = _tiny_inputs()
    with torch.no_grad():
        a = model(images, c2w, k, return_fast_weights=True)
        model.plane_queries.mul_(-3.0).add_(1.0)  # very different readers
        b = model(images, c2w, k, return_fast_weights=True)
    r = tri.tokens_per_side * cfg.patch_size
    assert a.planes.shape == (1, 3, tri.channels, r, r)
    assert not torch.allclose(a.planes, b.planes)  # the queries matter for the output...
    assert len(a.fast_weights) == cfg.n_layer
    for sa, sb in zip(a.fast_weights, b.fast_weights):  # ...but never for the fast weights of any block
        for wa, wb in zip(sa.weights, sb.weights):
            assert torch.equal(wa, wb)
    with torch.no_grad():  # while the images do change them
        c = model(images.flip(-1), c2w, k, return_fast_weights=True)
    assert not torch.equal(c.fast_weights[0].weights[0], a.fast_weights[0].weights[0])


def test_gradients_match_finite_differences_float64():
    cfg, tri = preset("triplane_tiny", muon_steps=2)
    torch.manual_seed(1)
    model = TriplaneModel(cfg, tri).double()
    images, c2w, k = _tiny_inputs(dtype=torch.float64)
    o = torch.tensor([[[0.0, 0.0, 2.7], [2.5, 0.3, 0.4]]], dtype=torch.float64)
    d = torch.nn.functional.normalize(torch.tensor([[[0.05, -0.02, -1.0], [-1.0, -0.1, -0.1]]],
                                                   dtype=torch.float64), dim=-1)
    q0 = model.plane_queries.detach().clone()

    class Render(torch.nn.Module):  # predict + render, so functional_call can swap parameters of both
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, images, c2w, k):
            planes = self.m(images, c2w, k).planes
            return self.m.field.render_rays(planes, o, d, torch.ones(3, dtype=torch.float64), num_samples=6)["rgb"]

    wrap = Render(model)
    last = f"m.field.mlp.{len(model.field.mlp) - 1}.bias"

    def render_from(queries_head: torch.Tensor, mlp_bias: torch.Tensor) -> torch.Tensor:
        queries = torch.cat([queries_head, q0[2:]])  # gradient w.r.t. two query tokens (cheap to check)
        return torch.func.functional_call(wrap, {"m.plane_queries": queries, last: mlp_bias}, (images, c2w, k))

    qh = q0[:2].clone().requires_grad_(True)
    bias = model.field.mlp[-1].bias.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(render_from, (qh, bias), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_render_views_shapes_and_white_background_for_empty_box():
    cfg, tri = preset("triplane_tiny")
    model = TriplaneModel(cfg, tri)
    with torch.no_grad():
        model.field.mlp[-1].bias[0] = -50.0  # no density anywhere
        images, c2w, k = _tiny_inputs()
        out = model.render(model(images, c2w, k).planes, c2w, k, 8, 10, torch.ones(3), num_samples=4)
    assert out["rgb"].shape == (1, 2, 3, 8, 10) and out["depth"].shape == (1, 2, 8, 10)
    torch.testing.assert_close(out["rgb"], torch.ones_like(out["rgb"]), atol=1e-5, rtol=0)


def test_stream_scan_is_refused():
    cfg, tri = preset("triplane_tiny", scan="stream")
    with pytest.raises(ValueError, match="stream"):
        TriplaneModel(cfg, tri)


# --- object frame --------------------------------------------------------------------------------------------------


def test_object_frame_is_similarity_invariant_and_centres_the_object():
    cams = ring_cameras(4, dist=3.3, centre=(0.4, -0.2, 1.0))
    tr = object_frame(cams, 2.7)
    n1 = tr.apply(cams)
    torch.testing.assert_close(n1[:, :3, 3].norm(dim=-1).mean(), torch.tensor(2.7, dtype=torch.float64))
    torch.testing.assert_close(tr.apply_points(torch.tensor([0.4, -0.2, 1.0], dtype=torch.float64)),
                               torch.zeros(3, dtype=torch.float64), atol=1e-9, rtol=0)
    assert float(n1[0, 1, 3]) == pytest.approx(0.0, abs=1e-9)  # first camera in the x-z half plane (canonical yaw)
    # Any similarity of the world (rotation, translation, scale) gives the same object-frame cameras.
    rot = torch.linalg.matrix_exp(torch.tensor([[0.0, -0.7, 0.2], [0.7, 0.0, -0.4], [-0.2, 0.4, 0.0]],
                                               dtype=torch.float64))
    sim = torch.eye(4, dtype=torch.float64)
    sim[:3, :3], sim[:3, 3] = rot, torch.tensor([3.0, -1.0, 2.0], dtype=torch.float64)
    moved = SceneTransform(sim, 0.37).apply(cams)
    torch.testing.assert_close(object_frame(moved, 2.7).apply(moved), n1, atol=1e-9, rtol=0)


def test_scene_capture_is_refused_with_a_clear_message():
    from pathlib import Path

    from tttlrm_ns.data.scene import load_scene

    # The bundled room walk-through (a scene capture): every 16th frame as the input views.
    room = load_scene(Path(__file__).resolve().parents[1] / "tttlrm_ns" / "assets" / "sample_scene")
    with pytest.raises(ObjectCaptureError, match="do not look like an object capture.*ns-train tttlrm"):
        object_frame(room.c2w[::16])
    # Forward-facing cameras whose axes meet far ahead: seen from the object, they span a few degrees only.
    fwd = torch.stack([look_at_c2w((0.3 * i, 0.0, 0.0), (0.6, 10.0, 0.0)) for i in range(5)])
    with pytest.raises(ObjectCaptureError, match="span only"):
        object_frame(fwd)
    same_dir = torch.stack([look_at_c2w((float(i), 0.0, 0.0), (float(i), 5.0, 0.0)) for i in range(3)])
    with pytest.raises(ObjectCaptureError, match="parallel"):
        object_frame(same_dir)


# --- files ---------------------------------------------------------------------------------------------------------


def test_triplane_file_round_trip_and_gaussian_file_refused(tmp_path):
    cfg, tri = preset("triplane_tiny")
    model = TriplaneModel(cfg, tri)
    path = save_triplane(model, tmp_path / "tri.safetensors")
    back = load_triplane(path)
    assert back.tri == model.tri and back.cfg == model.cfg
    for (ka, va), (kb, vb) in zip(model.state_dict().items(), back.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)

    from tttlrm_ns.model import TttlrmModel, presets
    from tttlrm_ns.model.checkpoint import save_model

    gpath = save_model(TttlrmModel(presets.tiny()), tmp_path / "gauss.safetensors")
    with pytest.raises(CheckpointError, match="Gaussian tttLRM checkpoint.*tttlrm-object"):
        load_triplane(gpath)
    # and the other way round: the Gaussian loader names the triplane file's kind and method, not missing keys
    from tttlrm_ns.model.checkpoint import load_model

    with pytest.raises(CheckpointError, match="holds a triplane model.*ns-train tttlrm-triplane"):
        load_model(path)


# --- bundled weights and the trainer -------------------------------------------------------------------------------

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_bundled_triplane_checkpoint_loads_and_predicts():
    from tttlrm_ns.triplane.model import read_triplane_metadata

    path = REPO / "tttlrm_ns" / "assets" / "weights" / "tttlrm_triplane.safetensors"
    assert path.stat().st_size < 50e6
    meta = read_triplane_metadata(path)
    assert meta["model_kind"] == "triplane" and meta["trained.kind"] == "object"
    assert meta["trained.resolution"] == "64x64"  # docs/model_card.md
    model = load_triplane(path).eval()
    images, c2w, k = _tiny_inputs(v=4, res=64)
    with torch.no_grad():
        planes = model(images, c2w, k).planes
    assert planes.shape == (1, 3, 32, 128, 128) and torch.isfinite(planes).all()  # 16 x 16 tokens of patch 8


def _object_sample_psnr(model: TriplaneModel) -> tuple[float, float, float]:
    """(model, all-white, inputs' mean colour) mean PSNR over 8 held-out views of ``tests/assets/object_sample`` (a
    procedural object of seed 909, never trained on) from 4 k-means input views, all at 64x64 as trained; the
    steps of experiments/eval_triplane.py (:func:`tttlrm_ns.triplane.held_out.render_held_out`)."""
    from tttlrm_ns.data.scene import load_scene
    from tttlrm_ns.data.views import ViewSelectionConfig, select_views
    from tttlrm_ns.eval.metrics import psnr
    from tttlrm_ns.eval.protocol import mean_colour_image, white_image
    from tttlrm_ns.triplane.held_out import render_held_out

    scene = load_scene(REPO / "tests" / "assets" / "object_sample")
    inputs = select_views(scene.c2w, ViewSelectionConfig(mode="kmeans", num_views=4))
    held = [i for i in range(len(scene)) if i not in inputs][::3][:8]
    r = render_held_out(model, scene, inputs, held, 64, 64)
    flat = lambda image: image[None].expand_as(r.gt)  # noqa: E731  [3, H, W] -> one per held-out view
    return (float(psnr(r.pred, r.gt).mean()), float(psnr(flat(white_image(64, 64)), r.gt).mean()),
            float(psnr(flat(mean_colour_image(r.inputs, 64, 64)), r.gt).mean()))


def test_bundled_triplane_beats_flat_images_and_random_weights_do_not():
    """Quality floor of the shipped triplane (docs/model_card.md): the better flat image (all white / the inputs'
    mean colour) + 1 dB, and the untrained model of the same configuration + 0.3 dB."""
    path = REPO / "tttlrm_ns" / "assets" / "weights" / "tttlrm_triplane.safetensors"
    shipped = load_triplane(path).eval()
    trained, white, mean = _object_sample_psnr(shipped)
    torch.manual_seed(0)
    random_psnr, _, _ = _object_sample_psnr(TriplaneModel(shipped.cfg, shipped.tri).eval())
    floor = max(max(white, mean) + 1.0, random_psnr + 0.3)
    assert trained > floor, (trained, white, mean, random_psnr)


def test_tttlrm_train_triplane_tiny_run_exports_a_triplane_file(tmp_path):
    from test_ns_triplane import make_object_capture

    from tttlrm_ns.triplane.model import read_triplane_metadata
    from tttlrm_ns.train.config import load_yaml_config
    from tttlrm_ns.train.loop import train

    for i in range(2):
        make_object_capture(tmp_path / "objects" / f"obj{i}", n=8, res=32)
    cfg = load_yaml_config(REPO / "configs" / "triplane_tiny_cpu.yaml")
    cfg.data.scenes = (str(tmp_path / "objects" / "*"),)
    cfg.data.frames_per_window = 8
    cfg.data.window_max = 8
    cfg.output_dir = tmp_path / "run"
    cfg.optim.max_steps = 3
    cfg.optim.warmup_steps = 1
    summary = train(cfg, log=lambda msg: None)
    assert summary.steps == 3 and all(math.isfinite(r["loss"]) and r["mse"] > 0 for r in summary.history)
    meta = read_triplane_metadata(summary.export)
    assert meta["model_kind"] == "triplane" and meta["train_step"] == "3"
    assert load_triplane(summary.export).tri.tokens_per_side == 2


def test_geometry_terms_hand_computed():
    """Silhouette BCE and log-depth L1 of rendered rays against z-depth: the data's distance along a ray is
    z / cos(angle to the optical axis)."""
    from tttlrm_ns.triplane.train import geometry_terms

    dirs = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]) / torch.tensor([[2 ** 0.5], [1.0]])
    fwd = torch.tensor([[0.0, 0.0, 1.0]]).expand(2, 3)
    z = torch.tensor([2.0, 0.0])  # ray 0 hits at z = 2 (distance 2 sqrt 2), ray 1 hits nothing
    exact = torch.tensor([2 * 2 ** 0.5, 5.0])
    mask, depth = geometry_terms(torch.tensor([1.0, 0.0]), exact, dirs, fwd, z)
    assert float(mask) < 1e-4 and float(depth) < 1e-6
    mask, depth = geometry_terms(torch.tensor([0.5, 0.5]), exact * math.e, dirs, fwd, z)
    assert math.isclose(float(mask), math.log(2), rel_tol=1e-5)
    assert math.isclose(float(depth), 1.0, rel_tol=1e-5)  # only the hit ray counts; the miss's distance is free
    mask, depth = geometry_terms(torch.tensor([0.2, 0.2]), exact, dirs, fwd, torch.zeros(2))
    assert math.isclose(float(mask), -math.log(0.8), rel_tol=1e-4) and float(depth) == 0.0


def test_geometry_terms_need_target_depth():
    from tttlrm_ns.train.config import load_yaml_config

    cfg = load_yaml_config(REPO / "configs" / "triplane_tiny_cpu.yaml")
    cfg.data.scenes = ("x",)
    cfg.loss.mask = 1.0
    with pytest.raises(ValueError, match="loss.mask > 0 needs data.load_target_depth=True"):
        cfg.validate()
    cfg.data.load_target_depth = True
    cfg.validate()


def test_tttlrm_train_triplane_with_depth_and_silhouette_terms(tmp_path):
    """The geometry terms run end to end on data with depth, and they are what the model learns from: with MSE and
    LPIPS off, a few steps lower the silhouette + depth loss (every sample shows the same sphere)."""
    from test_ns_triplane import make_object_capture

    from tttlrm_ns.train.config import load_yaml_config
    from tttlrm_ns.train.loop import train

    for i in range(2):
        make_object_capture(tmp_path / "objects" / f"obj{i}", n=8, res=32, depth=True)
    cfg = load_yaml_config(REPO / "configs" / "triplane_tiny_cpu.yaml")
    cfg.data.scenes = (str(tmp_path / "objects" / "*"),)
    cfg.data.frames_per_window = 8
    cfg.data.window_max = 8
    cfg.data.load_target_depth = True
    cfg.loss.mse, cfg.loss.perceptual, cfg.loss.mask, cfg.loss.depth = 0.0, 0.0, 1.0, 1.0
    cfg.output_dir = tmp_path / "run"
    cfg.optim.max_steps = 24
    cfg.optim.warmup_steps = 1
    cfg.optim.lr = 1e-2
    summary = train(cfg, log=lambda msg: None)
    h = summary.history
    assert all(math.isfinite(r["mask"]) and math.isfinite(r["depth"]) and r["depth"] > 0 for r in h)
    first, last = h[0]["mask"] + h[0]["depth"], min(r["mask"] + r["depth"] for r in h[-4:])
    assert last < 0.65 * first, [(round(r["mask"], 3), round(r["depth"], 3)) for r in h]


def test_init_from_a_coarser_triplane_tiles_its_plane_patches(tmp_path):
    """A 2x2-token triplane initialises a 4x4-token one (`checkpoint.init_from`): every other weight is copied and
    each query token is repeated over the 2x2 new tokens covering its area. The queries carry no position and attend
    only among themselves, where a key repeated 4 times leaves softmax attention unchanged, so the finer model's
    planes are the coarse planes with every patch tiled 2x2 -- the same function of the inputs at first."""
    from tttlrm_ns.triplane.train import init_from, upsample_plane_queries

    cfg, tri = preset("triplane_tiny")
    torch.manual_seed(0)
    coarse = TriplaneModel(cfg, tri).eval()
    path = save_triplane(coarse, tmp_path / "coarse.safetensors")
    fine = TriplaneModel(cfg, dataclasses.replace(tri, tokens_per_side=4)).eval()
    logs = []
    init_from(fine, str(path), logs.append)
    assert "repeated to 4x4" in logs[0]
    images, c2w, k = _tiny_inputs(v=2, res=16)
    with torch.no_grad():
        a = coarse(images, c2w, k).planes  # [1, 3, C, 16, 16]
        b = fine(images, c2w, k).planes  # [1, 3, C, 32, 32]
    p = cfg.patch_size
    for i in range(4):
        for j in range(4):
            want = a[..., (i // 2) * p:(i // 2 + 1) * p, (j // 2) * p:(j // 2 + 1) * p]
            torch.testing.assert_close(b[..., i * p:(i + 1) * p, j * p:(j + 1) * p], want, atol=1e-5, rtol=1e-5)
    with pytest.raises(CheckpointError, match="not a multiple"):
        upsample_plane_queries(coarse.plane_queries.detach(), 2, 3)

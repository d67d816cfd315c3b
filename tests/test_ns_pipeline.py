"""TttlrmPipeline in-process: world-frame geometry of the installed Gaussians, refinement, and its error messages."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from tttlrm_ns import conventions
from tttlrm_ns.geometry.free_space import FreeSpaceConfig
from tttlrm_ns.model.head import to_patch_major

REPO = Path(__file__).resolve().parents[1]
SCENE = REPO / "tests" / "assets" / "mydesk_mini"
NO_FREE_SPACE = FreeSpaceConfig(tolerance=0.0)  # tests that need every predicted Gaussian turn the filter off  # 10 frames, 480x270; the paper split leaves 8 for training


def nerfstudio_scene(dest: Path) -> Path:
    """mydesk_mini rewritten as a nerfstudio ``transforms.json`` scene (OpenGL c2w, per-frame intrinsics)."""
    import json

    scene = json.loads((SCENE / "opencv_cameras.json").read_text())
    frames = []
    for f in scene["frames"]:
        c2w_cv = torch.linalg.inv(torch.tensor(f["w2c"], dtype=torch.float64))
        c2w_gl = conventions.opencv_to_opengl_c2w(c2w_cv)
        frames.append({"file_path": str(SCENE / f["file_path"]), "transform_matrix": c2w_gl.tolist(),
                       **{k: f[k] for k in ("w", "h")}, "fl_x": f["fx"], "fl_y": f["fy"], "cx": f["cx"], "cy": f["cy"]})
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "transforms.json").write_text(json.dumps({"frames": frames}))
    return dest


def _config(checkpoint, method: str = "tttlrm", views: int = 4, long_side: int = 128, data: Path = SCENE,  # noqa: PLR0913
            dataparser=None, **pipeline):
    from tttlrm_ns import method_configs as mc

    base = {"tttlrm": mc.tttlrm_config, "tttlrm-ar": mc.tttlrm_ar_config, "tttlrm-refine3": mc.tttlrm_refine3_config}
    cfg = copy.deepcopy(base[method])
    if dataparser is not None:
        cfg.pipeline.datamanager.dataparser = dataparser
    cfg.pipeline.datamanager.data = data
    cfg.pipeline.model.checkpoint = checkpoint
    cfg.pipeline.views.num_views = views
    cfg.pipeline.input_long_side = long_side
    for k, v in pipeline.items():
        setattr(cfg.pipeline, k, v)
    cfg.machine.device_type = "cpu"
    return cfg


def _setup(cfg):
    return cfg.pipeline.setup(device="cpu", test_mode="val")


@pytest.mark.parametrize("parser", ["opencv-cameras", "nerfstudio-data"])
def test_gaussians_lie_on_the_input_pixel_rays_in_the_world_frame(tiny_checkpoint, parser, tmp_path):
    """Unpruned Gaussians of input view j project onto the centres of view j's pixels with the dataparser camera.

    This holds only if view selection, OpenGL->OpenCV conversion, intrinsics scaling of the resize, camera
    normalisation and the mapping back to the world frame all agree -- also for nerfstudio's own dataparser, which
    re-orients, re-centres and scales the world.
    """
    from tttlrm_ns.gaussians import PruneConfig

    kw = {}
    if parser == "nerfstudio-data":
        from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

        kw = dict(data=nerfstudio_scene(tmp_path / "ns_scene"), dataparser=NerfstudioDataParserConfig())
    cfg = _config(tiny_checkpoint, prune=PruneConfig(keep_top=0.0), free_space=NO_FREE_SPACE, chunk_views=3, **kw)
    pipe = _setup(cfg)
    g = pipe.model.get_gaussians()
    h, w = 72, 128  # 480x270 at long side 128 (uniform scale 128/480, no crop)
    assert g.num == 4 * h * w and len(pipe.input_indices) == 4
    cams = pipe.datamanager.train_dataset.cameras
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    centres = to_patch_major(torch.stack([xs, ys])[None, None] + 0.5, 8)[0]  # [H*W, 2], Gaussian order
    s = 128 / 480
    for j, i in enumerate(pipe.input_indices):
        c2w = conventions.opengl_to_opencv_c2w(conventions.to_homogeneous_pose(cams.camera_to_worlds[i].double()))
        k = torch.tensor([cams.fx[i, 0], cams.fy[i, 0], cams.cx[i, 0], cams.cy[i, 0]], dtype=torch.float64) * s
        means = g.means[j * h * w : (j + 1) * h * w].double()
        px = conventions.project_points(means, conventions.c2w_to_w2c(c2w), k)
        depth = (means - c2w[:3, 3]) @ c2w[:3, 2]
        assert (depth > 0).all()
        torch.testing.assert_close(px, centres, atol=2e-3, rtol=0)


def test_footprint_filter_widens_by_the_input_pixel_size_in_the_world_frame(tiny_checkpoint):
    """The filter is applied in the model's normalised frame; in the dataparser's world frame every Gaussian must
    have gained ``footprint_filter * (z / f)^2`` of variance with z / f measured from the world cameras (so the
    normalisation's scale was carried along), and nothing else may change."""
    from tttlrm_ns.gaussians import PruneConfig, input_footprint

    raw = _setup(_config(tiny_checkpoint, prune=PruneConfig(keep_top=0.0), free_space=NO_FREE_SPACE, footprint_filter=0.0))
    wide = _setup(_config(tiny_checkpoint, prune=PruneConfig(keep_top=0.0), free_space=NO_FREE_SPACE, footprint_filter=0.1))
    g0, g1 = raw.model.get_gaussians(), wide.model.get_gaussians()
    assert raw.input_indices == wide.input_indices
    torch.testing.assert_close(g1.means, g0.means)
    torch.testing.assert_close(g1.opacity_logits, g0.opacity_logits)
    cams = raw.datamanager.train_dataset.cameras
    idx = raw.input_indices
    c2w = conventions.opengl_to_opencv_c2w(conventions.to_homogeneous_pose(cams.camera_to_worlds[idx].double()))
    k = torch.stack([cams.fx[idx, 0], cams.fy[idx, 0], cams.cx[idx, 0], cams.cy[idx, 0]], -1).double() * 128 / 480
    fp = input_footprint(g0.means.double(), c2w, k, 72, 128)  # world units per input pixel
    added = torch.exp(2 * g1.log_scales.double()) - torch.exp(2 * g0.log_scales.double())  # [N, 3]
    torch.testing.assert_close(added, 0.1 * fp[:, None] ** 2 * torch.ones_like(added), rtol=2e-3, atol=1e-9)


def test_free_space_filter_is_the_same_in_the_world_frame(tiny_checkpoint):
    """--pipeline.free-space reaches the prediction, and since the filter compares depths relative to each other it
    does not depend on the frame: the Gaussians the pipeline keeps (in the model's normalised frame) are the ones
    the filter keeps when it is run on the unfiltered prediction in the dataparser's world frame."""
    from tttlrm_ns.gaussians import PruneConfig
    from tttlrm_ns.geometry.free_space import FreeSpaceConfig, free_space_mask
    from tttlrm_ns.model.head import from_patch_major

    fs = FreeSpaceConfig(tolerance=0.05, min_views=1)  # the random model's depths vary by +-20 %: removes 11 %
    off = _setup(_config(tiny_checkpoint, prune=PruneConfig(keep_top=0.0), footprint_filter=0.0,
                         free_space=FreeSpaceConfig(tolerance=0.0)))
    on = _setup(_config(tiny_checkpoint, prune=PruneConfig(keep_top=0.0), footprint_filter=0.0, free_space=fs))
    g0, g1 = off.model.get_gaussians(), on.model.get_gaussians()
    idx = off.input_indices
    assert on.input_indices == idx and g0.num == 4 * 72 * 128
    cams = off.datamanager.train_dataset.cameras
    c2w = conventions.opengl_to_opencv_c2w(conventions.to_homogeneous_pose(cams.camera_to_worlds[idx].double()))
    k = torch.stack([cams.fx[idx, 0], cams.fy[idx, 0], cams.cx[idx, 0], cams.cy[idx, 0]], -1).double() * 128 / 480
    means = g0.means.double().reshape(4, -1, 3)
    z = ((means - c2w[:, None, :3, 3]) * c2w[:, None, :3, 2]).sum(-1)  # [4, H*W] own-view depth, patch-major
    depth = from_patch_major(z.reshape(1, -1, 1), 4, 72, 128, 8)[0, :, 0]
    keep = to_patch_major(free_space_mask(depth, c2w, k, fs)[None, :, None], 8)[0, :, 0]
    assert 0 < int(keep.sum()) < g0.num  # the filter removed something here: the check is not vacuous
    assert abs(g1.num - int(keep.sum())) <= 0.002 * g0.num  # float32 vs float64 frames: borderline points only
    if g1.num == int(keep.sum()):
        torch.testing.assert_close(g1.means, g0.means[keep], rtol=1e-4, atol=1e-4)


def test_kmeans_selection_is_deterministic_and_sorted(tiny_checkpoint):
    a = _setup(_config(tiny_checkpoint)).input_indices
    b = _setup(_config(tiny_checkpoint)).input_indices
    assert a == b == sorted(a) and len(set(a)) == 4


def test_fewer_frames_than_requested_views(tiny_checkpoint):
    from tttlrm_ns.ns.pipeline import PredictionError

    with pytest.raises(PredictionError, match=r"20 input views requested \(--pipeline.views.num-views\) but the train "
                                              r"split has only 8 images"):
        _setup(_config(tiny_checkpoint, views=20))


def test_memory_refusal_before_loading(tiny_checkpoint, monkeypatch):
    from tttlrm_ns.model import checkpoint
    from tttlrm_ns.ns.pipeline import InsufficientMemoryError

    def no_load(*a, **k):
        raise AssertionError("weights must not be loaded when the request cannot fit")

    monkeypatch.setattr(checkpoint, "load_any", no_load)
    with pytest.raises(InsufficientMemoryError) as e:
        _setup(_config(tiny_checkpoint, memory_budget_gb=0.001))
    msg = str(e.value)
    assert "needs about" in msg and "only 0.00 GiB are available" in msg
    for flag in ("--pipeline.views.num-views", "--pipeline.input-long-side", "--pipeline.chunk-views",
                 "--pipeline.model.bf16 on", "--pipeline.memory-budget-gb"):
        assert flag in msg, flag


def test_missing_checkpoint_says_where_to_get_weights(tmp_path, monkeypatch):
    from tttlrm_ns import BUNDLED_CHECKPOINT
    from tttlrm_ns.model import checkpoint
    from tttlrm_ns.ns import pipeline
    from tttlrm_ns.ns.pipeline import PredictionError

    # Only the superseded demo weights installed: ns-train tttlrm stops before predicting and does not load them.
    monkeypatch.setattr(pipeline, "WEIGHTS_DIR", tmp_path / "weights")
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / BUNDLED_CHECKPOINT.name).symlink_to(BUNDLED_CHECKPOINT)
    loaded = []
    monkeypatch.setattr(checkpoint, "load_any", lambda path, *a, **k: loaded.append(path))
    with pytest.raises(PredictionError, match=r"tttlrm_scene.safetensors is missing.*--pipeline.model.checkpoint PATH "
                                              r".*`tttlrm-train`.* official tttLRM .pt") as e:
        _setup(_config(None))
    assert str(tmp_path / "weights" / "tttlrm_scene.safetensors") in str(e.value) and not loaded
    with pytest.raises(PredictionError, match="does not exist"):
        _setup(_config(tmp_path / "nope.safetensors"))


def test_autoregressive_scan_needs_whole_chunks(tiny_checkpoint):
    from tttlrm_ns.ns.pipeline import PredictionError

    with pytest.raises(PredictionError, match=r"every 4 views, but 6 input views .* multiple of 4"):
        _setup(_config(tiny_checkpoint, method="tttlrm-ar", views=6))


def test_max_num_iterations_is_the_number_of_refinement_steps():
    from tttlrm_ns.ns.trainer import resolve_iterations

    cfg = _config(None, method="tttlrm-refine3")
    cfg.max_num_iterations = 5  # nerfstudio's flag: 5 refinement steps instead of the method's 3
    assert resolve_iterations(cfg) == 5 and cfg.pipeline.model.refine.steps == 5
    cfg = _config(None, method="tttlrm")
    assert resolve_iterations(cfg) == 0  # neither flag: the method's default (pure feed-forward)
    cfg.pipeline.model.refine.steps = 7  # only refine.steps
    assert resolve_iterations(cfg) == 7
    cfg.max_num_iterations = 7  # both, same value
    assert resolve_iterations(cfg) == 7
    cfg.max_num_iterations = 5  # both, different values
    with pytest.raises(ValueError, match="--max-num-iterations 5 conflicts with --pipeline.model.refine.steps 7"):
        resolve_iterations(cfg)


def test_ns_train_command_line_keeps_the_methods_refine_steps():
    """The method preset's refine.steps travels in the config (a field without a flag) through ns-train's parser, so
    the trainer tells a typed --pipeline.model.refine.steps from the preset's without looking the method up."""
    import tyro
    from nerfstudio.configs.method_configs import AnnotatedBaseConfigUnion

    from tttlrm_ns.ns.trainer import resolve_iterations

    cfg = tyro.cli(AnnotatedBaseConfigUnion, args=["tttlrm-refine3", "--max-num-iterations", "7"])
    assert cfg.preset_refine_steps == 3 and resolve_iterations(cfg) == 7
    cfg = tyro.cli(AnnotatedBaseConfigUnion, args=["tttlrm-refine3", "--pipeline.model.refine.steps", "5",
                                                   "--max-num-iterations", "7"])
    assert cfg.preset_refine_steps == 3
    with pytest.raises(ValueError, match="--max-num-iterations 7 conflicts with --pipeline.model.refine.steps 5"):
        resolve_iterations(cfg)


def test_refinement_three_steps_on_input_views(tiny_checkpoint, tmp_path):
    """tttlrm-refine3 through nerfstudio's Trainer: 3 optimiser steps move the Gaussians, keep their count."""
    cfg = _config(tiny_checkpoint, method="tttlrm-refine3")
    cfg.output_dir = tmp_path
    cfg.vis = "tensorboard"
    cfg.set_timestamp()
    trainer = cfg.setup(local_rank=0, world_size=1)
    trainer.setup()
    assert trainer.config.max_num_iterations == 3
    lrs = {name: opt.param_groups[0]["lr"] for name, opt in trainer.optimizers.optimizers.items()}
    assert lrs == cfg.pipeline.model.refine.learning_rates()
    before = trainer.pipeline.model.get_gaussians()
    seen = []
    model = trainer.pipeline.model
    orig = model.get_outputs

    def spy(camera):
        seen.append(int(camera.metadata["cam_idx"]))
        return orig(camera)

    model.get_outputs = spy
    trainer.train()
    after = model.get_gaussians()
    assert after.num == before.num
    assert set(seen) <= set(trainer.pipeline.input_indices) and len(seen) == 3
    for f in ("means", "sh", "log_scales", "quats", "opacity_logits"):
        delta = (getattr(after, f) - getattr(before, f)).abs()
        assert torch.isfinite(delta).all() and delta.max() > 0, f
    # Adam moves each parameter by at most ~lr per step
    assert (after.means - before.means).abs().max() <= 3 * cfg.pipeline.model.refine.lr_means * 1.01
    assert sorted((Path(trainer.checkpoint_dir)).glob("step-*.ckpt"))


def test_baseline_images_stay_full_resolution_during_coarse_refinement(tiny_checkpoint):
    """tttlrm-eval's image baselines read the train images after refinement steps; a coarse refinement phase
    (downscale 2, training mode) must not hand them downscaled images."""
    from tttlrm_ns.eval.runner import _train_images

    pipe = _setup(_config(tiny_checkpoint))
    full = _train_images(pipe, [0, 1])
    pipe.model.train()
    pipe.model._refine_downscale = 2
    during = _train_images(pipe, [0, 1])
    assert during.shape == full.shape and torch.equal(during, full)
    assert pipe.model.training  # the model's mode is left as it was


def test_pixel_splats_on_predicted_rays_rerender_the_input_view(tiny_checkpoint):
    """Rendering conventions end to end: give the Gaussians of input view j that view's pixel colours (opaque,
    one-pixel footprint) and render that camera through the model: the image must come back.

    Checks the model-input images (resize, patch-major order), the installed world-frame positions and the
    camera -> viewmat / intrinsics path of ``TttlrmNSModel.get_outputs`` against each other.
    """
    from tttlrm_ns.gaussians import Gaussians, PruneConfig
    from tttlrm_ns.ns import inputs

    pipe = _setup(_config(tiny_checkpoint, prune=PruneConfig(keep_top=0.0), free_space=NO_FREE_SPACE))
    model = pipe.model
    h, w, j = 72, 128, 1
    i = pipe.input_indices[j]
    g = model.get_gaussians()
    sel = slice(j * h * w, (j + 1) * h * w)
    plan = inputs.make_plan(480, 270, 8, long_side=128)
    image = inputs.prepare_images([pipe.datamanager.cached_train[i]["image"]], plan, torch.ones(3))  # [1, 3, H, W]
    colours = to_patch_major(image[None], 8)[0]  # [H*W, 3] in Gaussian order
    cams = pipe.datamanager.train_dataset.cameras
    centre = cams.camera_to_worlds[i, :3, 3]
    dist = (g.means[sel] - centre).norm(dim=-1, keepdim=True)
    fx = float(cams.fx[i, 0]) * 128 / 480
    n = h * w
    splats = Gaussians(
        means=g.means[sel],
        sh=torch.cat([((colours - 0.5) / 0.28209479177387814)[:, None], torch.zeros(n, 15, 3)], 1),
        log_scales=torch.log(0.5 * dist / fx).expand(n, 3),  # half a pixel wide at its distance
        quats=torch.tensor([1.0, 0, 0, 0]).expand(n, 4),
        opacity_logits=torch.full((n, 1), 6.0),
    )
    model.set_gaussians(splats)
    model.eval()
    camera = cams[i : i + 1]
    camera.rescale_output_resolution(128 / 480)
    rgb = model.get_outputs(camera)["rgb"]  # [H, W, 3]
    assert rgb.shape == (h, w, 3)
    mse = (rgb.permute(2, 0, 1) - image[0]).pow(2).mean()
    assert -10 * torch.log10(mse) > 28, float(mse)


def test_ar_method_uses_the_autoregressive_scan_and_selective_update(tiny_checkpoint):
    cfg = _config(tiny_checkpoint, method="tttlrm-ar", views=4, free_space=NO_FREE_SPACE)  # the pruning count
    cfg.pipeline.model.selective_update = True
    pipe = _setup(cfg)
    _, model_cfg = pipe.resolve_model_config()
    assert model_cfg.scan == "ar" and model_cfg.elastic_lambda == 0.05 and model_cfg.patch_size == 8
    assert pipe.model.num_points == int(0.4 * 4 * 72 * 128) + int(0.6 * 0.1 * 4 * 72 * 128)


def _object_scene(dest: Path, frames: int = 6) -> Path:
    """A few RGBA frames of the shared gso_toy object (evaluation data, used read-only as a plumbing input)."""
    import json

    src = REPO.parent / "shared" / "data" / "gso_toy"
    if not src.is_dir():
        pytest.skip("shared gso_toy scene not available")
    scene = json.loads((src / "opencv_cameras.json").read_text())
    picked = scene["frames"][:: max(1, len(scene["frames"]) // frames)][:frames]
    for f in picked:
        f["file_path"] = str(src / f["file_path"])
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "opencv_cameras.json").write_text(json.dumps({"scene_name": "gso_toy_mini", "frames": picked}))
    return dest


def test_object_method_on_rgba_renders(tiny_checkpoint, tmp_path):
    from tttlrm_ns.data.dataparser import OpencvCamerasDataParserConfig

    cfg = _config(tiny_checkpoint, method="tttlrm", views=3, long_side=64, data=_object_scene(tmp_path / "obj"),
                  dataparser=OpencvCamerasDataParserConfig(eval_mode="all"))
    from tttlrm_ns import method_configs as mc

    cfg.pipeline.model = copy.deepcopy(mc.tttlrm_object_config.pipeline.model)
    cfg.pipeline.model.checkpoint = tiny_checkpoint
    pipe = _setup(cfg)
    assert pipe.model.config.background_color == "white"
    img = pipe.datamanager.cached_train[pipe.input_indices[0]]["image"]
    assert img.shape[-1] == 3 and img[0, 0].tolist() == [255, 255, 255]  # RGBA composited over white
    assert pipe.model.num_points > 0


def test_optional_densification_through_our_rasteriser(tiny_checkpoint, tmp_path):
    """refine.strategy='default' runs gsplat's DefaultStrategy on the CPU renderer's statistics (means2d grads)."""
    cfg = _config(tiny_checkpoint, method="tttlrm-refine3")
    m = cfg.pipeline.model
    m.refine.strategy, m.refine.steps = "default", 43
    # first refinement at step 42: > warmup, multiple of refine_every, past the pause after the (never reached) reset
    m.warmup_length, m.refine_every = 1, 21
    cfg.output_dir, cfg.vis = tmp_path, "tensorboard"
    cfg.set_timestamp()
    trainer = cfg.setup(local_rank=0, world_size=1)
    trainer.setup()
    n0 = trainer.pipeline.model.num_points
    trainer.train()
    n1 = trainer.pipeline.model.num_points
    assert n1 != n0
    opt = trainer.optimizers.optimizers["means"]
    assert opt.param_groups[0]["params"][0].shape[0] == n1  # optimizer state follows the new Gaussians


def test_official_pt_checkpoint_with_preset_and_bf16(tmp_path):
    """An official-format .pt ({'model': state_dict}, plus auxiliary networks that are ignored) is read with
    --pipeline.model.model-preset; bf16 autocast runs on CPU when asked for."""
    from tttlrm_ns.model import TttlrmModel, presets

    torch.manual_seed(1)
    state = TttlrmModel(presets.tiny()).state_dict()
    state["depth_anything.dummy"] = torch.zeros(1)
    torch.save({"model": state, "optimizer": {}}, tmp_path / "official.pt")
    cfg = _config(tmp_path / "official.pt")
    cfg.pipeline.model.model_preset = "tiny"
    cfg.pipeline.model.bf16 = "on"
    pipe = _setup(cfg)
    _, model_cfg = pipe.resolve_model_config()
    assert model_cfg.autocast_bf16 and model_cfg.d == 64
    g = pipe.model.get_gaussians()
    assert g.num > 0 and torch.isfinite(g.means).all() and torch.isfinite(g.sh).all()


@pytest.fixture(scope="module")
def tiny_geometry_checkpoint(tmp_path_factory) -> Path:
    """Random tiny weights that read the plane sweep and were 'trained' under median-depth normalisation."""
    from tttlrm_ns.model import TttlrmModel, presets
    from tttlrm_ns.model.checkpoint import TrainedFor, save_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny_geo.safetensors"
    model = TttlrmModel(presets.tiny(sh_degree=1, geometry_input=True, depth_anchor=True))
    save_model(model, path, trained_for=TrainedFor(kind="scene", scan="full", normalization="mean_cam",
                                                   resolution="72x128", background="white", scale="median_depth"))
    return path


def test_median_depth_weights_keep_the_world_frame(tiny_geometry_checkpoint, capsys):
    """Weights trained under median-depth normalisation: the pipeline measures the depth (and says so), and the
    Gaussians of input view j still project onto view j's pixel centres in the world frame."""
    from tttlrm_ns.gaussians import PruneConfig

    pipe = _setup(_config(tiny_geometry_checkpoint, prune=PruneConfig(keep_top=0.0), free_space=NO_FREE_SPACE, footprint_filter=0.0))
    out = capsys.readouterr().out
    assert "= 1 / median depth" in out and "plane sweep of the 4 views" in out
    g = pipe.model.get_gaussians()
    h, w = 72, 128
    cams = pipe.datamanager.train_dataset.cameras
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    centres = to_patch_major(torch.stack([xs, ys])[None, None] + 0.5, 8)[0]
    i, s = pipe.input_indices[1], 128 / 480
    c2w = conventions.opengl_to_opencv_c2w(conventions.to_homogeneous_pose(cams.camera_to_worlds[i].double()))
    k = torch.tensor([cams.fx[i, 0], cams.fy[i, 0], cams.cx[i, 0], cams.cy[i, 0]], dtype=torch.float64) * s
    px = conventions.project_points(g.means[h * w : 2 * h * w].double(), conventions.c2w_to_w2c(c2w), k)
    torch.testing.assert_close(px, centres, atol=2e-3, rtol=0)


def test_mvs_init_reads_no_weights_and_random_weights_are_flagged(tiny_checkpoint, tmp_path, capsys):
    pipe = _setup(_config(tmp_path / "does_not_exist.safetensors", init="mvs"))
    out = capsys.readouterr().out
    assert "--pipeline.init mvs: no network" in out and "does_not_exist" not in out
    assert "--pipeline.init mvs measures the scene's depth range" in " ".join(out.split())
    g = pipe.model.get_gaussians()
    assert 0 < g.num < 4 * 72 * 128 and torch.isfinite(g.means).all()
    # random weights: a blur that cannot reproduce its own input views (the check runs with the prediction, on the
    # pipeline's first use)
    assert _setup(_config(tiny_checkpoint)).model.num_points > 0
    out = capsys.readouterr().out
    assert "WARNING" in out and "--pipeline.init mvs" in out


def test_object_method_says_when_the_capture_background_is_not_the_weights(tiny_checkpoint, capsys):
    """An object model trained on white, given a capture whose borders are a room (mydesk_mini): one warning that
    names both colours and what to do."""
    from tttlrm_ns import method_configs as mc

    cfg = _config(tiny_checkpoint, views=3, long_side=64)
    cfg.pipeline.method_kind = "object"
    cfg.pipeline.model = copy.deepcopy(mc.tttlrm_object_config.pipeline.model)
    cfg.pipeline.model.checkpoint = tiny_checkpoint
    _setup(cfg)
    out = " ".join(capsys.readouterr().out.split())
    assert "WARNING: the input views' border is (" in out and "(1.00, 1.00, 1.00) background" in out


def _count_weight_loads(monkeypatch) -> list:
    from tttlrm_ns.model import checkpoint

    loads, real = [], checkpoint.load_any

    def counting(path, *a, **k):
        loads.append(path)
        return real(path, *a, **k)

    monkeypatch.setattr(checkpoint, "load_any", counting)
    return loads


def test_prediction_runs_on_first_use_not_at_construction(tiny_checkpoint, monkeypatch, capsys):
    """Construction prepares (views, sizes, the memory check, normalisation); the weights are read and the
    prediction made on the first use of the model, once; a checkpoint saved before that holds the prediction."""
    loads = _count_weight_loads(monkeypatch)
    pipe = _setup(_config(tiny_checkpoint))
    out = capsys.readouterr().out
    assert loads == [] and len(pipe.input_indices) == 4 and "input size 128x72" in out and "installed" not in out
    assert pipe.device == torch.device("cpu") and loads == []  # the device is not a use
    n = pipe.model.num_points
    assert n > 0 and loads == [tiny_checkpoint] and "Gaussians installed" in capsys.readouterr().out
    assert pipe.model.num_points == n and len(loads) == 1
    state = _setup(_config(tiny_checkpoint)).state_dict()
    assert len(loads) == 2 and state["_model.gauss_params.means"].shape == (n, 3)


@pytest.mark.parametrize("how", ["load_pipeline", "load_state_dict"])
def test_a_loaded_checkpoint_is_never_predicted_over(tiny_checkpoint, monkeypatch, how):
    """nerfstudio loads a checkpoint into a constructed pipeline (the trainer's --load-dir, eval_setup): the
    checkpoint's Gaussians stay, and no prediction runs before or after the load."""
    from tttlrm_ns.gaussians import PruneConfig

    saved = _setup(_config(tiny_checkpoint, prune=PruneConfig(keep_top=0.1, keep_random=0.0)))
    state = {k: v.clone() for k, v in saved.state_dict().items()}
    loads = _count_weight_loads(monkeypatch)
    pipe = _setup(_config(tiny_checkpoint))
    if how == "load_pipeline":
        pipe.load_pipeline(state, step=5)
    else:
        pipe.load_state_dict(state)
    assert loads == []
    torch.testing.assert_close(pipe.model.get_gaussians().means, state["_model.gauss_params.means"])
    assert loads == [] and pipe.model.num_points == saved.model.num_points

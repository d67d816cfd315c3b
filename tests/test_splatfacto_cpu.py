"""nerfstudio splatfacto on CPU through tttlrm_ns' rasteriser (tttlrm_ns.ns.splatfacto_cpu)."""

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.engine.optimizers import Optimizers

from tttlrm_ns.conventions import look_at_gl, opengl_c2w_to_opencv_w2c
from tttlrm_ns.ns import splatfacto_cpu
from tttlrm_ns.ns.splatfacto_cpu import SplatfactoCPUModelConfig

REPO = Path(__file__).resolve().parents[1]


def _ring_c2w(n, radius=2.5, height=0.8):
    """nerfstudio c2w [n, 3, 4] (OpenGL) on a ring around the origin, looking at it, world z up."""
    return torch.stack(
        [torch.from_numpy(look_at_gl(np.array([radius * math.cos(2 * math.pi * i / n),
                                               radius * math.sin(2 * math.pi * i / n), height]),
                                     np.zeros(3), up=np.array([0.0, 0.0, 1.0]))[:3]).float()
         for i in range(n)]
    )


def test_viewmat_matches_nerfstudio_and_projects_in_front():
    from nerfstudio.models.splatfacto import get_viewmat

    c2w = _ring_c2w(3)
    ours = opengl_c2w_to_opencv_w2c(c2w)
    # splatfacto's helper is wrapped in torch.compile; compare against the undecorated function.
    theirs = get_viewmat._torchdynamo_orig_callable(c2w)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    # The origin (looked at by every camera) lies at positive OpenCV depth, on the optical axis.
    p = ours[:, :3, 3]
    assert torch.all(p[:, 2] > 0) and torch.allclose(p[:, :2], torch.zeros(3, 2), atol=1e-6)


def _model(sh_degree=1, n=300, num_train=4, seed=0, **cfg):
    g = torch.Generator().manual_seed(seed)
    xyz = torch.randn(n, 3, generator=g) * 0.4
    rgb = torch.randint(0, 256, (n, 3), generator=g).to(torch.uint8)
    config = SplatfactoCPUModelConfig(
        sh_degree=sh_degree,
        sh_degree_interval=1,
        num_downscales=1,
        resolution_schedule=4,
        **cfg,
    )
    model = config.setup(
        scene_box=SceneBox(aabb=torch.tensor([[-1.5, -1.5, -1.5], [1.5, 1.5, 1.5]])),
        num_train_data=num_train,
        seed_points=(xyz, rgb),
    )
    return model, xyz, rgb


def _cameras(n=4, H=24, W=32):
    c2w = _ring_c2w(n)
    f = torch.full((n, 1), 0.9 * W)
    return Cameras(
        camera_to_worlds=c2w, fx=f, fy=f, cx=torch.full((n, 1), W / 2), cy=torch.full((n, 1), H / 2),
        width=torch.full((n, 1), W), height=torch.full((n, 1), H), camera_type=CameraType.PERSPECTIVE,
        metadata={"cam_idx": torch.arange(n)[:, None]},
    )


def _optimizers(model):
    return Optimizers(splatfacto_cpu.splatfacto_cpu_config.optimizers, model.get_param_groups())


def test_seed_colours_and_lpips():
    model, xyz, rgb = _model(sh_degree=2)
    torch.testing.assert_close(model.means.detach(), xyz)
    # DC term reproduces the seed colour: SH2RGB(dc) = rgb / 255 (splatfacto's formula, computed on CPU).
    from nerfstudio.models.splatfacto import SH2RGB

    torch.testing.assert_close(SH2RGB(model.features_dc.detach()), rgb.float() / 255, rtol=0, atol=1e-6)
    assert model.features_rest.shape == (300, 8, 3) and not model.features_rest.any()
    assert not any(k.startswith("lpips") for k in model.state_dict()), "LPIPS must not enter the state dict"
    model0, _, _ = _model(sh_degree=0)
    torch.testing.assert_close(torch.sigmoid(model0.features_dc.detach()), rgb.float() / 255, rtol=0, atol=1e-5)


@pytest.fixture
def stock_lpips_cache(monkeypatch, tmp_path):
    """nerfstudio's own ``SplatfactoModel`` loads torchvision's pretrained AlexNet for its LPIPS metric at
    construction; a stand-in file under torchvision's name in a private torch.hub folder (``$TORCH_HOME``, this test's
    own directory, never the real cache) lets it build without a download. The stand-in's values do not matter: the
    comparison of metrics loads our backbone into it."""
    import torchvision

    from tttlrm_ns.eval.lpips_weights import LEGACY_TORCH_CACHE_FILES

    folder = tmp_path / "torch_home" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    # one zero element expanded to each shape: a few bytes on disk
    state = {k: torch.zeros(()).expand(v.shape) for k, v in torchvision.models.alexnet().state_dict().items()}
    torch.save(state, folder / LEGACY_TORCH_CACHE_FILES["alex"])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


@pytest.mark.parametrize("options", [dict(sh_degree=2), dict(random_init=True, num_random=200, sh_degree=0,
                                                                use_bilateral_grid=True, background_color="random")])
def test_populate_modules_is_splatfactos(options, stock_lpips_cache):
    """Our populate_modules (no .cuda(), our LPIPS) builds what splatfacto's builds: the same parameters from the same
    random draws, the same strategy, background and metrics; only LPIPS is a function instead of a submodule (whose
    construction, in splatfacto, draws random numbers after the parameters).
    (Seed points without colours: splatfacto's colour branch needs CUDA; ours is test_seed_colours_and_lpips.)"""
    from nerfstudio.models.splatfacto import SplatfactoModelConfig

    from tttlrm_ns.eval import lpips_weights

    g = torch.Generator().manual_seed(0)
    setup = dict(scene_box=SceneBox(aabb=torch.tensor([[-1.5, -1.5, -1.5], [1.5, 1.5, 1.5]])), num_train_data=4,
                 seed_points=(torch.randn(300, 3, generator=g) * 0.4, torch.zeros(0, 3, dtype=torch.uint8)))
    config = SplatfactoCPUModelConfig(**options)
    torch.manual_seed(5)
    ours = config.setup(**setup)
    stock_config = SplatfactoModelConfig(**{f.name: getattr(config, f.name)
                                            for f in dataclasses.fields(SplatfactoModelConfig) if f.name != "_target"})
    torch.manual_seed(5)
    stock = stock_config.setup(**setup)
    ours_sd = ours.state_dict()
    stock_sd = {k: v for k, v in stock.state_dict().items() if not k.startswith("lpips.")}
    assert sorted(ours_sd) == sorted(stock_sd)
    for k, v in stock_sd.items():
        assert torch.equal(ours_sd[k], v), k
    assert ours.strategy == stock.strategy and ours.strategy_state == stock.strategy_state
    torch.testing.assert_close(ours.background_color, stock.background_color, rtol=0, atol=0)
    assert set(ours._modules) | {"lpips"} == set(stock._modules) and set(vars(ours)) - {"lpips"} == set(vars(stock))
    assert ours.step == stock.step == 0 and ours.crop_box is stock.crop_box is None

    if lpips_weights.weights_present(("alex",)):  # the evaluation metrics, with one AlexNet backbone in both
        lpips_weights.load_backbone(stock.lpips.net.net, "alex")
        gt = torch.rand(64, 96, 3, generator=g)  # AlexNet's pooling needs more than 32 pixels a side
        outputs = {"rgb": (gt + 0.1 * torch.randn(64, 96, 3, generator=g)).clamp(0, 1), "background": torch.ones(3)}
        for m in (ours, stock):
            m.eval()
        ours_metrics, _ = ours.get_image_metrics_and_images(outputs, {"image": gt})
        stock_metrics, _ = stock.get_image_metrics_and_images(outputs, {"image": gt})
        assert set(ours_metrics) == {"psnr", "ssim", "lpips"} and ours_metrics["lpips"] > 0.01
        assert ours_metrics == pytest.approx(stock_metrics, rel=1e-5)  # LPIPS: float rounding (1.5e-6 measured)


def test_state_dict_round_trip_drops_lpips_keys():
    model, _, _ = _model(n=120)
    sd = model.state_dict()
    sd["lpips.net.lin0.model.1.weight"] = torch.zeros(1, 64, 1, 1)  # as in stock splatfacto checkpoints
    fresh, _, _ = _model(n=50, seed=3)
    fresh.load_state_dict(sd)
    assert fresh.num_points == 120
    torch.testing.assert_close(fresh.means, model.means)


def _train_step(model, optimizers, camera, step, gt):
    model.train()
    model.step_cb(optimizers, step)
    optimizers.zero_grad_all()
    out = model.get_outputs(camera)
    batch = {"image": gt}  # full resolution: splatfacto downscales the target itself
    loss = sum(model.get_loss_dict(out, batch).values())
    loss.backward()
    optimizers.optimizer_step_all()
    model.step_post_backward(step)
    return out, loss


def test_train_steps_and_densification():
    # Densify from step 2 on: refine_every=2, warm-up 1, every Gaussian's gradient above threshold.
    model, _, _ = _model(
        sh_degree=1, warmup_length=1, refine_every=2, reset_alpha_every=100, densify_grad_thresh=1e-12,
        cull_alpha_thresh=0.001, background_color="white",
    )
    model.strategy.pause_refine_after_reset = 0
    optimizers = _optimizers(model)
    cams = _cameras()
    gt = torch.rand(24, 32, 3, generator=torch.Generator().manual_seed(1))
    n0 = model.num_points
    means_before = model.means.detach().clone()

    out, loss = _train_step(model, optimizers, cams[0:1], 1, gt)
    assert torch.isfinite(loss)
    # Resolution schedule: downscale 2 at step 1 -> 12 x 16 render.
    assert out["rgb"].shape == (12, 16, 3) and out["accumulation"].shape == (12, 16, 1)
    assert out["accumulation"].max() > 0.3, "seed points should be visible"
    assert not torch.equal(model.means.detach(), means_before), "optimizer step must move the means"
    state = model.strategy_state
    assert state["count"].shape == (n0,) and state["count"].sum() > 0
    assert state["grad2d"].sum() > 0, "means2d gradient statistics must be collected"

    _train_step(model, optimizers, cams[1:2], 2, gt)
    assert model.num_points > n0, "densification must duplicate/split Gaussians"
    # Optimizer state follows the new Gaussian count.
    for name, opt in optimizers.optimizers.items():
        if name in model.gauss_params:
            st = opt.state[opt.param_groups[0]["params"][0]]
            assert st["exp_avg"].shape[0] == model.num_points
    out, loss = _train_step(model, optimizers, cams[2:3], 3, gt)
    assert torch.isfinite(loss)


def test_eval_outputs_full_resolution_with_depth():
    model, _, _ = _model(sh_degree=1)
    model.eval()
    with torch.no_grad():
        out = model.get_outputs_for_camera(_cameras()[1:2])
    assert out["rgb"].shape == (24, 32, 3)
    assert out["depth"].shape == (24, 32, 1)
    covered = out["accumulation"][..., 0] > 0.5
    assert covered.any()
    d = out["depth"][..., 0][covered]
    # Camera 2.64 units from the origin, points within ~1.2 of it: expected depth roughly 1.2 .. 4.
    assert d.min() > 0.8 and d.max() < 4.5


def _write_nerfstudio_scene(root: Path, n=6, H=24, W=32):
    """Tiny nerfstudio-format scene (transforms.json + PNGs), random images of a coloured blob."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    frames = []
    rng = np.random.default_rng(0)
    for i, c2w in enumerate(_ring_c2w(n)):
        img = (rng.random((H, W, 3)) * 255).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"frame_{i:03d}.png")
        m = np.eye(4)
        m[:3] = c2w.numpy()
        frames.append({"file_path": f"images/frame_{i:03d}.png", "transform_matrix": m.tolist()})
    meta = {"w": W, "h": H, "fl_x": 0.9 * W, "fl_y": 0.9 * W, "cx": W / 2, "cy": H / 2,
            "camera_model": "OPENCV", "k1": 0, "k2": 0, "p1": 0, "p2": 0, "frames": frames}
    (root / "transforms.json").write_text(json.dumps(meta))


@pytest.mark.slow
def test_ns_train_two_iterations(tmp_path):
    data = tmp_path / "scene"
    _write_nerfstudio_scene(data)
    env = dict(os.environ)
    env["NERFSTUDIO_METHOD_CONFIGS"] = "splatfacto-cpu=tttlrm_ns.ns.splatfacto_cpu:splatfacto_cpu_method"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [
        sys.executable, "-m", "nerfstudio.scripts.train", "splatfacto-cpu",
        "--max-num-iterations", "2", "--vis", "tensorboard", "--output-dir", str(tmp_path / "out"),
        "--steps-per-save", "1", "--save-only-latest-checkpoint", "True",
        "--pipeline.model.random-init", "True", "--pipeline.model.num-random", "400",
        "--pipeline.model.sh-degree", "1",
        "nerfstudio-data", "--data", str(data), "--load-3D-points", "False",
    ]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ckpts = list((tmp_path / "out").rglob("step-*.ckpt"))
    assert ckpts, "ns-train must save a checkpoint"
    state = torch.load(ckpts[0], map_location="cpu", weights_only=False)
    means = state["pipeline"]["_model.gauss_params.means"]
    assert means.shape == (400, 3) and torch.isfinite(means).all()

"""Refinement of the predicted Gaussians: schedules, starting set, loss decrease, time budget, refined checkpoints.

Runs nerfstudio's Trainer in-process on the ``mydesk_mini`` fixture (10 frames) with a tiny random-weight
backbone; the nerfstudio commands (ns-eval, ns-export) run as subprocesses on a refined run.
"""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tttlrm_ns.gaussians import Gaussians
from tttlrm_ns.ns.refine import RefineConfig, RefineController, prepare_gaussians

REPO = Path(__file__).resolve().parents[1]
SCENE = REPO / "tests" / "assets" / "mydesk_mini"
BIN = Path(sys.executable).parent


def _trainer(checkpoint: Path, out: Path, **refine):
    from tttlrm_ns import method_configs as mc

    cfg = copy.deepcopy(mc.tttlrm_config)
    cfg.pipeline.datamanager.data = SCENE
    cfg.pipeline.model.checkpoint = checkpoint
    cfg.pipeline.views.num_views = 4
    cfg.pipeline.input_long_side = 128
    cfg.pipeline.model.refine = RefineConfig(**refine)
    cfg.machine.device_type = "cpu"
    cfg.output_dir, cfg.vis = out, "tensorboard"
    cfg.max_num_iterations = None
    cfg.set_timestamp()
    trainer = cfg.setup(local_rank=0, world_size=1)
    trainer.setup()
    return trainer


def _gaussians(n: int) -> Gaussians:
    g = torch.Generator().manual_seed(0)
    return Gaussians(
        means=torch.randn(n, 3, generator=g), sh=torch.randn(n, 4, 3, generator=g),
        log_scales=torch.randn(n, 3, generator=g), quats=torch.randn(n, 4, generator=g),
        opacity_logits=torch.randn(n, 1, generator=g),
    )


# --- configuration and schedules ------------------------------------------------------------------------------
def test_progress_is_the_larger_of_steps_and_time():
    cfg = RefineConfig(steps=100, seconds=10.0)
    assert cfg.progress(10, 0.0) == pytest.approx(0.1)
    assert cfg.progress(10, 5.0) == pytest.approx(0.5)  # time binds
    assert cfg.progress(90, 5.0) == pytest.approx(0.9)  # steps bind
    assert cfg.progress(500, 50.0) == 1.0
    assert RefineConfig(steps=100).progress(50, 1e6) == pytest.approx(0.5)  # no time budget: steps only


def test_resolution_halves_evenly_until_full_resolution():
    cfg = RefineConfig(steps=100, initial_downscale=4, full_resolution_at=0.5)
    assert [cfg.downscale_at(p) for p in (0.0, 0.24, 0.25, 0.49, 0.5, 1.0)] == [4, 4, 2, 2, 1, 1]
    assert RefineConfig(steps=100, initial_downscale=1).downscale_at(0.0) == 1
    # the default ends the budget at 1/2 resolution (full-resolution steps did not pay within 2 minutes)
    assert [RefineConfig(steps=100).downscale_at(p) for p in (0.0, 0.49, 0.5, 0.99)] == [4, 4, 2, 2]


def test_learning_rates_decay_to_the_final_factor():
    cfg = RefineConfig(steps=10, lr_means=1e-3, lr_final_factor=0.1)
    opt = {"means": torch.optim.Adam([torch.nn.Parameter(torch.zeros(3))], lr=1.0)}
    ctl = RefineController(cfg)
    ctl.before_step(0, opt)
    assert opt["means"].param_groups[0]["lr"] == pytest.approx(1e-3)
    for s in range(5):
        ctl.after_step(None, s)
    ctl.before_step(5, opt)
    assert opt["means"].param_groups[0]["lr"] == pytest.approx(1e-3 * 0.1**0.5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"steps": 5, "seconds": 0.0}, "refine.seconds must be > 0"),
        ({"steps": 5, "initial_downscale": 3}, "power of two"),
        ({"steps": 5, "max_gaussians": 0}, "max_gaussians must be >= 1"),
        ({"steps": 5, "max_opacity": 1.0}, "max_opacity must lie in"),
    ],
)
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RefineConfig(**kwargs)


def test_time_budget_needs_an_upper_bound_of_steps():
    with pytest.raises(ValueError, match="refine.seconds is set but there are no refinement steps"):
        RefineController(RefineConfig(steps=0, seconds=5.0))


def test_starting_set_keeps_the_most_opaque_in_prediction_order():
    g = _gaussians(100)
    out = prepare_gaussians(g, RefineConfig(steps=1, max_gaussians=30, reduce="opacity"))
    assert out.num == 30
    top = torch.topk(g.opacity_logits[:, 0], 30).indices.sort().values
    assert torch.equal(out.means, g.means[top]) and torch.equal(out.sh, g.sh[top])
    capped = prepare_gaussians(g, RefineConfig(steps=1, max_opacity=0.5))
    assert capped.num == 100 and capped.opacity_logits.max() <= 0.0 + 1e-6
    assert torch.equal(capped.opacity_logits.clamp(max=0.0), torch.minimum(g.opacity_logits, torch.zeros(1)))


def test_merge_matches_the_moments_of_each_cell():
    """Two cells far apart: a lone Gaussian is kept as it is; a pair becomes one Gaussian with the pair's
    opacity-weighted mean, SH and covariance (spread included) and the larger opacity."""
    from tttlrm_ns.ns.refine import merge_gaussians
    from tttlrm_ns.render.reference import quat_scale_to_covar

    g = Gaussians(
        means=torch.tensor([[0.0, 0.0, 0.0], [0.01, 0.0, 0.0], [5.0, 5.0, 5.0]]),
        sh=torch.randn(3, 4, 3, generator=torch.Generator().manual_seed(1)),
        log_scales=torch.log(torch.tensor([[0.01, 0.02, 0.03], [0.02, 0.02, 0.02], [0.1, 0.2, 0.3]])),
        quats=torch.nn.functional.normalize(torch.randn(3, 4, generator=torch.Generator().manual_seed(2)), dim=-1),
        opacity_logits=torch.logit(torch.tensor([[0.2], [0.6], [0.9]])),
    )
    out = merge_gaussians(g, 2)
    assert out.num == 2
    lone = int(torch.argmax(out.means[:, 0]))
    pair = 1 - lone
    cov = quat_scale_to_covar(out.quats, out.log_scales.exp())
    ref = quat_scale_to_covar(g.quats, g.log_scales.exp())
    assert torch.allclose(out.means[lone], g.means[2]) and torch.allclose(cov[lone], ref[2], atol=1e-6)
    w = torch.tensor([0.2, 0.6]) / 0.8
    mu = (w[:, None] * g.means[:2]).sum(0)
    d = g.means[:2] - mu
    expected = (w[:, None, None] * (ref[:2] + d[:, :, None] * d[:, None, :])).sum(0)
    assert torch.allclose(out.means[pair], mu, atol=1e-6)
    assert torch.allclose(cov[pair], expected, atol=1e-7)
    assert torch.allclose(out.sh[pair], (w[:, None, None] * g.sh[:2]).sum(0), atol=1e-6)
    assert torch.sigmoid(out.opacity_logits[pair]).item() == pytest.approx(0.6, abs=1e-5)


# --- through nerfstudio's Trainer ------------------------------------------------------------------------------
def _mean_input_loss(trainer) -> float:
    """Refinement loss (L1 + SSIM) at full resolution averaged over every input view."""
    pipe = trainer.pipeline
    model = pipe.model
    dm = pipe.datamanager
    total = 0.0
    with torch.no_grad():
        model.eval()
        for i in pipe.input_indices:
            cam = dm.train_cameras[i : i + 1]
            out = model.get_outputs(cam)
            out["background"] = model._get_background_color()
            total += float(model.get_loss_dict(out, dict(dm.cached_train[i]))["main_loss"])
        model.train()
    return total / len(pipe.input_indices)


def test_refinement_lowers_the_training_loss(tiny_checkpoint, tmp_path):
    trainer = _trainer(tiny_checkpoint, tmp_path, steps=24, max_gaussians=3000, initial_downscale=2,
                       lr_means=1e-3, lr_features_dc=0.02, lr_opacities=0.05, lr_scales=0.01)
    model = trainer.pipeline.model
    n = model.num_points
    assert 2500 < n <= 3000  # merged to the budget before the optimisers were built
    assert trainer.optimizers.optimizers["means"].param_groups[0]["params"][0].shape[0] == n
    before = _mean_input_loss(trainer)
    trainer.train()
    after = _mean_input_loss(trainer)
    assert model.refine_controller.steps_done == 24
    assert after < 0.9 * before, (before, after)


def test_time_budget_stops_refinement_and_saves_a_checkpoint(tiny_checkpoint, tmp_path):
    trainer = _trainer(tiny_checkpoint, tmp_path, steps=100000, seconds=0.5, max_gaussians=2000)
    trainer.train()
    ctl = trainer.pipeline.model.refine_controller
    assert ctl.stopped_by_time
    assert 1 <= ctl.steps_done < 100000
    assert sorted(Path(trainer.checkpoint_dir).glob("step-*.ckpt"))


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "2")
    res = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, f"{args[0]} failed:\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}"
    return res


def test_refined_run_loads_in_eval_export_and_viewer(tiny_checkpoint, tmp_path):
    """ns-train with a time-bounded refinement on a reduced set; ns-eval, ns-export and the viewer's loader read it."""
    _run(
        [
            str(BIN / "ns-train"), "tttlrm", "--data", str(SCENE), "--output-dir", str(tmp_path), "--timestamp", "r",
            "--pipeline.model.checkpoint", str(tiny_checkpoint), "--pipeline.views.num-views", "4",
            "--pipeline.input-long-side", "128", "--vis", "tensorboard",
            "--pipeline.model.refine.steps", "4", "--pipeline.model.refine.seconds", "600",
            "--pipeline.model.refine.max-gaussians", "1500", "--pipeline.model.refine.initial-downscale", "2",
        ],
        cwd=tmp_path,
    )
    run = tmp_path / "mydesk_mini" / "tttlrm" / "r"
    config = run / "config.yml"
    _run([str(BIN / "ns-eval"), "--load-config", str(config), "--output-path", str(tmp_path / "m.json")], tmp_path)
    import json

    metrics = json.loads((tmp_path / "m.json").read_text())["results"]
    assert math.isfinite(metrics["psnr"])
    _run([str(BIN / "ns-export"), "gaussian-splat", "--load-config", str(config), "--output-dir", str(tmp_path / "e")],
         tmp_path)
    ply = (tmp_path / "e" / "splat.ply").read_bytes()
    header = ply[: ply.index(b"end_header")].decode()
    n = int(header.split("element vertex ")[1].split()[0])
    assert 1000 < n <= 1500  # the merged set, not the full prediction

    # ns-viewer loads the run with nerfstudio's eval_setup (test_mode="test"); render one view through it
    from nerfstudio.utils.eval_utils import eval_setup

    cwd = os.getcwd()
    os.chdir(tmp_path)  # config.yml stores the output dir relative to the ns-train working directory
    try:
        _, pipeline, _, _ = eval_setup(config, test_mode="test")
    finally:
        os.chdir(cwd)
    assert pipeline.model.num_points == n
    cam = pipeline.datamanager.eval_dataset.cameras[0:1]
    with torch.no_grad():
        rgb = pipeline.model.get_outputs_for_camera(cam)["rgb"]
    assert rgb.shape == (int(cam.height), int(cam.width), 3) and torch.isfinite(rgb).all()


def test_refinement_runs_on_a_degree_0_prediction(tmp_path):
    """A degree-0 backbone (the scene model's) is stored without SH bands (features_rest [N, 0, 3]); the
    optimisers and the refinement steps handle the empty group."""
    from tttlrm_ns.model import TttlrmModel, presets
    from tttlrm_ns.model.checkpoint import save_model

    torch.manual_seed(0)
    ckpt = tmp_path / "tiny0.safetensors"
    save_model(TttlrmModel(presets.tiny(sh_degree=0)), ckpt)
    trainer = _trainer(ckpt, tmp_path, steps=3, max_gaussians=1000, initial_downscale=2)
    model = trainer.pipeline.model
    assert model.config.sh_degree == 0 and model.features_rest.shape == (model.num_points, 0, 3)
    dc = model.features_dc.detach().clone()
    trainer.train()
    assert model.refine_controller.steps_done == 3
    assert model.features_rest.shape == (model.num_points, 0, 3)
    assert not torch.equal(model.features_dc, dc) and torch.isfinite(model.features_dc).all()

"""The held-out evaluation (``tttlrm_ns.train.holdout``) predicts through ``tttlrm_ns.infer.reconstruct`` with the
nerfstudio pipeline's defaults: it scores what a user gets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from tttlrm_ns.data.scene import ResizeConfig, load_scene, load_views
from tttlrm_ns.geometry.free_space import FreeSpaceConfig
from tttlrm_ns.infer import ReconstructConfig, normalise_for_model, reconstruct
from tttlrm_ns.model import TttlrmModel
from tttlrm_ns.train.config import load_yaml_config
from tttlrm_ns.train.holdout import (HoldoutConfig, choose_views, predict_novel_views, reconstruct_config,
                                     render_novel_views)

REPO = Path(__file__).resolve().parents[1]
SCENE = REPO / "tests" / "assets" / "object_sample"  # 32 frames at 64x64 on a sphere


def _cfg(sampling: str = "window"):
    cfg = load_yaml_config(REPO / "configs" / "tiny_cpu.yaml")
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, height=32, width=32, sampling=sampling))


def _same(a, b):
    for f in ("means", "sh", "log_scales", "quats", "opacity_logits"):
        torch.testing.assert_close(getattr(a, f), getattr(b, f), rtol=0, atol=0)


@pytest.mark.parametrize("rc", [None, ReconstructConfig(free_space=FreeSpaceConfig(tolerance=0.2, min_views=1),
                                                        footprint_filter=0.3, chunk_views=3, seed=5)],
                         ids=["pipeline-defaults", "given"])
def test_holdout_prediction_is_reconstruct(rc):
    cfg = _cfg()
    torch.manual_seed(0)
    model = TttlrmModel(cfg.model).eval()
    scene = load_scene(SCENE)
    inputs, targets = choose_views(scene.c2w, 4, 2, "sphere", 0)
    with torch.no_grad():
        nv = predict_novel_views(model, cfg, scene, inputs, targets, 1, rc)
    used = rc if rc is not None else ReconstructConfig.for_kind("scene")
    assert nv.footprint_filter == used.footprint_filter
    # what a user's run does: the views at the run's size, normalised once from the world cameras, reconstruct
    vin = load_views(scene, inputs, ResizeConfig(height=32, width=32, mode=cfg.data.resize_mode, orientation="fixed",
                                                 patch_size=cfg.model.patch_size,
                                                 background=tuple(cfg.data.background)))
    norm = normalise_for_model(vin.images, scene.c2w[inputs], vin.fxfycxcy, cfg.data.normalize,
                               cfg.data.normalize_scale)
    ref = reconstruct(model, vin.images, norm.c2w.float(), vin.fxfycxcy.float(), used)
    assert ref.num > 0
    _same(nv.gaussians, ref)
    render = render_novel_views(nv, cfg)
    assert render.shape == (len(targets), 3, 32, 32) and torch.isfinite(render).all()


def test_holdout_defaults_are_the_pipelines_for_the_kind():
    assert reconstruct_config(_cfg("window")) == ReconstructConfig.for_kind("scene") == ReconstructConfig()
    assert reconstruct_config(_cfg("random")) == ReconstructConfig.for_kind("object")
    given = ReconstructConfig(footprint_filter=0.0)
    assert reconstruct_config(_cfg(), given) is given
    # no second default for any reconstruct knob: unset means the pipeline's
    hc = HoldoutConfig(scenes=("x",))
    assert hc.footprint_filter is None and hc.free_space_tolerance is None


def test_pipeline_defaults_are_reconstruct_config():
    pytest.importorskip("nerfstudio")
    from tttlrm_ns.ns.pipeline import TttlrmPipelineConfig

    p, r = TttlrmPipelineConfig(), ReconstructConfig()
    assert (p.prune, p.free_space, p.footprint_filter, p.chunk_views) == (r.prune, r.free_space, r.footprint_filter,
                                                                          r.chunk_views)


def test_evaluate_reports_the_reconstruct_config():
    import json

    from tttlrm_ns.train.holdout import evaluate

    cfg = _cfg()
    torch.manual_seed(0)
    res = evaluate(TttlrmModel(cfg.model), cfg, [SCENE], 4, 1, "sphere", 0)
    assert res["reconstruct"] == dataclasses.asdict(ReconstructConfig.for_kind("scene"))
    assert res["num_scenes"] == 1 and res["psnr"] == res["psnr"]  # not NaN
    json.dumps(res)

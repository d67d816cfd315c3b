"""Which weights a tttLRM method loads: per-method defaults, trained.* metadata checked against the method, the scan
of official .pt files, and the automatic input size (never upsampled). No prediction runs here (fast)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from tttlrm_ns import BUNDLED_CHECKPOINT
from tttlrm_ns.geometry.free_space import FreeSpaceConfig
from tttlrm_ns.model import TttlrmModel, presets
from tttlrm_ns.model.checkpoint import TrainedFor, read_trained_for, save_model
from tttlrm_ns.ns import pipeline as pl
from tttlrm_ns.ns.pipeline import PredictionError


class _Pipe(pl.TttlrmPipeline):
    """The pipeline's weight / size logic without a datamanager (nothing is loaded or predicted)."""

    device = "cpu"

    def __init__(self, config):  # noqa: D107  (no nerfstudio setup)
        torch.nn.Module.__init__(self)
        self.config = config


def _pipe(method: str = "tttlrm", checkpoint=None, **changes):
    from tttlrm_ns import method_configs as mc

    base = {"tttlrm": mc.tttlrm_config, "tttlrm-ar": mc.tttlrm_ar_config, "tttlrm-object": mc.tttlrm_object_config,
            "tttlrm-refine3": mc.tttlrm_refine3_config}
    cfg = copy.deepcopy(base[method].pipeline)
    cfg.model.checkpoint = checkpoint
    for k, v in changes.items():
        setattr(cfg, k, v)
    return _Pipe(cfg)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return TttlrmModel(presets.tiny())


def _weights(tmp_path, model, name="w.safetensors", **trained):
    rec = dict(kind="scene", scan="full", normalization="mean_cam", resolution="72x128", background="white")
    rec.update(trained)
    return save_model(model, tmp_path / name, trained_for=TrainedFor(**rec))


def test_metadata_round_trip_and_old_files(tmp_path, tiny_model):
    path = _weights(tmp_path, tiny_model, kind="object", scan="ar", background="0.5,0.5,0.5")
    rec, missing = read_trained_for(path)
    assert missing == [] and (rec.kind, rec.scan, rec.background) == ("object", "ar", "0.5,0.5,0.5")
    old = save_model(tiny_model, tmp_path / "old.safetensors")
    rec, missing = read_trained_for(old)
    assert rec is None and missing == ["kind", "scan", "normalization", "resolution", "background", "preset"]


def test_bundled_weights_record_what_they_were_trained_for():
    rec, missing = read_trained_for(BUNDLED_CHECKPOINT)
    assert missing == [] and (rec.kind, rec.scan, rec.normalization, rec.background) == (
        "scene", "full", "mean_cam", "white")


@pytest.mark.parametrize(
    "method, trained, message",
    [
        ("tttlrm", dict(kind="object"), r"trained for objects, this method reconstructs scenes: use ns-train "
                                        r"tttlrm-object"),
        ("tttlrm-object", dict(kind="scene"), r"trained for scenes.*use ns-train tttlrm\b"),
        ("tttlrm", dict(scan="ar", normalization="first_cam"),
         r"trained for the autoregressive scan, this run uses the full scan: use ns-train tttlrm-ar"),
        ("tttlrm-ar", dict(), r"trained for the full scan, this run uses the autoregressive scan: use ns-train "
                              r"tttlrm\b"),
        ("tttlrm", dict(normalization="first_cam"), r"use --pipeline.normalization first_cam"),
        ("tttlrm", dict(background="black"), r"use --pipeline.model.background-color black"),
    ],
)
def test_weights_of_another_method_are_refused(tmp_path, tiny_model, method, trained, message):
    path = _weights(tmp_path, tiny_model, **trained)
    with pytest.raises(PredictionError, match=message) as e:
        _pipe(method, path).resolve_model_config()
    assert str(path) in str(e.value) and "--pipeline.check-weights False" in str(e.value)
    _pipe(method, path, check_weights=False).resolve_model_config()  # explicit override runs them


def test_matching_weights_load_and_the_log_names_the_file(tmp_path, tiny_model, monkeypatch):
    logs = []
    monkeypatch.setattr(pl.CONSOLE, "log", lambda *a, **k: logs.append(" ".join(map(str, a))))
    path = _weights(tmp_path, tiny_model, scan="ar", normalization="first_cam")
    got, cfg = _pipe("tttlrm-ar", path).resolve_model_config()
    assert got == path and cfg.scan == "ar"
    assert any(str(path) in m and "--pipeline.model.checkpoint" in m and "autoregressive" not in m for m in logs)
    logs.clear()
    old = save_model(tiny_model, tmp_path / "old.safetensors")  # no trained.* keys: loads, with a warning
    _pipe("tttlrm", old).resolve_model_config()
    warning = next(m for m in logs if "has no" in m)
    assert "trained.kind" in warning and "cannot check" in warning and "background" in warning


def test_bundled_weights_fit_their_methods():
    """Every bundled default present in this checkout passes its own method's trained.* check."""
    for method in ("tttlrm", "tttlrm-ar", "tttlrm-object"):
        p = _pipe(method)
        try:
            path = p.default_weights()
        except PredictionError:
            continue  # not bundled yet (tested below)
        assert p.resolve_model_config()[0] == path


def _record_weight_reads(monkeypatch) -> list:
    """Every path whose tensors or header the pipeline reads (all weight access goes through these functions)."""
    from tttlrm_ns.model import checkpoint as ck

    reads = []

    def recording(real):
        def wrapper(path, *args, **kwargs):
            reads.append(Path(path))
            return real(path, *args, **kwargs)
        return wrapper

    for name in ("read_config", "read_trained_for", "read_metadata", "load_any", "load_model"):
        monkeypatch.setattr(ck, name, recording(getattr(ck, name)))
    return reads


def test_missing_scene_weights_stop_the_run_instead_of_loading_the_demo_weights(tmp_path, tiny_model, monkeypatch):
    """Only the superseded demo model installed: ``tttlrm`` stops with one message naming the missing scene weights
    and the flag (and the demo file as an explicit choice), and never reads the demo file."""
    monkeypatch.setattr(pl, "WEIGHTS_DIR", tmp_path)
    demo = tmp_path / BUNDLED_CHECKPOINT.name
    demo.symlink_to(BUNDLED_CHECKPOINT)
    reads = _record_weight_reads(monkeypatch)
    for method in ("tttlrm", "tttlrm-refine3"):
        with pytest.raises(PredictionError) as e:
            _pipe(method).resolve_model_config()
        msg = str(e.value)
        assert f"{tmp_path / 'tttlrm_scene.safetensors'} is missing" in msg, msg
        assert "Pass --pipeline.model.checkpoint PATH" in msg
        assert f"to run them, pass --pipeline.model.checkpoint {demo}" in msg  # the demo only as an explicit choice
    assert reads == [], f"weights were read although the run stopped: {reads}"
    # Asked for by path, the demo weights load as any other weights of this method.
    path, cfg = _pipe("tttlrm", demo).resolve_model_config()
    assert path == demo and cfg.d == 128 and reads and set(reads) == {demo}


def test_default_weights_per_method_never_borrowed(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setattr(pl, "WEIGHTS_DIR", tmp_path)  # only the superseded demo model installed
    (tmp_path / BUNDLED_CHECKPOINT.name).symlink_to(BUNDLED_CHECKPOINT)
    for method, expected in (("tttlrm", "tttlrm_scene.safetensors"), ("tttlrm-ar", "tttlrm_scene_ar.safetensors"),
                             ("tttlrm-object", "tttlrm_object.safetensors")):
        with pytest.raises(PredictionError, match=rf"{method} .*no bundled weights: .*{expected} is missing.* not "
                                                  r"substituted.*--pipeline.model.checkpoint") as e:
            _pipe(method).resolve_model_config()
        # the demo model is a scene full-scan model: named as an explicit choice only where it would fit
        assert ("superseded demo weights" in str(e.value)) == (method == "tttlrm"), str(e.value)
    # each method's own file is its default
    _weights(tmp_path, tiny_model, name="tttlrm_scene.safetensors")
    assert _pipe("tttlrm").default_weights() == tmp_path / "tttlrm_scene.safetensors"
    _weights(tmp_path, tiny_model, name="tttlrm_object.safetensors", kind="object")
    path, _ = _pipe("tttlrm-object").resolve_model_config()
    assert path == tmp_path / "tttlrm_object.safetensors"


def test_official_pt_scan_is_never_guessed_silently(tmp_path):
    for name in ("mine.pt", "dl3dv_full.pt", "dl3dv_ar.pt"):
        (tmp_path / name).write_bytes(b"")  # resolve_model_config reads no tensors
    with pytest.raises(PredictionError, match=r"does not record its architecture or scan.*model-preset official_full"):
        _pipe("tttlrm", tmp_path / "mine.pt").resolve_model_config()
    with pytest.raises(PredictionError, match=r"autoregressive scan.*use ns-train tttlrm-ar \(with "
                                              r"--pipeline.model.model-preset official_ar\)"):
        _pipe("tttlrm", tmp_path / "dl3dv_ar.pt").resolve_model_config()
    _, cfg = _pipe("tttlrm-ar", tmp_path / "dl3dv_ar.pt").resolve_model_config()
    assert cfg.scan == "ar" and cfg.d == 768
    p = _pipe("tttlrm", tmp_path / "mine.pt")
    p.config.model.model_preset = "official_ar"  # explicit preset of the AR model under the full-scan method
    with pytest.raises(PredictionError, match="use ns-train tttlrm-ar"):
        p.resolve_model_config()
    p = _pipe("tttlrm", tmp_path / "dl3dv_full.pt")
    p.config.model.model_preset = "official_ar"
    with pytest.raises(PredictionError, match=r"released official_full checkpoint.*model-preset official_full"):
        p.resolve_model_config()


def test_automatic_input_size_never_upsamples():
    p = _pipe("tttlrm")
    assert p._long_side(512, 512, 8)[0] == 256  # CPU cap
    side, why = p._long_side(200, 112, 8)
    assert side is None and "never upsampled" in why  # smaller than the cap: stored size
    p.device = "cuda"
    assert p._long_side(512, 512, 8)[0] is None and p._long_side(1920, 1080, 8)[0] == 960
    assert _pipe("tttlrm-object")._long_side(1024, 1024, 16)[0] == 64  # the bundled object model's training size
    o = _pipe("tttlrm-object")
    o.device = "cuda"
    assert o._long_side(1024, 1024, 16)[0] == 512 and o._long_side(512, 512, 16)[0] is None
    side, why = _pipe("tttlrm", input_long_side=960)._long_side(512, 512, 8)
    assert side == 960 and "upsampled, as asked" in why


def test_log_says_gaussian_count_and_export_size_before_predicting(monkeypatch):
    from types import SimpleNamespace

    logs = []
    monkeypatch.setattr(pl.CONSOLE, "log", lambda *a, **k: logs.append(" ".join(map(str, a))))
    p = _pipe("tttlrm")
    p._model = SimpleNamespace(config=SimpleNamespace(sh_degree=3))  # what VanillaPipeline.model returns
    p._log_output_size(32, 144, 256, 3)
    kept = int(32 * 144 * 256 * (0.4 + 0.6 * 0.1) + 0.999)
    assert f"will make at most {kept:,} Gaussians" in logs[0]  # the free-space filter may remove more
    p.config.free_space = FreeSpaceConfig(tolerance=0.0)
    p._log_output_size(32, 144, 256, 3)
    assert f"will make {kept:,} Gaussians" in logs.pop()
    assert f"{kept * 62 * 4 / 2**20:,.0f} MiB" in logs[0] and "62 float32" in logs[0]
    p._log_output_size(32, 144, 256, 0)  # a degree-0 backbone: the export has no f_rest columns
    assert f"{kept * 17 * 4 / 2**20:,.0f} MiB" in logs[1] and "17 float32" in logs[1]

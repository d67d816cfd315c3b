"""Official checkpoint import (strict) and our safetensors format."""

import json
from pathlib import Path

import pytest
import torch

from tttlrm_ns.model import TttlrmModel, presets
from tttlrm_ns.model.checkpoint import (
    CheckpointError,
    load_any,
    load_model,
    load_official_checkpoint,
    save_model,
)

SHAPES = Path(__file__).parent / "assets/reference/official_full_config_state_dict_shapes.json"


def test_official_preset_matches_released_state_dict():
    ref = json.loads(SHAPES.read_text())
    with torch.device("meta"):
        m = TttlrmModel(presets.official_full())
    mine = {k: list(v.shape) for k, v in m.state_dict().items()}
    assert mine == ref["state_dict_shapes"]
    assert len(mine) == ref["num_keys"] == 412
    assert m.num_parameters() == ref["num_parameters"] == 399_985_224


def _tiny(seed=0):
    torch.manual_seed(seed)
    return TttlrmModel(presets.tiny(ns_dtype="float32")).eval()


def _run(m):
    g = torch.Generator().manual_seed(1)
    images = torch.rand(1, 2, 3, 8, 16, generator=g)
    c2w = torch.eye(4).repeat(1, 2, 1, 1)
    c2w[0, 1, 0, 3] = 0.5
    k = torch.tensor([14.0, 14.0, 8.0, 4.0]).repeat(1, 2, 1)
    with torch.no_grad():
        return m(images, c2w, k).raw


def test_safetensors_round_trip(tmp_path):
    m = _tiny()
    path = save_model(m, tmp_path / "sub" / "model.safetensors")
    assert [p.name for p in path.parent.iterdir()] == ["model.safetensors"]  # no temp leftovers
    m2 = load_model(path)
    assert m2.cfg == m.cfg
    torch.testing.assert_close(_run(m), _run(m2), rtol=0, atol=0)
    # run-time options can be changed at load time, shapes cannot
    assert load_model(path, scan="ar", ar_chunk_views=1).cfg.scan == "ar"


def test_save_is_atomic(tmp_path, monkeypatch):
    m = _tiny()
    path = save_model(m, tmp_path / "model.safetensors")
    before = path.read_bytes()
    import safetensors.torch as st

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(st, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_model(_tiny(seed=1), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def _official_file(tmp_path, state, name="official.pt"):
    path = tmp_path / name
    torch.save({"model": state, "optimizer": {}, "param_update_steps_done": 7}, path)
    return path


def test_official_checkpoint_loads_and_ignores_auxiliary(tmp_path):
    src = _tiny(seed=3)
    state = dict(src.state_dict())
    state["depth_anything.pretrained.cls_token"] = torch.zeros(1, 1, 4)
    state["perceptual_loss_module.Net.conv1.weight"] = torch.zeros(2)
    path = _official_file(tmp_path, state)
    dst = load_official_checkpoint(_tiny(seed=4), path)
    torch.testing.assert_close(_run(dst), _run(src), rtol=0, atol=0)
    # load_any dispatches on the suffix and builds the model from the given config
    m = load_any(path, cfg=presets.tiny(ns_dtype="float32"))
    torch.testing.assert_close(_run(m), _run(src), rtol=0, atol=0)


def test_official_checkpoint_errors_name_keys_and_load_nothing(tmp_path):
    src = _tiny(seed=3)
    target = _tiny(seed=4)
    before = {k: v.clone() for k, v in target.state_dict().items()}

    state = dict(src.state_dict())
    del state["blocks.1.module_list.1.f.w0"]
    state["blocks.0.module_list.0.f.c_proj.weight"] = torch.zeros(5, 5)
    state["blocks.9.extra"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as e:
        load_official_checkpoint(target, _official_file(tmp_path, state))
    msg = str(e.value)
    assert "1 missing keys: blocks.1.module_list.1.f.w0" in msg
    assert "1 unexpected keys: blocks.9.extra" in msg
    assert "blocks.0.module_list.0.f.c_proj.weight: file (5, 5) vs model (64, 64)" in msg
    assert "Nothing was loaded" in msg and "official.pt" in msg
    for k, v in target.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} was modified by a failed load"


def test_bad_files(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_official_checkpoint(_tiny(), junk)
    wrong = tmp_path / "wrong.pt"
    torch.save({"state": 1}, wrong)
    with pytest.raises(CheckpointError, match="expected a dict with a 'model' state dict"):
        load_official_checkpoint(_tiny(), wrong)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_official_checkpoint(_tiny(), tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_model(junk.rename(tmp_path / "junk.safetensors"))


def test_official_file_into_wrong_preset_is_rejected(tmp_path):
    path = _official_file(tmp_path, _tiny().state_dict())
    with torch.device("meta"):
        big = TttlrmModel(presets.small_d256(n_layer=1))
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_official_checkpoint(big, path)

"""tttlrm-train checkpoints load without running pickle code (``weights_only=True``), old ones still resume exactly,
and the exported weights record what they were trained for."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_train_support import procedural_scenes, renderer, single_thread, tiny_config  # noqa: F401  (fixtures)
from tttlrm_ns.train import checkpoint as ckpt
from tttlrm_ns.train.loop import Trainer

pytestmark = pytest.mark.usefixtures("single_thread")


def _run(cfg, stop_at=None):
    return Trainer(cfg, rasterize_fn=renderer(), log=lambda m: None, stop_at_step=stop_at)


def test_new_checkpoints_need_no_globals(tmp_path, procedural_scenes):  # noqa: F811
    cfg = tiny_config(tmp_path / "run", procedural_scenes, optim=dict(max_steps=1, batch_size=1))
    _run(cfg).run()
    (_, path), = ckpt.list_checkpoints(tmp_path / "run" / "checkpoints")
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    torch.load(path, weights_only=True)  # plain torch, no allow-list


def _to_legacy(path):
    """Rewrite a checkpoint as the trainer wrote it before: numpy's RNG state as its tuple with a uint32 array."""
    payload = torch.load(path, weights_only=True)
    for r in payload["rng"]:
        n = r["numpy"]
        r["numpy"] = (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    torch.save(payload, path)
    assert "numpy.ndarray" in torch.serialization.get_unsafe_globals_in_checkpoint(path)


def test_old_format_checkpoint_resumes_exactly(tmp_path, procedural_scenes):  # noqa: F811
    sections = dict(optim=dict(max_steps=4, batch_size=1, warmup_steps=1), checkpoint=dict(every=2, keep_last=2))
    full = _run(tiny_config(tmp_path / "full", procedural_scenes, **sections))
    full.run()
    _run(tiny_config(tmp_path / "split", procedural_scenes, **sections), stop_at=2).run()
    _to_legacy(tmp_path / "split" / "checkpoints" / "step_000000002.pt")
    np.random.seed(99)  # disturb numpy's RNG: the resume must restore it from the legacy tuple
    second = _run(tiny_config(tmp_path / "split", procedural_scenes, resume=True, **sections))
    assert second.start_step == 2
    second.run()
    for (k, a), (_, b) in zip(full.model.state_dict().items(), second.model.state_dict().items()):
        assert torch.equal(a, b), f"parameter {k} differs after resuming an old-format checkpoint"


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


def test_checkpoint_with_code_is_refused_and_skipped(tmp_path):
    folder = tmp_path / "ck"
    ckpt.save_checkpoint(folder, 1, {"step": 1, "w": torch.ones(2)}, keep_last=3)
    torch.save({"step": 2, "evil": _Exploit()}, folder / "step_000000002.pt")
    messages = []
    path, payload = ckpt.load_latest(folder, log=messages.append)
    assert payload["step"] == 1 and path.name == "step_000000001.pt"
    assert "step_000000002.pt cannot be loaded" in messages[0] and "os.system" in messages[0].replace("posix", "os")


def test_export_records_what_the_weights_were_trained_for(tmp_path, procedural_scenes):  # noqa: F811
    from tttlrm_ns.model.checkpoint import read_metadata, read_trained_for

    cfg = tiny_config(tmp_path / "run", procedural_scenes, optim=dict(max_steps=1, batch_size=1),
                      checkpoint=dict(export=True), data=dict(normalize="first_cam", background=[0.0, 0.0, 0.0]),
                      model=dict(scan="ar", ar_chunk_views=2))
    summary = _run(cfg).run()
    rec, missing = read_trained_for(summary.export)
    assert missing == []
    assert (rec.kind, rec.scan, rec.normalization, rec.resolution, rec.background, rec.preset) == (
        "scene", "ar", "first_cam", "16x16", "black", "custom")
    assert read_metadata(summary.export)["train_step"] == "1"
    # the CLI exporter of a checkpoint writes the same record; object data (random sampling) is 'object'
    out = ckpt.export_checkpoint(tmp_path / "run" / "checkpoints" / "step_000000001.pt", tmp_path / "e.safetensors")
    assert read_trained_for(out)[0] == rec
    obj = tiny_config(tmp_path / "o", procedural_scenes, data=dict(sampling="random"))
    assert ckpt.trained_for(obj).kind == "object" and ckpt.trained_for(obj).normalization == "mean_cam"

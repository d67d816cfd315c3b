"""Checkpoints: exact resume, atomic writes under a crash, keep-last-k, damaged-file fallback, model export."""

from __future__ import annotations

import os

import pytest
import torch

from test_train_support import procedural_scenes, renderer, single_thread, tiny_config  # noqa: F401  (fixtures)
from tttlrm_ns.train import checkpoint as ckpt
from tttlrm_ns.train.loop import Trainer

pytestmark = pytest.mark.usefixtures("single_thread")


def _run(cfg, stop_at=None):
    return Trainer(cfg, rasterize_fn=renderer(), log=lambda m: None, stop_at_step=stop_at)


def test_resume_is_bitwise_exact(tmp_path, procedural_scenes):  # noqa: F811
    """6 steps in one go == 3 steps, stop, resume for 3 more: identical weights and optimiser state."""
    sections = dict(optim=dict(max_steps=6, batch_size=1, warmup_steps=2), checkpoint=dict(every=2, keep_last=2),
                    data=dict(num_input_views=[2, 4]))  # mixed length: the step's view count must also replay
    full = _run(tiny_config(tmp_path / "full", procedural_scenes, **sections))
    full_summary = full.run()

    first = _run(tiny_config(tmp_path / "split", procedural_scenes, **sections), stop_at=3)
    s1 = first.run()
    assert s1.steps == 3 and s1.export is None  # stopped early: checkpoint at 3, no export
    assert [p.name for _, p in ckpt.list_checkpoints(tmp_path / "split" / "checkpoints")] == [
        "step_000000002.pt", "step_000000003.pt"]
    del first
    torch.manual_seed(1234)  # disturb the global RNG: the resume must restore it
    second = _run(tiny_config(tmp_path / "split", procedural_scenes, resume=True, **sections))
    assert second.start_step == 3
    _, payload = ckpt.load_latest(tmp_path / "split" / "checkpoints")
    assert torch.equal(torch.get_rng_state(), payload["rng"][0]["torch"])  # RNG state restored
    assert payload["data_position"]["next_step"] == 3
    s2 = second.run()

    assert s2.steps == 6
    for (k, a), (_, b) in zip(full.model.state_dict().items(), second.model.state_dict().items()):
        assert torch.equal(a, b), f"parameter {k} differs after resume"
    opt_a, opt_b = full.optimizer.state_dict()["state"], second.optimizer.state_dict()["state"]
    for i in opt_a:
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(opt_a[i][key], opt_b[i][key])
    assert full.scheduler.get_last_lr() == second.scheduler.get_last_lr()
    assert [h["loss"] for h in full_summary.history[3:]] == [h["loss"] for h in s2.history]


def test_crash_during_save_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    folder = tmp_path / "ck"
    good = ckpt.save_checkpoint(folder, 3, {"step": 3, "w": torch.arange(5.0)}, keep_last=2)
    real_save = torch.save

    def exploding_save(obj, f, *a, **k):
        f.write(b"partial bytes of a checkpoint")  # half-written file, then the process dies
        raise KeyboardInterrupt("simulated kill during torch.save")

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(folder, 4, {"step": 4, "w": torch.zeros(5)}, keep_last=1)
    monkeypatch.setattr(torch, "save", real_save)

    assert sorted(os.listdir(folder)) == [good.name]  # no step_4 file, no stray temporary
    path, payload = ckpt.load_latest(folder)
    assert path == good and torch.equal(payload["w"], torch.arange(5.0))


def test_keep_last_and_damaged_file_fallback(tmp_path):
    folder = tmp_path / "ck"
    for s in range(1, 5):
        ckpt.save_checkpoint(folder, s, {"step": s}, keep_last=2)
    assert [s for s, _ in ckpt.list_checkpoints(folder)] == [3, 4]
    (folder / "step_000000005.pt").write_bytes(b"\x00garbage")  # e.g. a disk error after the rename
    messages = []
    path, payload = ckpt.load_latest(folder, log=messages.append)
    assert payload["step"] == 4 and path.name == "step_000000004.pt"
    assert "step_000000005.pt cannot be loaded" in messages[0]


def test_export_roundtrip(tmp_path, procedural_scenes):  # noqa: F811
    from tttlrm_ns.model.checkpoint import load_model

    cfg = tiny_config(tmp_path / "run", procedural_scenes, optim=dict(max_steps=1, batch_size=1),
                      checkpoint=dict(export=True))
    trainer = _run(cfg)
    summary = trainer.run()
    exported = load_model(summary.export)
    for (k, a), (_, b) in zip(trainer.model.state_dict().items(), exported.state_dict().items()):
        assert torch.equal(a, b), k
    again = ckpt.export_checkpoint(tmp_path / "run" / "checkpoints" / "step_000000001.pt",
                                   tmp_path / "again.safetensors")
    assert load_model(again).cfg == trainer.model.cfg
    assert ckpt.main([str(tmp_path / "run"), str(tmp_path / "cli.safetensors")]) == 0  # run folder -> newest
    assert torch.equal(load_model(tmp_path / "cli.safetensors").decoder[1].weight, trainer.model.decoder[1].weight)


def test_training_history_accumulates_over_fine_tunes(tmp_path, procedural_scenes):  # noqa: F811
    """A fine-tune's export lists its initial weights' stages then its own (``train_step_total`` counts all);
    the stages are taken when the run starts, so replacing the init file before a resume does not change them."""
    import json

    from tttlrm_ns.model.checkpoint import read_metadata

    first = _run(tiny_config(tmp_path / "a", procedural_scenes, optim=dict(max_steps=2, batch_size=1),
                             checkpoint=dict(export=True))).run()
    meta = read_metadata(first.export)
    assert json.loads(meta["train_history"]) == [{"steps": 2, "resolution": "16x16", "init_from": None}]
    assert meta["train_step"] == "2" and meta["train_step_total"] == "2"

    init = tmp_path / "init.safetensors"
    init.write_bytes((tmp_path / "a" / "model.safetensors").read_bytes())
    sections = dict(optim=dict(max_steps=3, batch_size=1), checkpoint=dict(export=True, every=1, init_from=str(init)))
    _run(tiny_config(tmp_path / "b", procedural_scenes, **sections), stop_at=1).run()
    ckpt.export_checkpoint(tmp_path / "b" / "checkpoints" / "step_000000001.pt", tmp_path / "b1.safetensors")
    init.write_bytes(b"replaced")  # e.g. the shipped file retrained while this run was stopped
    second = _run(tiny_config(tmp_path / "b", procedural_scenes, resume=True, **sections)).run()

    stages = json.loads(read_metadata(second.export)["train_history"])
    assert stages == [{"steps": 2, "resolution": "16x16", "init_from": None},
                      {"steps": 3, "resolution": "16x16", "init_from": "init.safetensors"}]
    assert read_metadata(second.export)["train_step_total"] == "5"
    assert read_metadata(tmp_path / "b1.safetensors")["train_step_total"] == "3"  # export of the step-1 checkpoint

    legacy = ckpt.history_of(str(tmp_path / "b1.safetensors"))  # a file with history: read as stored
    assert [s["steps"] for s in legacy] == [2, 1]


def test_sigterm_checkpoints_the_current_step_and_stops(tmp_path, procedural_scenes):  # noqa: F811
    """SIGTERM (preemption) mid-run: the step in flight completes, a checkpoint is written, the run stops, and
    ``--resume`` continues from there."""
    import signal

    cfg = tiny_config(tmp_path / "term", procedural_scenes, optim=dict(max_steps=5, batch_size=1),
                      checkpoint=dict(every=100))
    trainer = _run(cfg)
    real_step = trainer.optimizer_step

    def step_then_signal(loss):
        out = real_step(loss)
        if trainer.scheduler.last_epoch == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # delivered to the trainer's handler, not fatal
        return out

    trainer.optimizer_step = step_then_signal
    summary = trainer.run()
    assert summary.steps == 2
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "term" / "checkpoints")] == [2]
    assert signal.getsignal(signal.SIGTERM) is not trainer._request_stop  # handler restored
    resumed = _run(tiny_config(tmp_path / "term", procedural_scenes, resume=True, optim=dict(max_steps=5,
                                                                                           batch_size=1)))
    assert resumed.start_step == 2 and resumed.run().steps == 5

"""Model kinds as plug-ins of the trainer: the registry, its error, and a kind the trainer has never seen.

The Gaussian and triplane kinds' numbers are held by their own tests (``test_train_loop.py``,
``test_train_checkpoint.py``, ``test_triplane.py``). What is checked here is the seam: the trainer reaches a model only through its kind, so a
third kind runs, checkpoints, resumes and exports with no change to the loop.
"""

from __future__ import annotations

import typing

import pytest
import torch
from safetensors.torch import load_file, save_file

from test_train_support import procedural_scenes, renderer, single_thread, tiny_config  # noqa: F401  (fixtures)
from tttlrm_ns.train import kinds
from tttlrm_ns.train.config import TrainConfig
from tttlrm_ns.train.gaussian import GaussianKind
from tttlrm_ns.train.loop import Trainer
from tttlrm_ns.train.plugin import TERMS
from tttlrm_ns.triplane.train import TriplaneKind

pytestmark = pytest.mark.usefixtures("single_thread")


def test_registry_holds_both_kinds_under_the_config_names():
    assert isinstance(kinds.get_kind("gaussian"), GaussianKind)
    assert isinstance(kinds.get_kind("triplane"), TriplaneKind)
    assert all(kind.name == name for name, kind in kinds.KINDS.items())
    # The config file's choices (checked when a YAML / the CLI is read) are the registry's names.
    choices = typing.get_args(typing.get_type_hints(TrainConfig)["model_kind"])
    assert sorted(choices) == sorted(kinds.KINDS)


def test_unknown_kind_is_one_error_naming_the_known_kinds(tmp_path, procedural_scenes):  # noqa: F811
    with pytest.raises(ValueError, match=r"unknown model_kind 'voxels'; known kinds: gaussian, triplane"):
        kinds.get_kind("voxels")
    cfg = tiny_config(tmp_path / "run", procedural_scenes[:1])
    cfg.model_kind = "voxels"  # past the config loader's check (a config built in code)
    with pytest.raises(ValueError, match=r"known kinds: gaussian, triplane"):
        Trainer(cfg, rasterize_fn=renderer(), log=lambda m: None)


class MeanColourKind:
    """A toy third kind: a linear map from the input views' mean colour [b, 3] to the targets' mean colour [b, 3].
    Records what the trainer asked of it."""

    name = "mean_colour"

    def __init__(self):
        self.calls: list[str] = []

    def build(self, cfg):
        self.calls.append("build")
        return torch.nn.Linear(3, 3)

    def init_from(self, model, path, cfg, log):
        self.calls.append("init_from")

    def micro_step(self, runner, batch, scale):
        self.calls.append("micro_step")
        x = batch["images"].mean(dim=(1, 3, 4))  # [b, V, 3, H, W] -> [b, 3]
        y = batch["target_images"].mean(dim=(1, 3, 4))  # [b, T, 3, H, W] -> [b, 3]
        mse = (runner.ddp_model(x) - y).square().mean()
        (mse * scale).backward()
        terms = dict.fromkeys(TERMS, 0.0)
        terms.update(mse=float(mse.detach()), loss=float(mse.detach()))
        return terms, None

    def export(self, model, path, step, cfg, history=None):
        self.calls.append(f"export@{step}")
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))
        return str(path)


def test_a_new_kind_trains_resumes_and_exports_without_touching_the_loop(tmp_path, monkeypatch,
                                                                         procedural_scenes):  # noqa: F811
    kind = MeanColourKind()
    monkeypatch.setitem(kinds.KINDS, kind.name, kind)

    def run(out, stop_at=None, resume=False):
        cfg = tiny_config(out, procedural_scenes, resume=resume, checkpoint=dict(export=True, every=1))
        cfg.model_kind = kind.name  # registered above; config files name only the kinds of TrainConfig's Literal
        return Trainer(cfg, rasterize_fn=renderer(), log=lambda m: None, stop_at_step=stop_at).run()

    whole = run(tmp_path / "whole")
    steps = whole.steps
    assert kind.calls == ["build"] + ["micro_step"] * (2 * steps) + [f"export@{steps}"]  # batch 2 = 2 micro steps
    exported = load_file(whole.export)
    assert exported.keys() == {"weight", "bias"}

    # The trainer's checkpoints are the same for every kind: stop after step 2, resume, and the rest is identical.
    run(tmp_path / "split", stop_at=2)
    resumed = run(tmp_path / "split", resume=True)
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in whole.history[2:]]
    for k, v in load_file(resumed.export).items():
        assert torch.equal(v, exported[k]), k

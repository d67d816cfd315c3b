"""The shipped scene model (``tttlrm_ns/assets/weights/tttlrm_scene.safetensors``): it says what it was trained for
and reconstructs held-out views of a bundled sample it never saw clearly better than the best flat colour, which the
same architecture with random weights does not. Sample: the bundled sample scene (a synthetic room of another seed
than the training rooms). One ``Case`` per shipped model: an object model gets its own entry when one is shipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from quality_floor import held_out_psnr

from tttlrm_ns import SAMPLE_SCENE
from tttlrm_ns.model import TttlrmModel
from tttlrm_ns.model.checkpoint import load_model, read_config, read_trained_for

WEIGHTS = Path(__file__).resolve().parents[1] / "tttlrm_ns" / "assets" / "weights"


@dataclass(frozen=True)
class Case:
    file: str
    kind: str
    scene: Path
    height: int
    width: int
    inputs: tuple[int, ...]
    held_out: tuple[int, ...]
    margin_db: float
    """How far above the flat-colour PSNR the trained model must be (the floor)."""


CASES = {
    # 8 inputs spread over the 64-frame path, held-out frames between them (the interpolation protocol)
    "scene": Case("tttlrm_scene.safetensors", "scene", SAMPLE_SCENE, 72, 128, tuple(range(2, 64, 8)),
                  (12, 28, 44, 60), 2.0),
}


def _psnr_vs_flat(model: TttlrmModel, case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    trained, flat, _ = held_out_psnr(model, case.scene, case.height, case.width, case.inputs, case.held_out)
    return trained, flat


@pytest.mark.parametrize("name", sorted(CASES))
def test_shipped_model_records_what_it_was_trained_for(name):
    case = CASES[name]
    path = WEIGHTS / case.file
    assert path.is_file(), f"shipped weights missing: {path}"
    assert path.stat().st_size < 50 * 2**20
    trained, missing = read_trained_for(path)
    assert trained is not None and not missing, missing
    assert (trained.kind, trained.scan, trained.normalization) == (case.kind, "full", "mean_cam")
    if case.kind == "object":
        assert trained.background == "white"


@pytest.mark.parametrize("name", sorted(CASES))
def test_shipped_model_beats_a_flat_colour_and_random_weights_do_not(name):
    """Floor from the data (the inputs' mean colour + a margin), so better weights pass it too; the random model
    of the same configuration is checked against the flat colour, so the floor is known to separate trained from
    untrained weights."""
    case = CASES[name]
    model = load_model(WEIGHTS / case.file).eval()
    trained, flat = _psnr_vs_flat(model, case)
    assert trained.mean() > flat.mean() + case.margin_db, (trained, flat)
    torch.manual_seed(0)
    random_psnr, _ = _psnr_vs_flat(TttlrmModel(read_config(WEIGHTS / case.file)).eval(), case)
    assert random_psnr.mean() < flat.mean(), (random_psnr, flat)

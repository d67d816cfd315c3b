"""The shipped scene and object models (``tttlrm_ns/assets/weights/tttlrm_{scene,object}.safetensors``): each says
what it was trained for and reconstructs held-out views of a bundled sample it never saw clearly better than the best
flat colour *and* than the same architecture with random weights. Samples: the bundled sample scene (a synthetic
room of another seed than the training rooms) and ``tests/assets/object_sample`` (a procedural object of seed 909;
the object model was trained on seed 101).

Why the random-weights comparison is part of the floor: with ``rgb_skip`` every Gaussian carries its input pixel's
colour, so even random weights (Gaussians at the depth prior's distance) reproject the inputs and beat a flat colour
on the scene sample; the floor is therefore the larger of "flat colour + margin" and "random weights + 0.3 dB".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from quality_floor import held_out_psnr, mvs_held_out_psnr

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
    keep_top: float = 0.0
    """Opacity pruning before rendering (the nerfstudio pipeline's default is 0.4)."""
    scan: str = "full"
    """The scan the model was trained for (the model runs in it: the scan is part of its stored config)."""
    normalization: str = "mean_cam"
    """Camera normalisation it was trained with (first_cam for the autoregressive model)."""


CASES = {
    # 8 inputs spread over the 64-frame path, held-out frames between them (the interpolation protocol)
    "scene": Case("tttlrm_scene.safetensors", "scene", SAMPLE_SCENE, 72, 128, tuple(range(2, 64, 8)),
                  (12, 28, 44, 60), 2.0),
    # 8 inputs by farthest-point sampling of the 32 cameras (train.holdout.choose_views, 'sphere'), 8 other views
    "object": Case("tttlrm_object.safetensors", "object", Path(__file__).parent / "assets" / "object_sample", 64, 64,
                   (0, 3, 8, 9, 10, 13, 27, 28), (1, 2, 4, 5, 6, 7, 11, 12), 2.0, keep_top=0.4),
}


def _psnr_vs_flat(model: TttlrmModel, case: Case, scale: str = "extent") -> tuple[torch.Tensor, torch.Tensor]:
    trained, flat, _ = held_out_psnr(model, case.scene, case.height, case.width, case.inputs, case.held_out,
                                     case.keep_top, case.normalization, scale)
    return trained, flat


@pytest.mark.parametrize("name", sorted(CASES))
def test_shipped_model_records_what_it_was_trained_for(name):
    case = CASES[name]
    path = WEIGHTS / case.file
    assert path.is_file(), f"shipped weights missing: {path}"
    assert path.stat().st_size < 50 * 2**20
    trained, missing = read_trained_for(path)
    assert trained is not None and not missing, missing
    assert (trained.kind, trained.scan, trained.normalization) == (case.kind, case.scan, case.normalization)
    assert read_config(path).scan == case.scan
    if case.kind == "object":
        assert trained.background == "white"


@pytest.mark.parametrize("name", sorted(CASES))
def test_shipped_model_beats_a_flat_colour_and_random_weights_do_not(name):
    """Floor from the data (the inputs' mean colour + a margin) and from the untrained model of the same
    configuration (+ 0.3 dB), so better weights pass it too and random weights fail it."""
    case = CASES[name]
    model = load_model(WEIGHTS / case.file).eval()
    scale = read_trained_for(WEIGHTS / case.file)[0].scale
    trained, flat = _psnr_vs_flat(model, case, scale)
    torch.manual_seed(0)
    random_psnr, _ = _psnr_vs_flat(TttlrmModel(read_config(WEIGHTS / case.file)).eval(), case, scale)
    floor = max(float(flat.mean()) + case.margin_db, float(random_psnr.mean()) + 0.3)
    if model.cfg.uses_geometry:
        # Weights that read measured geometry must also beat the geometry-free random model (the same architecture
        # without the sweep: its Gaussians sit at the depth prior) and the plane-sweep initialiser without a network.
        free = read_config(WEIGHTS / case.file).replace(geometry_input=False, depth_anchor=False)
        torch.manual_seed(0)
        free_psnr, _ = _psnr_vs_flat(TttlrmModel(free).eval(), case, scale)
        mvs = mvs_held_out_psnr(case.scene, case.height, case.width, case.inputs, case.held_out)
        floor = max(floor, float(free_psnr.mean()) + 0.3, float(mvs.mean()))
    assert float(trained.mean()) > floor, (trained, flat, random_psnr)

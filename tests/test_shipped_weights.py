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

from tttlrm_ns import SAMPLE_SCENE, conventions
from tttlrm_ns.data.normalize import NormalizeConfig, normalize_views
from tttlrm_ns.data.scene import ResizeConfig, load_scene, load_views
from tttlrm_ns.model import TttlrmModel
from tttlrm_ns.model.checkpoint import load_model, read_config, read_trained_for
from tttlrm_ns.render import rasterize

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
    """(PSNR [T] of the model's renders of the held-out views, PSNR [T] of the inputs' mean colour), white
    background as the nerfstudio methods render."""
    scene = load_scene(case.scene)
    resize = ResizeConfig(height=case.height, width=case.width, orientation="fixed", patch_size=8)
    ins, outs = list(case.inputs), list(case.held_out)
    inputs, targets = load_views(scene, ins, resize), load_views(scene, outs, resize)
    c2w, c2w_t, _ = normalize_views(scene.c2w[ins], scene.c2w[outs], NormalizeConfig(method="mean_cam"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            g = model(inputs.images[None], c2w[None].float(), inputs.fxfycxcy[None].float()).gaussians[0]
            rgb, alpha, _ = rasterize(g.means, g.quats, g.log_scales.exp(), torch.sigmoid(g.opacity_logits[:, 0]),
                                      g.sh, conventions.c2w_to_w2c(c2w_t.float()),
                                      conventions.fxfycxcy_to_K(targets.fxfycxcy.float()), case.width, case.height,
                                      sh_degree=g.sh_degree)
    finally:
        torch.set_num_threads(threads)
    gt = targets.images.permute(0, 2, 3, 1)
    pred = (rgb + (1 - alpha)).clamp(0, 1)

    def psnr(x):
        return -10 * torch.log10(((x - gt) ** 2).mean(dim=(1, 2, 3)))

    return psnr(pred), psnr(inputs.images.mean(dim=(0, 2, 3)))


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

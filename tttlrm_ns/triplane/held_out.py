"""Feed-forward renders of the triplane object model on held-out views of an object scene, without nerfstudio.

The steps ``ns-train tttlrm-triplane`` takes (:mod:`tttlrm_ns.triplane.ns`): the input cameras define the object
frame (:func:`tttlrm_ns.data.object_frame.object_frame`), the inputs are resized to the model's input size, one
triplane is predicted, and the held-out cameras are rendered from it on white. ``experiments/eval_triplane.py`` scores
these renders; the quality-floor test of the shipped triplane (``tests/test_triplane.py``) uses the same function.

The model is called here directly, not through :mod:`tttlrm_ns.infer`: the triplane is another representation (planes
decoded by volume rendering through the model's MLP, in the object frame of the input cameras), while ``infer`` is
the path of the per-pixel Gaussian model (normalisation for its weights, chunked prediction, pruning, filters, to the
world as Gaussians). Nothing of that applies to planes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch import Tensor

from tttlrm_ns.data.object_frame import object_frame
from tttlrm_ns.data.scene import ResizeConfig, SceneFrames, load_views


@dataclass
class HeldOutRenders:
    """What :func:`render_held_out` returns."""

    inputs: Tensor
    """[V, 3, s, s] the input images as the model saw them (s = ``input_res``)."""
    pred: Tensor
    """[T, 3, res, res] renders of the held-out views in [0, 1]."""
    gt: Tensor
    """[T, 3, res, res] the held-out images (RGBA composited on white)."""
    prediction_wall_s: float = 0.0
    prediction_cpu_s: float = 0.0
    render_wall_s: list[float] = field(default_factory=list)
    """Per held-out view (rendered one at a time: the per-image time a viewer sees)."""
    render_cpu_s: list[float] = field(default_factory=list)


@torch.no_grad()
def render_held_out(model, scene: SceneFrames, inputs: Sequence[int], held: Sequence[int], input_res: int, res: int,
                    samples: Optional[int] = None, where: str = "") -> HeldOutRenders:
    """Predict one triplane from ``scene``'s frames ``inputs`` at ``input_res``^2 and render frames ``held`` at
    ``res``^2 (``samples`` per ray; None: the model's). ``where`` prefixes the object-frame error of a scene
    capture. CPU/process times are of this process (on a shared machine the wall time mostly measures waiting)."""
    inputs, held = list(inputs), list(held)
    white = torch.ones(3)
    vin = load_views(scene, inputs, ResizeConfig(height=input_res, width=input_res, patch_size=model.cfg.patch_size))
    vout = load_views(scene, held, ResizeConfig(height=res, width=res, patch_size=1))
    tr = object_frame(scene.c2w[inputs].double(), model.tri.camera_distance, where=where)
    c2w_in = tr.apply(scene.c2w[inputs].double()).float()  # [V, 4, 4]
    c2w_out = tr.apply(scene.c2w[held].double()).float()  # [T, 4, 4]
    out = HeldOutRenders(inputs=vin.images.float(), pred=torch.empty(0), gt=vout.images.float())
    t0, c0 = time.perf_counter(), time.process_time()
    planes = model(vin.images[None].float(), c2w_in[None], vin.fxfycxcy[None].float()).planes
    out.prediction_wall_s, out.prediction_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    preds = []
    for j in range(len(held)):
        t0, c0 = time.perf_counter(), time.process_time()
        r = model.render(planes, c2w_out[None, j:j + 1], vout.fxfycxcy[None, j:j + 1].float(), res, res, white,
                         samples)
        out.render_wall_s.append(time.perf_counter() - t0)
        out.render_cpu_s.append(time.process_time() - c0)
        preds.append(r["rgb"][0, 0].clamp(0, 1))
    out.pred = torch.stack(preds)
    return out


__all__ = ["HeldOutRenders", "render_held_out"]

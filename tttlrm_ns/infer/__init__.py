"""One inference path: prepared input views -> Gaussians in the world frame, without nerfstudio.

* :mod:`.predict`: the model's forward pass chunked over views with bounded memory, opacity pruning and the
  free-space filter, and the memory it will need (checked before any weight is loaded);
* :mod:`.scene`: the frame the weights expect (normalisation), :func:`~.scene.reconstruct` (predict -> free-space
  filter -> prune -> footprint filter, in that frame), the non-learned ``mvs`` initialiser, the plausibility check,
  and the way back to the world;
* :mod:`.inputs`: the chosen input views as stored -> :class:`~.inputs.PreparedInputs` (:func:`~.inputs.prepare_inputs`:
  input size, the memory check before anything is loaded, resized images, the normalisation choice, the model's
  frame);
* :mod:`.run`: :func:`~.run.reconstruct_scene`, prepared inputs -> world-frame Gaussians (weights or ``mvs``,
  footprint filter, plausibility check).

The nerfstudio pipeline, ``tttlrm-stress`` and the trainer's held-out evaluation (``tttlrm_ns.train.holdout``) call
these.
"""

from tttlrm_ns.infer.predict import (
    GIB,
    MemoryEstimate,
    available_memory,
    estimate_memory,
    keep_fraction,
    num_parameters,
    predict_gaussians,
)
from tttlrm_ns.infer.inputs import (
    InputSize,
    InputSpec,
    InsufficientMemoryError,
    PredictionError,
    PreparedInputs,
    prepare_inputs,
)
from tttlrm_ns.infer.run import SceneReconstruction, reconstruct_scene
from tttlrm_ns.infer.scene import (
    PLAUSIBLE_INPUT_PSNR,
    MvsInitConfig,
    Normalised,
    Plausibility,
    ReconstructConfig,
    check_plausibility,
    footprint_filtered,
    mvs_gaussians,
    normalise_for_model,
    reconstruct,
    to_world,
)

__all__ = [
    "GIB", "MemoryEstimate", "available_memory", "estimate_memory", "keep_fraction", "num_parameters",
    "predict_gaussians", "PLAUSIBLE_INPUT_PSNR", "MvsInitConfig", "Normalised", "Plausibility", "ReconstructConfig",
    "check_plausibility", "footprint_filtered", "mvs_gaussians", "normalise_for_model", "reconstruct", "to_world",
    "InputSize", "InputSpec", "InsufficientMemoryError", "PredictionError", "PreparedInputs", "prepare_inputs",
    "SceneReconstruction", "reconstruct_scene",
]

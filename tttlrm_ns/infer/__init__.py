"""One inference path: prepared input views -> Gaussians in the world frame, without nerfstudio.

* :mod:`.predict`: the model's forward pass chunked over views with bounded memory, opacity pruning and the
  free-space filter, and the memory it will need (checked before any weight is loaded);
* :mod:`.scene`: the frame the weights expect (normalisation), :func:`~.scene.reconstruct` (predict -> free-space
  filter -> prune -> footprint filter, in that frame), the non-learned ``mvs`` initialiser, the plausibility check,
  and the way back to the world.

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
]

"""nerfstudio methods of tttlrm_ns (registered through the ``nerfstudio.method_configs`` entry point).

* ``tttlrm``: the full-scan scene model (paper's main setting): 32 k-means input views, long side up to 960 on
  CUDA (960x536 for 16:9 images; 256 on CPU; never above the stored size), ``mean_cam`` normalisation, official
  pruning, pure feed-forward (no refinement).
* ``tttlrm-ar``: the autoregressive scan (fast weights updated every 4 views, ``first_cam`` normalisation);
  ``--pipeline.model.selective-update True`` turns on the elastic selective update.
* ``tttlrm-object``: the object-level preset (patch 16), 24 input views, long side up to 512, white background.
* ``tttlrm-refine3`` / ``tttlrm-refine10``: ``tttlrm`` followed by the paper's 3- / 10-step refinement. Any method
  refines for a time budget with ``--pipeline.model.refine.steps 100000 --pipeline.model.refine.seconds S``.

Every method reads ``opencv_cameras.json`` scenes by default (dataparser ``opencv-cameras``, which hands a folder with
only a ``transforms.json``, ``ns-process-data``'s output, to ``nerfstudio-data`` and logs it); nerfstudio's own
dataparsers work as well (``ns-train tttlrm --data DIR nerfstudio-data``). Weights: ``--pipeline.model.checkpoint``,
default the method's bundled file (``DEFAULT_WEIGHTS`` in ``ns/weights.py``; when it is missing the run stops, no
other weights are substituted); weights trained for another method are refused. ``--max-num-iterations N`` = N refinement steps.
"""

from __future__ import annotations

from dataclasses import replace

from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanagerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.plugins.types import MethodSpecification

from tttlrm_ns.data.dataparser import OpencvCamerasDataParserConfig
from tttlrm_ns.data.views import ViewSelectionConfig
from tttlrm_ns.infer import ReconstructConfig
from tttlrm_ns.ns.checkpoint_io import FloatExponentialDecaySchedulerConfig
from tttlrm_ns.ns.model import TttlrmNSModelConfig
from tttlrm_ns.ns.pipeline import TttlrmPipelineConfig
from tttlrm_ns.ns.refine import refine_preset
from tttlrm_ns.ns.trainer import TttlrmTrainerConfig, method_trainer_config


def _trainer(method_name: str, pipeline: TttlrmPipelineConfig) -> TttlrmTrainerConfig:
    camera_opt = {"optimizer": AdamOptimizerConfig(lr=1e-4, eps=1e-15),
                  "scheduler": FloatExponentialDecaySchedulerConfig(lr_final=5e-7, max_steps=30000)}
    # The Gaussian groups come from --pipeline.model.refine (see TttlrmTrainer).
    return method_trainer_config(TttlrmTrainerConfig, method_name, pipeline, {"camera_opt": camera_opt}, 1 << 15,
                                 preset_refine_steps=pipeline.model.refine.steps)


def _pipeline(model: TttlrmNSModelConfig, **kwargs) -> TttlrmPipelineConfig:
    return TttlrmPipelineConfig(
        datamanager=FullImageDatamanagerConfig(dataparser=OpencvCamerasDataParserConfig(), cache_images_type="uint8"),
        model=model,
        **kwargs,
    )


tttlrm_config = _trainer("tttlrm", _pipeline(TttlrmNSModelConfig()))

tttlrm_ar_config = _trainer(
    "tttlrm-ar",
    _pipeline(
        TttlrmNSModelConfig(scan="ar", selective_update=False),
        normalization="first_cam",
    ),
)

tttlrm_object_config = _trainer(
    "tttlrm-object",
    _pipeline(
        TttlrmNSModelConfig(model_preset="object_level", background_color="white"),
        views=ViewSelectionConfig(mode="kmeans", num_views=24),
        method_kind="object",
        auto_long_side_cuda=512,
        # On CPU: the bundled object model's training resolution (tttlrm_object.safetensors, 64x64); larger inputs
        # were not measured with it. --pipeline.input-long-side overrides.
        auto_long_side_cpu=64,
        # The free-space filter lost PSNR on every object class of the stress set (ReconstructConfig.for_kind).
        free_space=ReconstructConfig.for_kind("object").free_space,
    ),
)


def _refined(name: str, steps: str) -> TttlrmTrainerConfig:
    pipe = tttlrm_config.pipeline
    model = replace(pipe.model, refine=refine_preset(steps))  # type: ignore[arg-type]
    return replace(tttlrm_config, method_name=name, pipeline=replace(pipe, model=model),
                   preset_refine_steps=model.refine.steps)


tttlrm_refine3_config = _refined("tttlrm-refine3", "3")
tttlrm_refine10_config = _refined("tttlrm-refine10", "10")

tttlrm_method = MethodSpecification(
    config=tttlrm_config,
    description="tttLRM feed-forward 3D Gaussians (full scan, 32 k-means views); "
    "weights via --pipeline.model.checkpoint",
)
tttlrm_ar_method = MethodSpecification(
    config=tttlrm_ar_config,
    description="tttLRM autoregressive scan (fast weights updated every 4 views; --pipeline.model.selective-update)",
)
tttlrm_object_method = MethodSpecification(
    config=tttlrm_object_config,
    description="tttLRM object-level model (patch 16, 24 views, long side 512, white background)",
)
tttlrm_refine3_method = MethodSpecification(
    config=tttlrm_refine3_config, description="tttLRM full scan + 3 refinement steps on the input views (paper setting)"
)
tttlrm_refine10_method = MethodSpecification(
    config=tttlrm_refine10_config,
    description="tttLRM full scan + 10 refinement steps on the input views (paper setting)",
)

# The triplane object model (tttlrm_ns/triplane/ns.py): 4 k-means views -> one triplane, volume-rendered.
from tttlrm_ns.triplane.ns import triplane_trainer_config  # noqa: E402

tttlrm_triplane_config = triplane_trainer_config()
tttlrm_triplane_method = MethodSpecification(
    config=tttlrm_triplane_config,
    description="tttLRM triplane object model (4 k-means views -> triplane, volume rendering; object captures only; "
    "--max-num-iterations N refines planes + MLP; mesh via tttlrm-export-triplane)",
)

__all__ = [
    "tttlrm_triplane_method",
    "tttlrm_method",
    "tttlrm_ar_method",
    "tttlrm_object_method",
    "tttlrm_refine3_method",
    "tttlrm_refine10_method",
]

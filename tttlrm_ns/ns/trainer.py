"""nerfstudio's Trainer with the refinement settings taken from one place (``--pipeline.model.refine.*``).

The number of iterations is the number of refinement steps (0: the run ends right after the prediction, with a
checkpoint holding the predicted Gaussians), and the Gaussian optimizers use the refinement learning rates. Both
live in :class:`tttlrm_ns.ns.refine.RefineConfig`. nerfstudio's own ``--max-num-iterations N`` is accepted as the
same thing (N refinement steps); it is an error only when ``--pipeline.model.refine.steps`` was also changed from
the method's default to a different value.

:func:`method_trainer_config` holds the trainer settings every method of the package shares (``method_configs`` and
``tttlrm-triplane``: intervals, precision, device, viewer) and :func:`allow_zero_iterations` the run of 0 steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Type, TypeVar

import torch
import tyro

from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig

from tttlrm_ns.ns.refine import GAUSSIAN_GROUPS

T = TypeVar("T", bound=TrainerConfig)


def method_trainer_config(config_class: type[T], method_name: str, pipeline: VanillaPipelineConfig,
                          optimizers: dict, viewer_rays_per_chunk: int, **fields) -> T:
    """The trainer settings every method of this package shares (``method_configs`` and ``tttlrm-triplane``):
    evaluation / save intervals, full precision, the GPU when there is one, the viewer; ``fields``: the rest of
    ``config_class``'s."""
    return config_class(
        method_name=method_name,
        steps_per_eval_image=1000,
        steps_per_eval_batch=0,
        steps_per_save=1000,
        steps_per_eval_all_images=1000000,
        mixed_precision=False,
        # The prediction and the renderers run on CPU too; default to the GPU when there is one.
        machine=MachineConfig(device_type="cuda" if torch.cuda.is_available() else "cpu"),
        pipeline=pipeline,
        optimizers=optimizers,
        viewer=ViewerConfig(num_rays_per_chunk=viewer_rays_per_chunk),
        vis="viewer",
        **fields,
    )


def allow_zero_iterations() -> None:
    """Let a run of 0 iterations (prediction only) through nerfstudio's console writer, which reads the last step and
    divides by the iteration count; call it in ``Trainer.setup`` when ``max_num_iterations`` is 0."""
    from nerfstudio.utils import writer

    writer.GLOBAL_BUFFER.setdefault("step", 0)
    writer.GLOBAL_BUFFER["max_iter"] = max(1, writer.GLOBAL_BUFFER.get("max_iter", 1))


@dataclass
class TttlrmTrainerConfig(TrainerConfig):
    """nerfstudio TrainerConfig whose iteration count and Gaussian learning rates come from the refine config."""

    _target: Type = field(default_factory=lambda: TttlrmTrainer)
    max_num_iterations: Optional[int] = None  # type: ignore[assignment]
    """Number of refinement steps (= --pipeline.model.refine.steps; None: the method's refine.steps)."""
    preset_refine_steps: tyro.conf.Suppress[Optional[int]] = None
    """refine.steps of the method preset this config was built from (set by ``method_configs``; no flag). Recorded in
    the config so that the trainer does not look the method up (``method_configs`` imports this module); None: no
    preset known (e.g. a ``config.yml`` written before the field existed), refine.steps then never conflicts."""


def resolve_iterations(config: TttlrmTrainerConfig) -> int:
    """Reconcile ``--max-num-iterations`` with ``--pipeline.model.refine.steps``; both end up equal.

    A config has no record of which flags were typed, so "given" for refine.steps means "differs from the method's
    default": ``--max-num-iterations N`` wins over an untouched refine.steps, and two different explicit values are
    an error.
    """
    refine = config.pipeline.model.refine  # type: ignore[attr-defined]
    wanted = config.max_num_iterations
    if wanted is None or wanted == refine.steps:
        return refine.steps
    if wanted < 0:
        raise ValueError(f"--max-num-iterations must be >= 0 (refinement steps), got {wanted}")
    default = config.preset_refine_steps
    if default is not None and refine.steps != default:
        raise ValueError(
            f"--max-num-iterations {wanted} conflicts with --pipeline.model.refine.steps {refine.steps}: both set "
            "tttLRM's number of refinement steps; give one of them (or the same value)"
        )
    refine.steps = wanted
    return wanted


class TttlrmTrainer(Trainer):
    config: TttlrmTrainerConfig

    def __init__(self, config: TttlrmTrainerConfig, local_rank: int = 0, world_size: int = 1) -> None:
        config.max_num_iterations = resolve_iterations(config)
        super().__init__(config, local_rank, world_size)

    def setup(self, test_mode: Literal["test", "val", "inference"] = "val") -> None:
        super().setup(test_mode)
        if self.viewer_state is not None:  # open the viewer at the first input view (not viser's default pose)
            from tttlrm_ns.ns.viewer import open_viewer_at

            dm = self.pipeline.datamanager
            cameras = getattr(dm, "train_cameras", dm.train_dataset.cameras)  # type: ignore[union-attr]
            inputs = getattr(self.pipeline, "input_indices", None) or [0]
            open_viewer_at(self.viewer_state, cameras, inputs[0])
        if self.config.max_num_iterations == 0:  # a pure feed-forward run
            allow_zero_iterations()

    def setup_optimizers(self) -> Optimizers:
        """Gaussian groups from the refine config, other groups (camera optimizer) from ``config.optimizers``."""
        refine = self.config.pipeline.model.refine  # type: ignore[attr-defined]
        cfg = {k: v for k, v in self.config.optimizers.items() if k not in GAUSSIAN_GROUPS}
        cfg.update(refine.optimizer_configs())
        return Optimizers(cfg, self.pipeline.get_param_groups())


__all__ = ["TttlrmTrainer", "TttlrmTrainerConfig", "allow_zero_iterations", "method_trainer_config"]

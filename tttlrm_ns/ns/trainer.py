"""nerfstudio's Trainer with the refinement settings taken from one place (``--pipeline.model.refine.*``).

The number of iterations is the number of refinement steps (0: the run ends right after the prediction, with a
checkpoint holding the predicted Gaussians), and the Gaussian optimizers use the refinement learning rates. Both
live in :class:`tttlrm_ns.ns.refine.RefineConfig`, so ``max_num_iterations`` and the Gaussian ``optimizers``
entries are derived instead of being a second place to set them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Type

from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.engine.trainer import Trainer, TrainerConfig

from tttlrm_ns.ns.refine import GAUSSIAN_GROUPS


@dataclass
class TttlrmTrainerConfig(TrainerConfig):
    """nerfstudio TrainerConfig whose iteration count and Gaussian learning rates come from the refine config."""

    _target: Type = field(default_factory=lambda: TttlrmTrainer)
    max_num_iterations: Optional[int] = None  # type: ignore[assignment]
    """Leave unset: the iteration count is --pipeline.model.refine.steps (a different value is an error)."""


class TttlrmTrainer(Trainer):
    config: TttlrmTrainerConfig

    def __init__(self, config: TttlrmTrainerConfig, local_rank: int = 0, world_size: int = 1) -> None:
        steps = config.pipeline.model.refine.steps  # type: ignore[attr-defined]
        if config.max_num_iterations is not None and config.max_num_iterations != steps:
            raise ValueError(
                f"--max-num-iterations {config.max_num_iterations} conflicts with --pipeline.model.refine.steps "
                f"{steps}: tttLRM's iterations are its refinement steps; set only --pipeline.model.refine.steps"
            )
        config.max_num_iterations = steps
        super().__init__(config, local_rank, world_size)

    def setup(self, test_mode: Literal["test", "val", "inference"] = "val") -> None:
        super().setup(test_mode)
        if self.config.max_num_iterations == 0:
            # nerfstudio's console writer assumes at least one timed iteration (it reads the last step and divides
            # by the iteration count); a pure feed-forward run has none.
            from nerfstudio.utils import writer

            writer.GLOBAL_BUFFER.setdefault("step", 0)
            writer.GLOBAL_BUFFER["max_iter"] = max(1, writer.GLOBAL_BUFFER.get("max_iter", 1))

    def setup_optimizers(self) -> Optimizers:
        """Gaussian groups from the refine config, other groups (camera optimizer) from ``config.optimizers``."""
        refine = self.config.pipeline.model.refine  # type: ignore[attr-defined]
        cfg = {k: v for k, v in self.config.optimizers.items() if k not in GAUSSIAN_GROUPS}
        cfg.update(refine.optimizer_configs())
        return Optimizers(cfg, self.pipeline.get_param_groups())


__all__ = ["TttlrmTrainer", "TttlrmTrainerConfig"]

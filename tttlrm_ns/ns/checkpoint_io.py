"""nerfstudio checkpoints without numpy objects: the learning-rate schedule of our methods.

The problem (nerfstudio 1.1.5 with torch >= 2.6): nerfstudio's ``ExponentialDecayScheduler`` computes its learning
rate multiplier with numpy, so ``LambdaLR`` stores ``numpy.float64`` values in the optimizer's ``param_groups``
(``lr``) and in the scheduler's ``_last_lr``. ``Trainer.save_checkpoint`` pickles them into ``step-*.ckpt`` and
``ns-eval`` / ``ns-export`` / ``ns-viewer`` / ``ns-render`` then call ``torch.load`` with its default
``weights_only=True``, which refuses ``numpy.core.multiarray.scalar``.

:class:`FloatExponentialDecaySchedulerConfig` is nerfstudio's schedule with the multiplier converted to a Python
float, so checkpoints of ``tttlrm*`` and ``splatfacto-cpu`` hold no numpy objects. Files written before that still
load: :mod:`tttlrm_ns.checkpoint_io` allows exactly their numpy values (``load_checkpoint`` for our tools; for
nerfstudio's loaders the models of our methods call ``allow_numpy_in_weights_only_loads`` when they are built).

The module keeps its name because runs' ``config.yml`` files name these classes by it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Type

from nerfstudio.engine.schedulers import ExponentialDecayScheduler, ExponentialDecaySchedulerConfig


class FloatExponentialDecayScheduler(ExponentialDecayScheduler):
    """nerfstudio's warm-up + exponential decay whose ``LambdaLR`` multiplier is a Python float (not numpy)."""

    def get_scheduler(self, optimizer, lr_init: float):
        sched = super().get_scheduler(optimizer, lr_init)
        numpy_fns = list(sched.lr_lambdas)
        sched.lr_lambdas = [lambda step, f=f: float(f(step)) for f in numpy_fns]
        # LambdaLR already applied the multiplier of step 0 at construction: convert those values too.
        for group in optimizer.param_groups:
            group["lr"] = float(group["lr"])
        sched._last_lr = [float(v) for v in sched._last_lr]  # type: ignore[attr-defined]
        return sched


@dataclass
class FloatExponentialDecaySchedulerConfig(ExponentialDecaySchedulerConfig):
    """``ExponentialDecaySchedulerConfig`` whose checkpoints hold Python floats (loadable with weights_only)."""

    _target: Type = field(default_factory=lambda: FloatExponentialDecayScheduler)


__all__ = ["FloatExponentialDecayScheduler", "FloatExponentialDecaySchedulerConfig"]

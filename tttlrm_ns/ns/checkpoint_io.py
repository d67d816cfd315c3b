"""nerfstudio checkpoints that every nerfstudio command can load with ``torch.load``'s weights-only unpickler.

The problem (nerfstudio 1.1.5 with torch >= 2.6): nerfstudio's ``ExponentialDecayScheduler`` computes its learning
rate multiplier with numpy, so ``LambdaLR`` stores ``numpy.float64`` values in the optimizer's ``param_groups``
(``lr``) and in the scheduler's ``_last_lr``. ``Trainer.save_checkpoint`` pickles them into ``step-*.ckpt`` and
``ns-eval`` / ``ns-export`` / ``ns-viewer`` / ``ns-render`` then call ``torch.load`` with its default
``weights_only=True``, which refuses ``numpy.core.multiarray.scalar``.

Two parts, both applied when ``tttlrm_ns.ns`` is imported (nerfstudio imports it through our method entry points
and again when it reads a run's ``config.yml``, before any checkpoint is loaded):

1. At the source: :class:`FloatExponentialDecaySchedulerConfig` is nerfstudio's schedule with the multiplier
   converted to a Python float, so new checkpoints of ``tttlrm*`` and ``splatfacto-cpu`` hold no numpy objects.
2. For files already written: :func:`allow_numpy_scalars` adds exactly the two numpy globals such files need
   (``numpy.core.multiarray.scalar``, which rebuilds a scalar from its dtype and raw bytes, and ``numpy.dtype``
   with the dtype classes of numeric/bool scalars) to torch's weights-only allowlist. Nothing else becomes
   loadable: arbitrary classes and functions in a pickle are still refused. :func:`load_checkpoint` is the loader
   our own tools use (weights-only, with that allowlist).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Type

import numpy as np
import torch
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


def _numpy_globals() -> list:
    scalar = getattr(getattr(np, "_core", None), "multiarray", None)
    scalar = getattr(scalar, "scalar", None) or np.core.multiarray.scalar  # type: ignore[attr-defined]
    out: list[Any] = [scalar, np.dtype]
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25: one class per dtype, pickled by reference
    if dtypes is not None:
        for name in ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType", "Int16DType",
                     "Int8DType", "UInt64DType", "UInt32DType", "UInt16DType", "UInt8DType", "BoolDType"):
            if hasattr(dtypes, name):
                out.append(getattr(dtypes, name))
    return out


def allow_numpy_scalars() -> None:
    """Allow numpy scalars (numeric / bool) in weights-only ``torch.load`` calls of this process (idempotent)."""
    torch.serialization.add_safe_globals(_numpy_globals())


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict:
    """Load a nerfstudio ``step-*.ckpt`` with the weights-only unpickler (numpy scalars allowed, nothing else)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    with torch.serialization.safe_globals(_numpy_globals()):
        return torch.load(path, map_location=map_location, weights_only=True)


__all__ = [
    "FloatExponentialDecayScheduler",
    "FloatExponentialDecaySchedulerConfig",
    "allow_numpy_scalars",
    "load_checkpoint",
]

"""What a model kind implements to be trained by ``tttlrm-train``, and what the trainer offers it.

The trainer (:mod:`tttlrm_ns.train.loop`) owns everything that is the same for every kind: ranks, data order,
optimiser, schedule, gradient reduction and clipping, skipping, logging, and the resumable checkpoints (the model's
``state_dict`` beside the optimiser's; one format for every kind). A *model kind* owns what differs: how the network
is built, how a weights file initialises it, the loss of one micro-batch, and the file its weights are exported to.
Kinds are looked up by ``TrainConfig.model_kind`` in :mod:`tttlrm_ns.train.kinds`; the Gaussian kind is
:class:`tttlrm_ns.train.gaussian.GaussianKind`, the triplane kind :class:`tttlrm_ns.triplane.train.TriplaneKind`.

Both protocols are structural: a kind does not import this module to implement :class:`ModelKind`, and the trainer
satisfies :class:`StepRunner` without naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Protocol

import numpy as np
import torch
from torch import Tensor

from tttlrm_ns.eval.metrics import Lpips

from .config import TrainConfig
from .parallel import DistInfo

TERMS = ("mse", "perceptual", "opacity", "depth", "mask")
"""The loss terms every micro step reports (0.0 for a term a kind does not have); the trainer averages, logs and
plots them under these names, weighted by the ``LossConfig`` field of the same name."""

MicroStepResult = tuple[dict[str, float], Optional[tuple[Tensor, Tensor]]]
"""(this rank's weighted partial terms: every name of :data:`TERMS` plus ``loss``; a preview pair
(render [3, h, w], target [3, h, w]) on the CPU for the logs, or None)."""


class StepRunner(Protocol):
    """What a kind's :meth:`ModelKind.micro_step` may read of the :class:`tttlrm_ns.train.loop.Trainer` running it."""

    cfg: TrainConfig
    info: DistInfo
    model: torch.nn.Module
    """The bare model (for methods other than ``forward``, e.g. the triplane field's ray renderer)."""
    ddp_model: torch.nn.Module
    """``model`` wrapped for data parallelism (the model itself with one data-parallel rank): call it for the
    forward pass, so that gradients are all-reduced."""
    lpips: Optional[Lpips]
    """The frozen LPIPS network of the perceptual term; None when ``loss.perceptual`` is 0."""
    rasterize_fn: Callable
    """Renderer with ``tttlrm_ns.render.rasterize``'s signature (kinds that rasterise Gaussians)."""


class ModelKind(Protocol):
    """A trainable model family: ``gaussian`` (per-pixel Gaussians) or ``triplane`` (the object model)."""

    name: str
    """The ``TrainConfig.model_kind`` value that selects this kind."""

    def build(self, cfg: TrainConfig) -> torch.nn.Module:
        """A freshly initialised model for ``cfg`` (CPU; the trainer seeds torch first and moves it to the device).
        Its ``forward(images [B, V, 3, H, W], c2w [B, V, 4, 4], fxfycxcy [B, V, 4], ...)`` is what ``micro_step``
        calls through ``runner.ddp_model``."""
        ...

    def init_from(self, model: torch.nn.Module, path: str, cfg: TrainConfig, log: Callable[[str], None]) -> None:
        """Load initial weights from ``path`` (``checkpoint.init_from``) into ``model`` in place, or raise
        :class:`tttlrm_ns.model.checkpoint.CheckpointError` naming what does not fit."""
        ...

    def micro_step(self, runner: StepRunner, batch: dict, scale: float) -> MicroStepResult:
        """Forward + ``(loss * scale).backward()`` of one micro-batch (the batch of :mod:`tttlrm_ns.train.data`:
        ``images`` [b, V_loc, 3, H, W], ``c2w`` [b, V_loc, 4, 4], ``fxfycxcy`` [b, V_loc, 4], ``target_*`` of the
        target views, ``key`` [(step, slot)] per sample). Randomness per sample comes from :func:`sample_seed`, so
        a resumed run draws the same numbers. Returns :data:`MicroStepResult`."""
        ...

    def export(self, model: torch.nn.Module, path: Path, step: int, cfg: TrainConfig,
               history: Optional[list] = None) -> str:
        """Write the trained weights to ``path`` (a ``.safetensors`` file that the kind's loaders read) with the
        training metadata (``history``: the stages behind the run's initial weights,
        :func:`tttlrm_ns.train.checkpoint.history_metadata`); returns the path written."""
        ...


def sample_seed(seed: int, step: int, slot: int) -> int:
    """The seed of one sample's randomness (pruning, ray windows, stratified samples): a function of the run's seed
    and the sample's key only, the same on every sequence-parallel rank and after a resume."""
    return int(np.random.SeedSequence([seed, step, slot, 0x7072756E65]).generate_state(1)[0])


__all__ = ["MicroStepResult", "ModelKind", "StepRunner", "TERMS", "sample_seed"]

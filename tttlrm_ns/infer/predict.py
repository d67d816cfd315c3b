"""Feed-forward prediction with bounded memory: what the prediction costs and how it is chunked.

Pure torch (no nerfstudio): :func:`tttlrm_ns.infer.scene.reconstruct` calls :func:`predict_gaussians` for the
nerfstudio pipeline and the benchmarks. The computation itself is the model's
(:class:`tttlrm_ns.model.TttlrmModel`: ``encode -> run_blocks -> decode``, the stages ``forward`` composes); this
module only decides how it is chunked and how much memory it needs.

Memory. ``TttlrmModel.forward`` holds the 12-channel ray encoding of every pixel, the decoder output of every
pixel and all Gaussians at once (about ``60 + 3 * 4 * C`` bytes per pixel, ``C = 11 + 3K``), before any pruning.
:func:`predict_gaussians` runs the same stages chunked over views instead:

1. ``encode(..., chunk_views)``: tokens are built ``chunk_views`` views at a time, so the ray encoding of only one
   chunk exists at a time; the token matrix ``[L, d]`` is the one full-size activation;
2. ``run_blocks``: the LaCT blocks run once over all tokens (per-view attention and the TTT layer are linear in
   the number of tokens; with ``duplicate_virtual_views`` the sequence is twice as long);
3. ``decode_pruned(..., chunk_views)``: Gaussians are decoded chunk by chunk; with pruning, a first pass keeps
   only the opacity logit of every Gaussian (and, with the free-space filter, its depth in its own view), a second
   pass writes each chunk's survivors into their final slots.

The result equals ``TttlrmModel.forward`` followed by :func:`tttlrm_ns.gaussians.prune` (tested), for every scan
and sequence layout; the ``stream`` scan is chunked by construction (``TttlrmModel.stream_step``).

:func:`estimate_memory` predicts the peak of this procedure from the configuration alone (calibrated on CPU,
see ``ACTIVATION_FACTOR``) so a request that cannot fit is refused before any weight is loaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from tttlrm_ns.gaussians import Gaussians, PruneConfig
from tttlrm_ns.gaussians import prune as prune_gaussians
from tttlrm_ns.geometry.free_space import FreeSpaceConfig
from tttlrm_ns.model import TttlrmConfig, TttlrmModel
from tttlrm_ns.model.tttlrm import free_space_keep, own_view_depth

GIB = 1024**3
FREE_SPACE_BYTES_PER_GAUSSIAN = 17
"""Free-space filter, per predicted Gaussian: own-view depth (4 B), keep mask (1 B), candidate index (8 B) and its
opacity logit (4 B)."""
FREE_SPACE_BYTES_PER_PAIR = 40
"""Free-space filter, per tested (point, view) pair: camera coordinates, depth, pixel indices, 4 surfaces, masks."""

ACTIVATION_FACTOR = 32.0
"""Peak transient activation of one LaCT block in units of ``L * d`` elements (tokens x width), on top of the
token matrix itself (q/k/v projections, the 4x-wide TTT and MLP hidden layers and their SiLU gates). Measured on
CPU, float32, peak RSS of the whole prediction minus the other terms: about 15 (``small_d256``) and 23
(``official_full`` widths, 8 views of 256x256); rounded up for allocator slack."""


@dataclass
class MemoryEstimate:
    """Predicted peak memory of :func:`predict_gaussians` in bytes, by component."""

    weights: int
    images: int
    tokens: int
    activations: int
    decode_chunk: int
    gaussians: int

    @property
    def total(self) -> int:
        return self.weights + self.images + self.tokens + self.activations + self.decode_chunk + self.gaussians

    def describe(self) -> str:
        parts = ", ".join(
            f"{name} {getattr(self, name) / GIB:.2f}"
            for name in ("weights", "images", "tokens", "activations", "decode_chunk", "gaussians")
        )
        return f"{self.total / GIB:.2f} GiB ({parts} GiB)"


def num_parameters(cfg: TttlrmConfig) -> int:
    """Parameter count of ``TttlrmModel(cfg)`` without building it (built on the meta device)."""
    with torch.device("meta"):
        model = TttlrmModel(cfg)
    return sum(p.numel() for p in model.parameters())


def estimate_memory(
    cfg: TttlrmConfig,
    num_views: int,
    height: int,
    width: int,
    keep_fraction: float = 1.0,
    chunk_views: int = 8,
    num_params: Optional[int] = None,
    free_space: Optional[FreeSpaceConfig] = None,
) -> MemoryEstimate:
    """Peak memory of predicting Gaussians for ``num_views`` images of ``height x width``.

    ``keep_fraction``: share of Gaussians that survive pruning (1 = no pruning). Activations under bf16 autocast
    take half the bytes; the token matrix and the Gaussians stay float32. ``free_space``: the filter, if on (per
    predicted Gaussian its depth, mask, candidate index and logit copy, plus one chunk of (point, view) pairs).
    """
    pixels_per_view = height * width
    # The official layout appends a copy of every decoded view to the sequence (TttlrmModel.run_blocks).
    tokens = num_views * pixels_per_view // cfg.patch_size**2 * (2 if cfg.duplicate_virtual_views else 1)
    act_bytes = 2 if cfg.autocast_bf16 else 4
    c = cfg.gaussian_channels
    chunk = min(chunk_views, num_views) * pixels_per_view
    n_params = num_params if num_params is not None else num_parameters(cfg)
    kept = math.ceil(keep_fraction * num_views * pixels_per_view)
    return MemoryEstimate(
        weights=4 * n_params,
        images=4 * 3 * num_views * pixels_per_view,  # the float32 input views
        tokens=4 * tokens * cfg.d,
        activations=int(ACTIVATION_FACTOR * act_bytes * tokens * cfg.d),
        # per chunk pixel: rays + 12-channel encoding (~30 floats), decoder output and decoded copy (2C floats)
        decode_chunk=4 * chunk * (30 + 2 * c),
        # kept Gaussians and their world-frame copy; per predicted Gaussian an opacity logit (4 B) and the
        # sort order, output slot and argsort scratch of pruning (3 x 8 B)
        gaussians=4 * 2 * kept * c + 28 * num_views * pixels_per_view
        + (FREE_SPACE_BYTES_PER_GAUSSIAN * num_views * pixels_per_view
           + FREE_SPACE_BYTES_PER_PAIR * free_space.pairs_per_chunk
           if free_space is not None and free_space.enabled else 0),
    )


def available_memory(device: torch.device | str) -> int:
    """Bytes that can still be allocated on ``device`` (free GPU memory, or available system RAM)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


def keep_fraction(prune: PruneConfig, num_views: int) -> float:
    """Share of Gaussians :func:`tttlrm_ns.gaussians.prune` keeps for ``num_views`` input views."""
    if prune.keep_top <= 0:
        return 1.0
    many = num_views >= prune.many_views
    top = prune.keep_top_many_views if many else prune.keep_top
    rnd = prune.keep_random_many_views if many else prune.keep_random
    return top + (1 - top) * rnd


# --------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def predict_gaussians(
    model: TttlrmModel,
    images: Tensor,
    c2w: Tensor,
    fxfycxcy: Tensor,
    prune: Optional[PruneConfig] = None,
    chunk_views: int = 8,
    generator: Optional[torch.Generator] = None,
    free_space: Optional[FreeSpaceConfig] = None,
) -> Gaussians:
    """Predict, filter and prune the Gaussians of one scene, in the model's (normalised) frame.

    The model's own stages (``encode -> run_blocks -> decode_pruned``, what ``forward`` composes), with the
    per-pixel work chunked over views; every option of the model (scan, ``duplicate_virtual_views``, autocast)
    applies as in ``forward``.

    Args:
        model: the backbone (its ``cfg.autocast_bf16`` applies).
        images: [V, 3, H, W] in [0, 1]. c2w: [V, 4, 4] OpenCV, normalised. fxfycxcy: [V, 4] pixel intrinsics.
        prune: opacity pruning (None or ``keep_top = 0``: keep all, in view / patch-major order).
        chunk_views: views per chunk of encoding / decoding (bounds the per-pixel memory).
        generator: RNG of the random part of pruning.
        free_space: the free-space filter (:mod:`tttlrm_ns.geometry.free_space`), applied before pruning; None or
            tolerance 0: off.
    Returns:
        Unbatched Gaussians [M, ...] (float32).
    """
    v, _, h, w = images.shape
    if chunk_views < 1:
        raise ValueError(f"chunk_views must be >= 1, got {chunk_views}")
    images, c2w, fxfycxcy = images[None], c2w[None], fxfycxcy[None]  # one scene: [1, V, ...]
    model.check_inputs(images, c2w, fxfycxcy)
    if model.cfg.scan == "stream":
        # The streaming scan runs ar_chunk_views views per step (TttlrmModel.stream_step: the same stages with
        # carried fast-weight states), so its rays and encodings exist one step at a time; all its Gaussians exist
        # before they are pruned as a whole (the scan's chunks, not chunk_views, bound that part).
        g = model(images, c2w, fxfycxcy).gaussians[0]
        if free_space is not None and free_space.enabled:
            keep = free_space_keep(own_view_depth(g.means, c2w[0]), c2w[0], fxfycxcy[0], h, w,
                                   model.cfg.patch_size, free_space)
            g = g.index(keep.nonzero()[:, 0])
        return g if prune is None or prune.keep_top <= 0 else prune_gaussians(g, prune, v, generator)
    geometry = model.measure_geometry(images, c2w, fxfycxcy)  # [1, V, 2, H, W] or None; one sweep for both uses
    x = model.encode(images, c2w, fxfycxcy, chunk_views, geometry=geometry)  # [1, V*n, d]
    x = model.run_blocks(x, model.tokens_per_view(h, w)).tokens  # [1, V*n, d]
    return model.decode_pruned(x, c2w, fxfycxcy, h, w, prune, chunk_views, generator, images=images,
                               geometry=geometry, free_space=free_space)


__all__ = [
    "MemoryEstimate",
    "estimate_memory",
    "available_memory",
    "keep_fraction",
    "num_parameters",
    "predict_gaussians",
]

"""Feed-forward prediction with bounded memory: backbone once, decoding and pruning in chunks of views.

Pure torch (no nerfstudio): :class:`tttlrm_ns.ns.pipeline.TttlrmPipeline` prepares the views and calls
:func:`predict_gaussians`.

Memory. ``TttlrmModel.forward`` holds the 12-channel ray encoding of every pixel, the decoder output of every
pixel and all Gaussians at once (about ``60 + 3 * 4 * C`` bytes per pixel, ``C = 11 + 3K``), before any pruning.
Here the per-pixel work is chunked over views instead:

1. tokens are built ``chunk_views`` views at a time (rays, encoding, patchify, embedding), so the ray encoding
   of only one chunk exists at a time; the token matrix ``[L, d]`` is the one full-size activation;
2. the LaCT blocks run once over all tokens (the model's own code; per-view attention and the TTT layer are
   linear in the number of tokens);
3. Gaussians are decoded chunk by chunk. With pruning, a first decoding pass keeps only the opacity logit of
   every Gaussian (4 bytes each), the kept set is chosen globally with :func:`tttlrm_ns.gaussians.prune_indices`
   (same result and order as pruning the unchunked output), and a second pass writes each chunk's survivors
   into their final slots. The decoder is one linear layer, so decoding twice costs little next to the blocks.

The result equals ``TttlrmModel.forward`` followed by :func:`tttlrm_ns.gaussians.prune` (tested), for the
``full`` and ``ar`` scans; the ``stream`` scan already works chunk by chunk (``TttlrmModel.stream_step``).

:func:`estimate_memory` predicts the peak of this procedure from the configuration alone (calibrated on CPU,
see ``ACTIVATION_FACTOR``) so a request that cannot fit is refused before any weight is loaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from tttlrm_ns.gaussians import Gaussians, PruneConfig, prune_indices
from tttlrm_ns.model import TttlrmConfig, TttlrmModel
from tttlrm_ns.model.head import decode_gaussians
from tttlrm_ns.model.rays import pixel_rays, ray_input

GIB = 1024**3

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
) -> MemoryEstimate:
    """Peak memory of predicting Gaussians for ``num_views`` images of ``height x width``.

    ``keep_fraction``: share of Gaussians that survive pruning (1 = no pruning). Activations under bf16 autocast
    take half the bytes; the token matrix and the Gaussians stay float32.
    """
    pixels_per_view = height * width
    tokens = num_views * pixels_per_view // cfg.patch_size**2
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
        gaussians=4 * 2 * kept * c + 28 * num_views * pixels_per_view,
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


def _chunks(num_views: int, chunk_views: int) -> list[tuple[int, int]]:
    if chunk_views < 1:
        raise ValueError(f"chunk_views must be >= 1, got {chunk_views}")
    return [(s, min(s + chunk_views, num_views)) for s in range(0, num_views, chunk_views)]


def _encode_tokens(model: TttlrmModel, images: Tensor, c2w: Tensor, fxfycxcy: Tensor, chunk_views: int) -> Tensor:
    """Embedded input tokens [1, V*n, d], built ``chunk_views`` views at a time (tokens never mix views here)."""
    cfg = model.cfg
    v, _, h, w = images.shape
    n = (h // cfg.patch_size) * (w // cfg.patch_size)
    x = None
    for s, e in _chunks(v, chunk_views):
        feats, _, _ = ray_input(images[None, s:e], c2w[None, s:e], fxfycxcy[None, s:e], cfg.geometry_bf16_compat)
        t = model.input_layernorm(model.tokenizer(feats))  # [1, (e-s)*n, d]
        if x is None:
            x = t.new_empty(1, v * n, t.shape[-1])
        x[:, s * n : e * n] = t
    assert x is not None
    return x


def _decode_chunk(
    model: TttlrmModel, x: Tensor, images: Tensor, c2w: Tensor, fxfycxcy: Tensor, s: int, e: int, h: int, w: int
) -> Gaussians:
    """Gaussians [(e-s)*h*w] of views s..e-1 from the final tokens ``x`` [1, V*n, d]."""
    cfg = model.cfg
    n = (h // cfg.patch_size) * (w // cfg.patch_size)
    raw = model.decoder(x[:, s * n : e * n])  # [1, (e-s)*n, p*p*C]
    origins, dirs = pixel_rays(c2w[None, s:e], fxfycxcy[None, s:e], h, w, cfg.geometry_bf16_compat)
    return decode_gaussians(raw, origins, dirs, cfg, images[None, s:e])[0]


@torch.no_grad()
def predict_gaussians(
    model: TttlrmModel,
    images: Tensor,
    c2w: Tensor,
    fxfycxcy: Tensor,
    prune: Optional[PruneConfig] = None,
    chunk_views: int = 8,
    generator: Optional[torch.Generator] = None,
) -> Gaussians:
    """Predict and prune the Gaussians of one scene, in the model's (normalised) frame.

    Args:
        model: the backbone (its ``cfg.autocast_bf16`` applies).
        images: [V, 3, H, W] in [0, 1]. c2w: [V, 4, 4] OpenCV, normalised. fxfycxcy: [V, 4] pixel intrinsics.
        prune: opacity pruning (None or ``keep_top = 0``: keep all, in view / patch-major order).
        chunk_views: views per chunk of encoding / decoding (bounds the per-pixel memory).
        generator: RNG of the random part of pruning.
    Returns:
        Unbatched Gaussians [M, ...] (float32).
    """
    cfg = model.cfg
    v, _, h, w = images.shape
    model.check_inputs(images[None], c2w[None], fxfycxcy[None])
    if cfg.scan == "stream":
        # The streaming scan is causal and chunked by construction; its output is formed by the model.
        with torch.autocast(device_type=images.device.type, dtype=torch.bfloat16, enabled=cfg.autocast_bf16):
            g = model(images[None], c2w[None], fxfycxcy[None]).gaussians[0]
        if prune is None or prune.keep_top <= 0:
            return g
        from tttlrm_ns.gaussians import prune as prune_fn

        return prune_fn(g, prune, v, generator)

    n = (h // cfg.patch_size) * (w // cfg.patch_size)
    chunks = _chunks(v, chunk_views)
    with torch.autocast(device_type=images.device.type, dtype=torch.bfloat16, enabled=cfg.autocast_bf16):
        x = _encode_tokens(model, images, c2w, fxfycxcy, chunk_views)
        ops = model.schedule(v, n, x.shape[1])
        x, _ = model._run_blocks(x, n, ops)

        if prune is None or prune.keep_top <= 0:
            parts = [_decode_chunk(model, x, images, c2w, fxfycxcy, s, e, h, w) for s, e in chunks]
            return Gaussians.cat(parts) if len(parts) > 1 else parts[0]

        # Pass 1: opacity logits of every Gaussian -> the global kept set (exactly `prune` on the full output).
        per_view = h * w
        logits = torch.empty(v * per_view, device=images.device)
        for s, e in chunks:
            g = _decode_chunk(model, x, images, c2w, fxfycxcy, s, e, h, w)
            logits[s * per_view : e * per_view] = g.opacity_logits[:, 0]
        many = v >= prune.many_views
        keep = prune_indices(
            logits,
            prune.keep_top_many_views if many else prune.keep_top,
            prune.keep_random_many_views if many else prune.keep_random,
            generator,
        )  # [M] indices into the V*H*W Gaussians, in output order
        slot = torch.full((v * per_view,), -1, dtype=torch.long, device=images.device)
        slot[keep] = torch.arange(keep.numel(), device=images.device)
        del logits

        # Pass 2: decode each chunk again and scatter its survivors into their output slots.
        out: Optional[Gaussians] = None
        for s, e in chunks:
            g = _decode_chunk(model, x, images, c2w, fxfycxcy, s, e, h, w)
            dest = slot[s * per_view : e * per_view]
            sel = dest >= 0
            if out is None:
                out = Gaussians(*(t.new_empty(keep.numel(), *t.shape[1:]) for t in _fields(g)))
            for o_t, g_t in zip(_fields(out), _fields(g)):
                o_t[dest[sel]] = g_t[sel]
        assert out is not None
        return out


def _fields(g: Gaussians) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return (g.means, g.sh, g.log_scales, g.quats, g.opacity_logits)


__all__ = [
    "MemoryEstimate",
    "estimate_memory",
    "available_memory",
    "keep_fraction",
    "num_parameters",
    "predict_gaussians",
]

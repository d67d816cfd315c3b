"""tttLRM: posed images -> per-pixel 3D Gaussians in one forward pass.

Reading order: encode rays + colours per pixel, patchify and embed (:meth:`LaCTBackbone.encode`), a stack of LaCT
blocks (:meth:`TttlrmModel.run_blocks`: per-view attention, test-time-training layer over the whole sequence, MLP),
decode one Gaussian per pixel of the decoded ("virtual") views (:meth:`TttlrmModel.decode`). Semantics:
``docs/reference_semantics.md`` §2-§5.

One inference path. ``forward`` is exactly ``encode -> run_blocks -> decode``. The nerfstudio prediction
(:func:`tttlrm_ns.infer.predict.predict_gaussians`) runs the same stages, encoding and decoding ``chunk_views`` views at
a time (:meth:`TttlrmModel.decode_chunks`, :meth:`TttlrmModel.decode_pruned`) so that per-pixel buffers exist for one
chunk only; the trainer calls ``forward`` (DDP wraps it). The sequence layout (virtual views, the fast-weight
schedule, sequence parallelism, streaming states) is decided in ``run_blocks`` alone, so no caller can skip an
option such as ``duplicate_virtual_views``. The triplane object model (:mod:`tttlrm_ns.triplane.model`) shares the
tokenizer and the block stack through :class:`LaCTBackbone`.

Virtual views. The official model appends the decoded views as a second copy of the input views and runs
both halves through every block. Attention is per view and every TTT read uses the final fast weights (in the
full, autoregressive and streaming scans alike), so the copy stays bitwise identical to its input twin; by default
we decode from the input tokens instead (``duplicate_virtual_views=False``): same output at about half the cost.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Iterator, Optional

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..gaussians import Gaussians, PruneConfig, prune_indices
from ..geometry.free_space import FreeSpaceConfig, free_space_mask
from .blocks import LaCTBlock, layer_norm
from .config import TttlrmConfig
from .head import decode_gaussians, from_patch_major, to_patch_major
from .lact import FastWeightState, TTTOp, ar_schedule, cpu_has_fast_bf16, full_schedule
from .rays import pixel_rays, ray_input


class Patchify(nn.Module):
    """[B, V, c, H, W] -> [B, V*(H/p)*(W/p), p*p*c]; a patch vector is (row, column, channel), channel fastest."""

    def __init__(self, patch: int):
        super().__init__()
        self.patch = patch

    def forward(self, x: Tensor) -> Tensor:
        b, v, c, h, w = x.shape
        p = self.patch
        x = x.reshape(b, v, c, h // p, p, w // p, p)
        return x.permute(0, 1, 3, 5, 4, 6, 2).reshape(b, v * (h // p) * (w // p), p * p * c)


@dataclass
class TttlrmOutput:
    gaussians: Gaussians
    """Per-pixel Gaussians of the decoded views, leading dims [B, Vq*H*W], patch-major order."""
    raw: Tensor
    """Decoder output [B, Vq*n, p*p*C]."""
    intermediates: dict[str, Tensor] = field(default_factory=dict)
    """With ``return_intermediates``: ``model_input_views`` [B, V, 12, H, W], ``tokens`` and ``block{i}``
    residual streams [B, L, d], and the final fast weights ``block{i}.ttt_w{0,1,2}`` [B*h, ...]."""


def _sp_reduce(group):
    """Autograd-aware sum over the sequence-parallel group."""
    import torch.distributed.nn.functional as dist_fn

    return lambda t: dist_fn.all_reduce(t, group=group)


_WARNED_SLOW_BF16 = False


def _warn_slow_cpu_bf16(device: torch.device) -> None:
    """bfloat16 autocast on a CPU without bfloat16 matmul instructions is a slowdown, not a speed-up: say so once."""
    global _WARNED_SLOW_BF16
    if device.type == "cpu" and not _WARNED_SLOW_BF16 and not cpu_has_fast_bf16():
        _WARNED_SLOW_BF16 = True
        warnings.warn(
            "autocast_bf16 on a CPU without AVX512-BF16/AMX: torch's bfloat16 matmuls fall back to a path that is "
            "10-100x slower than float32 here; turn bf16 off on this machine (--pipeline.model.bf16 off, "
            "model.autocast_bf16: false)",
            RuntimeWarning,
            stacklevel=3,
        )


@dataclass
class BlocksOutput:
    """Result of :meth:`TttlrmModel.run_blocks`."""

    tokens: Tensor
    """Final tokens of the decoded views [B, Vq*n, d] (view-major, then patch row, patch column)."""
    states: list[FastWeightState]
    """Final fast-weight state of every block (what the next chunk of a stream continues from)."""


SWEEP_FILL_CONFIDENCE = 0.1
"""Below this sweep confidence a pixel counts as unmeasured for ``sweep_fill`` (the ``mvs`` initialiser's value)."""


def view_chunks(num_views: int, chunk_views: Optional[int]) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` covering ``num_views`` views ``chunk_views`` at a time (None: one chunk)."""
    if chunk_views is None:
        return [(0, num_views)]
    if chunk_views < 1:
        raise ValueError(f"chunk_views must be >= 1, got {chunk_views}")
    return [(s, min(s + chunk_views, num_views)) for s in range(0, num_views, chunk_views)]


class LaCTBackbone(nn.Module):
    """Tokenizer, input LayerNorm and the LaCT block stack: what the Gaussian and the triplane model share.

    Module names (``tokenizer``, ``input_layernorm``, ``blocks``) are the official state-dict keys, so a Gaussian
    checkpoint's backbone also initialises a triplane model. A subclass adds its head, then calls
    ``self.apply(self._init_weights)``: modules are built in the order tokenizer, LayerNorm, blocks, head, so a
    seeded model draws its random numbers in the same order as the official one.
    """

    def __init__(self, cfg: TttlrmConfig):
        super().__init__()
        self.cfg = cfg.validate()
        d, p = cfg.d, cfg.patch_size
        self.tokenizer = nn.Sequential(Patchify(p), nn.Linear(cfg.token_channels * p * p, d, bias=False))
        self.input_layernorm = layer_norm(d)
        self.blocks = nn.ModuleList([LaCTBlock(cfg) for _ in range(cfg.n_layer)])
        self._block_fns = [torch.compile(b) if cfg.compile else b for b in self.blocks]

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # Official initialisation (§3): Linear N(0, 0.02^2), zero biases, unit norm weights.
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, nn.RMSNorm)) and m.weight is not None:
            nn.init.ones_(m.weight)

    def num_parameters(self) -> int:
        return sum(t.numel() for t in self.parameters())

    def tokens_per_view(self, height: int, width: int) -> int:
        """Patches (tokens) of one ``height x width`` view."""
        p = self.cfg.patch_size
        return (height // p) * (width // p)

    def check_inputs(self, images: Tensor, c2w: Tensor, fxfycxcy: Tensor) -> None:
        """Raise ``ValueError`` with the expected layout if the inputs cannot be processed."""
        p = self.cfg.patch_size
        if images.dim() != 5 or images.shape[2] != 3:
            raise ValueError(f"images must be [B, V, 3, H, W] in [0, 1], got shape {tuple(images.shape)}")
        b, v, _, h, w = images.shape
        if h % p or w % p:
            raise ValueError(
                f"image size {h}x{w} (HxW) is not divisible by the patch size {p}; resize or crop to a multiple"
            )
        if tuple(c2w.shape) != (b, v, 4, 4):
            raise ValueError(f"c2w must be [B, V, 4, 4] = {(b, v, 4, 4)}, got {tuple(c2w.shape)}")
        if tuple(fxfycxcy.shape) != (b, v, 4):
            raise ValueError(f"fxfycxcy must be [B, V, 4] = {(b, v, 4)}, got {tuple(fxfycxcy.shape)}")

    def schedule(self, num_views: int, tokens_per_view: int, total_tokens: int, sp_size: int = 1) -> list[TTTOp]:
        """Fast-weight schedule for ``num_views`` (local) input views at the start of a ``total_tokens`` sequence.

        ``full``: one update from all input tokens. ``ar``: one update per ``ar_chunk_views`` views. ``stream``: the
        schedule of *one* streamed chunk, a full update from its views (:meth:`TttlrmModel.stream_step` chains the
        chunks through the fast-weight states). In all three every token then reads the final weights.
        """
        n_update = num_views * tokens_per_view
        if self.cfg.scan in ("full", "stream"):
            return full_schedule(n_update, total_tokens)
        chunk_views = self.cfg.ar_chunk_views
        if chunk_views % sp_size:
            raise ValueError(f"ar_chunk_views={chunk_views} is not divisible by the sequence-parallel size {sp_size}")
        chunk_views //= sp_size
        if num_views % chunk_views:
            raise ValueError(
                f"autoregressive scan: {num_views * sp_size} input views are not a multiple of "
                f"ar_chunk_views={self.cfg.ar_chunk_views}"
            )
        return ar_schedule(n_update, total_tokens, chunk_views * tokens_per_view)

    def autocast(self, device: torch.device):
        """bfloat16 autocast of the projections, attention and fast-weight matmuls when ``cfg.autocast_bf16``
        (a no-op context otherwise). Every stage opens its own, so the stages compose in any caller."""
        if self.cfg.autocast_bf16:
            _warn_slow_cpu_bf16(device)
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=self.cfg.autocast_bf16)

    @torch.no_grad()
    def measure_geometry(self, images: Tensor, c2w: Tensor, fxfycxcy: Tensor) -> Optional[Tensor]:
        """Plane-sweep depth and confidence of every input pixel, or None when the model does not read them.

        Args:
            images: [B, V, 3, H, W] in [0, 1]. c2w: [B, V, 4, 4] (the model's frame). fxfycxcy: [B, V, 4].
        Returns:
            [B, V, 2, H, W] float32: camera-z depth and confidence in [0, 1]. The sweep runs at about
            ``cfg.sweep_long_side`` pixels along the long side (:meth:`TttlrmConfig.sweep_downsample`); each
            measurement covers its block of input pixels (nearest-neighbour upsampling: blending depths across an
            occlusion edge would invent a surface).
        """
        cfg = self.cfg
        if not cfg.uses_geometry:
            return None
        from tttlrm_ns.geometry.plane_sweep import PlaneSweepConfig, fill_depth, plane_sweep

        b, v, _, h, w = images.shape
        sweep_cfg = PlaneSweepConfig(num_planes=cfg.sweep_planes, neighbours=cfg.sweep_neighbours,
                                     downsample=cfg.sweep_downsample(h, w))
        if v < 2:
            raise ValueError("geometry_input / depth_anchor need at least 2 input views (the plane sweep matches "
                             f"views against each other), got {v}")
        out = []
        for i in range(b):  # a loop over the scenes of a batch; each sweep is vectorised over views and pixels
            r = plane_sweep(images[i].float(), c2w[i].float(), fxfycxcy[i].float(), cfg.sweep_near, cfg.sweep_far,
                            sweep_cfg)
            depth = fill_depth(r.depth, r.confidence, SWEEP_FILL_CONFIDENCE) if cfg.sweep_fill else r.depth
            m = torch.stack([depth, r.confidence], 1)  # [V, 2, h', w']
            out.append(torch.nn.functional.interpolate(m, size=(h, w), mode="nearest"))
        return torch.stack(out).to(images.device)

    def encode(
        self,
        images: Tensor,
        c2w: Tensor,
        fxfycxcy: Tensor,
        chunk_views: Optional[int] = None,
        intermediates: Optional[dict[str, Tensor]] = None,
        geometry: Optional[Tensor] = None,
    ) -> Tensor:
        """Embedded input tokens: ray encoding, patchify, linear, LayerNorm.

        Args:
            images: [B, V, 3, H, W] in [0, 1]. c2w: [B, V, 4, 4] OpenCV camera-to-world. fxfycxcy: [B, V, 4].
            chunk_views: build the tokens this many views at a time (None: all at once). The 12-channel ray
                encoding (48 B per pixel in float32) then exists for one chunk only. Tokens never mix views here,
                so the tokens are the same up to the last bit (the embedding matmul over fewer rows may round
                differently).
            intermediates: receives ``model_input_views`` [B, V, 12, H, W] (all chunks).
            geometry: [B, V, 2, H, W] from :meth:`measure_geometry` (computed here if the model reads it and it is
                not given; pass it when the decoder needs it too, so the sweep runs once).
        Returns:
            [B, V*n, d], ``n = (H/p) (W/p)``, view-major then patch row, patch column.
        """
        b, v, _, h, w = images.shape
        if self.cfg.geometry_input and geometry is None:
            geometry = self.measure_geometry(images, c2w, fxfycxcy)
        n = self.tokens_per_view(h, w)
        x: Optional[Tensor] = None
        feats_seen = []
        for s, e in view_chunks(v, chunk_views):  # chunks of views, each one batched pass over its pixels
            # Rays and the encoding stay float32 (geometry is never autocast); the embedding follows autocast.
            feats, _, _ = ray_input(images[:, s:e], c2w[:, s:e], fxfycxcy[:, s:e], self.cfg.geometry_bf16_compat)
            if self.cfg.geometry_input:
                g = geometry[:, s:e].to(feats.dtype)
                # log depth: the frame is scaled so that the median depth is 1 (O(1) values, scale-free steps)
                feats = torch.cat([feats, torch.log(g[:, :, :1].clamp_min(1e-3)), g[:, :, 1:2]], dim=2)
            with self.autocast(images.device):
                t = self.input_layernorm(self.tokenizer(feats))  # [B, (e-s)*n, d]
            if intermediates is not None:
                feats_seen.append(feats)
            if e - s == v:
                x = t  # one chunk: no copy (keeps the autograd graph of training simple)
            else:
                if x is None:
                    x = t.new_empty(b, v * n, t.shape[-1])
                x[:, s * n : e * n] = t
        if intermediates is not None:
            intermediates["model_input_views"] = torch.cat(feats_seen, 1) if len(feats_seen) > 1 else feats_seen[0]
        assert x is not None
        return x

    def _run_stack(
        self,
        x: Tensor,
        tokens_per_view: int,
        ops: list[TTTOp],
        reduce_fn=None,
        states: Optional[list[FastWeightState]] = None,
        query_tokens: int = 0,
        intermediates: Optional[dict[str, Tensor]] = None,
    ) -> tuple[Tensor, list[FastWeightState]]:
        """Every block over ``x`` [B, L, d] with the schedule ``ops``; returns (x [B, L, d], per-block final states).

        ``query_tokens``: the last ones attend among themselves as one group (the triplane queries); the others
        attend within their view. ``intermediates`` receives ``block{i}`` [B, L, d] and ``block{i}.ttt_w{j}``.
        """
        new_states = []
        for i, block in enumerate(self._block_fns):  # a loop over layers; each is one batched pass over all tokens
            state = states[i] if states is not None else None
            if self.cfg.grad_checkpoint and torch.is_grad_enabled():
                x, fast = checkpoint(block, x, tokens_per_view, ops, reduce_fn, state, query_tokens,
                                     use_reentrant=False)
            else:
                x, fast = block(x, tokens_per_view, ops, reduce_fn, state, query_tokens)
            new_states.append(fast)
            if intermediates is not None:
                intermediates[f"block{i}"] = x
                for j, wj in enumerate(fast.weights):
                    intermediates[f"block{i}.ttt_w{j}"] = wj
        return x, new_states


def own_view_depth(means: Tensor, c2w: Tensor) -> Tensor:
    """Planar depth of pixel-aligned Gaussians in their own views: means [V*H*W, 3] (view-major), c2w [V, 4, 4]
    -> [V*H*W] camera ``z``."""
    v = c2w.shape[0]
    m = means.reshape(v, -1, 3) - c2w[:, None, :3, 3]
    return (m * c2w[:, None, :3, 2]).sum(-1).reshape(-1)


def free_space_keep(depth: Tensor, c2w: Tensor, fxfycxcy: Tensor, height: int, width: int, patch: int,
                    cfg: FreeSpaceConfig) -> Tensor:
    """The free-space filter on one scene's Gaussian order: depth [V*H*W] in the patch-major order of the decoder,
    c2w [V, 4, 4], fxfycxcy [V, 4] -> keep [V*H*W] bool in the same order
    (:func:`tttlrm_ns.geometry.free_space.free_space_mask` on the per-view depth maps)."""
    v = c2w.shape[0]
    maps = from_patch_major(depth[None, :, None], v, height, width, patch)[0, :, 0]  # [V, H, W]
    keep = free_space_mask(maps, c2w, fxfycxcy, cfg)
    return to_patch_major(keep[None, :, None], patch)[0, :, 0]


class TttlrmModel(LaCTBackbone):
    """Posed images -> one Gaussian per pixel (see the module docstring for the stages)."""

    def __init__(self, cfg: TttlrmConfig):
        super().__init__(cfg)
        d, p = cfg.d, cfg.patch_size
        self.decoder = nn.Sequential(layer_norm(d), nn.Linear(d, p * p * cfg.gaussian_channels, bias=False))
        self.apply(self._init_weights)

    # --- stage 2: the blocks (stage 1, encode, is LaCTBackbone's) ------------------------------------------
    def run_blocks(
        self,
        tokens: Tensor,
        tokens_per_view: int,
        virtual_view_indices: Optional[Tensor] = None,
        sp_group=None,
        states: Optional[list[FastWeightState]] = None,
        intermediates: Optional[dict[str, Tensor]] = None,
    ) -> BlocksOutput:
        """All LaCT blocks over the input tokens; returns the final tokens of the views to decode.

        The fast weights are updated from the input tokens only (:meth:`schedule`) and every token reads the final
        weights. With ``cfg.duplicate_virtual_views`` the sequence is ``[input tokens | copies of the decoded
        views' tokens]`` and the copies are decoded (official layout); otherwise the decoded views' own tokens are
        (same values, see the module docstring).

        Args:
            tokens: [B, V*n, d] from :meth:`encode` (under sequence parallelism, this rank's shard of the views).
            tokens_per_view: ``n``.
            virtual_view_indices: long [Vq], the input views to decode (default: all, in order).
            sp_group: process group of sequence parallelism: the TTT updates are summed over the group.
            states: per-block fast-weight states to continue from (the ``stream`` scan: :meth:`stream_step` calls
                this once per chunk of views; default: the initial weights).
            intermediates: receives ``tokens`` [B, L, d] (the sequence entering block 0, virtual copy included) and
                what :meth:`_run_stack` records.
        Returns:
            tokens [B, Vq*n, d] and the final states of every block.
        """
        cfg, n = self.cfg, tokens_per_view
        v = tokens.shape[1] // n
        sp_size, reduce_fn = 1, None
        if sp_group is not None:
            import torch.distributed as dist

            sp_size = dist.get_world_size(sp_group)
            reduce_fn = _sp_reduce(sp_group) if sp_size > 1 else None
        tok_index = None
        if virtual_view_indices is not None:
            tok_index = (virtual_view_indices[:, None] * n + torch.arange(n, device=tokens.device)).reshape(-1)
        x = tokens
        if cfg.duplicate_virtual_views:
            x = torch.cat([x, x if tok_index is None else x[:, tok_index]], dim=1)  # [B, (V+Vq)*n, d]
        if intermediates is not None:
            intermediates["tokens"] = x
        ops = self.schedule(v, n, x.shape[1], sp_size)
        with self.autocast(tokens.device):
            x, states = self._run_stack(x, n, ops, reduce_fn, states, intermediates=intermediates)
        if cfg.duplicate_virtual_views:
            decoded = x[:, v * n :]
        else:
            decoded = x if tok_index is None else x[:, tok_index]
        return BlocksOutput(decoded, states)

    # --- stage 3: decoding ----------------------------------------------------------------------------------
    def decode(
        self, tokens: Tensor, c2w: Tensor, fxfycxcy: Tensor, height: int, width: int, images: Optional[Tensor] = None,
        geometry: Optional[Tensor] = None,
    ) -> TttlrmOutput:
        """Final tokens of the decoded views -> one Gaussian per pixel.

        Args:
            tokens: [B, Vq*n, d] (``run_blocks(...).tokens``). c2w: [B, Vq, 4, 4], fxfycxcy: [B, Vq, 4]: the
                cameras of those views. height, width: pixels per view.
            images: [B, Vq, 3, H, W] those views' pixels; needed by ``cfg.rgb_skip`` (ignored otherwise).
            geometry: [B, Vq, 2, H, W] those views' measured depth and confidence (:meth:`measure_geometry`);
                needed by ``cfg.depth_anchor`` (ignored otherwise).
        Returns:
            Gaussians [B, Vq*H*W, ...] (patch-major order) and ``raw`` [B, Vq*n, p*p*C] (float32).
        """
        with self.autocast(tokens.device):
            raw = self.decoder(tokens)  # [B, Vq*n, p*p*C]
        raw = raw.to(torch.promote_types(raw.dtype, torch.float32))
        origins, dirs = pixel_rays(c2w, fxfycxcy, height, width, self.cfg.geometry_bf16_compat)  # [B, Vq, 3, H, W]
        anchor = None
        if self.cfg.depth_anchor:
            if geometry is None:
                raise ValueError("depth_anchor=True needs the decoded views' measured geometry in decode")
            # camera z -> distance along the unit ray: z / cos(angle between the ray and the optical axis)
            cos = (dirs * c2w[:, :, :3, 2, None, None].to(dirs.dtype)).sum(2, keepdim=True).clamp_min(1e-3)
            weight = (geometry[:, :, 1:2] / self.cfg.anchor_confidence).clamp(self.cfg.anchor_min_weight, 1)
            anchor = (geometry[:, :, :1].to(dirs.dtype) / cos, weight.to(dirs.dtype))
        return TttlrmOutput(decode_gaussians(raw, origins, dirs, self.cfg, images, anchor), raw)

    def decode_chunks(
        self, tokens: Tensor, c2w: Tensor, fxfycxcy: Tensor, height: int, width: int, chunk_views: Optional[int],
        images: Optional[Tensor] = None, geometry: Optional[Tensor] = None,
    ) -> Iterator[tuple[int, int, Gaussians]]:
        """:meth:`decode`, ``chunk_views`` views at a time (bounds the decoder output and rays to one chunk).

        Yields ``(start, end, Gaussians [B, (end-start)*H*W, ...])`` for views ``start .. end-1`` of ``c2w``.
        """
        n = self.tokens_per_view(height, width)
        for s, e in view_chunks(c2w.shape[1], chunk_views):
            out = self.decode(tokens[:, s * n : e * n], c2w[:, s:e], fxfycxcy[:, s:e], height, width,
                              None if images is None else images[:, s:e],
                              None if geometry is None else geometry[:, s:e])
            yield s, e, out.gaussians

    def decode_pruned(
        self,
        tokens: Tensor,
        c2w: Tensor,
        fxfycxcy: Tensor,
        height: int,
        width: int,
        prune: Optional[PruneConfig] = None,
        chunk_views: Optional[int] = None,
        generator: Optional[torch.Generator] = None,
        num_views: Optional[int] = None,
        images: Optional[Tensor] = None,
        geometry: Optional[Tensor] = None,
        free_space: Optional[FreeSpaceConfig] = None,
    ) -> Gaussians:
        """Decode and opacity-prune one scene while holding one chunk of Gaussians plus the kept ones.

        Same result and order as ``decode(...).gaussians[0]`` followed by :func:`tttlrm_ns.gaussians.prune`
        (tested): a first pass keeps only the opacity logit of every Gaussian (4 bytes each), the kept set is
        chosen globally with :func:`tttlrm_ns.gaussians.prune_indices`, and a second pass writes each chunk's
        survivors into their output slots. The decoder is one linear layer, so decoding twice costs little.

        With ``free_space`` enabled the first pass also keeps every Gaussian's depth in its own view (4 bytes
        each); the Gaussians that other views see through (:func:`free_space_keep`) are removed first and the
        opacity pruning chooses among the rest.

        Args:
            tokens: [1, Vq*n, d]. c2w: [1, Vq, 4, 4]. fxfycxcy: [1, Vq, 4].
            prune: None or ``keep_top = 0``: keep all, in view / patch-major order.
            chunk_views: views per decoding chunk (None: one chunk).
            generator: RNG of the random part of pruning.
            num_views: input view count that selects the ``*_many_views`` fractions (default: Vq).
            images: [1, Vq, 3, H, W] the decoded views' pixels (``cfg.rgb_skip``).
            geometry: [1, Vq, 2, H, W] their measured depth and confidence (``cfg.depth_anchor``).
            free_space: the free-space filter (None or tolerance 0: off).
        Returns:
            Unbatched Gaussians [M, ...] (float32).
        """
        if tokens.shape[0] != 1:
            raise ValueError(f"decode_pruned handles one scene (batch 1), got a batch of {tokens.shape[0]}")
        vq = c2w.shape[1]
        chunks = lambda: self.decode_chunks(tokens, c2w, fxfycxcy, height, width, chunk_views, images,  # noqa: E731
                                             geometry)
        pruning = prune is not None and prune.keep_top > 0
        filtering = free_space is not None and free_space.enabled
        if not pruning and not filtering:
            parts = [g[0] for _, _, g in chunks()]
            return Gaussians.cat(parts) if len(parts) > 1 else parts[0]

        # Pass 1: opacity logits (and own-view depths) of every Gaussian -> the global kept set (exactly the
        # filter and `prune` on the full output).
        per_view = height * width
        logits = torch.empty(vq * per_view, device=tokens.device)
        depth = torch.empty(vq * per_view, device=tokens.device) if filtering else None
        for s, e, g in chunks():
            logits[s * per_view : e * per_view] = g.opacity_logits[0, :, 0]
            if depth is not None:
                depth[s * per_view : e * per_view] = own_view_depth(g.means[0], c2w[0, s:e])
        if depth is not None:
            candidates = free_space_keep(depth, c2w[0], fxfycxcy[0], height, width, self.cfg.patch_size,
                                         free_space).nonzero()[:, 0]  # [M'] ascending
            del depth
        else:
            candidates = None
        if pruning:
            assert prune is not None
            many = (num_views if num_views is not None else vq) >= prune.many_views
            keep = prune_indices(
                logits if candidates is None else logits[candidates],
                prune.keep_top_many_views if many else prune.keep_top,
                prune.keep_random_many_views if many else prune.keep_random,
                generator,
            )  # [M] indices into the Vq*H*W Gaussians (or the candidates), in output order
            if candidates is not None:
                keep = candidates[keep]
        else:
            assert candidates is not None
            keep = candidates
        slot = torch.full((vq * per_view,), -1, dtype=torch.long, device=tokens.device)
        slot[keep] = torch.arange(keep.numel(), device=tokens.device)  # output slot of each Gaussian, -1: pruned
        del logits

        # Pass 2: decode each chunk again and scatter its survivors into their output slots.
        out: Optional[Gaussians] = None
        for s, e, g in chunks():
            g = g[0]
            dest = slot[s * per_view : e * per_view]
            sel = dest >= 0
            if out is None:
                out = g.map(lambda t: t.new_empty(keep.numel(), *t.shape[1:]))
            for name in ("means", "sh", "log_scales", "quats", "opacity_logits"):
                getattr(out, name)[dest[sel]] = getattr(g, name)[sel]
        assert out is not None
        return out

    # --- the composition ------------------------------------------------------------------------------------
    def forward(
        self,
        images: Tensor,
        c2w: Tensor,
        fxfycxcy: Tensor,
        virtual_view_indices: Optional[Tensor] = None,
        sp_group=None,
        return_intermediates: bool = False,
    ) -> TttlrmOutput:
        """Predict one Gaussian per pixel of every virtual view: ``encode -> run_blocks -> decode``.

        Args:
            images: [B, V, 3, H, W] in [0, 1]. c2w: [B, V, 4, 4] OpenCV camera-to-world (normalised frame).
            fxfycxcy: [B, V, 4] pixel intrinsics.
            virtual_view_indices: long [Vq], the input views to decode (default: all, in order). Virtual
                views are copies of input views (§1.6), so decoding them means decoding those views' tokens.
            sp_group: process group of sequence parallelism: this rank holds one shard of the views and the
                TTT updates are summed over the group.
            return_intermediates: fill :attr:`TttlrmOutput.intermediates`.
        """
        cfg = self.cfg
        self.check_inputs(images, c2w, fxfycxcy)
        if cfg.scan == "stream":
            if virtual_view_indices is not None or sp_group is not None:
                raise ValueError("scan='stream' decodes every input view on one process; "
                                 "virtual_view_indices and sp_group are not supported")
            return self._forward_stream(images, c2w, fxfycxcy)
        h, w = images.shape[-2:]
        inter: Optional[dict[str, Tensor]] = {} if return_intermediates else None
        geometry = self.measure_geometry(images, c2w, fxfycxcy)  # None unless the model reads measured depth
        if geometry is not None and sp_group is not None:
            raise ValueError("geometry_input / depth_anchor need every input view on one process; sequence "
                             "parallelism (sp_group) is not supported with them")
        x = self.encode(images, c2w, fxfycxcy, intermediates=inter, geometry=geometry)
        blocks = self.run_blocks(x, self.tokens_per_view(h, w), virtual_view_indices, sp_group, intermediates=inter)
        if virtual_view_indices is not None:
            c2w, fxfycxcy = c2w[:, virtual_view_indices], fxfycxcy[:, virtual_view_indices]
            images = images[:, virtual_view_indices]
            geometry = None if geometry is None else geometry[:, virtual_view_indices]
        out = self.decode(blocks.tokens, c2w, fxfycxcy, h, w, images, geometry)
        if inter is not None:
            out.intermediates = inter
        return out

    # --- causal streaming ---------------------------------------------------------------------------------------
    def stream_step(
        self, images: Tensor, c2w: Tensor, fxfycxcy: Tensor, states: Optional[list] = None
    ) -> tuple[TttlrmOutput, list]:
        """Process one chunk of newly arrived views (causal streaming, no lookahead).

        Every layer first updates its fast weights from the chunk's tokens (continuing from ``states``, the
        per-layer states returned by the previous call, or the initial weights), then the chunk reads the
        updated weights. Gaussians of a chunk therefore never depend on later views, unlike the official
        autoregressive scan, where every token reads the final weights
        (``docs/reference_semantics.md`` Q7).

        Returns the chunk's Gaussians and the states to pass with the next chunk.
        """
        self.check_inputs(images, c2w, fxfycxcy)
        h, w = images.shape[-2:]
        x = self.encode(images, c2w, fxfycxcy)
        blocks = self.run_blocks(x, self.tokens_per_view(h, w), states=states)
        return self.decode(blocks.tokens, c2w, fxfycxcy, h, w, images), blocks.states

    def _forward_stream(self, images: Tensor, c2w: Tensor, fxfycxcy: Tensor) -> TttlrmOutput:
        v = images.shape[1]
        chunk = self.cfg.ar_chunk_views
        if v % chunk:
            raise ValueError(f"streaming scan: {v} input views are not a multiple of ar_chunk_views={chunk}")
        states, outs = None, []
        for s in range(0, v, chunk):  # a loop over chunks of views, each a batched pass over its tokens
            out, states = self.stream_step(images[:, s : s + chunk], c2w[:, s : s + chunk],
                                           fxfycxcy[:, s : s + chunk], states)
            outs.append(out)
        gaussians = Gaussians.cat([o.gaussians for o in outs])
        return TttlrmOutput(gaussians, torch.cat([o.raw for o in outs], 1), {})


__all__ = ["BlocksOutput", "LaCTBackbone", "TttlrmModel", "TttlrmOutput", "Patchify", "view_chunks"]

"""tttLRM: posed images -> per-pixel 3D Gaussians in one forward pass.

Reading order: encode rays + colours per pixel, patchify and embed, a stack of LaCT blocks (per-view
attention, test-time-training layer over the whole sequence, MLP), decode one Gaussian per pixel of the
decoded ("virtual") views. Semantics: ``docs/reference_semantics.md`` §2-§5.

Virtual views. The official model appends the decoded views as a second copy of the input views and runs
both halves through every block. Attention is per view and every TTT read uses the final fast weights, so
the copy stays bitwise identical to its input twin; by default we decode from the input tokens instead
(``duplicate_virtual_views=False``): same output at about half the cost.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..gaussians import Gaussians
from .blocks import LaCTBlock, layer_norm
from .config import TttlrmConfig
from .head import decode_gaussians
from .lact import TTTOp, ar_schedule, cpu_has_fast_bf16, full_schedule
from .rays import ray_input


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


class TttlrmModel(nn.Module):
    def __init__(self, cfg: TttlrmConfig):
        super().__init__()
        self.cfg = cfg.validate()
        d, p = cfg.d, cfg.patch_size
        self.tokenizer = nn.Sequential(Patchify(p), nn.Linear(cfg.in_channels * p * p, d, bias=False))
        self.input_layernorm = layer_norm(d)
        self.blocks = nn.ModuleList([LaCTBlock(cfg) for _ in range(cfg.n_layer)])
        self.decoder = nn.Sequential(layer_norm(d), nn.Linear(d, p * p * cfg.gaussian_channels, bias=False))
        self.apply(self._init_weights)
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

    # ------------------------------------------------------------------------------------------------
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
        """Fast-weight schedule for ``num_views`` (local) input views at the start of the sequence."""
        n_update = num_views * tokens_per_view
        if self.cfg.scan == "full":
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

    def _run_blocks(self, x, n, ops, reduce_fn=None, states=None, inter=None):
        """All blocks over the token sequence ``x`` [B, L, d]; returns (x, per-layer fast-weight states)."""
        new_states = []
        for i, block in enumerate(self._block_fns):
            state = states[i] if states is not None else None
            if self.cfg.grad_checkpoint and torch.is_grad_enabled():
                x, fast = checkpoint(block, x, n, ops, reduce_fn, state, use_reentrant=False)
            else:
                x, fast = block(x, n, ops, reduce_fn, state)
            new_states.append(fast)
            if inter is not None:
                inter[f"block{i}"] = x
                for j, wj in enumerate(fast.weights):
                    inter[f"block{i}.ttt_w{j}"] = wj
        return x, new_states

    def _output(self, raw: Tensor, origins: Tensor, dirs: Tensor, inter: dict, images: Tensor) -> TttlrmOutput:
        raw = raw.to(torch.promote_types(raw.dtype, torch.float32))
        return TttlrmOutput(decode_gaussians(raw, origins, dirs, self.cfg, images), raw, inter)

    def forward(
        self,
        images: Tensor,
        c2w: Tensor,
        fxfycxcy: Tensor,
        virtual_view_indices: Optional[Tensor] = None,
        sp_group=None,
        return_intermediates: bool = False,
    ) -> TttlrmOutput:
        """Predict one Gaussian per pixel of every virtual view.

        Args:
            images: [B, V, 3, H, W] in [0, 1]. c2w: [B, V, 4, 4] OpenCV camera-to-world (normalised frame).
            fxfycxcy: [B, V, 4] pixel intrinsics.
            virtual_view_indices: long [Vq], the input views to decode (default: all, in order). Virtual
                views are copies of input views (§1.6), so decoding them means decoding those views' tokens.
            sp_group: process group of sequence parallelism: this rank holds one shard of the views and the
                TTT updates are summed over the group.
        """
        cfg = self.cfg
        self.check_inputs(images, c2w, fxfycxcy)
        if cfg.scan == "stream":
            if virtual_view_indices is not None or sp_group is not None:
                raise ValueError("scan='stream' decodes every input view on one process; "
                                 "virtual_view_indices and sp_group are not supported")
            return self._forward_stream(images, c2w, fxfycxcy)
        b, v, _, h, w = images.shape
        p = cfg.patch_size
        n = (h // p) * (w // p)
        all_views = virtual_view_indices is None
        if all_views:
            virtual_view_indices = torch.arange(v, device=images.device)
        feats, origins, dirs = ray_input(images, c2w, fxfycxcy, cfg.geometry_bf16_compat)
        inter: dict[str, Tensor] = {"model_input_views": feats} if return_intermediates else {}
        sp_size = 1
        reduce_fn = None
        if sp_group is not None:
            import torch.distributed as dist

            sp_size = dist.get_world_size(sp_group)
            reduce_fn = _sp_reduce(sp_group) if sp_size > 1 else None

        if cfg.autocast_bf16:
            _warn_slow_cpu_bf16(images.device)
        with torch.autocast(device_type=images.device.type, dtype=torch.bfloat16, enabled=cfg.autocast_bf16):
            x = self.input_layernorm(self.tokenizer(feats))  # [B, V*n, d]
            tok_index = (virtual_view_indices[:, None] * n + torch.arange(n, device=x.device)).reshape(-1)
            if cfg.duplicate_virtual_views:
                x = torch.cat([x, x[:, tok_index]], dim=1)  # [B, (V+Vq)*n, d]
            if return_intermediates:
                inter["tokens"] = x
            ops = self.schedule(v, n, x.shape[1], sp_size)
            x, _ = self._run_blocks(x, n, ops, reduce_fn, inter=inter if return_intermediates else None)
            if cfg.duplicate_virtual_views:
                decoded = x[:, v * n :]
            else:
                decoded = x if all_views else x[:, tok_index]
            raw = self.decoder(decoded)  # [B, Vq*n, p*p*C]
        sel = virtual_view_indices
        return self._output(raw, origins[:, sel], dirs[:, sel], inter, images[:, sel])

    # --- causal streaming ---------------------------------------------------------------------------
    def stream_step(
        self, images: Tensor, c2w: Tensor, fxfycxcy: Tensor, states: Optional[list] = None
    ) -> tuple[TttlrmOutput, list]:
        """Process one chunk of newly arrived views (causal streaming, no lookahead).

        Every layer first updates its fast weights from the chunk's tokens (continuing from ``states``, the
        per-layer states returned by the previous call, or the initial weights), then the chunk reads the
        updated weights. Gaussians of a chunk therefore never depend on later views, unlike the official
        autoregressive scan, where every token reads the final weights (``docs/reference_semantics.md`` Q7).

        Returns the chunk's Gaussians and the states to pass with the next chunk.
        """
        self.check_inputs(images, c2w, fxfycxcy)
        b, v, _, h, w = images.shape
        n = (h // self.cfg.patch_size) * (w // self.cfg.patch_size)
        feats, origins, dirs = ray_input(images, c2w, fxfycxcy, self.cfg.geometry_bf16_compat)
        with torch.autocast(device_type=images.device.type, dtype=torch.bfloat16, enabled=self.cfg.autocast_bf16):
            x = self.input_layernorm(self.tokenizer(feats))
            x, states = self._run_blocks(x, n, full_schedule(v * n, v * n), states=states)
            raw = self.decoder(x)
        return self._output(raw, origins, dirs, {}, images), states

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

    def num_parameters(self) -> int:
        return sum(t.numel() for t in self.parameters())


__all__ = ["TttlrmModel", "TttlrmOutput", "Patchify"]

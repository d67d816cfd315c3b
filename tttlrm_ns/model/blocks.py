"""LaCT block: per-view self-attention, test-time-training layer, MLP.

Module and parameter names follow the official state dict (``blocks.i.module_list.{0,1,2}.{ln,f}.*``) so an
official checkpoint loads without renaming (``docs/reference_semantics.md`` §3, §4, §7.3).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import TttlrmConfig
from .lact import FastWeightState, TTTHyper, TTTOp, ttt_scan


def layer_norm(d: int) -> nn.LayerNorm:
    """Bias-free LayerNorm (eps 1e-5) used everywhere in the model."""
    return nn.LayerNorm(d, eps=1e-5, bias=False)


class ViewAttention(nn.Module):
    """Bidirectional self-attention restricted to the tokens of one view, with per-head q/k RMSNorm."""

    def __init__(self, d: int, head_dim: int):
        super().__init__()
        self.head_dim = head_dim
        self.heads = d // head_dim
        self.to_qkv = nn.Linear(d, 3 * d, bias=False)
        # eps=None: torch's default (machine epsilon of the dtype), as in the official model.
        self.q_norm = nn.RMSNorm(head_dim, eps=None)
        self.k_norm = nn.RMSNorm(head_dim, eps=None)
        self.c_proj = nn.Linear(d, d, bias=False)

    def forward(self, x: Tensor, tokens_per_view: int, query_tokens: int = 0) -> Tensor:
        """x: [B, V*n + Q, d] -> same shape; attention never mixes views.

        ``query_tokens`` (Q): the last Q tokens are not a view but one extra group that attends among itself (the
        triplane queries: all three planes jointly); the V*n tokens before them attend within their view.
        """
        if query_tokens:
            n_in = x.shape[1] - query_tokens
            return torch.cat([self(x[:, :n_in], tokens_per_view), self(x[:, n_in:], query_tokens)], dim=1)
        b, length, d = x.shape
        views = length // tokens_per_view
        qkv = self.to_qkv(x).view(b * views, tokens_per_view, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B*V, heads, n, head_dim]
        q, k = self.q_norm(q), self.k_norm(k)
        o = F.scaled_dot_product_attention(q, k, v)  # [B*V, heads, n, head_dim]
        o = o.transpose(1, 2).reshape(b, length, d)
        return self.c_proj(o)


class FastWeightLayer(nn.Module):
    """LaCT test-time-training layer with SwiGLU fast weights (one or more heads)."""

    def __init__(self, cfg: TttlrmConfig):
        super().__init__()
        d, dh, m, h = cfg.d, cfg.ttt_head_dim, cfg.ttt_hidden, cfg.ttt_heads
        self.heads, self.head_dim = h, dh
        self.lr_layout = cfg.ttt_lr_layout
        self.base_lr_inv = cfg.base_lr_inv
        self.to_qkv = nn.Linear(d, 3 * d, bias=False)
        self.lr_fc = nn.Linear(d, 3 * h, bias=True)
        # Initial fast weights, N(0, 2/d_in) (He init for the SwiGLU input / output fans).
        self.w0 = nn.Parameter(torch.randn(h, dh, m) * (2.0 / dh) ** 0.5)
        self.w2 = nn.Parameter(torch.randn(h, dh, m) * (2.0 / dh) ** 0.5)
        self.w1 = nn.Parameter(torch.randn(h, m, dh) * (2.0 / m) ** 0.5)
        self.o_norm = nn.RMSNorm(d, eps=1e-5)  # over all heads jointly, as the official model
        self.c_proj = nn.Linear(d, d, bias=False)
        self.hyper = TTTHyper(
            muon_steps=cfg.muon_steps,
            ns_dtype=getattr(torch, cfg.ns_dtype),
            ns_bf16_emulation=cfg.ns_bf16_emulation,
            weight_renorm=cfg.weight_renorm,
            detach_renorm_target=cfg.detach_renorm_target,
            elastic_lambda=cfg.elastic_lambda,
            fisher_alpha=cfg.fisher_alpha,
            anchor_beta=cfg.anchor_beta,
            elastic_compat=cfg.elastic_compat,
        )

    def learning_rates(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-token, per-head rates for (W0, W1, W2), each [B*h, L, 1] float32 (autocast off)."""
        b, length, _ = x.shape
        h = self.heads
        dt = torch.promote_types(self.lr_fc.weight.dtype, torch.float32)
        with torch.autocast(device_type=x.device.type, enabled=False):
            logits = F.linear(x.to(dt), self.lr_fc.weight.to(dt), self.lr_fc.bias.to(dt))
            lr = F.softplus(logits + self.base_lr_inv)  # [B, L, 3h]
        # LaCT layout: channel w*h + j is weight w of head j. With one head the official layout is the same.
        lr = lr.view(b, length, 3, h).permute(2, 0, 3, 1).reshape(3, b * h, length, 1)
        return lr[0], lr[1], lr[2]

    def initial_state(self, batch: int) -> FastWeightState:
        """Initial fast weights (float32 regardless of autocast), one copy per batch element and head."""
        h = self.heads
        weights = tuple(
            w.to(torch.promote_types(w.dtype, torch.float32)).unsqueeze(0).expand(batch, -1, -1, -1)
            .reshape(batch * h, *w.shape[1:])
            for w in (self.w0, self.w1, self.w2)
        )
        return FastWeightState.initial(weights, self.hyper)

    def forward(
        self,
        x: Tensor,
        ops: list[TTTOp],
        reduce_fn: Optional[Callable[[Tensor], Tensor]] = None,
        state: Optional[FastWeightState] = None,
    ) -> tuple[Tensor, FastWeightState]:
        """x: [B, L, d] -> ([B, L, d], final fast-weight state). ``state`` continues an earlier call
        (streaming); by default the layer starts from its initial fast weights."""
        b, length, d = x.shape
        h, dh = self.heads, self.head_dim
        qkv = F.silu(self.to_qkv(x))  # [B, L, 3d]
        qkv = qkv.view(b, length, 3, h, dh).permute(2, 0, 3, 1, 4).reshape(3, b * h, length, dh)
        q, k, v = qkv.unbind(0)  # [B*h, L, dh]
        q = q / (q.norm(dim=-1, keepdim=True) + 1e-5)
        k = k / (k.norm(dim=-1, keepdim=True) + 1e-5)
        lrs = self.learning_rates(x)
        o, final = ttt_scan(q, k, v, lrs, state or self.initial_state(b), ops, self.hyper, reduce_fn)
        o = o.view(b, h, length, dh).transpose(1, 2).reshape(b, length, d)
        return self.c_proj(self.o_norm(o)), final


class MLP(nn.Module):
    """Token-wise ``d -> ratio*d -> d`` with exact GELU, no biases."""

    def __init__(self, d: int, ratio: int):
        super().__init__()
        self.c_fc = nn.Linear(d, ratio * d, bias=False)
        self.c_proj = nn.Linear(ratio * d, d, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class PreNorm(nn.Module):
    """``ln`` + ``f`` container; names match the official ``module_list.i.{ln,f}`` keys."""

    def __init__(self, d: int, f: nn.Module):
        super().__init__()
        self.ln = layer_norm(d)
        self.f = f


class LaCTBlock(nn.Module):
    """``x += Attn(LN x); x += TTT(LN x); x += MLP(LN x)``."""

    def __init__(self, cfg: TttlrmConfig):
        super().__init__()
        self.module_list = nn.ModuleList(
            [
                PreNorm(cfg.d, ViewAttention(cfg.d, cfg.attn_head_dim)),
                PreNorm(cfg.d, FastWeightLayer(cfg)),
                PreNorm(cfg.d, MLP(cfg.d, cfg.mlp_ratio)),
            ]
        )

    def forward(
        self,
        x: Tensor,
        tokens_per_view: int,
        ops: list[TTTOp],
        reduce_fn: Optional[Callable[[Tensor], Tensor]] = None,
        state: Optional[FastWeightState] = None,
        query_tokens: int = 0,
    ) -> tuple[Tensor, FastWeightState]:
        """x: [B, L, d] -> (x [B, L, d], final fast-weight state); ``query_tokens``: see :class:`ViewAttention`."""
        attn, ttt, mlp = self.module_list
        x = x + attn.f(attn.ln(x), tokens_per_view, query_tokens)
        y, fast = ttt.f(ttt.ln(x), ops, reduce_fn, state)
        x = x + y
        x = x + mlp.f(mlp.ln(x))
        return x, fast

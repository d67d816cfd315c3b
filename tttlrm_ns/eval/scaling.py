"""Scaling study: forward time of our LaCT stack vs a stack of full-attention layers, against the number of tokens.

The LaCT side is the model's own block stack (``TttlrmModel.run_blocks``: per-view attention and
the large-chunk TTT layer over all tokens), fed random tokens ``[1, L, d]`` with ``L = views x tokens_per_view``.
The baseline is ``full_layers`` standard pre-norm transformer layers of the same width ``d`` and head size
(attention over all L tokens with ``torch.nn.functional.scaled_dot_product_attention``, MLP ratio 4). Random
weights, float32, no gradient, median of ``repeats`` timed runs after one warm-up.

LaCT's cost is linear in L (per-view attention + a fixed-size fast weight); full attention is quadratic, so for
large enough L the full-attention stack is slower even though it has fewer layers: :func:`crossover` finds where
(log-log interpolation between the two measured sizes that bracket the sign change; ``None`` when the measured
range shows none).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FullAttentionLayer(nn.Module):
    """Pre-norm transformer layer: x + Attn(LN(x)) over all tokens (SDPA), x + MLP(LN(x)). x: [B, L, d]."""

    def __init__(self, d: int, head_dim: int, mlp_ratio: int = 4):
        super().__init__()
        if d % head_dim:
            raise ValueError(f"width {d} is not a multiple of the head size {head_dim}")
        self.heads = d // head_dim
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.mlp = nn.Sequential(nn.Linear(d, mlp_ratio * d, bias=False), nn.GELU(), nn.Linear(mlp_ratio * d, d, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        b, l, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, l, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)  # [B, heads, L, head_dim]
        x = x + self.proj(a.transpose(1, 2).reshape(b, l, d))
        return x + self.mlp(self.norm2(x))


def _time(fn, repeats: int) -> float:
    t0 = time.perf_counter()
    fn()  # warm-up (allocator, kernels)
    if time.perf_counter() - t0 > 5.0:
        repeats = 1  # long runs: one timed run (the warm-up already showed the size)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


@dataclass
class ScalingConfig:
    views: Sequence[int] = (1, 2, 4, 8, 16, 32, 64)
    """Numbers of views; tokens L = views x tokens_per_view."""
    tokens_per_view: int = 256
    """Tokens per view (256 = a 128x128 view with 8-pixel patches)."""
    full_layers: int = 3
    """Full-attention layers of the baseline stack."""
    repeats: int = 3
    """Timed runs per point (median)."""
    max_seconds: float = 60.0
    """Stop growing a stack's L once one forward pass takes longer than this."""
    memory_fraction: float = 0.6
    """Skip sizes whose estimated activations exceed this share of the available memory."""


@torch.no_grad()
def measure(model_cfg, cfg: ScalingConfig, log=print) -> Dict[str, Any]:
    """Forward times of both stacks for each L; returns rows + the crossover. ``model_cfg``: a TttlrmConfig."""
    from tttlrm_ns.model import TttlrmModel
    from tttlrm_ns.infer.predict import available_memory

    torch.manual_seed(0)
    lact = TttlrmModel(model_cfg.replace(compile=False, autocast_bf16=False)).eval()
    d = model_cfg.d
    full = nn.Sequential(*[FullAttentionLayer(d, model_cfg.attn_head_dim) for _ in range(cfg.full_layers)]).eval()
    n = cfg.tokens_per_view
    avail = available_memory("cpu")
    rows: List[Dict[str, Any]] = []
    stopped = {"lact": None, "full": None}
    for v in cfg.views:
        L = v * n
        x = torch.randn(1, L, d)
        row: Dict[str, Any] = {"views": v, "tokens": L}
        # Activations of a LaCT block ~ 32 L d floats (tttlrm_ns.infer.predict.ACTIVATION_FACTOR); SDPA on CPU is a
        # flash kernel (no L x L matrix), its layer ~ 12 L d floats.
        need = {"lact": 4 * 40 * L * d, "full": 4 * 16 * L * d}
        for name, fn in (("lact", lambda: lact.run_blocks(x, n)),
                         ("full", lambda: full(x))):
            if stopped[name]:
                row[name + "_s"] = None
                continue
            if need[name] > cfg.memory_fraction * avail:
                stopped[name] = f"stopped before {L} tokens: estimated {need[name] / 2**30:.1f} GiB > " \
                                f"{cfg.memory_fraction:.0%} of the available {avail / 2**30:.1f} GiB"
                row[name + "_s"] = None
                continue
            t = _time(fn, cfg.repeats)
            row[name + "_s"] = t
            if t > cfg.max_seconds:
                stopped[name] = f"stopped after {L} tokens: one forward took {t:.1f} s > {cfg.max_seconds:.0f} s"
        log(f"L={L:>7}: LaCT {row['lact_s'] if row['lact_s'] is None else round(row['lact_s'], 4)} s, "
            f"full attention {row['full_s'] if row['full_s'] is None else round(row['full_s'], 4)} s")
        rows.append(row)
        if stopped["lact"] and stopped["full"]:
            break
    return {
        "model": {"d": d, "n_layer": model_cfg.n_layer, "attn_head_dim": model_cfg.attn_head_dim,
                  "ttt_head_dim": model_cfg.ttt_head_dim, "params": sum(p.numel() for p in lact.blocks.parameters())},
        "full_layers": cfg.full_layers,
        "full_params": sum(p.numel() for p in full.parameters()),
        "tokens_per_view": n,
        "repeats": cfg.repeats,
        "rows": rows,
        "stopped": stopped,
        "crossover_tokens": crossover(rows),
    }


def crossover(rows: List[Dict[str, Any]]) -> Optional[float]:
    """Tokens at which full attention becomes slower than LaCT (log-log interpolation); None if not measured."""
    pts = [(r["tokens"], r["lact_s"], r["full_s"]) for r in rows if r.get("lact_s") and r.get("full_s")]
    for (l0, a0, f0), (l1, a1, f1) in zip(pts, pts[1:]):
        g0, g1 = math.log(f0 / a0), math.log(f1 / a1)
        if g0 < 0 <= g1:
            t = -g0 / (g1 - g0)
            return float(math.exp(math.log(l0) + t * (math.log(l1) - math.log(l0))))
    if pts and pts[0][2] >= pts[0][1]:
        return float(pts[0][0])  # slower already at the smallest size
    return None


def plot(result: Dict[str, Any], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    m = result["model"]
    for key, label, style in (("lact_s", f"LaCT stack ({m['n_layer']} blocks, d={m['d']})", "o-"),
                              ("full_s", f"{result['full_layers']} full-attention layers (SDPA, d={m['d']})", "s-")):
        pts = [(r["tokens"], r[key]) for r in rows if r.get(key)]
        if pts:
            ax.plot(*zip(*pts), style, label=label)
    if result.get("crossover_tokens"):
        ax.axvline(result["crossover_tokens"], ls="--", color="gray", lw=1,
                   label=f"crossover ~{result['crossover_tokens']:,.0f} tokens")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tokens L")
    ax.set_ylabel("forward time (s)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def scaling_markdown(result: Dict[str, Any], img_dir: str = "img") -> str:
    m = result["model"]
    env = result.get("environment", {})
    lines = [
        "## Scaling: LaCT vs full attention",
        "",
        f"Forward time (median of {result['repeats']} (1 for runs over 5 s), float32, no gradient) of our LaCT stack ({m['n_layer']} "
        f"blocks, d={m['d']}, the evaluated checkpoint's architecture, random weights) and of "
        f"{result['full_layers']} full-attention transformer layers of the same width (torch SDPA over all tokens), "
        f"{result['tokens_per_view']} tokens per view. Measured {env.get('date_utc', '?')} UTC, "
        f"{env.get('torch_threads', '?')} torch thread(s), 1-minute load average "
        f"{(env.get('load_average') or ['?'])[0]:.3}. "
        f"Command: `{env.get('command', '')}`.",
        "",
        "| views | tokens | LaCT (s) | full attention (s) | full / LaCT |",
        "|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        a, f = r.get("lact_s"), r.get("full_s")
        ratio = f"{f / a:.2f}" if a and f else "-"
        fmt = lambda t: "-" if t is None else f"{t:.4f}"  # noqa: E731
        lines.append(f"| {r['views']} | {r['tokens']:,} | {fmt(a)} | {fmt(f)} | {ratio} |")
    c = result.get("crossover_tokens")
    lines += ["", (f"Crossover: full attention becomes slower than the LaCT stack at about **{c:,.0f} tokens** "
                   f"({c / result['tokens_per_view']:.1f} views)." if c else
                   "No crossover in the measured range.")]
    for k, v in result.get("stopped", {}).items():
        if v:
            lines.append(f"{'LaCT' if k == 'lact' else 'Full attention'}: {v}.")
    lines += ["", f"![scaling]({img_dir}/results_scaling.png)"]
    return "\n".join(lines)


__all__ = ["FullAttentionLayer", "ScalingConfig", "measure", "crossover", "plot", "scaling_markdown"]

"""Large-chunk test-time training (LaCT): the fast-weight update and its schedule.

The fast-weight network is a SwiGLU MLP ``f_W(z) = (silu(z W0) * (z W2)) W1`` with ``W0, W2: [dh, m]`` and
``W1: [m, dh]``, one copy per (batch element, head). A *schedule* is a list of :class:`TTTOp`: each op
either updates the fast weights from the keys/values of a token range, or applies the current weights to
the queries of a range. The official model uses two schedules
(``docs/reference_semantics.md`` §4.6.1):

* full: one update from all input tokens, then every token reads the updated weights;
* ar: sequential updates over chunks of input tokens, then every token reads the final weights.

Update of one chunk ``S`` (§4.4), all from the same pre-update weights::

    G = K W0, U = K W2, Hid = silu(G) * U, Z = V W1^T                          [S, m]
    dW1 = (lr1 * Hid)^T V                                                      [m, dh]
    dW2 = (lr2 * K)^T (Z * silu(G))                                            [dh, m]
    dW0 = (lr0 * K)^T (Z * U * silu'(G))                                       [dh, m]

``dW`` is the negative gradient of ``-sum_t lr_t <f_W(k_t), v_t>``; each is orthogonalised by Newton-Schulz,
added to the weights, optionally pulled towards an anchor (elastic update), and every column is rescaled
to its initial norm.

Precision policy: fast-weight state, learning rates and renormalisation are float32; the update matmuls
follow the ambient autocast; Newton-Schulz runs in ``ns_dtype`` (bfloat16 in the official code, whose
result is promoted back to float32 when added). On CPUs without bfloat16 matmul instructions (no AVX512-BF16 /
AMX) a bfloat16 GEMM falls back to a scalar path that is 10-100x slower than float32; there the bfloat16
iteration is *emulated*: every intermediate is rounded to bfloat16 exactly as the native path stores it, and the
matmuls run in float32 on the rounded values (products of bfloat16 numbers are exact in float32, accumulation is
float32 in both), so only the summation order differs (see :func:`newton_schulz`).

FLOPs per update of S tokens (per head): 6*S*dh*m (forward to hidden and Z) + 6*S*dh*m (three outer
products); per applied token 6*dh*m.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

# Quintic Newton-Schulz coefficients (Muon), official values.
NS_COEFFS = (3.4445, -4.7750, 2.0315)

# Without autograd, updates and applications run over token blocks whose [tokens, m] float32 temporaries stay
# around 8 MB (2048 tokens at m = 1024): they then live in cache across the ~10 element-wise passes of an update.
# Measured on 2 cores, d=256 preset, 32 views at 128x128: 4.86 s with 32768-token blocks, 3.54 s with 2048.
INFERENCE_BLOCK_ELEMENTS = 1 << 21
MIN_TOKEN_BLOCK = 256


class TTTOp(NamedTuple):
    """One step of a fast-weight schedule over tokens ``[start, end)``."""

    start: int
    end: int
    update: bool  # compute an update from this range and commit it
    apply: bool  # read this range's outputs with the current weights


def full_schedule(n_update: int, n_total: int) -> list[TTTOp]:
    """One update from tokens ``[0, n_update)``, then all ``n_total`` tokens read the result."""
    return [TTTOp(0, n_update, True, False), TTTOp(0, n_total, False, True)]


def ar_schedule(n_update: int, n_total: int, chunk: int) -> list[TTTOp]:
    """Sequential updates over chunks of ``chunk`` tokens, then all tokens read the final weights."""
    if chunk <= 0 or n_update % chunk:
        raise ValueError(
            f"autoregressive scan: {n_update} input tokens are not a multiple of the update chunk "
            f"({chunk} tokens); the number of input views must be a multiple of ar_chunk_views"
        )
    ops = [TTTOp(s, s + chunk, True, False) for s in range(0, n_update, chunk)]
    return ops + [TTTOp(0, n_total, False, True)]


@dataclass
class TTTHyper:
    """Hyper-parameters of the update step (not learned)."""

    muon_steps: int = 5
    ns_dtype: torch.dtype = torch.bfloat16
    ns_bf16_emulation: str = "auto"
    """"auto" | "on" | "off": how a bfloat16 Newton-Schulz runs (see :func:`newton_schulz`)."""
    weight_renorm: bool = True
    detach_renorm_target: bool = True
    elastic_lambda: float = 0.0
    fisher_alpha: float = 0.5
    anchor_beta: float = 0.8
    elastic_compat: bool = True


_FAST_BF16_CPU: Optional[bool] = None


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AVX512-BF16 or AMX-BF16, from /proc/cpuinfo)."""
    global _FAST_BF16_CPU
    if _FAST_BF16_CPU is None:
        try:
            with open("/proc/cpuinfo") as f:
                flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
        except OSError:
            flags = []
        _FAST_BF16_CPU = "avx512_bf16" in flags or "amx_bf16" in flags
    return _FAST_BF16_CPU


def emulate_bf16_on(device: torch.device, mode: str = "auto") -> bool:
    """Resolve ``ns_bf16_emulation``: "auto" emulates on CPUs without hardware bfloat16 matmuls only."""
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"ns_bf16_emulation must be 'auto', 'on' or 'off', got {mode!r}")
    if mode != "auto":
        return mode == "on"
    return device.type == "cpu" and not cpu_has_fast_bf16()


def _bf16(x: Tensor) -> Tensor:
    """Round to the nearest bfloat16 value, kept in float32."""
    return x.to(torch.bfloat16).float()


def newton_schulz(g: Tensor, steps: int, dtype: torch.dtype, emulate_bf16: Optional[bool] = None) -> Tensor:
    """Approximately orthogonalise each matrix of ``g [B, r, c]`` (quintic Newton-Schulz, Muon).

    The input is cast to ``dtype`` (bfloat16, or at least float32 otherwise) and divided by its Frobenius norm;
    tall matrices are transposed so the Gram matrix is the small one. The result stays in ``dtype``. With
    ``steps=0`` only the normalisation (and the cast) happens, as in the official code.

    ``emulate_bf16`` (bfloat16 only; None = decide from the device, see :func:`emulate_bf16_on`): compute in
    float32 but round every intermediate to bfloat16 where the native path stores a bfloat16 tensor. Element-wise
    bfloat16 ops are computed in float32 and rounded by torch as well, so those match exactly; the matmuls differ
    only in summation order (both accumulate in float32). :func:`newton_schulz_reference` holds the two together.
    """
    if dtype == torch.bfloat16:
        if emulate_bf16 is None:
            emulate_bf16 = emulate_bf16_on(g.device)
        if emulate_bf16:
            return _newton_schulz_bf16_emulated(g, steps)
    return newton_schulz_reference(g, steps, dtype)


def newton_schulz_reference(g: Tensor, steps: int, dtype: torch.dtype) -> Tensor:
    """Newton-Schulz in ``dtype`` with torch's own kernels (the official computation)."""
    if dtype != torch.bfloat16:
        dtype = torch.promote_types(g.dtype, dtype)  # "float32" means at least float32
    return _newton_schulz_iterate(g.to(dtype), steps, lambda t: t)


def _newton_schulz_bf16_emulated(g: Tensor, steps: int) -> Tensor:
    """:func:`newton_schulz_reference` in bfloat16, op by op, with float32 matmuls on bfloat16-rounded values."""
    # An ambient CPU autocast would turn the float32 matmuls back into slow bfloat16 GEMMs.
    with torch.autocast(device_type=g.device.type, enabled=False):
        return _newton_schulz_iterate(_bf16(g.float()), steps, _bf16).to(torch.bfloat16)


def _newton_schulz_iterate(x: Tensor, steps: int, r: Callable[[Tensor], Tensor]) -> Tensor:
    """The iteration on ``x`` as given; ``r`` is applied wherever a bfloat16 run stores an intermediate (identity
    for a native run, rounding to bfloat16 for the emulation)."""
    a, b, c = NS_COEFFS
    transposed = x.size(-2) > x.size(-1)
    if transposed:
        x = x.mT
    x = r(x / r(r(x.norm(dim=(-2, -1), keepdim=True)) + 1e-7))
    for _ in range(steps):
        gram = r(x @ x.mT)  # [B, r, r]
        poly = r(r(b * gram) + r(r(c * gram) @ gram))  # b * gram + c * gram @ gram is (c * gram) @ gram
        x = r(r(a * x) + r(poly @ x))
    return x.mT if transposed else x


def update_deltas(
    w0: Tensor, w1: Tensor, w2: Tensor, k: Tensor, v: Tensor, lr0: Tensor, lr1: Tensor, lr2: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Raw fast-weight updates of one chunk.

    Args:
        w0, w2: [B, dh, m] gate / up weights; w1: [B, m, dh] down weights.
        k, v: [B, S, dh] keys and values of the chunk; lr0, lr1, lr2: [B, S, 1] per-token rates.
    Returns:
        (dw0 [B, dh, m], dw1 [B, m, dh], dw2 [B, dh, m]): sums over the chunk's tokens.
    """
    gate = k @ w0  # [B, S, m]
    up = k @ w2  # [B, S, m]
    z = v @ w1.mT  # [B, S, m]
    sig = torch.sigmoid(gate)
    act = gate * sig  # silu(gate), sharing the sigmoid with silu'
    # Per-token rates scale the narrow [S, dh] operand rather than the 4x wider [S, m] one.
    dw1 = (act * up).mT @ (v * lr1)  # [B, m, dh]
    dw2 = (k * lr2).mT @ (z * act)  # [B, dh, m]
    dw0 = (k * lr0).mT @ (z * up * sig * (1 + gate * (1 - sig)))  # [B, dh, m], silu'(g) = s (1 + g (1 - s))
    return dw0, dw1, dw2


def apply_fast_weights(w0: Tensor, w1: Tensor, w2: Tensor, q: Tensor) -> Tensor:
    """``f_W(q) = (silu(q w0) * (q w2)) w1`` for ``q [B, S, dh]`` -> ``[B, S, dh]``."""
    return (F.silu(q @ w0) * (q @ w2)) @ w1


def _blocked_update(w, k, v, lrs, block: int):
    """Sum of :func:`update_deltas` over token blocks (inference only: bounds temporary memory)."""
    total = None
    for s in range(0, k.shape[1], block):
        e = s + block
        d = update_deltas(*w, k[:, s:e], v[:, s:e], *(lr[:, s:e] for lr in lrs))
        total = d if total is None else tuple(t + x for t, x in zip(total, d))
    return total


def _blocked_apply(w, q, block: int) -> Tensor:
    if q.shape[1] <= block or torch.is_grad_enabled():
        return apply_fast_weights(*w, q)
    return torch.cat([apply_fast_weights(*w, q[:, s : s + block]) for s in range(0, q.shape[1], block)], 1)


@dataclass
class FastWeightState:
    """Fast weights of one layer plus what the update needs to continue from them.

    ``weights`` (w0, w1, w2) per (batch, head); ``norms0`` the renormalisation targets (initial column norms);
    ``fisher`` / ``anchors`` the elastic-update statistics (None when the elastic update is off).
    """

    weights: tuple[Tensor, Tensor, Tensor]
    norms0: tuple[Tensor, Tensor, Tensor]
    fisher: Optional[list[Tensor]] = None
    anchors: Optional[list[Tensor]] = None

    @classmethod
    def initial(cls, weights: tuple[Tensor, Tensor, Tensor], hyper: TTTHyper) -> "FastWeightState":
        # Column norms over the input (first matrix) axis of the initial weights: the renormalisation target.
        norms0 = tuple(
            (x.detach() if hyper.detach_renorm_target else x).norm(dim=1, keepdim=True) for x in weights
        )
        if hyper.elastic_lambda <= 0:
            return cls(tuple(weights), norms0)
        fisher = [torch.zeros_like(x).detach() for x in weights]
        anchors = [x if hyper.elastic_compat else x.detach() for x in weights]
        return cls(tuple(weights), norms0, fisher, anchors)


def ttt_step(
    state: FastWeightState,
    deltas: tuple[Tensor, Tensor, Tensor],
    hyper: TTTHyper,
) -> FastWeightState:
    """Commit one update: Newton-Schulz, add, optional elastic pull, column renormalisation, anchor EMA."""
    elastic = state.fisher is not None
    fisher = list(state.fisher) if elastic else None
    new_w = []
    for j, (wj, dw) in enumerate(zip(state.weights, deltas)):
        emulate = emulate_bf16_on(dw.device, hyper.ns_bf16_emulation)
        upd = newton_schulz(dw, hyper.muon_steps, hyper.ns_dtype, emulate)
        wj = wj + upd  # promotes a reduced-precision update back to the float32 state
        if elastic:
            wj = _elastic_pull(wj, upd, fisher, state.anchors, j, hyper)
        if hyper.weight_renorm:
            wj = wj / (wj.norm(dim=1, keepdim=True) + 1e-5) * state.norms0[j]
        new_w.append(wj)
    anchors = None
    if elastic:
        b = hyper.anchor_beta
        anchors = [b * a + (1 - b) * wj.detach() for a, wj in zip(state.anchors, new_w)]
    return FastWeightState(tuple(new_w), state.norms0, fisher, anchors)


def ttt_scan(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lrs: tuple[Tensor, Tensor, Tensor],
    state: FastWeightState | tuple[Tensor, Tensor, Tensor],
    ops: list[TTTOp],
    hyper: TTTHyper,
    reduce_fn: Optional[Callable[[Tensor], Tensor]] = None,
    token_block: Optional[int] = None,
) -> tuple[Tensor, FastWeightState]:
    """Run a fast-weight schedule.

    Args:
        q, k, v: [B, L, dh] (heads folded into B). lrs: three [B, L, 1] float32 rates (for W0, W1, W2).
        state: a :class:`FastWeightState` to continue from, or the initial (w0 [B, dh, m], w1 [B, m, dh],
            w2 [B, dh, m]), float32.
        ops: the schedule; the apply ops must tile ``[0, L)`` in order.
        reduce_fn: applied to each raw update before Newton-Schulz (sequence parallel: all-reduce sum).
        token_block: tokens per block without autograd (None: about ``INFERENCE_BLOCK_ELEMENTS / m``).
    Returns:
        outputs [B, L, dh] and the final state.
    """
    if not isinstance(state, FastWeightState):
        state = FastWeightState.initial(tuple(state), hyper)
    if token_block is None:
        token_block = max(MIN_TOKEN_BLOCK, INFERENCE_BLOCK_ELEMENTS // state.weights[0].shape[-1])
    outs: list[Tensor] = []
    covered = 0
    for op in ops:
        if op.update:
            sl = slice(op.start, op.end)
            args = (k[:, sl], v[:, sl], *(lr[:, sl] for lr in lrs))
            if torch.is_grad_enabled() or op.end - op.start <= token_block:
                deltas = update_deltas(*state.weights, *args)
            else:
                deltas = _blocked_update(state.weights, args[0], args[1], args[2:], token_block)
            if reduce_fn is not None:
                deltas = tuple(reduce_fn(dw) for dw in deltas)
            state = ttt_step(state, deltas, hyper)
        if op.apply:
            if op.start != covered:
                raise ValueError(f"apply ops must tile the sequence in order; gap at token {covered}")
            outs.append(_blocked_apply(state.weights, q[:, op.start : op.end], token_block))
            covered = op.end
    if covered != q.shape[1]:
        raise ValueError(f"apply ops cover {covered} of {q.shape[1]} tokens")
    return (outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)), state


def _elastic_pull(wj: Tensor, upd: Tensor, fisher: list, anchors: list, j: int, hyper: TTTHyper) -> Tensor:
    """Elastic step (§4.7): pull weights with small running squared update towards the anchor."""
    a = hyper.fisher_alpha
    with torch.no_grad():
        # Official: the squared update is formed and scaled in the Newton-Schulz dtype, then promoted.
        sq = (1 - a) * (upd if hyper.elastic_compat else upd.to(wj.dtype)).square()
        fisher[j] = a * fisher[j] + sq
        f = fisher[j]
        if hyper.elastic_compat:
            fmax = f.max()  # shared by every batch element and head, as in the official code
        else:
            fmax = f.amax(dim=(-2, -1), keepdim=True)
        f_norm = f / (fmax + 1e-8)
    return wj - hyper.elastic_lambda * (1 - f_norm) * (wj - anchors[j])

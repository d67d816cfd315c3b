"""Configuration of the tttLRM backbone and Gaussian head.

One dataclass holds every knob of the model. Field docstrings become tyro CLI help. Defaults are the
released full-size model (``configs/dl3dv_full.yaml`` of the official code, see
``docs/reference_semantics.md`` §0); small presets live in :mod:`tttlrm_ns.model.presets`.

Switches named ``*_compat`` or ``duplicate_virtual_views`` reproduce a behaviour of the official code that
we consider a bug or a waste; the clean behaviour is the default unless the two agree numerically.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Literal


@dataclass
class TttlrmConfig:
    """tttLRM backbone (tokenizer, LaCT blocks, decoder) and Gaussian post-processing."""

    # --- backbone shape -------------------------------------------------------------------------------
    d: int = 768
    """Residual width."""
    n_layer: int = 24
    """Number of LaCT blocks (attention + TTT + MLP each)."""
    patch_size: int = 8
    """Side of the square patches; image sides must be multiples of it."""
    in_channels: int = 12
    """Per-pixel input channels: ray origin, direction, origin x direction, rgb (fixed by the encoding)."""
    attn_head_dim: int = 64
    """Channels per self-attention head (``d / attn_head_dim`` heads)."""
    mlp_ratio: int = 4
    """MLP hidden width as a multiple of ``d``."""

    # --- test-time-training layer ---------------------------------------------------------------------
    ttt_head_dim: int = 768
    """Channels per TTT head (``d / ttt_head_dim`` heads; every released model uses one head)."""
    ttt_inter_multi: int = 4
    """Fast-weight SwiGLU hidden width as a multiple of ``ttt_head_dim``."""
    ttt_base_lr: float = 0.01
    """Base of the per-token learning rate ``softplus(W x + b + softplus^-1(base_lr))``."""
    muon_steps: int = 5
    """Newton-Schulz iterations applied to each fast-weight update (0 = only Frobenius-normalise)."""
    ns_dtype: Literal["bfloat16", "float32"] = "bfloat16"
    """Precision of the Newton-Schulz iteration. The official code always uses bfloat16, even in float32
    runs; float32 is better conditioned (the reference goldens carry a float32 variant for tight tests)."""
    ns_bf16_emulation: Literal["auto", "on", "off"] = "auto"
    """How a bfloat16 Newton-Schulz runs: "auto" emulates it (float32 matmuls on bfloat16-rounded values, same
    roundings as the native path) on CPUs without bfloat16 matmul instructions, where torch's bfloat16 GEMM is
    10-100x slower than float32; "on"/"off" force it. Not a model property: checkpoints load with any value."""
    weight_renorm: bool = True
    """Rescale every fast-weight column to its initial L2 norm after each update."""
    detach_renorm_target: bool = True
    """Treat the initial column norms (the renormalisation target) as constants in the backward pass, as
    the official code does. False gives the exact gradient of the forward function."""
    scan: Literal["full", "ar", "stream"] = "full"
    """``full``: one update from all input tokens. ``ar``: sequential updates over chunks of
    ``ar_chunk_views`` input views (official). In both, the final fast weights are applied to every token.
    ``stream``: causal streaming: chunks of views pass through all blocks one after the other, each chunk
    updating every layer's fast weights and then reading them, so Gaussians of earlier views never depend on
    later ones (not in the official code; same fast-weight sequence as ``ar`` in the first block)."""
    ar_chunk_views: int = 4
    """Views per fast-weight update in the autoregressive and streaming scans."""
    elastic_lambda: float = 0.0
    """Strength of the elastic (selective) pull towards the anchor weights; 0 disables it (paper: 0.05)."""
    fisher_alpha: float = 0.5
    """EMA factor of the squared-update ("Fisher") statistic of the elastic update."""
    anchor_beta: float = 0.8
    """EMA factor of the anchor weights of the elastic update."""
    elastic_compat: bool = True
    """Official elastic details: Fisher normaliser is the max over the whole batch x heads tensor, the
    squared update is formed in the Newton-Schulz dtype, and the initial anchor keeps its gradient path to
    the parameters. False: per-(sample, head) max, float32 square, detached anchor."""
    ttt_lr_layout: Literal["lact", "official"] = "lact"
    """Channel layout of the per-head learning rates. ``lact``: channel ``w*h + j`` is the rate of weight
    ``w`` for head ``j``. ``official`` reproduces the released code, whose multi-head path crashes; it is
    only accepted with one TTT head, where both layouts coincide."""

    # --- sequence layout ------------------------------------------------------------------------------
    duplicate_virtual_views: bool = False
    """Append a copy of the input views as "virtual" views and decode from that copy, as the official code
    does. The copy is bitwise identical to the input tokens after every block, so the default decodes from
    the input tokens directly (same output, about half the FLOPs)."""

    # --- Gaussian head --------------------------------------------------------------------------------
    sh_degree: int = 3
    """Spherical-harmonics degree of the predicted colours (0-3)."""
    max_dist: float = 500.0
    """Gaussian centres lie at ``max_dist * sigmoid(. + dist_shift)`` along the pixel ray."""
    dist_shift: float = 0.0
    """Offset added to the position logit: the depth-range prior. At initialisation (decoder output ~0) every
    Gaussian sits at ``max_dist * sigmoid(dist_shift)`` along its ray; the official value 0 puts it at
    ``max_dist / 2`` = 250 units in a frame whose cameras lie in [-1, 1]^3, far outside any scene, and the network
    first has to learn a large negative bias. ``logit(d0 / max_dist)`` starts at a typical depth ``d0``."""
    scale_shift: float = -2.3
    """Offset added to the raw log-scale."""
    max_log_scale: float = -1.2
    """Upper clamp of the log-scale (official hard-coded value)."""
    opacity_shift: float = -2.0
    """Offset added to the raw opacity logit."""
    rgb_skip: bool = False
    """Add the Gaussian's own input pixel colour to its degree-0 SH coefficient (``(rgb - 0.5) / C0``), so a
    decoder output of 0 reproduces the input pixel. Not in the official model (off for parity); it spares a
    small model the many steps it needs to learn the identity colour path through the patch tokenizer."""
    geometry_bf16_compat: bool = False
    """Round the ray rotation and ``max_dist * sigmoid`` to bfloat16 as the official code does under
    autocast. Off: geometry is always float32."""

    # --- measured geometry (extension, off in the official presets; docs/geometry.md) --------------------
    geometry_input: bool = False
    """Give the tokenizer two more channels per pixel: the plane-sweep depth (log of camera z) and its confidence
    (:mod:`tttlrm_ns.geometry.plane_sweep` over the input views, in the model's frame). Not in the official model."""
    depth_anchor: bool = False
    """Place each Gaussian at the measured depth where the plane sweep is confident: log ray distance
    ``= w log(measured) + (1 - w) log(predicted)``, ``w = clamp(confidence / anchor_confidence, 0, 1)``; where
    matching fails (no overlap, no texture) the learned prediction stands. Not in the official model."""
    anchor_confidence: float = 0.5
    """Sweep confidence from which the measured depth fully replaces the predicted one (``depth_anchor``)."""
    anchor_min_weight: float = 0.0
    """Lower bound of the anchor weight ``w``: > 0 pulls every Gaussian towards the measured (with ``sweep_fill``:
    filled-in) depth, also where the sweep is not confident."""
    sweep_fill: bool = False
    """Pixels the sweep did not measure (confidence < 0.1) take the depth of the measured pixels around them
    (:func:`tttlrm_ns.geometry.plane_sweep.fill_depth`) in the measured-depth channel, instead of their unreliable
    best plane."""
    sweep_near: float = 0.25
    """Nearest plane of the model's sweep, in the model's frame (with median-depth normalisation the scene's
    median depth is 1 there)."""
    sweep_far: float = 10.0
    """Farthest plane of the model's sweep."""
    sweep_planes: int = 32
    """Planes of the model's sweep (uniform in inverse depth)."""
    sweep_neighbours: int = 4
    """Views each input view is matched against."""
    sweep_long_side: int = 64
    """The sweep runs with about this many pixels along the long side, whatever the input size (the input is
    area-downsampled by the largest power of two that keeps at least this many and divides both sides): the same
    measurement in scene terms for a model trained at 72x128 and run at 144x256, and a fixed cost per view."""

    # --- efficiency -----------------------------------------------------------------------------------
    autocast_bf16: bool = False
    """Run projections, attention and fast-weight matmuls under bfloat16 autocast (fast-weight state,
    learning rates, norms and geometry stay float32)."""
    grad_checkpoint: bool = False
    """Recompute each block in the backward pass instead of storing its activations."""
    compile: bool = False
    """Wrap each block in ``torch.compile``."""

    # --- derived --------------------------------------------------------------------------------------
    @property
    def attn_heads(self) -> int:
        return self.d // self.attn_head_dim

    @property
    def ttt_heads(self) -> int:
        return self.d // self.ttt_head_dim

    @property
    def ttt_hidden(self) -> int:
        return self.ttt_inter_multi * self.ttt_head_dim

    @property
    def sh_coeffs(self) -> int:
        return (self.sh_degree + 1) ** 2

    @property
    def gaussian_channels(self) -> int:
        """Channels per Gaussian in the decoder output: xyz(3) + SH(3K) + scale(3) + quat(4) + opacity(1)."""
        return 11 + 3 * self.sh_coeffs

    @property
    def uses_geometry(self) -> bool:
        """Whether the model reads the plane sweep (tokenizer channels or depth anchor)."""
        return self.geometry_input or self.depth_anchor

    @property
    def token_channels(self) -> int:
        """Per-pixel channels the tokenizer reads: the 12-channel ray encoding, plus log depth and confidence
        with ``geometry_input``."""
        return self.in_channels + (2 if self.geometry_input else 0)

    def sweep_downsample(self, height: int, width: int) -> int:
        """Downsampling factor of the model's plane sweep for ``height x width`` inputs (see ``sweep_long_side``)."""
        f = 1
        while max(height, width) // (2 * f) >= self.sweep_long_side and height % (2 * f) == 0 and width % (2 * f) == 0:
            f *= 2
        return f

    @property
    def base_lr_inv(self) -> float:
        """``softplus^-1(base_lr)``, the constant added to the learning-rate logits."""
        return self.ttt_base_lr + math.log(-math.expm1(-self.ttt_base_lr))

    def validate(self) -> "TttlrmConfig":
        """Raise ``ValueError`` naming the offending field if the configuration cannot be built."""
        problems = []
        if self.d % self.attn_head_dim:
            problems.append(f"d={self.d} is not a multiple of attn_head_dim={self.attn_head_dim}")
        if self.d % self.ttt_head_dim:
            problems.append(f"d={self.d} is not a multiple of ttt_head_dim={self.ttt_head_dim}")
        if self.ttt_lr_layout == "official" and self.d // max(self.ttt_head_dim, 1) > 1:
            problems.append(
                "ttt_lr_layout='official' only works with one TTT head (the released code's multi-head "
                "learning-rate reshape fails for more); use ttt_lr_layout='lact' or ttt_head_dim=d"
            )
        if not 0 <= self.sh_degree <= 3:
            problems.append(f"sh_degree must be in 0..3, got {self.sh_degree}")
        if self.patch_size < 1 or self.ar_chunk_views < 1 or self.n_layer < 1:
            problems.append("patch_size, ar_chunk_views and n_layer must be positive")
        if self.muon_steps < 0:
            problems.append(f"muon_steps must be >= 0, got {self.muon_steps}")
        if self.in_channels != 12:
            problems.append(f"in_channels is fixed to 12 by the ray encoding, got {self.in_channels}")
        if self.uses_geometry:
            if not 0 < self.sweep_near < self.sweep_far:
                problems.append(f"need 0 < sweep_near < sweep_far, got {self.sweep_near}, {self.sweep_far}")
            if self.sweep_planes < 2 or self.sweep_neighbours < 1 or self.sweep_long_side < 8:
                problems.append("sweep_planes >= 2, sweep_neighbours >= 1 and sweep_long_side >= 8 are required")
            if self.scan == "stream":
                problems.append("geometry_input / depth_anchor need every input view at once; scan='stream' is "
                                "not supported with them")
            if self.anchor_confidence <= 0:
                problems.append(f"anchor_confidence must be > 0, got {self.anchor_confidence}")
            if not 0 <= self.anchor_min_weight <= 1:
                problems.append(f"anchor_min_weight must be in [0, 1], got {self.anchor_min_weight}")
        if problems:
            raise ValueError("invalid TttlrmConfig: " + "; ".join(problems))
        return self

    # --- serialisation --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TttlrmConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TttlrmConfig fields: {unknown}")
        return cls(**values).validate()

    def replace(self, **changes: Any) -> "TttlrmConfig":
        return dataclasses.replace(self, **changes).validate()


__all__ = ["TttlrmConfig"]

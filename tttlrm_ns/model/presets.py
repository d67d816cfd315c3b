"""Named model configurations.

``official_full`` is the released scene model (state-dict keys and shapes of the official checkpoint);
the small presets keep every mechanism but fit a 2-core CPU.
"""

from __future__ import annotations

from .config import TttlrmConfig


def official_full(**overrides) -> TttlrmConfig:
    """Released DL3DV scene model: d=768, 24 blocks, patch 8, SH degree 3, one 768-wide TTT head (400.0 M)."""
    return TttlrmConfig(**overrides).validate()


def official_ar(**overrides) -> TttlrmConfig:
    """Released autoregressive scene model: same weights layout, chunked scan of 4 views."""
    return TttlrmConfig(**{"scan": "ar", "ar_chunk_views": 4, **overrides}).validate()


def object_level(**overrides) -> TttlrmConfig:
    """Object-level Gaussian model of the paper (patch 16; other sizes as the scene model, *unverified*)."""
    return TttlrmConfig(**{"patch_size": 16, **overrides}).validate()


def small_d256(**overrides) -> TttlrmConfig:
    """CPU-sized model: d=256, 6 blocks, 4 attention heads, one TTT head, SH degree 3."""
    base = dict(d=256, n_layer=6, attn_head_dim=64, ttt_head_dim=256, patch_size=8)
    return TttlrmConfig(**{**base, **overrides}).validate()


def tiny(**overrides) -> TttlrmConfig:
    """Test-sized model: d=64, 2 blocks (the size of the reference goldens), SH degree 0."""
    base = dict(d=64, n_layer=2, attn_head_dim=16, ttt_head_dim=64, patch_size=8, sh_degree=0)
    return TttlrmConfig(**{**base, **overrides}).validate()


PRESETS = {
    "official_full": official_full,
    "official_ar": official_ar,
    "object_level": object_level,
    "small_d256": small_d256,
    "tiny": tiny,
}


def get(name: str, **overrides) -> TttlrmConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name](**overrides)

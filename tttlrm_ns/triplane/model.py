"""The triplane object model: tttLRM's backbone predicting a triplane (the seed's B.2) instead of Gaussians.

Reading order:

1. Input views are tokenised exactly as in :class:`tttlrm_ns.model.TttlrmModel` (12-channel ray encoding, patchify,
   linear, LayerNorm); the module names (``tokenizer``, ``input_layernorm``, ``blocks``) are the same, so a Gaussian
   checkpoint's backbone can initialise a triplane model (:func:`tttlrm_ns.triplane.train.init_from`).
2. ``3 * T * T`` learnable query tokens (three planes of ``T x T`` patches, the same patch size as the images) are
   appended to the sequence. In every LaCT block the input tokens attend within their view and the query tokens
   attend among themselves (all three planes jointly, so the planes can agree); the test-time-training layer runs
   the usual schedule, whose update ops cover only the input tokens and whose final apply op covers the whole
   sequence. The queries therefore *read* the fast weights but never write them, as the virtual views of the
   Gaussian model do (same :class:`~tttlrm_ns.model.blocks.FastWeightLayer`, same :func:`~tttlrm_ns.model.lact.ttt_scan`).
3. A LayerNorm + linear decoder maps each query token to a ``p x p x C`` patch; unpatchifying gives three feature
   planes ``[B, 3, C, R, R]`` (``R = T p``): plane 0 spans (x, y), plane 1 (x, z), plane 2 (y, z) of the object box
   ``[-box_half, box_half]^3``.
4. :class:`TriplaneField`: features bilinearly sampled from the three planes are summed or concatenated
   (``aggregate``) and a small MLP decodes them into density and colour; :mod:`tttlrm_ns.triplane.volume` renders rays.

Cameras are expected in the *object frame* (:func:`tttlrm_ns.data.object_frame.object_frame`): the object at the
origin, the input cameras at mean distance ``camera_distance``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tttlrm_ns.checkpoint_io import atomic_write

from tttlrm_ns.model.blocks import layer_norm
from tttlrm_ns.model.checkpoint import CONFIG_KEY, KIND_KEY, CheckpointError, check_state_dict, expected_shapes
from tttlrm_ns.model.config import TttlrmConfig
from tttlrm_ns.model.lact import FastWeightState
from tttlrm_ns.model.rays import pixel_rays
from tttlrm_ns.model.tttlrm import LaCTBackbone

from .volume import composite, ray_box, sample_distances


@dataclass
class TriplaneConfig:
    """Triplane head of the object model (the backbone is a :class:`TttlrmConfig`)."""

    tokens_per_side: int = 8
    """Query tokens per plane side ``T``; the plane resolution is ``T * patch_size``."""
    channels: int = 32
    """Feature channels per plane."""
    aggregate: Literal["sum", "concat"] = "concat"
    """How the three sampled feature vectors are combined before the MLP (see docs/benchmarks.md)."""
    mlp_width: int = 64
    """Hidden width of the density / colour MLP."""
    mlp_layers: int = 2
    """Hidden layers of the MLP."""
    box_half: float = 1.0
    """Half side of the object box in the object frame (objects scaled into the unit sphere fit in 1.0)."""
    camera_distance: float = 2.7
    """Mean distance of the input cameras from the object centre in the object frame (training data: 2.7)."""
    samples_per_ray: int = 64
    """Uniform samples per ray inside the box at evaluation (stratified during training)."""
    density_bias: float = -3.0
    """Added to the raw density before the softplus: an initially almost transparent box."""
    density_scale: float = 10.0
    """Multiplies the softplus: densities of order 10 make a 0.1-thick shell opaque."""

    @property
    def in_features(self) -> int:
        return self.channels * (3 if self.aggregate == "concat" else 1)

    def validate(self) -> "TriplaneConfig":
        problems = []
        if self.tokens_per_side < 1 or self.channels < 1 or self.mlp_width < 1 or self.mlp_layers < 1:
            problems.append("tokens_per_side, channels, mlp_width and mlp_layers must be positive")
        if self.aggregate not in ("sum", "concat"):
            problems.append(f"aggregate must be 'sum' or 'concat', got {self.aggregate!r}")
        if not self.box_half > 0 or not self.camera_distance > 0:
            problems.append("box_half and camera_distance must be positive")
        if self.camera_distance <= self.box_half * 3**0.5:
            problems.append(f"camera_distance={self.camera_distance} puts the cameras inside the object box "
                            f"(half side {self.box_half}); it must exceed box_half * sqrt(3)")
        if self.samples_per_ray < 1:
            problems.append("samples_per_ray must be >= 1")
        if problems:
            raise ValueError("invalid TriplaneConfig: " + "; ".join(problems))
        return self

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TriplaneConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TriplaneConfig fields: {unknown}")
        return cls(**values).validate()


# ---------------------------------------------------------------------------------------------------------------
# plane sampling and the field


def sample_planes(planes: Tensor, points: Tensor, box_half: float) -> Tensor:
    """Bilinear features of ``points`` from the three planes.

    Args:
        planes: [B, 3, C, R, R]; plane 0 is indexed (row = y, column = x), plane 1 (row = z, column = x), plane 2
            (row = z, column = y). Texel ``(i, j)`` has its centre at ``((2 j + 1) / R - 1, (2 i + 1) / R - 1)``
            times ``box_half`` (``grid_sample`` with ``align_corners=False``); outside the outermost centres the
            border value is held.
        points: [B, N, 3] in the object frame.
    Returns:
        [B, N, 3, C] features per plane.
    """
    b, _, c, r, _ = planes.shape
    n = points.shape[1]
    u = points / box_half  # [B, N, 3] in [-1, 1] inside the box
    # grid_sample's grid is (x = column, y = row).
    grids = torch.stack([u[..., [0, 1]], u[..., [0, 2]], u[..., [1, 2]]], dim=1)  # [B, 3, N, 2]
    feats = F.grid_sample(planes.reshape(b * 3, c, r, r), grids.reshape(b * 3, 1, n, 2).to(planes.dtype),
                          mode="bilinear", padding_mode="border", align_corners=False)  # [B*3, C, 1, N]
    return feats.view(b, 3, c, n).permute(0, 3, 1, 2)


class TriplaneField(nn.Module):
    """Triplane features -> (density, colour) and volume rendering of rays through the object box."""

    def __init__(self, cfg: TriplaneConfig):
        super().__init__()
        self.cfg = cfg.validate()
        layers: list[nn.Module] = []
        width = cfg.in_features
        for _ in range(cfg.mlp_layers):
            layers += [nn.Linear(width, cfg.mlp_width), nn.SiLU()]
            width = cfg.mlp_width
        layers.append(nn.Linear(width, 4))
        self.mlp = nn.Sequential(*layers)

    def query(self, planes: Tensor, points: Tensor) -> tuple[Tensor, Tensor]:
        """planes [B, 3, C, R, R], points [B, N, 3] -> (density [B, N] >= 0, colour [B, N, 3] in (0, 1))."""
        f = sample_planes(planes, points, self.cfg.box_half)  # [B, N, 3, C]
        f = f.sum(2) if self.cfg.aggregate == "sum" else f.flatten(2)
        raw = self.mlp(f)
        sigma = F.softplus(raw[..., 0] + self.cfg.density_bias) * self.cfg.density_scale
        inside = (points.abs() <= self.cfg.box_half).all(-1)  # nothing outside the box (the planes clamp there)
        return sigma * inside, torch.sigmoid(raw[..., 1:])

    def render_rays(self, planes: Tensor, origins: Tensor, dirs: Tensor, background: Tensor,
                    num_samples: Optional[int] = None, stratified: bool = False,
                    generator: Optional[torch.Generator] = None, chunk: Optional[int] = None) -> dict[str, Tensor]:
        """Render rays through the object box.

        Args:
            planes: [B, 3, C, R, R]. origins, dirs: [B, N, 3] (unit directions; depth is then a distance).
            background: [3]. chunk: rays per batch element evaluated at once (None: all; bounds memory).
        Returns:
            ``rgb`` [B, N, 3], ``accumulation`` [B, N], ``depth`` [B, N] (expected distance of the rendered
            surface; rays that hit nothing get the far end of the box).
        """
        n_rays = origins.shape[1]
        if chunk is not None and n_rays > chunk:
            parts = [self.render_rays(planes, origins[:, s:s + chunk], dirs[:, s:s + chunk], background,
                                      num_samples, stratified, generator) for s in range(0, n_rays, chunk)]
            return {k: torch.cat([p[k] for p in parts], 1) for k in parts[0]}
        ns = num_samples or self.cfg.samples_per_ray
        near, far = ray_box(origins, dirs, self.cfg.box_half)  # [B, N]
        t, delta = sample_distances(near, far, ns, stratified, generator)  # [B, N, S], [B, N, 1]
        pts = origins[..., None, :] + dirs[..., None, :] * t[..., None]  # [B, N, S, 3]
        b = origins.shape[0]
        sigma, rgb = self.query(planes, pts.reshape(b, -1, 3))
        out = composite(sigma.view(b, n_rays, ns), rgb.view(b, n_rays, ns, 3), delta, background.to(rgb))
        w = out.pop("weights")
        # Depth: expected distance, with the remaining transmittance placed at the far end of the box.
        out["depth"] = (w * t).sum(-1) + (1 - out["accumulation"]) * far
        return out

    def density_grid(self, planes: Tensor, resolution: int, chunk: int = 1 << 18) -> Tensor:
        """Densities on a ``resolution^3`` grid of cell centres of the box, planes [1, ...] -> [R, R, R] (x, y, z)."""
        h = self.cfg.box_half
        axis = (torch.arange(resolution, device=planes.device, dtype=planes.dtype) + 0.5) / resolution * 2 * h - h
        pts = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(1, -1, 3)
        sig = torch.cat([self.query(planes, pts[:, s:s + chunk])[0] for s in range(0, pts.shape[1], chunk)], 1)
        return sig.view(resolution, resolution, resolution)


# ---------------------------------------------------------------------------------------------------------------
# the model


@dataclass
class TriplaneOutput:
    planes: Tensor
    """[B, 3, C, R, R] feature planes."""
    fast_weights: list[FastWeightState] = field(default_factory=list)
    """With ``return_fast_weights``: the final fast-weight state of every block."""


class TriplaneModel(LaCTBackbone):
    """Posed images -> triplane (see the module docstring). ``cfg``: backbone; ``tri``: triplane head.

    The tokenizer, the input checks, the fast-weight schedule and the block stack are the Gaussian model's
    (:class:`~tttlrm_ns.model.tttlrm.LaCTBackbone`); only the query tokens and the plane decoder are its own.
    """

    def __init__(self, cfg: TttlrmConfig, tri: TriplaneConfig):
        cfg, tri = cfg.validate(), tri.validate()
        if cfg.scan == "stream":
            raise ValueError("the triplane model needs all input views before its queries read the fast weights; "
                             "scan='stream' is not supported (use 'full' or 'ar')")
        if cfg.duplicate_virtual_views:
            raise ValueError("duplicate_virtual_views has no meaning for the triplane model (it decodes query "
                             "tokens, not copies of the input views); set it to False")
        super().__init__(cfg)  # tokenizer, input_layernorm, blocks (in this order: the seeded initialisation)
        self.tri = tri
        d, p, t = cfg.d, cfg.patch_size, tri.tokens_per_side
        self.plane_queries = nn.Parameter(torch.zeros(3 * t * t, d))
        self.plane_decoder = nn.Sequential(layer_norm(d), nn.Linear(d, p * p * tri.channels, bias=False))
        self.field = TriplaneField(tri)
        self.apply(self._init_weights)
        # Unit-variance queries: after the shared input LayerNorm they are on the scale of the image tokens.
        nn.init.normal_(self.plane_queries, std=1.0)

    @property
    def plane_resolution(self) -> int:
        return self.tri.tokens_per_side * self.cfg.patch_size

    # ------------------------------------------------------------------------------------------------------------
    def forward(self, images: Tensor, c2w: Tensor, fxfycxcy: Tensor, return_fast_weights: bool = False
                ) -> TriplaneOutput:
        """images [B, V, 3, H, W] in [0, 1], c2w [B, V, 4, 4] OpenCV in the object frame, fxfycxcy [B, V, 4]
        -> planes [B, 3, C, R, R]."""
        cfg = self.cfg
        p = cfg.patch_size
        self.check_inputs(images, c2w, fxfycxcy)
        b, v, _, h, w = images.shape
        n = self.tokens_per_view(h, w)
        x_in = self.encode(images, c2w, fxfycxcy)  # [B, V*n, d]
        # The queries enter in the dtype the tokenizer's output has (bfloat16 under autocast), as image tokens do;
        # the input LayerNorm is per token, so normalising them apart from the image tokens gives the same values.
        q_dtype = torch.bfloat16 if cfg.autocast_bf16 else self.tokenizer[1].weight.dtype
        with self.autocast(images.device):
            q = self.input_layernorm(self.plane_queries.to(q_dtype).expand(b, -1, -1))  # [B, 3*T*T, d]
            x = torch.cat([x_in, q], dim=1)  # [B, V*n + 3*T*T, d]
            ops = self.schedule(v, n, x.shape[1])  # updates from image tokens only; all tokens read the result
            x, states = self._run_stack(x, n, ops, query_tokens=q.shape[1])
            raw = self.plane_decoder(x[:, v * n:])  # [B, 3*T*T, p*p*C]
        t, c = self.tri.tokens_per_side, self.tri.channels
        # Token (plane, row, col) holds a (p, p, C) patch, channel fastest (the inverse of Patchify's layout).
        raw = raw.to(torch.promote_types(raw.dtype, torch.float32)).view(b, 3, t, t, p, p, c)
        planes = raw.permute(0, 1, 6, 2, 4, 3, 5).reshape(b, 3, c, t * p, t * p)  # [B, 3, C, T*p, T*p]
        return TriplaneOutput(planes, states if return_fast_weights else [])

    # ------------------------------------------------------------------------------------------------------------
    def render(self, planes: Tensor, c2w: Tensor, fxfycxcy: Tensor, height: int, width: int, background: Tensor,
               num_samples: Optional[int] = None, chunk: int = 8192) -> dict[str, Tensor]:
        """Render whole views: c2w [B, T, 4, 4], fxfycxcy [B, T, 4] -> ``rgb`` [B, T, 3, H, W], ``accumulation``
        and ``depth`` [B, T, H, W]."""
        b, nt = c2w.shape[:2]
        o, d = pixel_rays(c2w, fxfycxcy, height, width)  # [B, T, 3, H, W]
        o = o.permute(0, 1, 3, 4, 2).reshape(b, -1, 3)
        d = d.permute(0, 1, 3, 4, 2).reshape(b, -1, 3)
        out = self.field.render_rays(planes, o, d, background, num_samples, chunk=chunk)
        return {"rgb": out["rgb"].view(b, nt, height, width, 3).permute(0, 1, 4, 2, 3),
                "accumulation": out["accumulation"].view(b, nt, height, width),
                "depth": out["depth"].view(b, nt, height, width)}


# ---------------------------------------------------------------------------------------------------------------
# presets

# Backbones of the triplane presets. Kept out of :data:`tttlrm_ns.model.presets.PRESETS`, which names the Gaussian
# models (checkpoint metadata matches a file's shapes against it).


def object_triplane(**overrides) -> TttlrmConfig:
    """Backbone of the triplane object model (seed B.2: patch 16, paper widths); head in ``TRIPLANE_HEADS``."""
    return TttlrmConfig(**{"patch_size": 16, "sh_degree": 0, **overrides}).validate()


def triplane_small(**overrides) -> TttlrmConfig:
    """CPU-sized triplane backbone (the bundled triplane checkpoint): d=128, 4 blocks, patch 8, float32 NS."""
    base = dict(d=128, n_layer=4, attn_head_dim=32, ttt_head_dim=128, patch_size=8, sh_degree=0, ns_dtype="float32")
    return TttlrmConfig(**{**base, **overrides}).validate()


def triplane_tiny(**overrides) -> TttlrmConfig:
    """Test-sized triplane backbone: d=32, 2 blocks, patch 8, float32 Newton-Schulz (float64 gradient checks)."""
    base = dict(d=32, n_layer=2, attn_head_dim=16, ttt_head_dim=32, patch_size=8, sh_degree=0, ns_dtype="float32")
    return TttlrmConfig(**{**base, **overrides}).validate()


TRIPLANE_BACKBONES = {
    "object_triplane": object_triplane,
    "triplane_small": triplane_small,
    "triplane_tiny": triplane_tiny,
}

TRIPLANE_HEADS = {
    # Seed B.2: patch 16 backbone; 16 x 16 query tokens per plane -> 256^2 planes (LRM-like size), 40 channels.
    "object_triplane": TriplaneConfig(tokens_per_side=16, channels=40, mlp_width=64, mlp_layers=3,
                                      samples_per_ray=128),
    # CPU-sized: 8 x 8 tokens of patch 8 -> 64^2 planes, 32 channels (stage 1 of the bundled checkpoint, which has
    # 16 x 16 tokens: configs/triplane_zv16_cpu.yaml).
    "triplane_small": TriplaneConfig(tokens_per_side=8, channels=32, mlp_width=64, mlp_layers=1, samples_per_ray=48),
    # Tests: 2 x 2 tokens of patch 8 -> 16^2 planes, 8 channels.
    "triplane_tiny": TriplaneConfig(tokens_per_side=2, channels=8, mlp_width=16, mlp_layers=1, samples_per_ray=16),
}


def preset(name: str, **backbone_overrides) -> tuple[TttlrmConfig, TriplaneConfig]:
    """(backbone, triplane head) of a named triplane preset."""
    if name not in TRIPLANE_HEADS:
        raise ValueError(f"unknown triplane preset {name!r}; choose one of {sorted(TRIPLANE_HEADS)}")
    return TRIPLANE_BACKBONES[name](**backbone_overrides), dataclasses.replace(TRIPLANE_HEADS[name])


# ---------------------------------------------------------------------------------------------------------------
# checkpoints

TRIPLANE_KEY = "triplane_config"


def save_triplane(model: TriplaneModel, path: str | Path, extra_metadata: Optional[dict[str, str]] = None) -> Path:
    """Write weights + both configs to one ``.safetensors`` file atomically (``model_kind = triplane``)."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {CONFIG_KEY: model.cfg.to_json(), TRIPLANE_KEY: model.tri.to_json(), KIND_KEY: "triplane",
            "format": "tttlrm_ns/1", "trained.kind": "object", "trained.scan": model.cfg.scan,
            **(extra_metadata or {})}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))
    return path


def load_triplane(path: str | Path, map_location: str | torch.device = "cpu", **backbone_overrides) -> TriplaneModel:
    """Build a :class:`TriplaneModel` from a file of :func:`save_triplane`; a Gaussian tttLRM file is refused with a
    message naming the methods that read it. ``backbone_overrides``: run-time options (``autocast_bf16``, ...)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"triplane model file {path} does not exist")
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: the triplane model is read from our .safetensors files only (written by "
                              "`tttlrm-train` with model_kind: triplane); official .pt checkpoints hold the "
                              "Gaussian model (use ns-train tttlrm / tttlrm-object)")
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e})") from None
    if meta.get(KIND_KEY) != "triplane" or TRIPLANE_KEY not in meta:
        what = ("a Gaussian tttLRM checkpoint (it predicts per-pixel Gaussians; load it with ns-train tttlrm, "
                "tttlrm-object or tttlrm-ar)" if CONFIG_KEY in meta else "not a tttlrm_ns model file")
        raise CheckpointError(f"{path} is {what}, not a triplane object model (metadata {KIND_KEY}='triplane'). "
                              "Train one with `tttlrm-train --model-kind triplane` or use the bundled "
                              "tttlrm_ns/assets/weights/tttlrm_triplane.safetensors.")
    cfg = TttlrmConfig.from_dict(json.loads(meta[CONFIG_KEY]))
    if backbone_overrides:
        cfg = cfg.replace(**backbone_overrides)
    model = TriplaneModel(cfg, TriplaneConfig.from_dict(json.loads(meta[TRIPLANE_KEY])))
    state = load_file(str(path), device=str(map_location))
    check_state_dict(state, expected_shapes(model), source=str(path))  # type: ignore[arg-type]
    model.load_state_dict(state, strict=True)
    return model


def read_triplane_metadata(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


__all__ = ["KIND_KEY", "TRIPLANE_BACKBONES", "TRIPLANE_HEADS", "TRIPLANE_KEY", "TriplaneConfig", "TriplaneField",
           "TriplaneModel", "TriplaneOutput", "load_triplane", "preset", "read_triplane_metadata", "sample_planes",
           "save_triplane"]

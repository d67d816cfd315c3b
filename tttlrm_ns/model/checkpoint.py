"""Model weights on disk: the official ``.pt`` checkpoint and our own safetensors + config files.

Official format (``docs/reference_semantics.md`` §7.3):
``torch.save({'model': state_dict, ...})`` with the keys of ``official_full_config_state_dict_shapes.json``; frozen
auxiliary networks (``depth_anything.*``, ``perceptual_loss_module.*``) may be present and are ignored. The official
loader uses ``strict=False``; we check every key and shape first and load nothing unless all fit.

Our format: one ``.safetensors`` file whose metadata holds the model config as JSON (key
``tttlrm_config``), written atomically (:func:`tttlrm_ns.checkpoint_io.atomic_write`).

What the weights were trained for (``save_model(..., trained_for=TrainedFor(...))``; ``tttlrm-train``'s exporter
fills it from the training config). Stored as string metadata entries so a checkpoint of the wrong kind is
refused with a message naming the right method instead of silently producing garbage (``TttlrmPipeline``):

=========================  ==========================================================================================
key                        value
=========================  ==========================================================================================
``trained.kind``           ``scene`` (camera paths through rooms; ``ns-train tttlrm`` / ``tttlrm-ar``) or ``object``
                           (views on a sphere around one object, ``data.sampling: random``; ``tttlrm-object``)
``trained.scan``           fast-weight scan trained with: ``full``, ``ar`` (autoregressive chunks) or ``stream``
``trained.normalization``  camera normalisation of the training data: ``mean_cam`` or ``first_cam``
``trained.resolution``     training image size ``HxW`` (e.g. ``72x128``); informative, inference may differ
``trained.background``     background the renders were composited on: ``white``, ``black`` or ``r,g,b`` in [0, 1]
``trained.preset``         the model preset whose shapes the weights have (``official_full``, ...) or ``custom``
``train_step``             optimiser steps of the run that exported the weights (``tttlrm-train`` exports only)
``train_history``          JSON list of every training stage behind the weights, oldest first (``steps``,
                           ``resolution``, ``init_from``): a fine-tune carries its initial weights' stages
``train_step_total``       the sum of the stages' steps
=========================  ==========================================================================================

Files written before these keys existed load with a warning naming what could not be checked.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping, Optional

import torch
from torch import Tensor

from tttlrm_ns.checkpoint_io import atomic_write, load_checkpoint

from .config import TttlrmConfig
from .tttlrm import TttlrmModel

AUXILIARY_PREFIXES = ("depth_anything.", "perceptual_loss_module.")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
CONFIG_KEY = "tttlrm_config"
KIND_KEY = "model_kind"
"""Metadata key of the model family (absent or 'gaussian': the Gaussian model; 'triplane': triplane/model.py)."""
TRAINED_PREFIX = "trained."


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be loaded into the model; the message names the file and the keys."""


def _describe(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_state_dict(
    state: Mapping[str, Tensor], expected: Mapping[str, tuple[int, ...]], source: str = "checkpoint"
) -> None:
    """Raise :class:`CheckpointError` listing missing, unexpected and mismatched keys (nothing is loaded)."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k])}"
        for k in set(state) & set(expected)
        if tuple(state[k].shape) != tuple(expected[k])
    )
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_describe(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_describe(unexpected)}")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches: {_describe(mismatched)}")
        raise CheckpointError(
            f"{source} does not fit the model configuration ({'; '.join(parts)}). Nothing was loaded. "
            "Check that the model preset matches the checkpoint (e.g. presets.official_full() for the released "
            "tttLRM weights)."
        )


def expected_shapes(model: TttlrmModel) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _strip(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    out = {}
    for k, v in state.items():
        if k.startswith(AUXILIARY_PREFIXES):
            continue
        for p in WRAPPER_PREFIXES:  # DDP / torch.compile wrappers of a re-saved checkpoint
            while k.startswith(p):
                k = k[len(p) :]
        out[k] = v
    return out


def read_official_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read the core-model state dict of an official ``.pt`` checkpoint (``{'model': state_dict}``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    try:
        obj = load_checkpoint(path)
    except Exception as e:  # pickle / zip errors from torch.load: not a torch checkpoint at all
        raise CheckpointError(f"{path} is not a readable torch checkpoint ({type(e).__name__}: {e})") from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], Mapping):
        state = obj["model"]
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        state = obj  # a bare state dict
    else:
        keys = list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: expected a dict with a 'model' state dict (official format), found {keys}")
    return _strip(state)


def load_official_checkpoint(model: TttlrmModel, path: str | Path) -> TttlrmModel:
    """Load an official tttLRM ``.pt`` into ``model`` with strict key and shape checking."""
    state = read_official_state_dict(path)
    check_state_dict(state, expected_shapes(model), source=str(path))
    model.load_state_dict(state, strict=True)
    return model


@dataclass(frozen=True)
class TrainedFor:
    """What a set of weights was trained for (the ``trained.*`` metadata of the module docstring)."""

    kind: Literal["scene", "object"]
    scan: Literal["full", "ar", "stream"]
    normalization: Literal["mean_cam", "first_cam"]
    resolution: str
    """``HxW`` of the training images (e.g. ``72x128``)."""
    background: str
    """``white``, ``black`` or ``r,g,b``."""
    preset: str = "custom"
    scale: str = "extent"
    """Scale of the normalised frame: ``extent`` (official: camera extent) or ``median_depth`` (median scene depth
    = 1, :func:`tttlrm_ns.data.normalize.scale_to_depth`). Absent in older files, which all used ``extent``."""

    def to_metadata(self) -> dict[str, str]:
        return {TRAINED_PREFIX + f.name: str(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str]) -> tuple[Optional["TrainedFor"], list[str]]:
        """(the record, names of the missing keys); the record is None unless every key is present."""
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if TRAINED_PREFIX + n not in meta and n not in _ADDED_LATER]
        if missing:
            return None, missing
        values = {n: meta[TRAINED_PREFIX + n] for n in names if TRAINED_PREFIX + n in meta}
        bad = [(n, values[n], ok) for n, ok in _ALLOWED.items() if n in values and values[n] not in ok]
        if bad:
            raise CheckpointError(
                "invalid trained.* metadata: "
                + "; ".join(f"trained.{n}={v!r} (expected one of {sorted(ok)})" for n, v, ok in bad)
            )
        return cls(**values), []  # type: ignore[arg-type]


_ADDED_LATER = {"scale"}
"""``trained.*`` keys that files written before them lack; their field default is what those files were."""

_ALLOWED = {"kind": {"scene", "object"}, "scan": {"full", "ar", "stream"}, "normalization": {"mean_cam", "first_cam"},
            "scale": {"extent", "median_depth"}}


def background_name(rgb) -> str:
    """(r, g, b) in [0, 1] -> ``white`` / ``black`` / ``r,g,b`` (the ``trained.background`` value)."""
    rgb = tuple(float(c) for c in rgb)
    if rgb == (1.0, 1.0, 1.0):
        return "white"
    if rgb == (0.0, 0.0, 0.0):
        return "black"
    return ",".join(f"{c:g}" for c in rgb)


def matching_preset(cfg: TttlrmConfig) -> str:
    """Name of the model preset with the same weight shapes and scan as ``cfg``, or ``custom``."""
    from . import presets

    shape_fields = ("d", "n_layer", "patch_size", "in_channels", "attn_head_dim", "mlp_ratio", "ttt_head_dim",
                    "ttt_inter_multi", "sh_degree")
    for name, make in presets.PRESETS.items():
        p = make()
        if all(getattr(p, f) == getattr(cfg, f) for f in shape_fields) and p.scan == cfg.scan:
            return name
    return "custom"


def save_model(
    model: TttlrmModel,
    path: str | Path,
    extra_metadata: Optional[dict[str, str]] = None,
    trained_for: Optional[TrainedFor] = None,
) -> Path:
    """Write weights + config (+ what they were trained for) to one ``.safetensors`` file atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {CONFIG_KEY: model.cfg.to_json(), "format": "tttlrm_ns/1", **(extra_metadata or {})}
    if trained_for is not None:
        meta.update(trained_for.to_metadata())
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of one of our ``.safetensors`` files (config JSON, ``trained.*``, ``train_step``)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e})") from None
    if CONFIG_KEY not in meta:
        raise CheckpointError(f"{path} has no '{CONFIG_KEY}' metadata: not a tttlrm_ns model file")
    return dict(meta)


def read_config(path: str | Path) -> TttlrmConfig:
    return TttlrmConfig.from_dict(json.loads(read_metadata(path)[CONFIG_KEY]))


def read_trained_for(path: str | Path) -> tuple[Optional[TrainedFor], list[str]]:
    """(what the file's weights were trained for, missing ``trained.*`` keys) -- None for files written before
    the keys existed."""
    return TrainedFor.from_metadata(read_metadata(path))


def load_model(path: str | Path, map_location: str | torch.device = "cpu", **config_overrides) -> TttlrmModel:
    """Build a model from one of our ``.safetensors`` files; ``config_overrides`` change run-time options
    (e.g. ``autocast_bf16=True``, ``scan='ar'``) but not shapes."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file {path} does not exist")
    # A triplane file carries the backbone config too, so without this check it would fail later with a list of
    # missing/unexpected keys instead of saying what it is.
    kind = read_metadata(path).get(KIND_KEY, "gaussian")
    if kind != "gaussian":
        raise CheckpointError(
            f"{path} holds a {kind} model (metadata model_kind={kind}), not the Gaussian tttLRM model: use it with "
            f"`ns-train tttlrm-{kind}` (--pipeline.model.checkpoint), or give a Gaussian checkpoint "
            "(e.g. tttlrm_ns/assets/weights/tttlrm_scene.safetensors)"
        )
    cfg = read_config(path)
    if config_overrides:
        cfg = cfg.replace(**config_overrides)
    model = TttlrmModel(cfg)
    state = load_file(str(path), device=str(map_location))
    check_state_dict(state, expected_shapes(model), source=str(path))
    model.load_state_dict(state, strict=True)
    return model


def load_any(path: str | Path, cfg: Optional[TttlrmConfig] = None, **config_overrides) -> TttlrmModel:
    """Load our ``.safetensors`` file or an official ``.pt`` (built with ``cfg``, default the full preset)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_model(path, **config_overrides)
    cfg = (cfg or TttlrmConfig()).replace(**config_overrides) if config_overrides else (cfg or TttlrmConfig())
    return load_official_checkpoint(TttlrmModel(cfg), path)

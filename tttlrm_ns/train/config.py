"""Training configuration: one typed tree, resolved as defaults < YAML file < command-line overrides.

``tttlrm-train --config configs/stage1.yaml --optim.lr 1e-4 --data.scenes a b`` builds the defaults of
:class:`TrainConfig`, overlays the YAML file (nested mappings mirror the dataclass tree; unknown keys are an error),
then lets tyro apply the CLI flags on top. The resolved tree is written to ``<output_dir>/config.yaml`` so a run can
be reproduced (``--config <output_dir>/config.yaml``) and resumed.

Batch arithmetic: ``optim.batch_size`` is the *global* number of scenes per optimiser step. With ``R`` ranks in
``R / sp_size`` data-parallel groups, each rank runs ``accum = batch_size / (dp_size * micro_batch_size)`` micro
steps, so the optimisation is the same whatever the number of ranks (gradient accumulation keeps the batch).
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

from tttlrm_ns.gaussians import PruneConfig
from tttlrm_ns.geometry.free_space import FreeSpaceConfig
from tttlrm_ns.model.config import TttlrmConfig
from tttlrm_ns.triplane.model import TriplaneConfig


@dataclass
class DataConfig:
    """Scenes, resolution and view sampling (``docs/reference_semantics.md`` §1.5)."""

    scenes: tuple[str, ...] = ()
    """Scene folders (holding ``opencv_cameras.json``), JSON files listing scene paths, or glob patterns."""
    height: int = 144
    """Image rows fed to the model (multiple of the patch size)."""
    width: int = 256
    """Image columns fed to the model (multiple of the patch size)."""
    target_scale: int = 1
    """Supervision views are loaded and rendered at target_scale x (height, width). > 1 teaches Gaussians that
    still cover their pixel when rendered finer than the input (evaluation renders at the data's resolution);
    at 1 the model can shrink its Gaussians below a pixel and lean on the rasteriser's screen-space dilation."""
    resize_mode: Literal["crop", "stretch"] = "crop"
    """'crop' keeps the aspect ratio (clean); 'stretch' scales x and y independently (official)."""
    sampling: Literal["window", "ar", "random"] = "window"
    """'window': random frame window, inputs = window ends + random frames inside (full model). 'ar': the
    2*N_in temporally first loaded frames, N_in sorted inputs (autoregressive model). 'random': inputs and targets
    drawn independently from all frames (object renders on a sphere, which have no temporal order)."""
    window_min: int = 128
    """Smallest frame distance between the window's first and last frame (clipped to the scene length - 1)."""
    window_max: int = 512
    """Largest frame distance between the window's first and last frame."""
    frames_per_window: int = 124
    """Frames loaded per sample: the window ends plus distinct random frames strictly inside."""
    num_input_views: tuple[int, ...] = (32,)
    """Input view counts; one is drawn per optimiser step (all samples of a step share it: mixed length)."""
    num_target_views: int = 0
    """Supervision views per sample, drawn from all loaded frames (inputs included); 0 = as many as inputs."""
    normalize: Literal["mean_cam", "first_cam"] = "mean_cam"
    """Camera normalisation (``mean_cam`` full model, ``first_cam`` AR model)."""
    normalize_stats: Literal["inputs", "all"] = "inputs"
    """Views defining the normalised frame: input views only (clean) or inputs + targets (official)."""
    normalize_scale: Literal["extent", "median_depth"] = "extent"
    """Scale of the normalised frame: camera extent (official) or the input views' median depth = 1 (from the
    renders' exact depth; needs ``load_depth``; :func:`tttlrm_ns.data.normalize.scale_to_depth`)."""
    median_jitter: float = 0.0
    """With ``median_depth``: multiply the median by ``exp(U(-j, j))`` per sample, so the model does not rely on
    a perfect median (at inference it is measured, not known)."""
    load_depth: bool = False
    """Load per-frame depth maps (frame key ``depth_key``) of the input views for the depth loss."""
    load_target_depth: bool = False
    """Also load the depth maps of the target views (``target_depth``): the triplane model's depth and silhouette
    terms are computed on the rendered target pixels."""
    depth_key: str = "depth_path"
    """Frame key of ``opencv_cameras.json`` holding a ``.npy`` z-depth map path (0 = no depth) relative to the scene."""
    num_workers: int = 2
    """DataLoader worker processes per rank (0 = load in the training process)."""
    skip_bad_samples: bool = False
    """Log and skip a sample that fails to load (replaced deterministically) instead of stopping the run."""
    max_bad_samples: int = 100
    """Stop anyway once this many samples were skipped (the data set is probably broken)."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Colour transparent image pixels are composited over (and the render background)."""


@dataclass
class OptimConfig:
    """AdamW + linear warm-up + cosine decay (``docs/reference_semantics.md`` §7.1)."""

    lr: float = 3e-4
    """Peak learning rate."""
    warmup_steps: int = 2000
    """Linear warm-up steps (from 0 to ``lr``)."""
    max_steps: int = 80000
    """Optimiser steps of the run; the cosine reaches 0 here."""
    min_lr_ratio: float = 0.0
    """Final learning rate as a fraction of ``lr``."""
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.05
    """Applied to tensors with >= 2 dims (matrices, initial fast weights); never to norms and biases."""
    batch_size: int = 128
    """Global scenes per optimiser step (kept whatever the number of ranks, by gradient accumulation)."""
    micro_batch_size: int = 1
    """Scenes per forward pass on one rank."""
    grad_clip_norm: float = 1.0
    """Clip the global gradient norm to this value."""
    skip_grad_norm: float = 5.0
    """Skip the optimiser step when the pre-clip gradient norm exceeds this (0 disables)."""
    nonfinite_grad: Literal["sanitize", "skip"] = "sanitize"
    """'sanitize': nan -> 0, +-inf -> +-1e-3 before clipping (Long-LRM); 'skip': skip the step."""


@dataclass
class LossConfig:
    """Weights of the training loss terms (``docs/reference_semantics.md`` §6.3)."""

    mse: float = 1.0
    perceptual: float = 0.5
    """LPIPS weight (0 disables it and never loads the network)."""
    perceptual_net: Literal["vgg", "alex"] = "vgg"
    opacity: float = 0.0
    """Weight of the mean opacity of all (pre-pruning) Gaussians."""
    depth: float = 0.0
    """Weight of the depth term against the data's depth (needs ``data.load_depth``; the triplane model:
    ``data.load_target_depth``, always log-depth L1 of the rendered distance)."""
    depth_mode: Literal["disparity", "log_depth"] = "disparity"
    """'disparity': the official scale- and shift-invariant normalised-disparity SmoothL1 (its teacher is a
    relative monocular depth). 'log_depth': L1 between log z of the Gaussians and log z of the data, for data with
    exact depth (our synthetic renders): it also teaches the absolute depth, which the invariant form leaves free."""
    mask: float = 0.0
    """Weight of the silhouette term (``losses.mask_partial``): input-pixel opacity vs "the data has a surface
    here" (depth > 0). Object data on a background only (needs ``data.load_depth``); not in the official recipe.
    The triplane model: BCE of the rendered accumulation vs the target's silhouette (``data.load_target_depth``)."""


@dataclass
class RenderConfig:
    """Rasterisation of the predicted Gaussians into the target views."""

    near_plane: float = 0.1
    far_plane: float = 1e10
    eps2d: float = 0.3
    deferred: bool = True
    """Deferred backpropagation (re-render per view in backward): memory of one view regardless of views."""
    deferred_patch: Optional[int] = None
    """Re-render windows of this many pixels (multiple of 16) in the deferred backward instead of whole views:
    bounded rasteriser memory for large CPU renders. CPU backends only (gsplat has no window rendering)."""
    backend: Literal["auto", "gsplat", "cpu", "reference"] = "auto"
    """``tttlrm_ns.render.rasterize`` backend ('auto': gsplat on CUDA, C++ on CPU; 'reference': pure torch)."""
    prune: PruneConfig = field(default_factory=lambda: PruneConfig(keep_top=0.4, keep_random=0.1))
    """Opacity pruning before rendering (official keep fractions; keep_top=0 disables)."""
    free_space: FreeSpaceConfig = field(default_factory=lambda: FreeSpaceConfig(tolerance=0.0, min_views=2))
    """The inference pipeline's free-space filter (:mod:`tttlrm_ns.geometry.free_space`) applied to the training
    renders before pruning, so that the model learns under the condition it is used in (tolerance 0: off, the
    official recipe). Gaussian models with ``parallel.sp_size = 1`` only (the filter needs every view's depth)."""


@dataclass
class ParallelConfig:
    """Process layout. World size and ranks come from the environment (torchrun)."""

    sp_size: int = 1
    """Ranks sharing one scene (sequence parallelism); world size = dp_size * sp_size."""
    backend: Literal["auto", "nccl", "gloo"] = "auto"
    """'auto': NCCL with CUDA, gloo otherwise."""
    device: Literal["auto", "cpu", "cuda"] = "auto"


@dataclass
class CheckpointConfig:
    every: int = 1000
    """Save every this many optimiser steps (and at the end)."""
    keep_last: int = 3
    """Number of resumable checkpoints kept (older ones are deleted after a successful save)."""
    init_from: Optional[str] = None
    """Initial weights: a model ``.safetensors`` export (e.g. of the previous curriculum stage) or an official
    ``.pt``."""
    export: bool = True
    """Write ``<output_dir>/model.safetensors`` (the format ``ns-train tttlrm`` loads) at the end."""


@dataclass
class LoggingConfig:
    every: int = 10
    """Scalars to TensorBoard / metrics.jsonl every this many steps."""
    tensorboard: bool = True
    preview_every: int = 500
    """Render previews (prediction | target) to TensorBoard every this many steps (0 disables)."""
    progress: bool = True
    """rich progress bar on rank 0."""


@dataclass
class TriplaneTrainConfig:
    """Ray sampling of the triplane training loss (``model_kind: triplane``)."""

    patch: int = 32
    """Side of the rendered pixel windows (LPIPS needs >= 32 with the VGG backbone's pooling)."""
    patches_per_view: int = 1
    """Windows per target view per step."""
    samples_per_ray: int = 32
    """Stratified samples per ray while training (evaluation uses the model's ``samples_per_ray``)."""


@dataclass
class TrainConfig:
    """tttLRM pretraining (one process or torchrun)."""

    output_dir: Path = Path("runs/tttlrm")
    """Run folder: config.yaml, checkpoints/, tensorboard/, metrics.jsonl, model.safetensors."""
    seed: int = 0
    resume: bool = False
    """Continue from the newest loadable checkpoint in ``output_dir/checkpoints`` (exact continuation)."""
    stop_at_step: Optional[int] = None
    """Stop (after a checkpoint) once this many steps are done, e.g. to train in time-limited chunks; the learning
    rate schedule still follows ``optim.max_steps``. Continue with ``--resume``."""
    stop_after_minutes: Optional[float] = None
    """Stop (after a checkpoint) once this much wall-clock time has passed in this process: fixed-compute
    comparisons of recipes, or training in the time a machine is available. Continue with ``--resume``."""
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    model: TttlrmConfig = field(default_factory=TttlrmConfig)
    model_kind: Literal["gaussian", "triplane"] = "gaussian"
    """'gaussian': per-pixel Gaussians (the paper's main model). 'triplane': the triplane object model
    (``tttlrm_ns.triplane``; ``model`` is its backbone, ``triplane`` its head; needs object data). The names of
    ``tttlrm_ns.train.kinds.KINDS``."""
    triplane: TriplaneConfig = field(default_factory=TriplaneConfig)
    """Triplane head (``model_kind: triplane`` only)."""
    triplane_train: TriplaneTrainConfig = field(default_factory=TriplaneTrainConfig)
    """Ray sampling of the triplane loss (``model_kind: triplane`` only)."""
    loss: LossConfig = field(default_factory=LossConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def validate(self, world_size: int = 1) -> "TrainConfig":
        """Raise ``ValueError`` naming the field for settings that cannot run on ``world_size`` ranks."""
        self.model.validate()
        p = self.model.patch_size
        problems = []
        d, o = self.data, self.optim
        if d.target_scale < 1:
            problems.append(f"data.target_scale = {d.target_scale} must be >= 1")
        if d.target_scale != 1 and self.model_kind == "triplane":
            problems.append("data.target_scale applies to the Gaussian model; the triplane samples its own rays")
        if d.height % p or d.width % p:
            problems.append(f"data.height x data.width = {d.height}x{d.width} is not a multiple of patch_size {p}")
        sp = self.parallel.sp_size
        if sp < 1 or world_size % sp:
            problems.append(f"world size {world_size} is not a multiple of parallel.sp_size={sp}")
        else:
            dp = world_size // sp
            if o.batch_size % (dp * o.micro_batch_size):
                problems.append(
                    f"optim.batch_size={o.batch_size} is not divisible by dp_size x micro_batch_size = "
                    f"{dp} x {o.micro_batch_size}; choose a global batch that splits evenly"
                )
        for n in d.num_input_views:
            if n % sp:
                problems.append(f"{n} input views cannot be split over parallel.sp_size={sp} ranks")
            if n > d.frames_per_window:
                problems.append(f"{n} input views exceed data.frames_per_window={d.frames_per_window}")
        m = self.model
        if m.scan == "ar":
            if m.ar_chunk_views % sp:
                problems.append(f"model.ar_chunk_views={m.ar_chunk_views} is not divisible by parallel.sp_size={sp}")
            bad = [n for n in d.num_input_views if n % m.ar_chunk_views]
            if bad:
                problems.append(f"input view counts {bad} are not multiples of model.ar_chunk_views={m.ar_chunk_views}")
        if m.scan == "stream" and sp > 1:
            problems.append("model.scan='stream' does not support sequence parallelism (parallel.sp_size > 1)")
        n_tgt = d.num_target_views
        if n_tgt > d.frames_per_window:
            problems.append(f"data.num_target_views={n_tgt} exceeds data.frames_per_window={d.frames_per_window}")
        if n_tgt and n_tgt % sp:
            problems.append(f"data.num_target_views={n_tgt} cannot be split over parallel.sp_size={sp} ranks")
        if not 2 <= d.window_min <= d.window_max:
            problems.append(f"need 2 <= data.window_min <= data.window_max, got {d.window_min}, {d.window_max}")
        if d.frames_per_window < 2:
            problems.append("data.frames_per_window must be >= 2 (the window's two ends)")
        # Gaussians: depth / silhouette of the input pixels; triplane: of the rendered target pixels.
        if self.data.normalize_scale == "median_depth" and not self.data.load_depth:
            raise ValueError("data.normalize_scale=median_depth needs data.load_depth (the median comes from the "
                             "input views' depth maps)")
        need, what = (("load_target_depth", "target") if self.model_kind == "triplane" else ("load_depth", "input"))
        for term in ("depth", "mask"):
            if getattr(self.loss, term) > 0 and not getattr(d, need):
                problems.append(f"loss.{term} > 0 needs data.{need}=True (depth maps of the {what} views"
                                + ("; the silhouette is where the depth is > 0)" if term == "mask" else ")"))
        if o.max_steps < 1 or o.warmup_steps < 0:
            problems.append("optim.max_steps must be >= 1 and optim.warmup_steps >= 0")
        if self.render.deferred_patch is not None and self.render.deferred_patch % 16:
            problems.append(f"render.deferred_patch={self.render.deferred_patch} must be a multiple of 16 (tile size)")
        if self.model_kind == "triplane":
            self.triplane.validate()
            if sp > 1:
                problems.append("model_kind='triplane' does not support sequence parallelism (parallel.sp_size > 1)")
            if m.scan == "stream":
                problems.append("model_kind='triplane' needs model.scan 'full' or 'ar' (queries read the final weights)")
            t = self.triplane_train
            if t.patch > min(d.height, d.width) or t.patch < 1 or t.patches_per_view < 1 or t.samples_per_ray < 1:
                problems.append(f"triplane_train: patch={t.patch} must fit the {d.height}x{d.width} images and "
                                "patches_per_view / samples_per_ray must be positive")
        if problems:
            raise ValueError("invalid training configuration: " + "; ".join(problems))
        return self


# ---------------------------------------------------------------------------------------------------------------
# YAML <-> dataclasses


class ConfigError(ValueError):
    """A YAML config that does not fit :class:`TrainConfig`; the message names the dotted key."""


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type ``tp`` (dataclasses, tuples, Optional, Path, Literal)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return _build(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if tp is Path:
        return Path(value)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp in (int, bool, str) and not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def _build(cls: type, values: dict, where: str = "", base: Any = None) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown keys {unknown}; valid keys: {sorted(names)}")
    base = cls() if base is None else base
    kwargs = {}
    for k, v in values.items():
        key = f"{where}.{k}" if where else k
        cur = getattr(base, k)
        if dataclasses.is_dataclass(hints[k]) and isinstance(v, dict):
            # Nested sections merge into their defaults, so a YAML file lists only what it changes.
            kwargs[k] = _build(type(cur), v, key, base=cur)
        else:
            kwargs[k] = _coerce(v, hints[k], key)
    return dataclasses.replace(base, **kwargs)


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [_to_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def config_from_dict(values: dict) -> TrainConfig:
    """Build a :class:`TrainConfig` from nested plain values (YAML content) over the defaults."""
    return _build(TrainConfig, values or {})


def load_yaml_config(path: str | Path) -> TrainConfig:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config sections")
    try:
        return config_from_dict(values)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def config_to_dict(cfg: TrainConfig) -> dict:
    return _to_plain(cfg)


def dump_config(cfg: TrainConfig, path: str | Path) -> Path:
    """Write the resolved config as YAML (loadable with ``--config``)."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return path


def resolve_config(argv: Optional[Sequence[str]] = None) -> TrainConfig:
    """defaults < ``--config FILE`` < remaining CLI flags (tyro)."""
    import tyro

    args = list(sys.argv[1:] if argv is None else argv)
    base = TrainConfig()
    rest: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--config":
            if i + 1 >= len(args):
                raise ConfigError("--config needs a YAML file path")
            base = load_yaml_config(args[i + 1])
            i += 2
            continue
        if a.startswith("--config="):
            base = load_yaml_config(a.split("=", 1)[1])
        else:
            rest.append(a)
        i += 1
    return tyro.cli(TrainConfig, default=base, args=rest,
                    description="tttLRM pretraining. Values resolve as defaults < --config YAML < these flags.")


__all__ = [
    "CheckpointConfig", "ConfigError", "DataConfig", "LoggingConfig", "LossConfig", "OptimConfig", "ParallelConfig",
    "RenderConfig", "TrainConfig", "config_from_dict", "config_to_dict", "dump_config", "load_yaml_config",
    "resolve_config",
]

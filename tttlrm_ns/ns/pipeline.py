"""The tttLRM pipeline: one feed-forward prediction at setup, then (optionally) a few refinement steps.

At construction in training mode (``ns-train``), after nerfstudio's datamanager has cached the train split:

1. choose the input views among the train images (all / every k-th / evenly spaced / k-means on camera poses as
   in the paper's protocol; the scene's precomputed ``fold_8_kmeans_{N}_input`` list when available);
2. convert their cameras to OpenCV and normalise them as the backbone expects (``mean_cam`` for the full scan,
   ``first_cam`` for the autoregressive ones), resize the images to the preset resolution (aspect kept,
   centre crop to the patch multiple, intrinsics scaled);
3. estimate the memory of the prediction and refuse *before* loading anything if it cannot fit;
4. load the weights, predict (no grad, chunked over views, optional bf16 / compile), prune, free the backbone;
5. map the Gaussians back to the dataparser's world frame (means, rotations, scales and SH bands) and install
   them in the model; the trainer builds the optimizers afterwards, so their state is fresh.

In the other modes (``ns-eval``, ``ns-export``, ``ns-viewer`` and ``ns-render`` load a finished run with
``test_mode`` "test" or "inference") the backbone is skipped: the Gaussians come from the nerfstudio checkpoint.
(Resuming an ``ns-train`` run with ``--load-dir`` predicts once more before the checkpoint replaces the result.)
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Type

import torch
from torch.cuda.amp.grad_scaler import GradScaler

from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils.rich_utils import CONSOLE

# BUNDLED_CHECKPOINT: the superseded demo weights (defined once in tttlrm_ns/__init__.py). No method loads them by
# default (DEFAULT_WEIGHTS below); the error for missing scene weights names them as an explicit choice.
from tttlrm_ns import ASSETS, BUNDLED_CHECKPOINT
from tttlrm_ns import infer
from tttlrm_ns.geometry.depth_range import DepthRangeError
from tttlrm_ns.geometry.free_space import FreeSpaceConfig
from tttlrm_ns.data.views import ViewSelectionConfig, precomputed_positions, select_views
from tttlrm_ns.gaussians import Gaussians, PruneConfig
from tttlrm_ns.infer import ReconstructConfig
from tttlrm_ns.model import TttlrmConfig, presets
from tttlrm_ns.ns import inputs
from tttlrm_ns.ns.model import TttlrmNSModelConfig
from tttlrm_ns.infer.predict import GIB, available_memory, estimate_memory, keep_fraction


WEIGHTS_DIR = ASSETS / "weights"
"""Folder of the bundled weights (``tttlrm_ns/assets/weights``)."""

DEFAULT_WEIGHTS: dict[tuple[str, str], str] = {
    ("scene", "full"): "tttlrm_scene.safetensors",
    ("scene", "ar"): "tttlrm_scene_ar.safetensors",
    ("object", "full"): "tttlrm_object.safetensors",
}
"""Default weights per (``method_kind``, scan) when ``--pipeline.model.checkpoint`` is not given: one file in
:data:`WEIGHTS_DIR`. When it is absent the method stops with a message naming the file and the flag; nothing takes its
place, neither weights trained for another method nor the superseded demo weights (:data:`BUNDLED_CHECKPOINT`), which
load only when passed by path: a run silently using other weights would report numbers of a model nobody chose."""

OFFICIAL_PRESET_BY_NAME = {"dl3dv_full.pt": "official_full", "dl3dv_ar.pt": "official_ar"}
"""The released ``.pt`` files have the same tensors for both scans, so the scan can only come from the file name
(these two) or ``--pipeline.model.model-preset``."""

_PRESET_TRAINED = {  # what the official presets' weights were trained for: (kind, scan)
    "official_full": ("scene", "full"),
    "official_ar": ("scene", "ar"),
    "object_level": ("object", "full"),
}
_METHOD_FOR = {("scene", "full"): "tttlrm", ("scene", "ar"): "tttlrm-ar", ("object", "full"): "tttlrm-object"}
_SCAN_WORDS = {"full": "full scan", "ar": "autoregressive scan", "stream": "streaming scan"}


class PredictionError(ValueError):
    """The feed-forward prediction cannot run with this data / configuration; the message says what to change."""


class InsufficientMemoryError(PredictionError, MemoryError):
    """The predicted peak memory exceeds what is available; raised before any weight is loaded."""


@dataclass
class TttlrmPipelineConfig(VanillaPipelineConfig):
    """tttLRM: feed-forward prediction of the Gaussians at setup (input views, resolution, pruning, memory)."""

    _target: Type = field(default_factory=lambda: TttlrmPipeline)
    model: TttlrmNSModelConfig = field(default_factory=TttlrmNSModelConfig)
    """The splatfacto-style model holding the predicted Gaussians (and the backbone's weights / options)."""
    views: ViewSelectionConfig = field(default_factory=lambda: ViewSelectionConfig(mode="kmeans", num_views=32))
    """Which train images are the model's input views."""
    use_precomputed_views: bool = True
    """With k-means: use the scene file's fold_8_kmeans_{N}_input list when present (the paper's exact inputs)."""
    method_kind: Literal["scene", "object"] = "scene"
    """What this method reconstructs; weights trained for the other kind (``trained.kind`` metadata) are refused."""
    check_weights: bool = True
    """Stop when the weights' ``trained.*`` metadata (kind, scan, normalisation, background) disagree with this run.
    False runs them anyway (e.g. a full-scan model with --pipeline.model.scan ar on purpose)."""
    input_long_side: Optional[int] = None
    """Long side of the model input in pixels (aspect kept, short side rounded down to the patch multiple: 16:9
    images become 960x536 as in the paper); an explicit value is used as given, also above the stored size.
    None: automatic, the stored long side capped at auto_long_side_cuda / auto_long_side_cpu (never upsampled)."""
    auto_long_side_cuda: int = 960
    """Cap of the automatic input long side on CUDA (the paper's 960)."""
    auto_long_side_cpu: int = 256
    """Cap of the automatic input long side on CPU: 32 views of 256x144 predict in seconds and refine / export in
    well under a minute on 2 cores; larger inputs multiply the Gaussians (one per pixel) and every later step."""
    input_height: Optional[int] = None
    """Exact input rows instead of input_long_side; give input_height and input_width together."""
    input_width: Optional[int] = None
    """Exact input columns (see input_height); portrait images swap the two."""
    resize_mode: Literal["crop", "stretch"] = "crop"
    """'crop': keep the aspect ratio (uniform scale + centre crop); 'stretch': scale x and y separately (official)."""
    normalization: Literal["auto", "mean_cam", "first_cam"] = "auto"
    """Camera normalisation: 'auto' = mean_cam for the full scan, first_cam for 'ar' / 'stream' (as trained)."""
    normalization_scale: Literal["auto", "extent", "median_depth"] = "auto"
    """Scale of the model's frame: 'auto' = as the weights were trained (``trained.scale``; official weights:
    'extent', the camera extent); 'median_depth' = the scene's median depth is 1, measured from the capture's SfM
    points when the dataparser has them, else by a plane sweep of the input views (the log says which)."""
    init: Literal["model", "mvs"] = "model"
    """Where the Gaussians come from: 'model' = the feed-forward prediction; 'mvs' = no network: one Gaussian per
    confidently matched pixel at the depth a plane sweep measures, with the input colours
    (:func:`tttlrm_ns.infer.mvs_gaussians`); refinement continues from either."""
    plausibility_check: bool = True
    """After predicting, render the Gaussians into 4 input views and warn (naming the likely cause and the flag to
    try) when they reproduce their own inputs below 16 dB."""
    prune: PruneConfig = field(default_factory=lambda: ReconstructConfig().prune)
    """Opacity pruning of the predicted Gaussians (official: keep the 40 % most opaque + 10 % of the rest)."""
    free_space: FreeSpaceConfig = field(default_factory=lambda: ReconstructConfig().free_space)
    """Before pruning, drop the predicted Gaussians that other input views see through: a Gaussian in front of
    the surface of at least min-views other views by more than tolerance of that view's depth
    (:mod:`tttlrm_ns.geometry.free_space`); tolerance 0: off (the official pipeline)."""
    footprint_filter: float = field(default_factory=lambda: ReconstructConfig().footprint_filter)
    """Variance, in input pixels squared, added to every predicted Gaussian at the size of an input pixel where it
    sits (:func:`tttlrm_ns.gaussians.widen_to_footprint`): renders, the viewer and exports finer than the input
    then show surfaces instead of separate dots. 0: the model's raw output (the official pipeline)."""
    chunk_views: int = field(default_factory=lambda: ReconstructConfig().chunk_views)
    """Views per chunk of ray encoding / Gaussian decoding (bounds per-pixel memory; the backbone sees all)."""
    memory_budget_gb: Optional[float] = None
    """Memory the prediction may use (None: free GPU memory, or available RAM on CPU)."""
    seed: int = 777
    """Seed of the random part of pruning and of the refinement view order (official: 777 + rank)."""


class TttlrmPipeline(VanillaPipeline):
    """VanillaPipeline whose model is filled by one tttLRM prediction (see the module docstring)."""

    config: TttlrmPipelineConfig

    def __init__(
        self,
        config: TttlrmPipelineConfig,
        device: str,
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        grad_scaler: Optional[GradScaler] = None,
    ):
        if world_size > 1:
            raise PredictionError("tttLRM runs its prediction and refinement on one device; use world_size 1")
        super().__init__(config, device, test_mode, world_size, local_rank, grad_scaler)
        if test_mode == "val":
            self._check_images()
        self.input_indices: list[int] = []
        """Positions (in the train split) of the model's input views; empty when loaded from a finished run."""
        if test_mode == "val":  # ns-train; eval / export / viewer load the Gaussians from the checkpoint
            gaussians, self.input_indices = self.predict()
            self.install_prediction(gaussians)
        self._refine_order = torch.randperm(
            max(len(self.input_indices), 1), generator=torch.Generator().manual_seed(config.seed)
        ).tolist()

    def install_prediction(self, gaussians: Gaussians) -> None:
        """Hand the prediction to the model. With refinement on, the model keeps refinement's starting set instead
        (:meth:`~tttlrm_ns.ns.model.TttlrmNSModel.set_gaussians`: merged to ``refine.max_gaussians`` by default): this
        is where the prediction is first changed, before the trainer builds the optimizers. (``tttlrm-eval`` scores
        the raw prediction here, as its feed-forward row.)"""
        model = self.model
        model.set_gaussians(gaussians)  # type: ignore[attr-defined]
        prep = model.config.refine.preparation(gaussians.num) if model.config.refine.active else None  # type: ignore
        CONSOLE.log(f"tttLRM: {model.num_points} Gaussians installed"  # type: ignore[attr-defined]
                    + (f" (refinement's starting set: {prep} from the {gaussians.num} predicted)" if prep else ""))

    # --- data -------------------------------------------------------------------------------------------------------
    def _check_images(self) -> None:
        """Stop on images the camera file lists but that do not exist (nerfstudio would fail later, inside an image
        cache worker thread); say which images next to the used ones have no camera (e.g. frames COLMAP could
        not register)."""
        dm = self.datamanager
        used = set()
        for ds in (getattr(dm, "train_dataset", None), getattr(dm, "eval_dataset", None)):
            outputs = getattr(ds, "_dataparser_outputs", None)
            if outputs is not None:
                used.update(Path(f).resolve() for f in outputs.image_filenames)
        missing = sorted(str(f) for f in used if not f.is_file())
        if missing:
            shown = ", ".join(missing[:5]) + (f", ... ({len(missing) - 5} more)" if len(missing) > 5 else "")
            raise PredictionError(
                f"{len(missing)} image(s) listed in the data's camera file ({self.config.datamanager.data}) do not "
                f"exist: {shown}. Restore them, or re-run ns-process-data / remove their frames from the camera file."
            )
        suffixes = {".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG"}
        for folder in sorted({f.parent for f in used}):
            unused = sorted(p.name for p in folder.iterdir() if p.suffix in suffixes and p.resolve() not in used)
            if unused:
                shown = ", ".join(unused[:8]) + (f", ... ({len(unused) - 8} more)" if len(unused) > 8 else "")
                CONSOLE.log(
                    f"[yellow]tttLRM: {len(unused)} of {len(unused) + sum(f.parent == folder for f in used)} images "
                    f"in {folder} have no camera in the data's camera file and are not used: {shown}. (With "
                    "ns-process-data: COLMAP could not register them; more overlap between photos or "
                    "--matching-method exhaustive helps.)"
                )

    # --- weights ------------------------------------------------------------------------------------------------
    def expected_scan(self) -> str:
        """The scan this run uses: ``--pipeline.model.scan`` (set by ``tttlrm-ar``) or the full scan."""
        return self.config.model.scan or "full"

    def default_weights(self) -> Path:
        """The bundled weights of this method (:data:`DEFAULT_WEIGHTS`); an error naming the file and the flag when
        that file is missing (no other weights are tried)."""
        key = (self.config.method_kind, self.expected_scan())
        name = DEFAULT_WEIGHTS.get(key)
        if name is not None and (WEIGHTS_DIR / name).is_file():
            return WEIGHTS_DIR / name
        method = _METHOD_FOR.get(key, "this method")
        where = f": {WEIGHTS_DIR / name} is missing" if name is not None else ""
        demo = WEIGHTS_DIR / BUNDLED_CHECKPOINT.name
        # The superseded demo model fits the scene full-scan methods, so say how to choose it rather than leave the
        # user to find it; it is an explicit choice, never the default.
        demo_hint = (f" The superseded demo weights are not used in its place either; to run them, pass "
                     f"--pipeline.model.checkpoint {demo}." if key == ("scene", "full") and demo.is_file() else "")
        raise PredictionError(
            f"{method} ({key[0]}s, {_SCAN_WORDS.get(key[1], key[1])}) has no bundled weights{where}, and weights "
            "trained for another method are not substituted. Pass --pipeline.model.checkpoint PATH with weights "
            "trained for it: a .safetensors file written by `tttlrm-train` (see the training section of "
            "docs/usage.md and configs/) or an official tttLRM .pt checkpoint (with --pipeline.model.model-preset "
            f"{'object_level' if key[0] == 'object' else 'official_ar' if key[1] == 'ar' else 'official_full'})."
            + demo_hint
        )

    def _official_preset(self, path: Path) -> str:
        """Architecture preset of an official ``.pt``: ``--pipeline.model.model-preset`` or the released file name."""
        m = self.config.model
        by_name = OFFICIAL_PRESET_BY_NAME.get(path.name)
        if m.model_preset is not None:
            if by_name is not None and by_name != m.model_preset and self.config.check_weights:
                raise PredictionError(
                    f"{path.name} is the released {by_name} checkpoint but --pipeline.model.model-preset is "
                    f"{m.model_preset}; use --pipeline.model.model-preset {by_name} (or "
                    "--pipeline.check-weights False if the file was renamed)"
                )
            return m.model_preset
        if by_name is None:
            raise PredictionError(
                f"{path} is a .pt checkpoint, which does not record its architecture or scan (the released full and "
                "autoregressive models have identical tensors). Say which it is: --pipeline.model.model-preset "
                "official_full (dl3dv_full.pt, ns-train tttlrm), official_ar (dl3dv_ar.pt, ns-train tttlrm-ar) or "
                "object_level (ns-train tttlrm-object)."
            )
        CONSOLE.log(f"tttLRM: {path.name} read as the released {by_name} model (from its file name)")
        return by_name

    def check_trained_for(self, path: Path, kind: Optional[str], scan: Optional[str], normalization: Optional[str],
                          background: Optional[str]) -> None:
        """Stop when what the weights were trained for disagrees with this run (None: unknown, not checked)."""
        if not self.config.check_weights:
            return
        c, m = self.config, self.config.model
        run_scan = self.expected_scan()
        run_norm = c.normalization if c.normalization != "auto" else ("mean_cam" if run_scan == "full" else "first_cam")
        problems = []
        if kind is not None and kind != c.method_kind:
            method = _METHOD_FOR.get((kind, scan or "full"), "tttlrm-object" if kind == "object" else "tttlrm")
            problems.append(f"it was trained for {kind}s, this method reconstructs {c.method_kind}s: use ns-train "
                            f"{method}")
        elif scan is not None and scan != run_scan:
            method = _METHOD_FOR.get((kind or c.method_kind, scan))
            preset = {"ar": "official_ar", "full": "official_full"}.get(scan)
            how = f"use ns-train {method}" if method else f"use --pipeline.model.scan {scan}"
            if path.suffix == ".pt" and preset is not None:
                how += f" (with --pipeline.model.model-preset {preset})"
            problems.append(f"it was trained for the {_SCAN_WORDS.get(scan, scan)}, this run uses the "
                            f"{_SCAN_WORDS.get(run_scan, run_scan)}: {how}")
        elif normalization is not None and normalization != run_norm:
            problems.append(f"it was trained with {normalization} camera normalisation, this run uses {run_norm}: "
                            f"use --pipeline.normalization {normalization}")
        if background is not None and m.background_color != "random" and background != m.background_color:
            flag = background if background in ("white", "black") else "random"
            problems.append(f"it was trained on a {background} background, this run renders on "
                            f"{m.background_color}: use --pipeline.model.background-color {flag}")
        if problems:
            raise PredictionError(
                f"the weights {path} do not fit this method: " + "; ".join(problems)
                + ". (--pipeline.check-weights False runs them anyway.)"
            )

    def resolve_model_config(self) -> tuple[Path, TttlrmConfig]:
        """The weights file and the backbone configuration with this run's overrides (nothing is loaded).

        Checks what the weights were trained for against this method (:meth:`check_trained_for`) and logs the
        file used.
        """
        m = self.config.model
        if m.checkpoint is None:
            path, source = self.default_weights(), "bundled default"
        else:
            path, source = Path(m.checkpoint), "--pipeline.model.checkpoint"
            if not path.is_file():
                raise PredictionError(f"--pipeline.model.checkpoint {path} does not exist")
        if path.suffix == ".safetensors":
            from tttlrm_ns.model.checkpoint import CheckpointError, read_config, read_metadata, read_trained_for

            try:
                cfg = read_config(path)
                trained, missing = read_trained_for(path)
            except CheckpointError as e:
                raise PredictionError(str(e)) from None
            if trained is None:
                CONSOLE.log(
                    f"[yellow]tttLRM: {path} has no {', '.join('trained.' + k for k in missing)} metadata (written "
                    "before tttlrm_ns recorded it): cannot check that the weights were trained for this method's "
                    f"kind ({self.config.method_kind}), scan ({self.expected_scan()}), camera normalisation and "
                    f"background ({self.config.model.background_color}). Re-export them with "
                    "`python -m tttlrm_ns.train.checkpoint` to record it."
                )
                detail = f"no training record; config scan {cfg.scan}"
            else:
                self.check_trained_for(path, trained.kind, trained.scan, trained.normalization, trained.background)
                self._trained_scale = trained.scale
                step = read_metadata(path).get("train_step")
                detail = (f"trained for {trained.kind}s, {trained.scan} scan, {trained.normalization}, "
                          f"{trained.resolution}, {trained.background} background, preset {trained.preset}"
                          + (f", step {step}" if step else ""))
        else:
            preset = self._official_preset(path)
            cfg = presets.get(preset)
            kind, scan = _PRESET_TRAINED.get(preset, (None, None))
            self.check_trained_for(path, kind, scan, None, None)
            detail = f"official checkpoint read as {preset}"
        CONSOLE.log(f"tttLRM: weights {path} ({source}; {detail})")
        overrides: dict = {"compile": m.compile}
        if m.scan is not None:
            overrides["scan"] = m.scan
        if m.ar_chunk_views is not None:
            overrides["ar_chunk_views"] = m.ar_chunk_views
        if m.selective_update is not None:
            overrides["elastic_lambda"] = m.selective_lambda if m.selective_update else 0.0
        bf16 = {"on": True, "off": False, "auto": torch.device(self.device).type == "cuda"}[m.bf16]
        overrides["autocast_bf16"] = bf16
        return path, cfg.replace(**overrides)

    def _select_inputs(self, cfg: TttlrmConfig) -> list[int]:
        """Positions in the train split of the input views (sorted, i.e. in frame order)."""
        indices = select_input_views(self.datamanager, self.config.views, self.config.use_precomputed_views)
        if cfg.scan != "full" and len(indices) % cfg.ar_chunk_views:
            raise PredictionError(
                f"the '{cfg.scan}' scan updates its fast weights every {cfg.ar_chunk_views} views, but "
                f"{len(indices)} input views were selected; choose a multiple of {cfg.ar_chunk_views} with "
                "--pipeline.views.num-views (or change --pipeline.model.ar-chunk-views)"
            )
        return indices

    def _train_image(self, i: int) -> torch.Tensor:
        dm = self.datamanager
        cached = getattr(dm, "cached_train", None)
        if cached is not None:
            return cached[i]["image"]
        return dm.train_dataset.get_data(i, image_type="uint8")["image"]  # type: ignore[union-attr]

    def predict(self) -> tuple[Gaussians, list[int]]:
        """Run the backbone once on the selected train views; Gaussians in the dataparser's world frame."""
        t0 = time.perf_counter()
        if self.config.footprint_filter < 0:
            raise PredictionError(f"--pipeline.footprint-filter must be >= 0 (input pixels^2 of variance; 0 = off), "
                                  f"got {self.config.footprint_filter}")
        if self.config.init == "mvs":
            # No network and no weights; the config only rounds the input size to the usual patch multiple.
            path, cfg = Path("(none)"), TttlrmConfig()
            CONSOLE.log("tttLRM: --pipeline.init mvs: no network; Gaussians come from a plane sweep of the input "
                        "views")
        else:
            path, cfg = self.resolve_model_config()
        idx = self._select_inputs(cfg)
        cameras = self.datamanager.train_dataset.cameras  # type: ignore[union-attr]
        images = [self._train_image(i) for i in idx]  # loads (and undistorts) the cache first
        cameras = getattr(self.datamanager, "train_cameras", cameras)
        sizes = {(int(cameras.width[i]), int(cameras.height[i])) for i in idx}
        if len(sizes) > 1:
            raise PredictionError(
                f"the input views have different image sizes {sorted(sizes)} (WxH); tttLRM needs one size for all "
                "input views. Resize the images or restrict the views."
            )
        if any(int(cameras.camera_type[i]) != 1 for i in idx):  # CameraType.PERSPECTIVE
            raise PredictionError("tttLRM needs pinhole cameras; undistort fisheye / equirectangular captures first")
        width, height = sizes.pop()
        c = self.config
        long_side, why = self._long_side(width, height, cfg.patch_size)
        plan = inputs.make_plan(width, height, cfg.patch_size, c.input_height, c.input_width, long_side,
                                c.resize_mode)
        v = len(idx)
        CONSOLE.log(f"tttLRM: input size {plan.out_w}x{plan.out_h} from {width}x{height} stored images ({why})")
        if self.config.init == "model":
            self._log_output_size(v, plan.out_h, plan.out_w, cfg.sh_degree)

        if self.config.init == "model":  # the network's memory (the sweep's is a small fraction)
            est = estimate_memory(
                cfg, v, plan.out_h, plan.out_w, keep_fraction(self.config.prune, v), self.config.chunk_views,
                free_space=self.config.free_space,
            )
            budget = (
                int(self.config.memory_budget_gb * GIB) if self.config.memory_budget_gb is not None
                else available_memory(self.device)
            )
            if est.total > budget:
                raise InsufficientMemoryError(
                    f"tttLRM prediction from {v} views of {plan.out_h}x{plan.out_w} pixels needs about "
                    f"{est.describe()} but only {budget / GIB:.2f} GiB are available on "
                    f"{torch.device(self.device).type}. Reduce it with "
                    f"fewer input views (--pipeline.views.num-views, now {v}), a lower resolution "
                    f"(--pipeline.input-long-side or --pipeline.input-height / --pipeline.input-width, now "
                    f"{plan.out_h}x{plan.out_w}), fewer views per "
                    f"decoding chunk (--pipeline.chunk-views, now {self.config.chunk_views})"
                    + ("" if cfg.autocast_bf16 else " or bf16 activations (--pipeline.model.bf16 on)")
                    + "; --pipeline.memory-budget-gb overrides the available amount."
                )
            CONSOLE.log(
                f"tttLRM: {v} input views at {plan.out_h}x{plan.out_w} ({width}x{height} stored), scan={cfg.scan}, "
                f"estimated peak {est.describe()}"
            )

        c2w, k = inputs.cameras_to_opencv(
            cameras.camera_to_worlds[idx], cameras.fx[idx], cameras.fy[idx], cameras.cx[idx], cameras.cy[idx]
        )
        k = plan.apply_to_intrinsics(k)
        method = self.config.normalization
        if method == "auto":
            method = "mean_cam" if cfg.scan == "full" else "first_cam"
        random_bg = self.model.config.background_color == "random"
        background = torch.ones(3) if random_bg else self.model.background_color.float()
        image_t = inputs.prepare_images(images, plan, background.cpu())
        if self.config.method_kind == "object" and not random_bg:
            self._check_object_background(image_t, background.cpu())
        scale = self.config.normalization_scale
        if scale == "auto":
            scale = getattr(self, "_trained_scale", "extent")
        if self.config.init == "mvs" and scale == "extent":
            scale = "median_depth"  # the sweep needs the measured depth range anyway
            CONSOLE.log("tttLRM: --pipeline.init mvs measures the scene's depth range, so the frame is scaled by the "
                        "median depth (not the camera extent); the Gaussians are the same either way in the world")
        points = self._sfm_points() if scale == "median_depth" else None
        try:
            norm = infer.normalise_for_model(image_t, c2w, k, method, scale, points)
        except DepthRangeError as e:
            raise PredictionError(f"cannot measure the scene's depth for the median-depth normalisation: {e}. "
                                  "Use a capture with SfM points (ns-process-data, colmap) or more overlapping views, "
                                  "or --pipeline.normalization-scale extent") from None
        CONSOLE.log(f"tttLRM: {method} alignment, {norm.describe()}")
        c2w_norm = norm.c2w

        dev = torch.device(self.device)
        t1 = time.perf_counter()
        if self.config.init == "mvs":
            g = infer.mvs_gaussians(image_t, c2w_norm, k.float(), *norm.frame_range()).to(dev)
            CONSOLE.log(f"tttLRM: --pipeline.init mvs: {g.num} Gaussians at the plane-sweep depth of the confidently "
                        "matched pixels (no network)")
        else:
            from tttlrm_ns.model.checkpoint import load_any

            model = load_any(path, cfg, **_runtime_overrides(cfg)).to(dev).eval()
            rc = infer.ReconstructConfig(prune=self.config.prune, free_space=self.config.free_space,
                                         footprint_filter=0.0, chunk_views=self.config.chunk_views,
                                         seed=self.config.seed)
            g = infer.reconstruct(model, image_t.to(dev), c2w_norm.to(dev), k.float().to(dev), rc)
            del model  # the backbone is not part of the nerfstudio model or its checkpoints
            if self.config.free_space.enabled:
                CONSOLE.log(f"tttLRM: free-space filter: Gaussians in front of the surface of >= "
                            f"{self.config.free_space.min_views} other input views by more than "
                            f"{self.config.free_space.tolerance:g} of their depth removed before pruning "
                            "(--pipeline.free-space.tolerance 0 turns it off)")
        if self.config.footprint_filter > 0:  # the mvs initialiser's Gaussians too
            g = infer.footprint_filtered(g, c2w_norm, k.float(), plan.out_h, plan.out_w, self.config.footprint_filter)
            CONSOLE.log(f"tttLRM: every Gaussian widened by {self.config.footprint_filter} input pixels^2 of variance "
                        "(Mip-Splatting's 3D filter at the input views' sampling rate: renders finer than the input "
                        "show surfaces, not dots; --pipeline.footprint-filter 0 keeps the model's raw output)")
        if self.config.plausibility_check:
            check = infer.check_plausibility(g, image_t.to(dev), c2w_norm.to(dev), k.float().to(dev),
                                             self._render_fn(background), source=self.config.init)
            if check.warning:
                CONSOLE.log(f"[bold yellow]tttLRM: WARNING: {check.warning}")
            else:
                CONSOLE.log(f"tttLRM: plausibility check passed: the Gaussians reproduce input views {check.views} "
                            f"at {check.input_psnr:.1f} dB")
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        out = infer.to_world(g, norm.transform)
        CONSOLE.log(
            f"tttLRM: predicted {out.num} Gaussians from {v} views in {time.perf_counter() - t1:.1f} s "
            f"(setup {t1 - t0:.1f} s)"
        )
        return out, idx

    def _check_object_background(self, images: torch.Tensor, background: torch.Tensor) -> None:
        """Object weights assume the captures' background is the one they were trained on (``trained.background``,
        the render background). Compare with the median colour of the input views' border pixels (transparent
        pixels are already composited over that background) and say so when they differ."""
        border = torch.cat([images[..., :2, :].flatten(2), images[..., -2:, :].flatten(2),
                            images[..., :, :2].flatten(2), images[..., :, -2:].flatten(2)], -1)  # [V, 3, n]
        seen = border.permute(1, 0, 2).reshape(3, -1).median(dim=1).values
        gap = float((seen - background).abs().max())
        if gap > BACKGROUND_TOLERANCE:
            CONSOLE.log(
                f"[bold yellow]tttLRM: WARNING: the input views' border is {_rgb(seen)} but this object model renders "
                f"and was trained on a {_rgb(background)} background: the model treats the border as part of the "
                "object and the reconstruction will be poor. Capture on the weights' background or with transparency "
                "(RGBA images), or use --pipeline.init mvs (no learned background)."
            )
        else:
            CONSOLE.log(f"tttLRM: object background {_rgb(seen)} at the image borders matches the weights' "
                        f"{_rgb(background)}")

    def _sfm_points(self) -> Optional[torch.Tensor]:
        """The dataparser's SfM points [N, 3] in its (= the cameras') frame, or None (nerfstudio-data with
        ``ply_file_path``, colmap: ``points3D_xyz`` in the dataparser outputs' metadata)."""
        outputs = getattr(self.datamanager, "train_dataparser_outputs", None)
        pts = None if outputs is None else outputs.metadata.get("points3D_xyz")
        return None if pts is None else torch.as_tensor(pts, dtype=torch.float64)

    def _render_fn(self, background: torch.Tensor):
        """The render call of the plausibility check: the model's own renderer settings, no gradients."""
        from tttlrm_ns.render.splat import render_gaussians

        def render(g, c2w, ks, width, height):
            return render_gaussians(g, c2w, ks, width, height, background=background.to(c2w.device).float()).rgb

        return render

    def _long_side(self, width: int, height: int, patch: int) -> tuple[Optional[int], str]:
        """Input long side (None: the stored size) and why: explicit flags as given, else the device's cap, never
        above the stored size (upsampling only adds Gaussians, not detail)."""
        c = self.config
        if c.input_height is not None or c.input_width is not None:
            return None, "--pipeline.input-height / --pipeline.input-width"
        stored = max(width, height)
        if c.input_long_side is not None:
            up = " (upsampled, as asked)" if c.input_long_side > stored else ""
            return c.input_long_side, f"--pipeline.input-long-side {c.input_long_side}{up}"
        dev = torch.device(self.device).type
        cap = c.auto_long_side_cuda if dev == "cuda" else c.auto_long_side_cpu
        cap -= cap % patch
        flag = f"--pipeline.auto-long-side-{'cuda' if dev == 'cuda' else 'cpu'}"
        if stored <= cap:
            return None, f"automatic: the stored size (at most {cap} on {dev}, {flag}; never upsampled)"
        return cap, f"automatic: long side capped at {cap} on {dev} ({flag}, or --pipeline.input-long-side)"

    def _log_output_size(self, views: int, height: int, width: int, degree: int) -> None:
        """Say how many Gaussians the prediction makes and how large their ``ns-export gaussian-splat`` .ply is."""
        predicted = views * height * width  # one Gaussian per input pixel
        kept = math.ceil(keep_fraction(self.config.prune, views) * predicted)
        degree = min(degree, self.model.config.sh_degree)  # type: ignore[attr-defined]  # the export writes these
        props = 3 + 3 + 3 * (degree + 1) ** 2 + 1 + 3 + 4  # xyz, normals, SH, opacity, scale, rotation (float32)
        mib = kept * props * 4 / 2**20
        at_most = "at most " if self.config.free_space.enabled else ""  # the free-space filter removes more
        CONSOLE.log(
            f"tttLRM: will make {at_most}{kept:,} Gaussians ({views} views x {height}x{width} pixels = {predicted:,}, "
            f"kept {at_most}{kept / predicted:.0%} by opacity pruning); `ns-export gaussian-splat` writes about "
            f"{at_most}{mib:,.0f} MiB "
            f"({props} float32 per Gaussian; nerfstudio writes it value by value, about a minute per 0.75 M "
            "Gaussians on a 2-core CPU). Fewer: --pipeline.views.num-views, --pipeline.input-long-side"
        )

    # --- refinement on the input views ----------------------------------------------------------------------
    def get_train_loss_dict(self, step: int):
        """One refinement step; the image is one of the input views (refine.views='input') or any train image."""
        refine = self.model.config.refine  # type: ignore[attr-defined]
        if refine.views == "train" or not self.input_indices:
            return super().get_train_loss_dict(step)
        order = self._refine_order
        i = self.input_indices[order[step % len(order)]]
        dm = self.datamanager
        data = dict(dm.cached_train[i])  # type: ignore[attr-defined]
        data["image"] = data["image"].to(self.device)
        cams = getattr(dm, "train_cameras", dm.train_dataset.cameras)  # type: ignore[union-attr]
        camera = cams[i : i + 1].to(self.device)
        if camera.metadata is None:
            camera.metadata = {}
        camera.metadata["cam_idx"] = i
        outputs = self._model(camera)
        metrics = self.model.get_metrics_dict(outputs, data)
        return outputs, self.model.get_loss_dict(outputs, data, metrics), metrics


BACKGROUND_TOLERANCE = 0.25
"""Largest per-channel difference between the image border's median colour and an object model's background that
still counts as the same background (JPEG noise, vignetting and shadows reach the border)."""


def _rgb(c: torch.Tensor) -> str:
    return "(" + ", ".join(f"{float(x):.2f}" for x in c) + ")"


def select_input_views(datamanager, views: ViewSelectionConfig, use_precomputed: bool = True,
                       log_prefix: str = "tttLRM") -> list[int]:
    """Positions in the train split of the model's input views (sorted, i.e. in frame order).

    :func:`tttlrm_ns.data.views.select_views`, the selection :func:`~tttlrm_ns.data.views.paper_protocol` runs: with
    k-means and ``use_precomputed``, the scene file's ``fold_8_kmeans_{N}_input`` list when all its frames are in the
    train split (the paper's exact inputs); else k-means on the cameras in the data's own frame, the file's float64
    poses when the dataparser passes them (``opencv_c2w``, the opencv-cameras dataparser), so the views equal
    ``paper_protocol``'s. Shared by ``tttlrm`` and ``tttlrm-triplane``.
    """
    cameras = datamanager.train_dataset.cameras
    num = len(cameras)
    if views.mode in ("kmeans", "evenly") and views.num_views > num:
        raise PredictionError(
            f"{views.num_views} input views requested (--pipeline.views.num-views) but the train split has only "
            f"{num} images; lower --pipeline.views.num-views or use --pipeline.views.mode all"
        )
    outputs = getattr(datamanager, "train_dataparser_outputs", None)
    meta = outputs.metadata if outputs is not None else {}
    frames = meta.get("frame_indices")
    listed = None
    if views.mode == "kmeans" and use_precomputed and frames is not None:
        key = f"fold_8_kmeans_{views.num_views}_input"
        listed = (meta.get("scene_extras") or {}).get(key)
        if listed is not None:
            used = precomputed_positions(listed, frames) is not None
            CONSOLE.log(f"{log_prefix}: using the scene's precomputed {key} views" if used else
                        f"{log_prefix}: the scene's precomputed {key} list includes frames outside the train split; "
                        "running k-means")
    c2w = meta.get("opencv_c2w")  # the file's own poses: k-means on them is paper_protocol's, near-ties included
    if c2w is None:  # other dataparsers: the data's own frame recovered from nerfstudio's (float32) cameras
        c2w, _ = inputs.cameras_to_opencv(cameras.camera_to_worlds, cameras.fx, cameras.fy, cameras.cx, cameras.cy)
        if outputs is not None:
            c2w = inputs.dataparser_to_original(c2w, outputs.dataparser_transform, outputs.dataparser_scale)
    return select_views(c2w, views, where="train split: ", frames=frames, precomputed=listed)


def _runtime_overrides(cfg: TttlrmConfig) -> dict:
    """Options of ``cfg`` that may differ from a .safetensors file's stored config (no shape changes)."""
    keys = ("scan", "ar_chunk_views", "elastic_lambda", "autocast_bf16", "compile")
    return {k: getattr(cfg, k) for k in keys}


__all__ = ["TttlrmPipeline", "TttlrmPipelineConfig", "PredictionError", "InsufficientMemoryError", "BUNDLED_CHECKPOINT",
           "select_input_views"]

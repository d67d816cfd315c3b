"""The tttLRM nerfstudio pipeline: the datamanager's input views in, one feed-forward prediction into the model.

The inference is :mod:`tttlrm_ns.infer` (no nerfstudio); this class adapts nerfstudio to it. What follows about
preparing at construction, predicting on first use and loading checkpoints is :class:`FeedForwardPipeline`, which
``tttlrm-triplane`` (:mod:`tttlrm_ns.triplane.ns`) shares, with the input-view options of
:class:`FeedForwardPipelineConfig`.

* Construction in training mode (``ns-train``, test_mode "val"), after the datamanager has cached the train split:
  check the capture's images, choose the weights (:mod:`tttlrm_ns.ns.weights`; nothing is loaded) and the input
  views (:func:`tttlrm_ns.ns.inputs.select_input_views`: k-means on the poses as in the paper's protocol, the
  scene's precomputed list when present), read their images, OpenCV cameras and SfM points, and
  :func:`tttlrm_ns.infer.prepare_inputs` them: input size, the memory check (a request that cannot fit stops here,
  before any weight is loaded), resize, normalisation. Errors of the data or the configuration stop the run here.
* First use of the model (``pipeline.model``, ``state_dict``): :func:`tttlrm_ns.infer.reconstruct_scene` (weights
  loaded, predicted, freed; or the ``mvs`` initialiser) and the world-frame Gaussians are installed in the model.
  In ``ns-train`` that is ``Trainer.setup`` building the optimizers, so they see the predicted Gaussians with a
  fresh state; ``tttlrm-eval`` scores the raw prediction at that point (:meth:`TttlrmPipeline.install_prediction`).
* Loading a nerfstudio checkpoint (``load_pipeline``, ``load_state_dict``) drops a prediction not made yet: the
  checkpoint's Gaussians are the model's, and no prediction runs after or over them. ``ns-eval``, ``ns-export``,
  ``ns-viewer`` and ``ns-render`` build the pipeline in test_mode "test" / "inference": nothing is prepared or
  predicted. (Resuming ``ns-train`` with ``--load-dir`` predicts once, when the trainer builds its optimizers before
  loading; the checkpoint then replaces the result, as the optimizers' state does.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple, Optional, Type

import torch
from torch.cuda.amp.grad_scaler import GradScaler

from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils.rich_utils import CONSOLE

from tttlrm_ns import BUNDLED_CHECKPOINT  # re-exported: the superseded demo weights (tttlrm_ns/__init__.py)
from tttlrm_ns import infer
from tttlrm_ns.data.views import ViewSelectionConfig
from tttlrm_ns.gaussians import Gaussians, PruneConfig
from tttlrm_ns.geometry.free_space import FreeSpaceConfig
from tttlrm_ns.infer import InsufficientMemoryError, PredictionError, ReconstructConfig
from tttlrm_ns.infer.inputs import InputSize, choose_long_side, output_size_message
from tttlrm_ns.model import TttlrmConfig
from tttlrm_ns.ns import inputs, weights
from tttlrm_ns.ns.inputs import select_input_views
from tttlrm_ns.ns.model import TttlrmNSModelConfig
from tttlrm_ns.ns.weights import DEFAULT_WEIGHTS, WEIGHTS_DIR


@dataclass
class FeedForwardPipelineConfig(VanillaPipelineConfig):
    """A :class:`FeedForwardPipeline`: which train images are the model's input views (``tttlrm`` and
    ``tttlrm-triplane``; a method preset sets its own number of views)."""

    views: ViewSelectionConfig = field(default_factory=lambda: ViewSelectionConfig(mode="kmeans", num_views=32))
    """Which train images are the model's input views."""
    use_precomputed_views: bool = True
    """With k-means: use the scene file's fold_8_kmeans_{N}_input list when present (the paper's exact inputs)."""


@dataclass
class TttlrmPipelineConfig(FeedForwardPipelineConfig):
    """tttLRM: feed-forward prediction of the Gaussians (input views, resolution, pruning, memory)."""

    _target: Type = field(default_factory=lambda: TttlrmPipeline)
    model: TttlrmNSModelConfig = field(default_factory=TttlrmNSModelConfig)
    """The splatfacto-style model holding the predicted Gaussians (and the backbone's weights / options)."""
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
    seed: int = field(default_factory=lambda: ReconstructConfig().seed)
    """Seed of the random part of pruning and of the refinement view order (official: 777 + rank)."""


class _Prepared(NamedTuple):
    """A prediction prepared at construction and made on first use."""

    indices: list[int]
    weights: Optional[weights.Weights]  # None: --pipeline.init mvs
    inputs: infer.PreparedInputs


def _console(message: str) -> None:
    CONSOLE.log(message)  # looked up per call


def _log(message: str) -> None:
    """An inference message in the console (``WARNING: ...`` highlighted)."""
    CONSOLE.log(("[bold yellow]" if message.startswith("WARNING") else "") + "tttLRM: " + message)


class FeedForwardPipeline(VanillaPipeline):
    """A VanillaPipeline whose model is filled by a prediction from input views among the train images, prepared at
    construction and made on the first use of the model (``pipeline.model``, ``state_dict``), once; loading a
    checkpoint drops a prediction not made yet (see the module docstring). ``TttlrmPipeline`` and the triplane
    pipeline (:mod:`tttlrm_ns.triplane.ns`) are its subclasses: the constructor sets ``self._pending`` (what
    :meth:`make_prediction` needs), nothing else predicts."""

    config: FeedForwardPipelineConfig
    log_prefix = "tttLRM"
    """Names the method in the log lines of the view selection."""
    _pending: Optional[object]

    def make_prediction(self, pending) -> None:
        """Predict from what the constructor prepared and install the result in ``self._model``."""
        raise NotImplementedError

    def select_inputs(self) -> list[int]:
        """Positions in the train split of the model's input views (:func:`tttlrm_ns.ns.inputs.select_input_views`)."""
        return select_input_views(self.datamanager, self.config.views, self.config.use_precomputed_views,
                                  log_prefix=self.log_prefix)

    @property
    def model(self):
        """The nerfstudio model; the first access after construction in training mode predicts its content."""
        if self.__dict__.get("_pending") is not None:
            self._predict_pending()
        return super().model

    @property
    def device(self):
        return self._model.device  # without predicting

    def state_dict(self, *args, **kwargs):
        if self.__dict__.get("_pending") is not None:  # a checkpoint saved before first use holds the prediction
            self._predict_pending()
        return super().state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: Optional[bool] = None):
        self._pending = None  # the checkpoint's content is the model's
        return super().load_state_dict(state_dict, strict)

    def load_pipeline(self, loaded_state, step: int) -> None:
        self._pending = None
        super().load_pipeline(loaded_state, step)

    def _predict_pending(self) -> None:
        pending, self._pending = self._pending, None  # model accesses during the prediction see no pending one
        try:
            self.make_prediction(pending)
        except BaseException:
            self._pending = pending
            raise


class TttlrmPipeline(FeedForwardPipeline):
    """VanillaPipeline whose model is filled by one tttLRM prediction, on first use (see the module docstring)."""

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
        self.input_indices: list[int] = []
        """Positions (in the train split) of the model's input views; empty when loaded from a finished run."""
        self._pending: Optional[_Prepared] = None
        if test_mode == "val":  # ns-train; eval / export / viewer load the Gaussians from the checkpoint
            inputs.check_images(self.datamanager, config.datamanager.data, _console)
            self._pending = self.prepare_prediction()
            self.input_indices = self._pending.indices
        self._refine_order = torch.randperm(
            max(len(self.input_indices), 1), generator=torch.Generator().manual_seed(config.seed)
        ).tolist()

    # --- the prediction, on first use (FeedForwardPipeline); never after or over a loaded checkpoint ------------
    def make_prediction(self, pending: _Prepared) -> None:
        self.install_prediction(self.run_prediction(pending))

    def prepare_prediction(self) -> _Prepared:
        """Everything before the weights are loaded: the weights file (checked, not read), the input views, their
        images and cameras, :func:`tttlrm_ns.infer.prepare_inputs`."""
        c, t0 = self.config, time.perf_counter()
        if c.footprint_filter < 0:
            raise PredictionError(f"--pipeline.footprint-filter must be >= 0 (input pixels^2 of variance; 0 = off), "
                                  f"got {c.footprint_filter}")
        if c.init == "mvs":  # no network and no weights; the config only rounds the input size to the patch multiple
            w, cfg = None, TttlrmConfig()
            _log("--pipeline.init mvs: no network; Gaussians come from a plane sweep of the input views")
        else:
            w = weights.resolve_weights(c, self.device, _console, WEIGHTS_DIR)
            cfg = w.config
        dm = self.datamanager
        idx = self.select_inputs()
        images = [inputs.train_image(dm, i) for i in idx]  # loads (and undistorts) the cache first
        cams = getattr(dm, "train_cameras", dm.train_dataset.cameras)  # type: ignore[union-attr]
        if any(int(cams.camera_type[i]) != 1 for i in idx):  # CameraType.PERSPECTIVE
            raise PredictionError("tttLRM needs pinhole cameras; undistort fisheye / equirectangular captures first")
        c2w, k = inputs.cameras_to_opencv(cams.camera_to_worlds[idx], cams.fx[idx], cams.fy[idx], cams.cx[idx],
                                          cams.cy[idx])
        m = self._model.config
        spec = infer.InputSpec(
            model=cfg, init=c.init, device=self.device, size=self._input_size(), normalization=c.normalization,
            normalization_scale=c.normalization_scale, trained_scale=None if w is None else w.trained_scale,
            background=torch.ones(3) if m.background_color == "random" else self._model.background_color.float(),
            check_background=c.method_kind == "object" and m.background_color != "random", prune=c.prune,
            free_space=c.free_space, chunk_views=c.chunk_views, memory_budget_gb=c.memory_budget_gb,
            export_sh_degree=m.sh_degree,
        )
        sizes = [(int(cams.width[i]), int(cams.height[i])) for i in idx]
        prepared = infer.prepare_inputs(images, c2w, k, spec, inputs.sfm_points(dm), sizes, _log)
        _log(f"{len(idx)} input views prepared in {time.perf_counter() - t0:.1f} s")
        return _Prepared(idx, w, prepared)

    def run_prediction(self, prepared: _Prepared) -> Gaussians:
        """:func:`tttlrm_ns.infer.reconstruct_scene`: Gaussians in the dataparser's world frame (not installed)."""
        c, w = self.config, prepared.weights
        rc = ReconstructConfig(prune=c.prune, free_space=c.free_space, footprint_filter=c.footprint_filter,
                               chunk_views=c.chunk_views, seed=c.seed)
        path, cfg = (None, None) if w is None else (w.path, w.config)
        result = infer.reconstruct_scene(prepared.inputs, rc, path, cfg, self.device, c.plausibility_check, _log)
        return result.gaussians

    def predict(self) -> tuple[Gaussians, list[int]]:
        """Prepare and predict now, from the current config (nothing installed): Gaussians in the world frame and
        the input views' positions in the train split."""
        prepared = self.prepare_prediction()
        return self.run_prediction(prepared), prepared.indices

    def install_prediction(self, gaussians: Gaussians) -> None:
        """Hand the prediction to the model. With refinement on, the model keeps refinement's starting set instead
        (:meth:`~tttlrm_ns.ns.model.TttlrmNSModel.set_gaussians`: merged to ``refine.max_gaussians`` by default): this
        is where the prediction is first changed, before the trainer builds the optimizers. (``tttlrm-eval`` scores
        the raw prediction here, as its feed-forward row.)"""
        model = self._model
        model.set_gaussians(gaussians)  # type: ignore[attr-defined]
        prep = model.config.refine.preparation(gaussians.num) if model.config.refine.active else None  # type: ignore
        CONSOLE.log(f"tttLRM: {model.num_points} Gaussians installed"  # type: ignore[attr-defined]
                    + (f" (refinement's starting set: {prep} from the {gaussians.num} predicted)" if prep else ""))

    # --- weights and sizes (nerfstudio flags -> tttlrm_ns.ns.weights / tttlrm_ns.infer) ---------------------------
    def resolve_model_config(self) -> tuple[Path, TttlrmConfig]:
        """The weights file and the backbone configuration with this run's overrides (nothing is loaded)."""
        w = weights.resolve_weights(self.config, self.device, _console, WEIGHTS_DIR)
        return w.path, w.config

    def default_weights(self) -> Path:
        """The bundled weights of this method (:data:`DEFAULT_WEIGHTS`; an error when missing, nothing else tried)."""
        return weights.default_weights(self.config, WEIGHTS_DIR)

    def _input_size(self) -> InputSize:
        c = self.config
        return InputSize(c.input_long_side, c.input_height, c.input_width, c.auto_long_side_cuda, c.auto_long_side_cpu,
                         c.resize_mode)

    def _long_side(self, width: int, height: int, patch: int) -> tuple[Optional[int], str]:
        """Input long side of this run for a stored ``width x height`` (:func:`tttlrm_ns.infer.inputs.choose_long_side`,
        which :func:`~tttlrm_ns.infer.prepare_inputs` calls)."""
        return choose_long_side(width, height, patch, self._input_size(), self.device)

    def _log_output_size(self, views: int, height: int, width: int, degree: int) -> None:
        """Log how many Gaussians a prediction of this size makes and how large their export is (what
        :func:`~tttlrm_ns.infer.prepare_inputs` logs for this run)."""
        degree = min(degree, self._model.config.sh_degree)  # type: ignore[attr-defined]  # the export writes these
        _log(output_size_message(views, height, width, degree, self.config.prune, self.config.free_space))

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


__all__ = ["FeedForwardPipeline", "FeedForwardPipelineConfig", "TttlrmPipeline", "TttlrmPipelineConfig",
           "PredictionError", "InsufficientMemoryError", "BUNDLED_CHECKPOINT", "DEFAULT_WEIGHTS", "WEIGHTS_DIR",
           "select_input_views"]

"""One scene through the evaluation protocol: tttLRM (+ K refinement steps) and the baselines on the same views.

Everything runs through nerfstudio's own objects, in process, so the evaluation measures what ``ns-train`` /
``ns-eval`` would produce and adds no second code path:

* **tttLRM**: the method's ``TrainerConfig`` (``tttlrm``, ``tttlrm-ar``, ``tttlrm-object`` from
  :mod:`tttlrm_ns.method_configs`) with this run's data, views, input size, weights; ``Trainer.setup()`` builds the
  :class:`~tttlrm_ns.ns.pipeline.TttlrmPipeline`, whose construction selects the input views (k-means / the scene's
  precomputed list) and prepares them, and whose first use (the trainer's optimizers) runs the one feed-forward
  prediction; refinement steps are the nerfstudio trainer's own
  ``train_iteration`` with its callbacks (the body of ``Trainer.train``), so the quality-vs-time curve is sampled
  from a single run. The run is saved as a normal nerfstudio run (``config.yml`` + checkpoint): ``ns-eval``,
  ``ns-export`` and ``ns-viewer`` load it.
* **K = 0 is the raw prediction**: with refinement in the curve, the model replaces the prediction by refinement's
  starting set when the pipeline installs it (merged to ``refine.max_gaussians``, 50k by default); the feed-forward
  row is scored before that (:meth:`TttlrmPipeline.install_prediction`), so it equals a run without refinement. When
  that preparation changes the set, the curve has a row of its own for it (``merged, 0 steps``), and its time counts
  in the refinement's (``refine_s`` includes ``prepare_s``).
* **Renders** of the held-out cameras are ``model.get_outputs_for_camera`` (the model's ``get_outputs``: the
  project's rasteriser) at the dataset's resolution, and the ground truth comes from the same datamanager
  (``fixed_indices_eval_dataloader``, what ``ns-eval`` scores).
* **Baselines** use the tttLRM run's input views and held-out frames: ``mvs`` (the same pipeline with
  ``--pipeline.init mvs``: plane-sweep Gaussians, no network), white, mean colour, nearest input view
  (:mod:`tttlrm_ns.eval.protocol`), and ``splatfacto-cpu`` trained on only those N views (the ``opencv-cameras``
  dataparser's ``train_frames``) for a fixed number of steps and until the wall-clock time tttLRM took (feed-forward
  + refinement), with its PSNR sampled over its steps.

Scores are :class:`tttlrm_ns.eval.metrics.ImageMetrics` (PSNR, paper SSIM, VGG LPIPS) for every entry alike; the
curves use PSNR only (cheap enough to sample often).
"""

from __future__ import annotations

import copy
import gc
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Literal, Optional, Tuple

import torch
from torch import Tensor

from tttlrm_ns.checkpoint_io import sha256_file
from tttlrm_ns.eval import metrics as M
from tttlrm_ns.eval.protocol import PeakMemory, mean_colour_image, nearest_input_view, resize_to, white_image

METHODS = ("tttlrm", "tttlrm-ar", "tttlrm-object")


@dataclass
class SplatfactoBaselineConfig:
    """splatfacto-cpu trained on only the N input views (stock splatfacto settings, random initialisation)."""

    enabled: bool = True
    """Train the splatfacto-cpu baseline (needs the opencv-cameras dataparser to restrict the train split)."""
    steps: int = 1500
    """Fixed step count of the 'splatfacto-cpu @ steps' entry."""
    match_time: bool = True
    """Also report splatfacto-cpu at the wall-clock time tttLRM took (feed-forward + refinement)."""
    max_steps: int = 30000
    """Upper bound on steps while matching the time budget."""
    num_random: int = 50000
    """Random initial Gaussians (opencv_cameras.json scenes carry no SfM points; splatfacto's default count)."""
    curve_every: float = 2.0
    """Curve samples at steps 1, 2, 4, ... (factor curve_every) plus the entries' steps."""


@dataclass
class SceneEvalConfig:
    """How one scene is evaluated (shared by every scene of a ``tttlrm-eval`` run)."""

    method: Literal["tttlrm", "tttlrm-ar", "tttlrm-object"] = "tttlrm"
    """nerfstudio method whose pipeline predicts the Gaussians."""
    checkpoint: Optional[Path] = None
    """Backbone weights (.safetensors from tttlrm-train, or the official .pt); None: the bundled checkpoint."""
    num_views: int = 32
    """N input views (k-means on the train frames' cameras, or the scene's fold_8_kmeans_{N}_input list)."""
    refine_steps: int = 0
    """K refinement steps of the reported 'tttlrm' entry (0: pure feed-forward)."""
    curve_steps: Tuple[int, ...] = (0, 3, 10, 30, 100, 300)
    """Refinement steps at which the quality-vs-time curve samples PSNR (one run up to the largest)."""
    input_long_side: Optional[int] = None
    """Long side of the model input in pixels (None: the method's default, 960 for scenes, 512 for objects)."""
    input_height: Optional[int] = None
    """Exact input rows instead of input_long_side (give input_width too)."""
    input_width: Optional[int] = None
    """Exact input columns (see input_height)."""
    use_precomputed_views: bool = True
    """Use the scene's fold_8_kmeans_{N}_input list when it has one (the paper's exact inputs)."""
    eval_interval: int = 8
    """Hold out every eval_interval-th frame (paper: 8)."""
    dataparser: str = "auto"
    """'auto': opencv-cameras for folders with opencv_cameras.json, else nerfstudio-data; or any registered
    nerfstudio dataparser name (its own split; interval mode is set when it has one)."""
    max_test_views: Optional[int] = None
    """Score only this many held-out frames, evenly spaced among them (smoke runs; the protocol scores all)."""
    baselines: bool = True
    """Score the white / mean-colour / nearest-view baselines."""
    splatfacto: SplatfactoBaselineConfig = field(default_factory=SplatfactoBaselineConfig)
    """The splatfacto-cpu baseline."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Device of the prediction, refinement and renders ('auto': CUDA when available)."""
    seed: int = 777
    """Seed of pruning / refinement order (tttLRM) and of splatfacto's random initialisation."""
    grid_frame: int = -1
    """Held-out frame (position in the test split) saved for the image grid; -1: the middle one."""
    save_runs: bool = True
    """Keep the nerfstudio runs (config.yml + checkpoint) under <output>/<scene>/runs for ns-eval / ns-export."""

    def resolved_device(self) -> str:
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device


# --- helpers ----------------------------------------------------------------------------------------------------



def is_opencv_scene(path: Path) -> bool:
    return path.is_file() and path.name == "opencv_cameras.json" or (path / "opencv_cameras.json").is_file()


def scene_name(path: Path) -> str:
    p = Path(path)
    return p.parent.name if p.is_file() else p.name


def make_dataparser(cfg: SceneEvalConfig, scene: Path, train_frames: Optional[List[int]] = None):
    """The dataparser config for ``scene``: the paper split (every ``eval_interval``-th frame held out)."""
    from tttlrm_ns.data.dataparser import OpencvCamerasDataParserConfig

    name = cfg.dataparser
    if name == "auto":
        name = "opencv-cameras" if is_opencv_scene(scene) else "nerfstudio-data"
    if name == "opencv-cameras":
        return OpencvCamerasDataParserConfig(
            data=scene, eval_mode="interval", eval_interval=cfg.eval_interval,
            train_frames=None if train_frames is None else tuple(int(f) for f in train_frames),
        )
    if train_frames is not None:
        raise ValueError(
            f"restricting the train split to the input views needs the opencv-cameras dataparser (scene {scene} uses "
            f"{name}); convert the scene or disable the splatfacto baseline with --splatfacto.no-enabled"
        )
    from nerfstudio.configs.dataparser_configs import all_dataparsers

    if name not in all_dataparsers:
        raise ValueError(f"unknown dataparser {name!r}; registered: {', '.join(sorted(all_dataparsers))}")
    dp = copy.deepcopy(all_dataparsers[name])
    dp.data = scene
    if hasattr(dp, "eval_mode"):
        dp.eval_mode = "interval"  # type: ignore[attr-defined]
        if hasattr(dp, "eval_interval"):
            dp.eval_interval = cfg.eval_interval  # type: ignore[attr-defined]
    return dp


def _method_config(method: str):
    from tttlrm_ns import method_configs as mc

    return copy.deepcopy({"tttlrm": mc.tttlrm_config, "tttlrm-ar": mc.tttlrm_ar_config,
                          "tttlrm-object": mc.tttlrm_object_config}[method])


def _prepare_trainer_config(tc, run_root: Path, experiment: str, timestamp: str, device: str, seed: int) -> None:
    tc.output_dir = run_root
    tc.experiment_name = experiment
    tc.timestamp = timestamp
    tc.vis = "tensorboard"  # no viewer server; nerfstudio still writes its event logs under the run
    tc.machine.device_type = device
    tc.machine.seed = seed
    tc.save_only_latest_checkpoint = True
    tc.logging.local_writer.enable = False  # no per-step console table inside the eval's progress bar


def run_iterations(trainer, start: int, stop: int) -> float:
    """Steps ``start .. stop-1`` exactly as ``nerfstudio.engine.trainer.Trainer.train`` runs them; wall seconds."""
    from nerfstudio.engine.callbacks import TrainingCallbackLocation

    dev = torch.device(trainer.device)
    t0 = time.perf_counter()
    for step in range(start, stop):
        trainer.step = step
        trainer.pipeline.train()
        for cb in trainer.callbacks:
            cb.run_callback_at_location(step, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
        trainer.train_iteration(step)
        for cb in trainer.callbacks:
            cb.run_callback_at_location(step, location=TrainingCallbackLocation.AFTER_TRAIN_ITERATION)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return time.perf_counter() - t0


@torch.no_grad()
def render_views(model, cameras) -> Tensor:
    """Renders [T, 3, H, W] of nerfstudio ``cameras`` [T] through the model's own render function (eval mode)."""
    was_training = model.training
    model.eval()
    try:
        out = []
        for i in range(cameras.shape[0]):
            rgb = model.get_outputs_for_camera(cameras[i : i + 1].to(model.device))["rgb"]  # [H, W, 3]
            out.append(rgb.permute(2, 0, 1).float().clamp(0, 1).cpu())
        return torch.stack(out)
    finally:
        model.train(was_training)


def _gt_images(pipeline) -> Tuple[Any, Tensor, List[int]]:
    """(eval cameras [T], GT images [T, 3, H, W] in [0, 1] over the model's background, file frame ids)."""
    dm = pipeline.datamanager
    cams = dm.eval_dataset.cameras
    gts = _full_resolution_images(pipeline.model, [data["image"] for data in dm.cached_eval])
    # File frame indices of the held-out cameras (opencv-cameras); other dataparsers: positions in their eval split.
    frames = (getattr(dm.eval_dataset, "metadata", None) or {}).get("frame_indices") or list(range(len(gts)))
    return cams, gts, [int(f) for f in frames]


def _subset_test(cfg: SceneEvalConfig, cams, gt: Optional[Tensor], frames: List[int]):
    """The held-out frames scored: all of them, or ``max_test_views`` evenly spaced ones."""
    m = cfg.max_test_views
    if m is None or m >= len(frames):
        return cams, gt, frames
    from tttlrm_ns.data.views import select_evenly_spaced

    pos = select_evenly_spaced(len(frames), m)
    return cams[torch.tensor(pos)], None if gt is None else gt[pos], [frames[i] for i in pos]


def _full_resolution_images(model, images: List[Tensor]) -> Tensor:
    """Dataset images ([H, W, C] each) -> [N, 3, H, W] in [0, 1] over the model's background, at their stored size.

    splatfacto's ``get_gt_img`` downscales to the refinement's current resolution while the model is in training
    mode (it is after refinement steps); scores and baselines must see the full-resolution images, so it runs in
    eval mode.
    """
    bg = model.background_color.to(model.device) if hasattr(model, "background_color") else torch.ones(3)
    was_training = model.training
    model.eval()
    try:
        out = []
        for image in images:
            img = model.get_gt_img(image)  # float [H, W, C] on the model's device
            out.append(model.composite_with_background(img, bg).permute(2, 0, 1).float().clamp(0, 1).cpu())
    finally:
        model.train(was_training)
    return torch.stack(out)


def _train_images(pipeline, positions: List[int]) -> Tensor:
    """Train images [V, 3, H, W] at their stored resolution, composited on the model's background."""
    return _full_resolution_images(pipeline.model, [pipeline.datamanager.cached_train[i]["image"] for i in positions])


class Scorer:
    """Full metrics and PSNR of renders [T, 3, H, W] against the ground truth [T, 3, H, W]."""

    def __init__(self, gt: Tensor, config: M.MetricsConfig = M.MetricsConfig()):
        self.gt = gt
        self.metrics = M.ImageMetrics(config)

    def full(self, pred: Tensor) -> Dict[str, float]:
        rows = [self.metrics(pred[i : i + 1], self.gt[i : i + 1]) for i in range(len(pred))]
        out = M.mean_metrics(rows)
        out["psnr_per_view"] = [float(r["psnr"][0]) for r in rows]  # type: ignore[assignment]
        return out

    def psnr(self, pred: Tensor) -> float:
        return float(M.psnr(pred, self.gt).double().mean())


def _save_png(img: Tensor, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    arr = (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype("uint8")
    tmp = path.with_suffix(".tmp.png")
    Image.fromarray(arr).save(tmp)
    tmp.replace(path)


def _timed_pipeline_class(on_prediction: Optional[Callable[[Any], None]] = None):
    """A TttlrmPipeline subclass for this evaluation; ``on_prediction(pipeline)`` is called with the raw prediction
    installed in the model, before refinement's preparation replaces it (the feed-forward score)."""
    from tttlrm_ns.ns.pipeline import TttlrmPipeline

    class TimedTttlrmPipeline(TttlrmPipeline):
        """TttlrmPipeline that records the wall time of its feed-forward prediction (``predict_seconds``: the
        preparation at construction, ``prepare_prediction``, plus the prediction on first use, ``run_prediction``)
        and of the preparation for refinement (``install_prediction``), and lets the evaluation score the raw
        prediction."""

        predict_seconds: float = float("nan")
        prepare_seconds: float = 0.0
        _inputs_seconds: float = 0.0

        def _timed(self, fn, *args):
            dev = torch.device(self.device)
            t0 = time.perf_counter()
            out = fn(*args)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            return out, time.perf_counter() - t0

        def prepare_prediction(self):  # type: ignore[override]
            out, self._inputs_seconds = self._timed(super().prepare_prediction)
            return out

        def run_prediction(self, prepared):  # type: ignore[override]
            out, seconds = self._timed(super().run_prediction, prepared)
            self.predict_seconds = self._inputs_seconds + seconds
            return out

        def install_prediction(self, gaussians) -> None:  # type: ignore[override]
            if on_prediction is not None:
                self.model.set_gaussians(gaussians, prepare=False)  # type: ignore[attr-defined]
                on_prediction(self)
            dev = torch.device(self.device)
            t0 = time.perf_counter()
            super().install_prediction(gaussians)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            self.prepare_seconds = time.perf_counter() - t0

    return TimedTttlrmPipeline


# --- the scene --------------------------------------------------------------------------------------------------


def evaluate_scene(
    cfg: SceneEvalConfig, scene: Path, out_dir: Path, log: Callable[[str], None] = print
) -> Dict[str, Any]:
    """Run the protocol on one scene; returns the JSON-ready result and writes images under ``out_dir``."""
    scene = Path(scene)
    if not scene.exists():
        raise FileNotFoundError(f"scene {scene} does not exist")
    device = cfg.resolved_device()
    name = scene_name(scene)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_root = out_dir / "runs"
    ks = sorted(set(int(k) for k in cfg.curve_steps) | {cfg.refine_steps})
    if ks[0] < 0:
        raise ValueError(f"refinement steps must be >= 0, got {ks[0]}")
    result: Dict[str, Any] = {"scene": name, "path": str(scene), "method": cfg.method, "device": device}

    # 1. tttLRM: views, prediction, refinement (one run, sampled at every K).
    tc = _method_config(cfg.method)
    _prepare_trainer_config(tc, run_root, name, cfg.method.replace("-", "_"), device, cfg.seed)
    pc = tc.pipeline
    pc.datamanager.dataparser = make_dataparser(cfg, scene)
    pc.datamanager.data = None
    pc.views.num_views = cfg.num_views
    pc.use_precomputed_views = cfg.use_precomputed_views
    pc.seed = cfg.seed
    if cfg.input_height is not None or cfg.input_width is not None:
        pc.input_height, pc.input_width = cfg.input_height, cfg.input_width
    elif cfg.input_long_side is not None:
        pc.input_long_side = cfg.input_long_side
    pc.model.checkpoint = cfg.checkpoint
    pc.model.refine.steps = ks[-1]
    tc.max_num_iterations = None
    tc.data = None
    if cfg.save_runs:
        tc.save_config()
    ff: Dict[str, Any] = {}  # the raw prediction's scores (filled while the pipeline is built)

    def score_feedforward(pipe) -> None:
        """The held-out frames, and K = 0: the raw prediction (installed as is), scored before the pipeline hands
        it to refinement's preparation (merge)."""
        cams, gt, test_frames = _subset_test(cfg, *_gt_images(pipe))
        grid_pos = cfg.grid_frame if cfg.grid_frame >= 0 else len(test_frames) // 2
        if not 0 <= grid_pos < len(test_frames):
            raise ValueError(f"--grid-frame {cfg.grid_frame}: the scene has {len(test_frames)} held-out frames")
        ff.update(cams=cams, gt=gt, test_frames=test_frames, grid_pos=grid_pos, scorer=Scorer(gt),
                  gaussians=int(pipe.model.num_points))
        if ks[0] == 0:
            pred = render_views(pipe.model, cams)
            ff["psnr"] = ff["scorer"].psnr(pred)
            if cfg.refine_steps == 0:
                ff["full"] = ff["scorer"].full(pred)
                _save_png(pred[grid_pos], out_dir / "grid" / "ours.png")

    # only for this process; config.yml names TttlrmPipeline
    tc.pipeline._target = _timed_pipeline_class(score_feedforward)
    torch.manual_seed(cfg.seed)

    with PeakMemory(device) as mem:
        trainer = tc.setup(local_rank=0, world_size=1)
        trainer.setup()
        pipe = trainer.pipeline
        ckpt_path, _ = pipe.resolve_model_config()
        cams, gt, test_frames, scorer, grid_pos = (ff[k] for k in ("cams", "gt", "test_frames", "scorer", "grid_pos"))
        H, W = gt.shape[-2:]
        train_meta = pipe.datamanager.train_dataset.metadata or {}
        train_frames = train_meta.get("frame_indices") or list(range(len(pipe.datamanager.train_dataset)))
        inputs = list(pipe.input_indices)
        input_frames = [int(train_frames[i]) for i in inputs]
        result.update(
            checkpoint=str(ckpt_path), checkpoint_sha256=sha256_file(Path(ckpt_path)),
            num_inputs=len(inputs), input_frames=input_frames, test_frames=test_frames,
            eval_resolution=[int(H), int(W)], num_frames=len(train_frames) + len(test_frames),
        )
        ff_s, prep_s = float(pipe.predict_seconds), float(pipe.prepare_seconds)
        curve: List[Dict[str, Any]] = []
        entries: Dict[str, Dict[str, Any]] = {}

        def add_point(label: str, k: int, seconds: float, psnr: float, gaussians: int) -> None:
            curve.append({"steps": k, "label": label, "seconds": seconds, "psnr": psnr, "gaussians": gaussians})
            log(f"{name}: tttLRM, {label}: PSNR {psnr:.2f} dB at {seconds:.1f} s ({gaussians:,} Gaussians)")

        if ks[0] == 0:
            add_point("feed-forward", 0, ff_s, ff["psnr"], ff["gaussians"])
            if cfg.refine_steps == 0:
                entries["tttlrm"] = {**ff["full"], "seconds": ff_s, "feedforward_s": ff_s, "refine_s": 0.0,
                                     "prepare_s": 0.0, "refine_steps": 0, "gaussians": ff["gaussians"]}
            prep = pipe.model.config.refine.preparation(ff["gaussians"]) if ks[-1] > 0 else None
            if prep is not None:  # the installed starting set differs from the prediction: its own row
                add_point(f"{prep}, 0 steps", 0, ff_s + prep_s, scorer.psnr(render_views(pipe.model, cams)),
                          int(pipe.model.num_points))
        refine_s, step = prep_s, 0  # the preparation is part of what refinement costs
        for k in ks:
            if k == 0:
                continue
            refine_s += run_iterations(trainer, step, k)
            step = k
            pred = render_views(pipe.model, cams)
            add_point(f"{k} steps", k, ff_s + refine_s, scorer.psnr(pred), int(pipe.model.num_points))
            if k == cfg.refine_steps:
                entries["tttlrm"] = {
                    **scorer.full(pred), "seconds": ff_s + refine_s, "feedforward_s": ff_s, "refine_s": refine_s,
                    "prepare_s": prep_s, "refine_steps": k, "gaussians": int(pipe.model.num_points),
                }
                _save_png(pred[grid_pos], out_dir / "grid" / "ours.png")
    entries["tttlrm"]["peak_memory_mib"] = mem.mib
    result["peak_memory_kind"] = mem.kind
    if cfg.save_runs:
        trainer.save_checkpoint(step)
        result["run_config"] = str(tc.get_base_dir() / "config.yml")
    _save_png(gt[grid_pos], out_dir / "grid" / "gt.png")

    # 2. Image baselines on the same inputs and held-out frames.
    inputs_img = _train_images(pipe, inputs)
    train_cams = pipe.datamanager.train_dataset.cameras
    nearest = nearest_input_view(train_cams.camera_to_worlds[inputs], cams.camera_to_worlds, opengl=True)
    nearest_img = torch.stack([resize_to(inputs_img[int(j)], H, W) for j in nearest])
    _save_png(resize_to(inputs_img[0], H, W), out_dir / "grid" / "input.png")
    _save_png(nearest_img[grid_pos], out_dir / "grid" / "nearest.png")
    if cfg.baselines:
        # The non-learned initialiser on the same inputs, through the same pipeline (its datamanager and view
        # selection): the bar the learned prediction has to clear. After the tttLRM run was saved.
        from tttlrm_ns.ns.pipeline import PredictionError

        pipe.config.init = "mvs"
        t_mvs = time.perf_counter()
        try:
            g_mvs, _ = pipe.predict()
        except PredictionError as e:  # e.g. views that do not match at all: recorded, the scene's other rows stand
            entries["mvs"] = {"error": str(e)}
            log(f"{name}: mvs (plane sweep, no network): not possible: {e}")
        else:
            pipe.model.set_gaussians(g_mvs, prepare=False)  # a baseline without refinement: not merged either
            pred = render_views(pipe.model, cams)
            entries["mvs"] = {**scorer.full(pred), "seconds": time.perf_counter() - t_mvs,
                              "gaussians": int(pipe.model.num_points)}
            _save_png(pred[grid_pos], out_dir / "grid" / "mvs.png")
            log(f"{name}: mvs (plane sweep, no network): PSNR {entries['mvs']['psnr']:.2f} dB")
        entries["white"] = scorer.full(white_image(H, W).expand(len(gt), 3, H, W))
        entries["mean_colour"] = scorer.full(mean_colour_image(inputs_img, H, W).expand(len(gt), 3, H, W))
        entries["nearest_view"] = {**scorer.full(nearest_img), "nearest_input_frames":
                                   [input_frames[int(j)] for j in nearest]}
    budget = entries["tttlrm"]["seconds"]
    result["grid_test_frame"] = test_frames[grid_pos]
    del trainer, pipe
    gc.collect()

    # 3. splatfacto-cpu on only the N input views.
    sf_curve: List[Dict[str, float]] = []
    if cfg.splatfacto.enabled:
        sf_entries, sf_curve = _splatfacto(cfg, scene, input_frames, test_frames, scorer, budget, out_dir,
                                           run_root, grid_pos, device, log)
        entries.update(sf_entries)
    result["entries"] = entries
    result["curves"] = {"tttlrm": curve, "splatfacto_cpu": sf_curve}
    return result


def _splatfacto(cfg, scene, input_frames, test_frames, scorer, budget, out_dir, run_root, grid_pos, device, log):
    from tttlrm_ns.ns.splatfacto_cpu import splatfacto_cpu_config

    sc = cfg.splatfacto
    name = scene_name(scene)
    tc = copy.deepcopy(splatfacto_cpu_config)
    _prepare_trainer_config(tc, run_root, name, "splatfacto_cpu", device, cfg.seed)
    tc.pipeline.datamanager.dataparser = make_dataparser(cfg, scene, train_frames=sorted(set(input_frames)))
    tc.pipeline.datamanager.data = None
    tc.pipeline.model.random_init = True
    tc.pipeline.model.num_random = sc.num_random
    tc.data = None
    tc.max_num_iterations = max(sc.steps, sc.max_steps if sc.match_time else 0)
    if cfg.save_runs:
        tc.save_config()
    torch.manual_seed(cfg.seed)
    trainer = tc.setup(local_rank=0, world_size=1)
    trainer.setup()
    pipe = trainer.pipeline
    cams, _, frames = _gt_images(pipe)
    cams, _, frames = _subset_test(cfg, cams, None, frames)
    if frames != test_frames:
        raise RuntimeError(f"splatfacto-cpu held-out frames {frames} differ from tttLRM's {test_frames}")
    samples, s = {0}, 1
    while s < sc.steps:
        samples.add(s)
        s = max(s + 1, int(round(s * sc.curve_every)))
    entries: Dict[str, Dict[str, Any]] = {}
    curve: List[Dict[str, float]] = []
    seconds, step = 0.0, 0

    def sample(tags: List[str]) -> None:
        pred = render_views(pipe.model, cams)
        curve.append({"steps": step, "seconds": seconds, "psnr": scorer.psnr(pred)})
        if tags:
            full = {**scorer.full(pred), "seconds": seconds, "steps": step, "gaussians": int(pipe.model.num_points)}
            for tag in tags:
                entries[tag] = dict(full)
            if "splatfacto_cpu_steps" in tags:
                _save_png(pred[grid_pos], out_dir / "grid" / "splatfacto.png")
        log(f"{name}: splatfacto-cpu {step} steps: PSNR {curve[-1]['psnr']:.2f} dB at {seconds:.1f} s")

    # One run, one step at a time: the training time excludes the evaluation renders, so the same run gives the
    # curve, the fixed-step entry and the first step at which its training time reaches tttLRM's time.
    matched = not sc.match_time
    sample([])
    while not (step >= sc.steps and matched) and step < max(sc.steps, sc.max_steps):
        seconds += run_iterations(trainer, step, step + 1)
        step += 1
        tags = []
        if step == sc.steps:
            tags.append("splatfacto_cpu_steps")
        if not matched and seconds >= budget:
            tags.append("splatfacto_cpu_time")
            matched = True
        if tags or step in samples:
            sample(tags)
    if not matched:
        sample(["splatfacto_cpu_time"])
        entries["splatfacto_cpu_time"]["note"] = f"stopped at max_steps {sc.max_steps} before the time budget"
    if sc.match_time:
        entries["splatfacto_cpu_time"]["budget_s"] = budget
    if cfg.save_runs:
        trainer.save_checkpoint(step)
        entries["splatfacto_cpu_steps"]["run_config"] = str(tc.get_base_dir() / "config.yml")
    del trainer, pipe
    gc.collect()
    return entries, curve


__all__ = ["SceneEvalConfig", "SplatfactoBaselineConfig", "evaluate_scene", "render_views", "run_iterations",
           "make_dataparser", "METHODS"]

"""The nerfstudio method ``tttlrm-triplane``: one triplane predicted from the input views, volume-rendered.

The pipeline is a :class:`tttlrm_ns.ns.pipeline.FeedForwardPipeline`, as ``tttlrm``'s: construction in training mode
(``ns-train tttlrm-triplane``) prepares, the first use of the model predicts.

1. Construction: choose the input views among the train images (k-means on the camera poses, 4 views by default, the
   scene's precomputed ``fold_8_kmeans_4_input`` list when present); move their cameras into the object frame
   (:func:`tttlrm_ns.data.object_frame.object_frame`; a scene capture is refused there with an actionable message)
   and resize the images to the model's training resolution (read from the weights' metadata; a Gaussian checkpoint
   is refused by :func:`tttlrm_ns.triplane.model.load_triplane` when the model is built).
2. First use of the model (``pipeline.model``, ``state_dict``; in ``ns-train`` the trainer building its optimizers):
   load the triplane weights, predict the planes, and install planes + MLP + the world -> object similarity in
   :class:`TriplaneNSModel`. Loading a nerfstudio checkpoint drops a prediction not made yet.

``--max-num-iterations N`` (default 0) refines the planes and the MLP for N steps on random rays of the train
images. ``ns-eval``, ``ns-viewer``, ``ns-render`` and ``ns-export pointcloud`` load a finished run from its nerfstudio
checkpoint (planes, MLP and the similarity are model state); ``tttlrm-export-triplane`` writes a marching-cubes mesh
with vertex colours and a point cloud (:mod:`tttlrm_ns.triplane.mesh_export`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, NamedTuple, Optional, Tuple, Type

import torch
from torch import Tensor
from torch.nn import Parameter

from nerfstudio.cameras.rays import RayBundle
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.utils.rich_utils import CONSOLE

from tttlrm_ns.checkpoint_io import allow_numpy_in_weights_only_loads
from tttlrm_ns.data.normalize import SceneTransform
from tttlrm_ns.data.views import ViewSelectionConfig
from tttlrm_ns.ns.pipeline import FeedForwardPipeline, FeedForwardPipelineConfig
from tttlrm_ns.ns.trainer import allow_zero_iterations, method_trainer_config

BUNDLED_TRIPLANE = Path(__file__).resolve().parents[1] / "assets" / "weights" / "tttlrm_triplane.safetensors"
"""Default weights of ``tttlrm-triplane`` when ``--pipeline.model.checkpoint`` is not given."""


def resolve_weights(path: Optional[Path]) -> Path:
    if path is None:
        if not BUNDLED_TRIPLANE.is_file():
            raise FileNotFoundError(
                f"tttlrm-triplane needs triplane weights: pass --pipeline.model.checkpoint PATH (a .safetensors file "
                f"written by `tttlrm-train` with model_kind: triplane); the bundled {BUNDLED_TRIPLANE} is missing")
        return BUNDLED_TRIPLANE
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--pipeline.model.checkpoint {path} does not exist")
    return path


def _head_config(path: Path):
    """(TriplaneConfig, backbone TttlrmConfig, plane resolution, metadata) of a triplane file, without loading the
    weights; refuses other files with the loader's message."""
    from tttlrm_ns.model.config import TttlrmConfig
    from .model import KIND_KEY, TRIPLANE_KEY, TriplaneConfig, load_triplane, read_triplane_metadata

    meta = read_triplane_metadata(path) if path.suffix == ".safetensors" else {}
    if meta.get(KIND_KEY) != "triplane" or TRIPLANE_KEY not in meta:
        load_triplane(path)  # raises the descriptive CheckpointError (Gaussian file, official .pt, unknown)
    tri = TriplaneConfig.from_dict(json.loads(meta[TRIPLANE_KEY]))
    cfg = TttlrmConfig.from_dict(json.loads(meta["tttlrm_config"]))
    return tri, cfg, tri.tokens_per_side * cfg.patch_size, meta


@dataclass
class TriplaneNSModelConfig(ModelConfig):
    """tttLRM triplane object model: planes predicted at step 0, optional refinement of planes + MLP."""

    _target: Type = field(default_factory=lambda: TriplaneNSModel)
    enable_collider: bool = False
    """Rays are clipped to the object box by the model itself."""
    checkpoint: Optional[Path] = None
    """Triplane weights (.safetensors from `tttlrm-train` with model_kind: triplane); default: the bundled file."""
    num_samples: Optional[int] = None
    """Samples per ray when rendering (None: the checkpoint's samples_per_ray)."""
    background_color: Literal["white", "black"] = "white"
    """Colour behind the object box (object renders are composited on white)."""
    eval_num_rays_per_chunk: int = 16384
    eval_ssim: Literal["skimage", "gaussian"] = "skimage"
    """SSIM of `ns-eval`: 'skimage' (paper protocol) or 'gaussian'."""
    eval_lpips: Literal["vgg", "alex"] = "vgg"
    """LPIPS backbone of `ns-eval`."""

    def __post_init__(self) -> None:
        # The run's config.yml must name the weights absolutely: ns-eval / ns-export may run from another folder.
        if self.checkpoint is not None:
            self.checkpoint = Path(self.checkpoint).expanduser().resolve()


class TriplaneNSModel(Model):
    """Planes ``[1, 3, C, R, R]`` + the triplane MLP, rendered in the object frame (see the module docstring)."""

    config: TriplaneNSModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        allow_numpy_in_weights_only_loads()  # for nerfstudio's loaders of our older checkpoints (see that function)
        from torchmetrics.image import PeakSignalNoiseRatio

        from .model import TriplaneField

        path = resolve_weights(self.config.checkpoint)
        tri, _, res, _ = _head_config(path)
        self.field = TriplaneField(tri)
        self.planes = Parameter(torch.zeros(1, 3, tri.channels, res, res))
        # World (nerfstudio frame) -> object frame similarity as a 4x4 matrix (rotation scaled by s), and s.
        self.register_buffer("world_to_object", torch.eye(4))
        self.register_buffer("object_scale", torch.ones(()))
        self.psnr = PeakSignalNoiseRatio(data_range=1.0)
        self.background = torch.ones(3) if self.config.background_color == "white" else torch.zeros(3)

    @torch.no_grad()
    def set_prediction(self, planes: Tensor, field_state: dict, world_to_object: Tensor, scale: float) -> None:
        """Install predicted planes [1, 3, C, R, R], the MLP weights and the world -> object similarity [4, 4]."""
        if planes.shape != self.planes.shape:
            raise ValueError(f"predicted planes {tuple(planes.shape)} do not match the model's {tuple(self.planes.shape)}")
        self.planes.data.copy_(planes)
        self.field.load_state_dict(field_state, strict=True)
        self.world_to_object.copy_(world_to_object.float())
        self.object_scale.fill_(float(scale))

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        return {"triplane_planes": [self.planes], "triplane_mlp": list(self.field.parameters())}

    def get_outputs(self, ray_bundle: RayBundle) -> Dict[str, Tensor]:
        """Rays (nerfstudio world frame, unit directions) -> rgb [..., 3], accumulation [..., 1], depth [..., 1]
        (distance along the ray in world units; rays that miss the object get the far side of the box)."""
        shape = ray_bundle.origins.shape[:-1]
        o = ray_bundle.origins.reshape(-1, 3)
        d = ray_bundle.directions.reshape(-1, 3)
        m, s = self.world_to_object, self.object_scale
        o_obj = o @ m[:3, :3].T + m[:3, 3]
        d_obj = d @ (m[:3, :3] / s).T  # the rotation alone keeps unit directions unit
        out = self.field.render_rays(self.planes, o_obj[None], d_obj[None], self.background.to(o.device),
                                     self.config.num_samples, stratified=self.training)
        return {"rgb": out["rgb"][0].view(*shape, 3), "accumulation": out["accumulation"][0].view(*shape, 1),
                "depth": (out["depth"][0] / s).view(*shape, 1)}

    def _gt(self, image: Tensor) -> Tensor:
        """Ground-truth colours [..., 3] composited on the model's background (RGBA images)."""
        image = image.to(self.device).float()
        if image.shape[-1] == 4:
            a = image[..., 3:]
            return image[..., :3] * a + self.background.to(image.device) * (1 - a)
        return image[..., :3]

    def get_metrics_dict(self, outputs, batch) -> Dict[str, Tensor]:
        return {"psnr": self.psnr(outputs["rgb"], self._gt(batch["image"]))}

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        return {"rgb_loss": (outputs["rgb"] - self._gt(batch["image"])).square().mean()}

    def get_image_metrics_and_images(self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
                                     ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        from tttlrm_ns.eval import metrics

        gt, pred = self._gt(batch["image"]), outputs["rgb"].clamp(0, 1)
        g, p = gt.permute(2, 0, 1)[None], pred.permute(2, 0, 1)[None]
        out = {"psnr": float(metrics.psnr(p, g)[0]), "ssim": float(metrics.ssim(p, g, self.config.eval_ssim)[0]),
               "lpips": float(metrics.lpips(p, g, self.config.eval_lpips)[0])}
        return out, {"img": torch.cat([gt, pred], dim=1), "accumulation": outputs["accumulation"]}


@dataclass
class TriplanePipelineConfig(FeedForwardPipelineConfig):
    """tttLRM triplane: one prediction from the input views, on first use (object captures only)."""

    _target: Type = field(default_factory=lambda: TriplanePipeline)
    model: TriplaneNSModelConfig = field(default_factory=TriplaneNSModelConfig)
    views: ViewSelectionConfig = field(default_factory=lambda: ViewSelectionConfig(mode="kmeans", num_views=4))
    """Which train images are the model's input views (the seed: 4)."""
    input_size: Optional[int] = None
    """Long side of the model input (aspect kept, patch multiple). None: the checkpoint's training resolution."""


class _Prepared(NamedTuple):
    """A triplane prediction prepared at construction and made on first use."""

    indices: list[int]
    weights: Path
    images: Tensor  # [V, 3, H, W] in [0, 1] at the model's input size
    c2w: Tensor  # [V, 4, 4] OpenCV, in the object frame
    k: Tensor  # [V, 4] fx, fy, cx, cy of the resized images
    frame: SceneTransform  # world -> object frame


class TriplanePipeline(FeedForwardPipeline):
    """VanillaPipeline whose model is filled by one triplane prediction, on first use (as ``TttlrmPipeline``: see
    :class:`tttlrm_ns.ns.pipeline.FeedForwardPipeline` and the module docstring)."""

    config: TriplanePipelineConfig
    log_prefix = "tttlrm-triplane"

    def __init__(self, config: TriplanePipelineConfig, device: str, test_mode: Literal["test", "val", "inference"] = "val",
                 world_size: int = 1, local_rank: int = 0, grad_scaler=None):
        if world_size > 1:
            raise ValueError("tttlrm-triplane predicts and refines on one device; use world_size 1")
        super().__init__(config, device, test_mode, world_size, local_rank, grad_scaler)
        self.input_indices: list[int] = []
        self.prediction_seconds: Optional[float] = None
        self._pending: Optional[_Prepared] = None
        if test_mode == "val":  # ns-train; eval / export / viewer load the planes from the nerfstudio checkpoint
            self._pending = self.prepare_prediction()
            self.input_indices = self._pending.indices

    def prepare_prediction(self) -> _Prepared:
        """Everything before the weights are loaded: the weights file (its metadata only), the input views, their
        cameras in the object frame (a scene capture is refused here) and their resized images."""
        from tttlrm_ns.data.object_frame import object_frame
        from tttlrm_ns.ns import inputs

        t0 = time.perf_counter()
        path = resolve_weights(self.config.model.checkpoint)
        tri, cfg, res, meta = _head_config(path)
        idx = self.select_inputs()  # the same selection as tttlrm
        dm = self.datamanager
        cameras = dm.train_dataset.cameras  # type: ignore[union-attr]
        sizes = {(int(cameras.width[i]), int(cameras.height[i])) for i in idx}
        if len(sizes) > 1:
            raise ValueError(f"the input views have different image sizes {sorted(sizes)} (WxH); resize them")
        width, height = sizes.pop()
        long_side = self.config.input_size
        if long_side is None:  # the training resolution; the plane resolution when the file has none
            trained = meta.get("trained.resolution")
            long_side = max(int(v) for v in trained.split("x")) if trained else res
        plan = inputs.make_plan(width, height, cfg.patch_size, None, None, long_side, "crop")
        c2w, k = inputs.cameras_to_opencv(cameras.camera_to_worlds[idx], cameras.fx[idx], cameras.fy[idx],
                                          cameras.cx[idx], cameras.cy[idx])
        tr = object_frame(c2w, tri.camera_distance, where="tttlrm-triplane input views: ")
        images = [dm.train_dataset.get_data(i, image_type="uint8")["image"] for i in idx]  # type: ignore[union-attr]
        image_t = inputs.prepare_images(images, plan, self._model.background.cpu())  # type: ignore[attr-defined]
        CONSOLE.log(f"tttlrm-triplane: {len(idx)} input views prepared at {plan.out_h}x{plan.out_w} in "
                    f"{time.perf_counter() - t0:.1f} s")
        return _Prepared(idx, path, image_t, tr.apply(c2w).float(), plan.apply_to_intrinsics(k).float(), tr)

    @torch.no_grad()
    def make_prediction(self, pending: _Prepared) -> None:
        """Load the weights, predict the planes and install planes + MLP + the world -> object similarity."""
        from .model import load_triplane

        t0 = time.perf_counter()
        dev = torch.device(self.device)
        model = load_triplane(pending.weights).to(dev).eval()
        t1 = time.perf_counter()
        planes = model(pending.images[None].to(dev), pending.c2w[None].to(dev), pending.k[None].to(dev)).planes
        self.prediction_seconds = time.perf_counter() - t1
        tr = pending.frame
        self._model.set_prediction(planes, model.field.state_dict(), tr.matrix(), tr.scale)  # type: ignore[operator]
        h, w = pending.images.shape[-2:]
        CONSOLE.log(f"tttlrm-triplane: planes {tuple(planes.shape)} predicted from {len(pending.indices)} views at "
                    f"{h}x{w} in {self.prediction_seconds:.2f} s (weights loaded in {t1 - t0:.1f} s)")


@dataclass
class TriplaneTrainerConfig(TrainerConfig):
    """nerfstudio's trainer; ``max_num_iterations`` = refinement steps (0: prediction only)."""

    _target: Type = field(default_factory=lambda: TriplaneTrainer)
    max_num_iterations: int = 0


class TriplaneTrainer(Trainer):
    config: TriplaneTrainerConfig

    def setup(self, test_mode: Literal["test", "val", "inference"] = "val") -> None:
        super().setup(test_mode)
        if self.config.max_num_iterations == 0:  # prediction only
            allow_zero_iterations()


def triplane_trainer_config() -> TriplaneTrainerConfig:
    from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig
    from nerfstudio.engine.optimizers import AdamOptimizerConfig
    from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig

    from tttlrm_ns.data.dataparser import OpencvCamerasDataParserConfig

    pipeline = TriplanePipelineConfig(
        datamanager=VanillaDataManagerConfig(dataparser=OpencvCamerasDataParserConfig(),
                                             train_num_rays_per_batch=2048, eval_num_rays_per_batch=2048),
        model=TriplaneNSModelConfig(),
    )
    optimizers = {
        "triplane_planes": {"optimizer": AdamOptimizerConfig(lr=1e-2, eps=1e-15),
                            "scheduler": ExponentialDecaySchedulerConfig(lr_final=1e-3, max_steps=1000)},
        "triplane_mlp": {"optimizer": AdamOptimizerConfig(lr=1e-3, eps=1e-15),
                         "scheduler": ExponentialDecaySchedulerConfig(lr_final=1e-4, max_steps=1000)},
    }
    return method_trainer_config(TriplaneTrainerConfig, "tttlrm-triplane", pipeline, optimizers, 1 << 14)


__all__ = ["BUNDLED_TRIPLANE", "TriplaneNSModel", "TriplaneNSModelConfig", "TriplanePipeline",
           "TriplanePipelineConfig", "TriplaneTrainer", "TriplaneTrainerConfig", "triplane_trainer_config"]

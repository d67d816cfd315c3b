"""The nerfstudio method ``tttlrm-triplane``: one triplane predicted from the input views, volume-rendered.

At construction in training mode (``ns-train tttlrm-triplane``) the pipeline

1. chooses the input views among the train images (k-means on the camera poses, 4 views by default, the scene's
   precomputed ``fold_8_kmeans_4_input`` list when present);
2. moves their cameras into the object frame (:func:`tttlrm_ns.data.object_frame.object_frame`; a scene capture is
   refused there with an actionable message) and resizes the images to the model's training resolution;
3. loads the triplane weights (a Gaussian checkpoint is refused by :func:`tttlrm_ns.triplane.model.load_triplane`),
   predicts the planes, and installs planes + MLP + the world -> object similarity in :class:`TriplaneNSModel`.

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
from typing import Dict, List, Literal, Optional, Tuple, Type

import torch
from torch import Tensor
from torch.nn import Parameter

from nerfstudio.cameras.rays import RayBundle
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils.rich_utils import CONSOLE

from tttlrm_ns.checkpoint_io import allow_numpy_in_weights_only_loads
from tttlrm_ns.data.views import ViewSelectionConfig

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
    """(TriplaneConfig, plane resolution, metadata) of a triplane file, without loading the weights; refuses other
    files with the loader's message."""
    from tttlrm_ns.model.config import TttlrmConfig
    from .model import KIND_KEY, TRIPLANE_KEY, TriplaneConfig, load_triplane, read_triplane_metadata

    meta = read_triplane_metadata(path) if path.suffix == ".safetensors" else {}
    if meta.get(KIND_KEY) != "triplane" or TRIPLANE_KEY not in meta:
        load_triplane(path)  # raises the descriptive CheckpointError (Gaussian file, official .pt, unknown)
    tri = TriplaneConfig.from_dict(json.loads(meta[TRIPLANE_KEY]))
    cfg = TttlrmConfig.from_dict(json.loads(meta["tttlrm_config"]))
    return tri, tri.tokens_per_side * cfg.patch_size, meta


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
        tri, res, _ = _head_config(path)
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
class TriplanePipelineConfig(VanillaPipelineConfig):
    """tttLRM triplane: one prediction from the input views at setup (object captures only)."""

    _target: Type = field(default_factory=lambda: TriplanePipeline)
    model: TriplaneNSModelConfig = field(default_factory=TriplaneNSModelConfig)
    views: ViewSelectionConfig = field(default_factory=lambda: ViewSelectionConfig(mode="kmeans", num_views=4))
    """Which train images are the model's input views (the seed: 4)."""
    use_precomputed_views: bool = True
    """With k-means: use the scene file's fold_8_kmeans_{N}_input list when present."""
    input_size: Optional[int] = None
    """Long side of the model input (aspect kept, patch multiple). None: the checkpoint's training resolution."""


class TriplanePipeline(VanillaPipeline):
    config: TriplanePipelineConfig

    def __init__(self, config: TriplanePipelineConfig, device: str, test_mode: Literal["test", "val", "inference"] = "val",
                 world_size: int = 1, local_rank: int = 0, grad_scaler=None):
        if world_size > 1:
            raise ValueError("tttlrm-triplane predicts and refines on one device; use world_size 1")
        super().__init__(config, device, test_mode, world_size, local_rank, grad_scaler)
        self.input_indices: list[int] = []
        self.prediction_seconds: Optional[float] = None
        if test_mode == "val":  # ns-train; eval / export / viewer load the planes from the nerfstudio checkpoint
            self.predict()

    def _select_inputs(self) -> list[int]:
        """Positions in the train split of the input views: the same selection as ``tttlrm``."""
        from tttlrm_ns.ns.pipeline import select_input_views

        return select_input_views(self.datamanager, self.config.views, self.config.use_precomputed_views,
                                  log_prefix="tttlrm-triplane")

    @torch.no_grad()
    def predict(self) -> None:
        from tttlrm_ns.data.object_frame import object_frame
        from .model import load_triplane
        from tttlrm_ns.ns import inputs

        t0 = time.perf_counter()
        path = resolve_weights(self.config.model.checkpoint)
        model = load_triplane(path)
        idx = self._select_inputs()
        dm = self.datamanager
        cameras = dm.train_dataset.cameras  # type: ignore[union-attr]
        sizes = {(int(cameras.width[i]), int(cameras.height[i])) for i in idx}
        if len(sizes) > 1:
            raise ValueError(f"the input views have different image sizes {sorted(sizes)} (WxH); resize them")
        width, height = sizes.pop()
        long_side = self.config.input_size
        if long_side is None:
            res = model.plane_resolution  # fallback when the file has no training resolution
            trained = _head_config(path)[2].get("trained.resolution")
            long_side = max(int(v) for v in trained.split("x")) if trained else res
        plan = inputs.make_plan(width, height, model.cfg.patch_size, None, None, long_side, "crop")
        c2w, k = inputs.cameras_to_opencv(cameras.camera_to_worlds[idx], cameras.fx[idx], cameras.fy[idx],
                                          cameras.cx[idx], cameras.cy[idx])
        tr = object_frame(c2w, model.tri.camera_distance, where="tttlrm-triplane input views: ")
        k = plan.apply_to_intrinsics(k)
        bg = self.model.background  # type: ignore[attr-defined]
        images = [dm.train_dataset.get_data(i, image_type="uint8")["image"] for i in idx]  # type: ignore[union-attr]
        image_t = inputs.prepare_images(images, plan, bg.cpu())
        dev = torch.device(self.device)
        model = model.to(dev).eval()
        t1 = time.perf_counter()
        planes = model(image_t[None].to(dev), tr.apply(c2w).float()[None].to(dev), k.float()[None].to(dev)).planes
        self.prediction_seconds = time.perf_counter() - t1
        self.model.set_prediction(planes, model.field.state_dict(), tr.matrix(), tr.scale)  # type: ignore[attr-defined]
        self.input_indices = idx
        CONSOLE.log(f"tttlrm-triplane: planes {tuple(planes.shape)} predicted from {len(idx)} views at "
                    f"{plan.out_h}x{plan.out_w} in {self.prediction_seconds:.2f} s (setup {t1 - t0:.1f} s)")


@dataclass
class TriplaneTrainerConfig(TrainerConfig):
    """nerfstudio's trainer; ``max_num_iterations`` = refinement steps (0: prediction only)."""

    _target: Type = field(default_factory=lambda: TriplaneTrainer)
    max_num_iterations: int = 0


class TriplaneTrainer(Trainer):
    config: TriplaneTrainerConfig

    def setup(self, test_mode: Literal["test", "val", "inference"] = "val") -> None:
        super().setup(test_mode)
        if self.config.max_num_iterations == 0:
            # nerfstudio's console writer divides by the iteration count and reads the last step (none here).
            from nerfstudio.utils import writer

            writer.GLOBAL_BUFFER.setdefault("step", 0)
            writer.GLOBAL_BUFFER["max_iter"] = max(1, writer.GLOBAL_BUFFER.get("max_iter", 1))


def triplane_trainer_config() -> TriplaneTrainerConfig:
    from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
    from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig
    from nerfstudio.engine.optimizers import AdamOptimizerConfig
    from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig

    from tttlrm_ns.data.dataparser import OpencvCamerasDataParserConfig

    return TriplaneTrainerConfig(
        method_name="tttlrm-triplane",
        steps_per_eval_image=1000,
        steps_per_eval_batch=0,
        steps_per_save=1000,
        steps_per_eval_all_images=1000000,
        mixed_precision=False,
        machine=MachineConfig(device_type="cuda" if torch.cuda.is_available() else "cpu"),
        pipeline=TriplanePipelineConfig(
            datamanager=VanillaDataManagerConfig(dataparser=OpencvCamerasDataParserConfig(),
                                                 train_num_rays_per_batch=2048, eval_num_rays_per_batch=2048),
            model=TriplaneNSModelConfig(),
        ),
        optimizers={
            "triplane_planes": {"optimizer": AdamOptimizerConfig(lr=1e-2, eps=1e-15),
                                "scheduler": ExponentialDecaySchedulerConfig(lr_final=1e-3, max_steps=1000)},
            "triplane_mlp": {"optimizer": AdamOptimizerConfig(lr=1e-3, eps=1e-15),
                             "scheduler": ExponentialDecaySchedulerConfig(lr_final=1e-4, max_steps=1000)},
        },
        viewer=ViewerConfig(num_rays_per_chunk=1 << 14),
        vis="viewer",
    )


__all__ = ["BUNDLED_TRIPLANE", "TriplaneNSModel", "TriplaneNSModelConfig", "TriplanePipeline",
           "TriplanePipelineConfig", "TriplaneTrainer", "TriplaneTrainerConfig", "triplane_trainer_config"]

"""nerfstudio's splatfacto running through our rasteriser, so the baseline trains on CPU-only machines.

Stock ``SplatfactoModel`` (nerfstudio 1.1.5) cannot run without CUDA for three reasons, each handled here by a
subclass rather than by patching nerfstudio or gsplat globally:

1. ``get_outputs`` calls gsplat's ``rasterization`` (CUDA kernels only) and moves the intrinsics with ``.cuda()``.
   ``SplatfactoCPUModel.get_outputs`` renders the same outputs through ``tttlrm_ns.render.rasterize`` (our C++
   backend on CPU, gsplat on CUDA) with identical arguments, so densification statistics (``means2d`` gradients /
   absgrad, ``radii``) feed gsplat's ``DefaultStrategy`` exactly as before. The strategy itself is pure torch.
2. ``populate_modules`` builds the SH colours of SfM seed points with ``.cuda()``; we let it take its
   colour-free branch and then set the colours on the model's device with the same formulas.
3. ``populate_modules`` builds torchmetrics' LPIPS, which downloads AlexNet weights at construction. Training
   never uses LPIPS, so it is built on first use (evaluation) instead; it is kept out of the state dict, so
   checkpoints hold Gaussians only (``load_state_dict`` drops ``lpips.*`` keys of stock splatfacto checkpoints).

``ns-export gaussian-splat`` keeps working because the model is still a ``SplatfactoModel`` with the same storage.
Register the method with the entry point
``splatfacto-cpu = "tttlrm_ns.ns.splatfacto_cpu:splatfacto_cpu_method"`` (group
``nerfstudio.method_configs``), or ad hoc with ``NERFSTUDIO_METHOD_CONFIGS=splatfacto-cpu=tttlrm_ns.ns.splatfacto_cpu:splatfacto_cpu_method``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Type, Union
from unittest import mock

import torch
from torch import Tensor

from nerfstudio.cameras.cameras import Cameras
from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanagerConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.models.splatfacto import RGB2SH, SplatfactoModel, SplatfactoModelConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.plugins.types import MethodSpecification

from tttlrm_ns.ns.checkpoint_io import FloatExponentialDecaySchedulerConfig


def opengl_c2w_to_opencv_w2c(c2w: Tensor) -> Tensor:
    """nerfstudio camera-to-world [C, 3, 4] (OpenGL: x right, y up, z back) -> world-to-camera [C, 4, 4] (OpenCV).

    Flipping the y and z camera axes turns OpenGL into OpenCV; the inverse of a rigid ``[R | t]`` is
    ``[R^T | -R^T t]``.
    """
    R = c2w[:, :3, :3] * c2w.new_tensor([1.0, -1.0, -1.0])  # scale columns = flip camera y and z
    t = c2w[:, :3, 3:4]
    w2c = torch.zeros(c2w.shape[0], 4, 4, dtype=c2w.dtype, device=c2w.device)
    w2c[:, :3, :3] = R.transpose(1, 2)
    w2c[:, :3, 3:4] = -R.transpose(1, 2) @ t
    w2c[:, 3, 3] = 1.0
    return w2c


class _LazyLPIPS(torch.nn.Module):
    """Stands in for torchmetrics' ``LearnedPerceptualImagePatchSimilarity``; builds it on the first call.

    The real metric is stored outside the module tree (not a submodule), so it never enters state dicts and is
    not moved by ``model.to``; it follows the device of its inputs instead.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self._kwargs = kwargs
        self.__dict__["_metric"] = None

    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        if self.__dict__["_metric"] is None:
            from tttlrm_ns.eval.lpips_weights import lpips_metric  # our offline backbone files, no download

            self.__dict__["_metric"] = lpips_metric(**self._kwargs)
        metric = self.__dict__["_metric"].to(preds.device)
        return metric(preds, target)


@contextmanager
def _lazy_lpips() -> Iterator[None]:
    """While active, splatfacto's ``populate_modules`` gets a ``_LazyLPIPS`` instead of the real metric.

    splatfacto imports the class inside ``populate_modules`` (``from torchmetrics.image.lpip import ...``), so
    replacing the module attribute for the duration of that call is enough and touches nothing else.
    """
    import torchmetrics.image.lpip

    with mock.patch.object(torchmetrics.image.lpip, "LearnedPerceptualImagePatchSimilarity", _LazyLPIPS):
        yield


@dataclass
class SplatfactoCPUModelConfig(SplatfactoModelConfig):
    """Splatfacto rendered through ``tttlrm_ns.render.rasterize`` (runs on CPU; on CUDA it uses gsplat)."""

    _target: Type = field(default_factory=lambda: SplatfactoCPUModel)
    rasterize_backend: str = "auto"
    """``rasterize`` backend: "auto" (gsplat on CUDA tensors, our C++ extension on CPU), or a specific one."""


class SplatfactoCPUModel(SplatfactoModel):
    """``SplatfactoModel`` whose rendering and setup avoid CUDA-only code paths (see module docstring)."""

    config: SplatfactoCPUModelConfig

    def populate_modules(self) -> None:
        seed = self.seed_points
        seed_colors = None
        if seed is not None and not self.config.random_init and seed[1].shape[0] > 0:
            # Take splatfacto's colour-free branch (random colours) and overwrite the colours below.
            seed_colors = seed[1]
            self.seed_points = (seed[0], seed[1][:0])
        try:
            with _lazy_lpips():
                super().populate_modules()
        finally:
            self.seed_points = seed
        if seed_colors is not None:
            self._init_colors_from_seed(seed_colors)

    @torch.no_grad()
    def _init_colors_from_seed(self, rgb255: Tensor) -> None:
        """SfM point colours [N, 3] in 0..255 -> SH DC term (sh_degree > 0) or logit colour (sh_degree 0)."""
        rgb = rgb255.float() / 255.0
        dc = RGB2SH(rgb) if self.config.sh_degree > 0 else torch.logit(rgb, eps=1e-10)
        self.gauss_params["features_dc"] = torch.nn.Parameter(dc.to(self.means.device))
        self.gauss_params["features_rest"] = torch.nn.Parameter(torch.zeros_like(self.features_rest))

    def load_state_dict(self, dict, **kwargs):  # type: ignore[override]
        # Stock splatfacto checkpoints carry the LPIPS network; ours builds it lazily and does not store it.
        dict = {k: v for k, v in dict.items() if not k.startswith("lpips.")}
        return super().load_state_dict(dict, **kwargs)

    def _rasterize(self, *args: Any, **kwargs: Any):
        from tttlrm_ns.render import rasterize

        return rasterize(*args, backend=self.config.rasterize_backend, **kwargs)

    def get_outputs(self, camera: Cameras) -> Dict[str, Union[Tensor, List]]:
        """Render one camera: rgb [H, W, 3], depth [H, W, 1] or None, accumulation [H, W, 1], background."""
        if not isinstance(camera, Cameras):
            raise TypeError(f"get_outputs expects a nerfstudio Cameras object, got {type(camera).__name__}")
        if self.training:
            if camera.shape[0] != 1:
                raise ValueError(f"training renders one camera at a time, got {camera.shape[0]}")
            c2w = self.camera_optimizer.apply_to_camera(camera)
        else:
            c2w = camera.camera_to_worlds

        params = {k: v for k, v in self.gauss_params.items()}
        if self.crop_box is not None and not self.training:
            inside = self.crop_box.within(self.means).squeeze()
            if not bool(inside.any()):
                return self.get_empty_outputs(int(camera.width.item()), int(camera.height.item()), self.background_color)
            params = {k: v[inside] for k, v in params.items()}

        # Training starts at a reduced resolution (splatfacto's resolution schedule).
        scale = self._get_downscale_factor()
        camera.rescale_output_resolution(1 / scale)
        Ks = camera.get_intrinsics_matrices().to(self.device)  # [1, 3, 3]
        W, H = int(camera.width.item()), int(camera.height.item())
        camera.rescale_output_resolution(scale)
        self.last_size = (H, W)
        viewmats = opengl_c2w_to_opencv_w2c(c2w.to(self.device))

        if self.config.rasterize_mode not in ("antialiased", "classic"):
            raise ValueError(f"unknown rasterize_mode {self.config.rasterize_mode!r}; use 'classic' or 'antialiased'")
        render_mode = "RGB+ED" if (self.config.output_depth_during_training or not self.training) else "RGB"
        colors = torch.cat([params["features_dc"][:, None, :], params["features_rest"]], dim=1)  # [N, K, 3]
        if self.config.sh_degree > 0:
            sh_degree: Optional[int] = min(self.step // self.config.sh_degree_interval, self.config.sh_degree)
        else:
            colors, sh_degree = torch.sigmoid(colors[:, 0, :]), None  # plain RGB, [N, 3]

        render, alpha, self.info = self._rasterize(
            params["means"],
            params["quats"],  # normalised inside the rasteriser
            torch.exp(params["scales"]),
            torch.sigmoid(params["opacities"]).squeeze(-1),
            colors,
            viewmats,
            Ks,
            W,
            H,
            near_plane=0.01,
            far_plane=1e10,
            sh_degree=sh_degree,
            packed=False,
            render_mode=render_mode,
            absgrad=self.strategy.absgrad,
            rasterize_mode=self.config.rasterize_mode,
        )
        # gsplat's DefaultStrategy asserts this key (None = unpacked layout); our meta has no packed variant.
        self.info.setdefault("gaussian_ids", None)
        if self.training:
            # Retains the means2d gradient that DefaultStrategy reads after backward.
            self.strategy.step_pre_backward(self.gauss_params, self.optimizers, self.strategy_state, self.step, self.info)

        background = self._get_background_color()
        rgb = torch.clamp(render[..., :3] + (1 - alpha) * background, 0.0, 1.0)  # [1, H, W, 3]
        if self.config.use_bilateral_grid and self.training and camera.metadata is not None:
            if "cam_idx" in camera.metadata:
                rgb = self._apply_bilateral_grid(rgb, camera.metadata["cam_idx"], H, W)

        depth = None
        if render_mode == "RGB+ED":
            # Pixels no Gaussian reaches get the farthest rendered depth instead of 0 (as splatfacto does).
            depth = render[..., 3:4]
            depth = torch.where(alpha > 0, depth, depth.detach().max()).squeeze(0)
        if background.shape[0] == 3 and not self.training:
            background = background.expand(H, W, 3)
        return {"rgb": rgb.squeeze(0), "depth": depth, "accumulation": alpha.squeeze(0), "background": background}


def _adam(lr: float) -> AdamOptimizerConfig:
    return AdamOptimizerConfig(lr=lr, eps=1e-15)


def _warmup_decay(lr_final: float) -> FloatExponentialDecaySchedulerConfig:
    return FloatExponentialDecaySchedulerConfig(lr_final=lr_final, max_steps=30000, warmup_steps=1000, lr_pre_warmup=0)


# Same schedule (with Python-float learning rates, see tttlrm_ns.ns.checkpoint_io), optimisers and data pipeline
# as nerfstudio's "splatfacto" preset (nerfstudio 1.1.5,
# nerfstudio/configs/method_configs.py), on the CPU. Built here rather than copied from ``method_configs`` at
# import time, because importing that module discovers plugins -- including this one.
splatfacto_cpu_config = TrainerConfig(
    method_name="splatfacto-cpu",
    steps_per_eval_image=100,
    steps_per_eval_batch=0,
    steps_per_save=2000,
    steps_per_eval_all_images=1000,
    max_num_iterations=30000,
    mixed_precision=False,
    machine=MachineConfig(device_type="cpu"),
    pipeline=VanillaPipelineConfig(
        datamanager=FullImageDatamanagerConfig(
            dataparser=NerfstudioDataParserConfig(load_3D_points=True),
            # "gpu" means "on the training device" (here the CPU); "cpu" would pin memory, which needs CUDA.
            cache_images="gpu",
            cache_images_type="uint8",
        ),
        model=SplatfactoCPUModelConfig(),
    ),
    optimizers={
        "means": {
            "optimizer": _adam(1.6e-4),
            "scheduler": FloatExponentialDecaySchedulerConfig(lr_final=1.6e-6, max_steps=30000),
        },
        "features_dc": {"optimizer": _adam(0.0025), "scheduler": None},
        "features_rest": {"optimizer": _adam(0.0025 / 20), "scheduler": None},
        "opacities": {"optimizer": _adam(0.05), "scheduler": None},
        "scales": {"optimizer": _adam(0.005), "scheduler": None},
        "quats": {"optimizer": _adam(0.001), "scheduler": None},
        "camera_opt": {"optimizer": _adam(1e-4), "scheduler": _warmup_decay(5e-7)},
        "bilateral_grid": {"optimizer": _adam(2e-3), "scheduler": _warmup_decay(1e-4)},
    },
    viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
    vis="viewer",
)

splatfacto_cpu_method = MethodSpecification(
    config=splatfacto_cpu_config,
    description="nerfstudio's splatfacto (3D Gaussian splatting) rendered with tttlrm_ns' rasteriser; trains on CPU.",
)

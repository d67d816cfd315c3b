"""nerfstudio's splatfacto running through our rasteriser, so the baseline trains on CPU-only machines.

Stock ``SplatfactoModel`` (nerfstudio 1.1.5) cannot run without CUDA for three reasons, each handled here by a
subclass rather than by patching nerfstudio, gsplat or torchmetrics:

1. ``get_outputs`` calls gsplat's ``rasterization`` (CUDA kernels only) and moves the intrinsics with ``.cuda()``.
   ``SplatfactoCPUModel.get_outputs`` renders the same outputs through ``tttlrm_ns.render.rasterize`` (our C++
   backend on CPU, gsplat on CUDA) with identical arguments (:func:`tttlrm_ns.ns.splat_render.render_camera`, shared
   with the tttLRM model), so densification statistics (``means2d`` gradients / absgrad, ``radii``) feed gsplat's
   ``DefaultStrategy`` exactly as before. The strategy itself is pure torch.
2. ``populate_modules`` builds the SH colours of SfM seed points with ``.cuda()``, and
3. builds torchmetrics' LPIPS, which downloads AlexNet weights at construction. ``SplatfactoCPUModel`` has its own
   ``populate_modules``: splatfacto's, step for step, with the seed colours set on the model's device and LPIPS
   (evaluation only) being :func:`tttlrm_ns.eval.metrics.lpips` (AlexNet from our offline backbone files, built on
   first use). The network is kept out of the module tree, so checkpoints hold Gaussians only
   (``load_state_dict`` drops the ``lpips.*`` keys of stock splatfacto checkpoints).
   ``tests/test_splatfacto_cpu.py`` holds it to the stock method: same parameters, strategy and metrics.

``ns-export gaussian-splat`` keeps working because the model is still a ``SplatfactoModel`` with the same storage.
Register the method with the entry point
``splatfacto-cpu = "tttlrm_ns.ns.splatfacto_cpu:splatfacto_cpu_method"`` (group
``nerfstudio.method_configs``), or ad hoc with ``NERFSTUDIO_METHOD_CONFIGS=splatfacto-cpu=tttlrm_ns.ns.splatfacto_cpu:splatfacto_cpu_method``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Dict, List, Optional, Type, Union

import torch
from torch import Tensor
from torch.nn import Parameter

from nerfstudio.cameras.cameras import Cameras
from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanagerConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.model_components.lib_bilagrid import BilateralGrid
from nerfstudio.models.splatfacto import (RGB2SH, SplatfactoModel, SplatfactoModelConfig, num_sh_bases,
                                          random_quat_tensor)
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.plugins.types import MethodSpecification
from nerfstudio.utils.colors import get_color

from tttlrm_ns.checkpoint_io import allow_numpy_in_weights_only_loads
from tttlrm_ns.eval import metrics
from tttlrm_ns.ns.checkpoint_io import FloatExponentialDecaySchedulerConfig
from tttlrm_ns.ns.splat_render import densify_strategy, render_camera


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
        """nerfstudio 1.1.5's ``SplatfactoModel.populate_modules`` with the changes 2 and 3 of the module docstring.

        The random draws come in the order of earlier versions of this class, which ran splatfacto's own method
        on colour-free seeds: random colours are drawn even when seed colours replace them, so a run's random stream
        (and densification's samples drawn from it) is what it was.
        """
        allow_numpy_in_weights_only_loads()  # for nerfstudio's loaders of our older checkpoints (see that function)
        cfg = self.config
        seeded = self.seed_points is not None and not cfg.random_init
        if seeded:
            means = Parameter(self.seed_points[0])
        else:
            means = Parameter((torch.rand((cfg.num_random, 3)) - 0.5) * cfg.random_scale)
        distances, _ = self.k_nearest_sklearn(means.data, 3)
        # the mean distance to the three nearest neighbours is each Gaussian's initial scale
        avg_dist = torch.from_numpy(distances).mean(dim=-1, keepdim=True)
        scales = Parameter(torch.log(avg_dist.repeat(1, 3)))
        num_points = means.shape[0]
        quats = Parameter(random_quat_tensor(num_points))
        features_dc = Parameter(torch.rand(num_points, 3))
        features_rest = Parameter(torch.zeros((num_points, num_sh_bases(cfg.sh_degree) - 1, 3)))
        if seeded and self.seed_points[1].shape[0] > 0:  # SfM colours in 0..255 (splatfacto's formulas)
            rgb = self.seed_points[1].float() / 255.0
            features_dc = Parameter(RGB2SH(rgb) if cfg.sh_degree > 0 else torch.logit(rgb, eps=1e-10))
        opacities = Parameter(torch.logit(0.1 * torch.ones(num_points, 1)))
        self.gauss_params = torch.nn.ParameterDict({"means": means, "scales": scales, "quats": quats,
                                                    "features_dc": features_dc, "features_rest": features_rest,
                                                    "opacities": opacities})
        self.camera_optimizer = cfg.camera_optimizer.setup(num_cameras=self.num_train_data, device="cpu")

        from pytorch_msssim import SSIM
        from torchmetrics.image import PeakSignalNoiseRatio

        self.psnr = PeakSignalNoiseRatio(data_range=1.0)
        self.ssim = SSIM(data_range=1.0, size_average=True, channel=3)
        # A plain attribute, not a submodule: no state-dict entries, and metrics.lpips follows its inputs' device.
        self.lpips = partial(metrics.lpips, net="alex")
        self.step = 0
        self.crop_box = None
        if cfg.background_color == "random":
            self.background_color = torch.tensor([0.1490, 0.1647, 0.2157])  # the viewer's default, as splatfacto
        else:
            self.background_color = get_color(cfg.background_color)
        if cfg.use_bilateral_grid:
            self.bil_grids = BilateralGrid(num=self.num_train_data, grid_X=cfg.grid_shape[0],
                                           grid_Y=cfg.grid_shape[1], grid_W=cfg.grid_shape[2])
        self.strategy, self.strategy_state = densify_strategy(cfg, self.num_train_data)

    def load_state_dict(self, dict, **kwargs):  # type: ignore[override]
        # Stock splatfacto checkpoints carry the LPIPS network; ours builds it lazily and does not store it.
        dict = {k: v for k, v in dict.items() if not k.startswith("lpips.")}
        return super().load_state_dict(dict, **kwargs)

    def get_outputs(self, camera: Cameras) -> Dict[str, Union[Tensor, List]]:
        """Render one camera: rgb [H, W, 3], depth [H, W, 1] or None, accumulation [H, W, 1], background."""
        if self.config.sh_degree > 0:  # splatfacto's progressive SH: one more band every sh_degree_interval steps
            sh_degree: Optional[int] = min(self.step // self.config.sh_degree_interval, self.config.sh_degree)
        else:
            sh_degree = None  # features_dc holds logit RGB
        return render_camera(self, camera, sh_degree)


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

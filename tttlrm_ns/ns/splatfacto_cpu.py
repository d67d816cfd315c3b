"""nerfstudio's splatfacto running through our rasteriser, so the baseline trains on CPU-only machines.

Stock ``SplatfactoModel`` (nerfstudio 1.1.5) cannot run without CUDA for three reasons, each handled here by a
subclass rather than by patching nerfstudio or gsplat globally:

1. ``get_outputs`` calls gsplat's ``rasterization`` (CUDA kernels only) and moves the intrinsics with ``.cuda()``.
   ``SplatfactoCPUModel.get_outputs`` renders the same outputs through ``tttlrm_ns.render.rasterize`` (our C++
   backend on CPU, gsplat on CUDA) with identical arguments (:func:`tttlrm_ns.ns.splat_render.render_camera`, shared
   with the tttLRM model), so densification statistics (``means2d`` gradients / absgrad, ``radii``) feed gsplat's
   ``DefaultStrategy`` exactly as before. The strategy itself is pure torch.
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
from tttlrm_ns.ns.splat_render import render_camera


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

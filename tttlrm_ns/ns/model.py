"""The tttLRM nerfstudio model: splatfacto's Gaussian storage, filled by the feed-forward prediction.

``TttlrmNSModel`` subclasses nerfstudio's ``SplatfactoModel`` and keeps its storage exactly (one
``gauss_params`` ParameterDict with ``means``, ``scales`` (log), ``quats`` (raw w, x, y, z), ``features_dc``,
``features_rest`` (raw SH, gsplat / INRIA convention) and ``opacities`` (logit)), so nerfstudio's viewer,
``ns-export gaussian-splat``, ``ns-render`` and ``ns-eval`` work unchanged. What differs from splatfacto:

* The Gaussians come from :class:`tttlrm_ns.ns.pipeline.TttlrmPipeline` (:meth:`TttlrmNSModel.set_gaussians`),
  not from SfM points; the model starts empty and ``load_state_dict`` resizes it to a checkpoint's Gaussians.
* Predicted Gaussians are complete: full SH from step 0 (no progressive SH) and no resolution schedule.
  SH are stored at the degree the backbone predicts (``config.sh_degree`` is the highest accepted and becomes the
  stored degree), so ``ns-export gaussian-splat`` writes only the SH the scene has: no ``f_rest_*`` columns at
  degree 0 (17 properties), 3 * ((d + 1)^2 - 1) at degree d (62 at degree 3, splatfacto's layout). Zero-padded
  bands rendered the same but made the .ply up to 3.6x larger with columns of zeros.
* ``model.quats`` (what the exporter reads) is unit-normalised; ``gauss_params["quats"]`` stays raw, as the
  rasterisers normalise anyway, so rendering and refinement see exactly the stored values.
* Rendering goes through :func:`tttlrm_ns.ns.splat_render.render_camera` (shared with splatfacto-cpu), i.e.
  ``tttlrm_ns.render.rasterize`` (gsplat on CUDA, our C++ extension on CPU).
* Densification is off unless ``refine.strategy = "default"``; refinement is configured by :class:`RefineConfig`.
* Evaluation metrics follow the paper's protocol by default (PSNR, scikit-image SSIM, VGG LPIPS; offline weights
  from ``python -m tttlrm_ns.eval.lpips_weights``), configurable back to nerfstudio's (Gaussian SSIM, AlexNet LPIPS).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple, Type, Union

import torch
from torch import Tensor
from torch.nn import Parameter

from nerfstudio.cameras.cameras import Cameras
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.models.splatfacto import SplatfactoModel, SplatfactoModelConfig, num_sh_bases
from nerfstudio.utils.colors import get_color

from tttlrm_ns.checkpoint_io import allow_numpy_in_weights_only_loads
from tttlrm_ns.gaussians import Gaussians
from tttlrm_ns.ns.refine import RefineConfig, RefineController, prepare_gaussians
from tttlrm_ns.ns.splat_render import densify_strategy, render_camera
from tttlrm_ns.sh import C0


@dataclass
class TttlrmNSModelConfig(SplatfactoModelConfig):
    """tttLRM: feed-forward 3D Gaussians from posed images (LaCT test-time-training backbone), splatfacto storage."""

    _target: Type = field(default_factory=lambda: TttlrmNSModel)

    # --- backbone weights and run-time options (used once, at the start of `ns-train`) ----------------------
    checkpoint: Optional[Path] = None
    """tttLRM weights: a .safetensors file from `tttlrm-train` (carries its config) or the official .pt checkpoint."""
    model_preset: Optional[Literal["official_full", "official_ar", "object_level", "small_d256", "tiny"]] = None
    """Architecture of an official .pt checkpoint, which records neither it nor its scan (None: from the released
    file name dl3dv_full.pt / dl3dv_ar.pt, otherwise required). .safetensors files carry their own config."""
    scan: Optional[Literal["full", "ar", "stream"]] = None
    """Override the checkpoint's fast-weight scan: 'full', 'ar' (autoregressive chunks) or 'stream' (causal)."""
    ar_chunk_views: Optional[int] = None
    """Override the number of views per autoregressive update (None: the checkpoint's)."""
    selective_update: Optional[bool] = None
    """Elastic "selective" fast-weight update (paper; strength selective_lambda); None keeps the checkpoint's."""
    selective_lambda: float = 0.05
    """Elastic pull strength when selective_update is on (the paper's 0.05)."""
    bf16: Literal["auto", "on", "off"] = "auto"
    """bfloat16 autocast for the backbone: 'auto' = on for CUDA, off on CPU (slow bf16 matmuls on most CPUs)."""
    compile: bool = False
    """torch.compile each LaCT block (pays off for large inputs on GPU)."""

    # --- rendering, refinement, evaluation -------------------------------------------------------------------
    rasterize_backend: Literal["auto", "gsplat", "cpu", "reference"] = "auto"
    """Rasteriser: 'auto' = gsplat for CUDA tensors, our C++ extension on CPU; 'reference' = dense torch oracle."""
    refine: RefineConfig = field(default_factory=RefineConfig)
    """Optional few-step refinement of the predicted Gaussians (0 steps = pure feed-forward)."""
    eval_ssim: Literal["skimage", "gaussian"] = "skimage"
    """SSIM of `ns-eval`: 'skimage' (paper protocol, 7x7 uniform window) or 'gaussian' (nerfstudio's)."""
    eval_lpips: Literal["vgg", "alex"] = "vgg"
    """LPIPS backbone of `ns-eval`: 'vgg' (paper) or 'alex' (nerfstudio's)."""

    # splatfacto fields with tttLRM defaults
    background_color: Literal["random", "black", "white"] = "white"
    """Background behind the Gaussians; white as in the official renderer (and object renders)."""
    sh_degree: int = 3
    """Highest SH degree accepted from the backbone; the model stores (and exports) the prediction's own degree."""


class TttlrmNSModel(SplatfactoModel):
    """Splatfacto model whose Gaussians are predicted by tttLRM (see the module docstring)."""

    config: TttlrmNSModelConfig

    # --- construction ---------------------------------------------------------------------------------------
    def populate_modules(self) -> None:
        allow_numpy_in_weights_only_loads()  # for nerfstudio's loaders of our older checkpoints (see that function)
        if self.config.use_bilateral_grid:
            raise ValueError("tttLRM does not support the bilateral grid (use_bilateral_grid=False)")
        if not 0 <= self.config.sh_degree <= 3:
            raise ValueError(f"sh_degree must be 0..3, got {self.config.sh_degree}")
        k = num_sh_bases(self.config.sh_degree)
        # set_gaussians lowers config.sh_degree to the prediction's degree (the exporter reads it); the user's bound
        # is kept here so that a later prediction is still checked against it.
        self._max_sh_degree = self.config.sh_degree
        # Empty until the pipeline installs predicted Gaussians or a checkpoint is loaded.
        self.gauss_params = torch.nn.ParameterDict(
            {
                "means": Parameter(torch.zeros(0, 3)),
                "scales": Parameter(torch.zeros(0, 3)),
                "quats": Parameter(torch.zeros(0, 4)),
                "features_dc": Parameter(torch.zeros(0, 3)),
                "features_rest": Parameter(torch.zeros(0, k - 1, 3)),
                "opacities": Parameter(torch.zeros(0, 1)),
            }
        )
        self.camera_optimizer = self.config.camera_optimizer.setup(num_cameras=self.num_train_data, device="cpu")

        from pytorch_msssim import SSIM
        from torchmetrics.image import PeakSignalNoiseRatio

        self.psnr = PeakSignalNoiseRatio(data_range=1.0)  # training metric (splatfacto's get_metrics_dict)
        self.ssim = SSIM(data_range=1.0, size_average=True, channel=3)  # refinement loss (splatfacto's)
        self.step = 0
        self.crop_box = None
        if self.config.background_color == "random":
            self.background_color = torch.tensor([0.1490, 0.1647, 0.2157])  # the viewer's default, as splatfacto
        else:
            self.background_color = get_color(self.config.background_color)
        self.info: Dict = {}
        self.optimizers: Dict = {}
        self.refine_controller = RefineController(self.config.refine)
        self._refine_downscale = 1
        self._setup_strategy()

    def _setup_strategy(self) -> None:
        if self.config.refine.strategy == "none":
            self.strategy = None
            self.strategy_state = None
            return
        self.strategy, self.strategy_state = densify_strategy(self.config, self.num_train_data)

    # --- Gaussians in and out -------------------------------------------------------------------------------
    @torch.no_grad()
    def set_gaussians(self, g: Gaussians, prepare: bool = True) -> None:
        """Install unbatched Gaussians [N, ...] (world frame of the cameras) as the model's parameters.

        With refinement on (``refine.steps > 0``) and ``prepare``, what is installed is refinement's starting set
        (:func:`~tttlrm_ns.ns.refine.prepare_gaussians`: at most ``refine.max_gaussians``, merged by default, and the
        opacity cap), not ``g`` itself; ``prepare=False`` installs ``g`` as given (the raw prediction, e.g. to score
        the feed-forward result of a run that refines afterwards, or a baseline that is never refined).

        The SH are stored at the prediction's degree, which becomes ``config.sh_degree`` (rendering and
        ``ns-export gaussian-splat`` read it); a prediction above the configured degree is refused (dropping bands
        would change the colours).
        """
        if g.means.dim() != 2:
            raise ValueError(f"set_gaussians expects unbatched Gaussians [N, 3], got means {tuple(g.means.shape)}")
        if g.sh_degree > self._max_sh_degree:
            raise ValueError(
                f"the backbone predicts SH degree {g.sh_degree} but the model accepts at most degree "
                f"{self._max_sh_degree}; set --pipeline.model.sh-degree {g.sh_degree}"
            )
        if prepare and self.config.refine.active:  # the refinement's starting set (fewer Gaussians, opacity cap)
            g = prepare_gaussians(g, self.config.refine)
        dev = self.device
        self.config.sh_degree = g.sh_degree
        sh = g.sh.to(dev, torch.float32)
        values = {
            "means": g.means,
            "scales": g.log_scales,
            "quats": g.quats,
            "features_dc": sh[:, 0],
            "features_rest": sh[:, 1:],
            "opacities": g.opacity_logits,
        }
        for name, t in values.items():
            self.gauss_params[name] = Parameter(t.detach().to(dev, torch.float32).contiguous())
        if self.strategy is not None:
            self.strategy_state = self.strategy.initialize_state(scene_scale=1.0)

    def get_gaussians(self) -> Gaussians:
        """A detached copy of the current Gaussians (SH with all stored bands)."""
        return Gaussians.from_splatfacto(self.gauss_params).map(lambda t: t.detach().clone())

    def load_state_dict(self, dict, **kwargs):  # type: ignore[override]
        """Resize ``gauss_params`` to the checkpoint's tensors (count and SH bands), then load."""
        dict = {k: v for k, v in dict.items() if not k.startswith("lpips.")}
        if "means" in dict:  # old nerfstudio layout, as splatfacto accepts
            for p in ("means", "scales", "quats", "features_dc", "features_rest", "opacities"):
                dict[f"gauss_params.{p}"] = dict.pop(p)
        rest = dict.get("gauss_params.features_rest")
        if rest is not None:
            k = rest.shape[1] + 1
            degree = int(round(k**0.5)) - 1
            if (degree + 1) ** 2 != k:
                raise ValueError(
                    f"checkpoint features_rest has {rest.shape[1]} SH coefficients; expected 0, 3, 8 or 15"
                )
            self.config.sh_degree = degree
            self._max_sh_degree = max(self._max_sh_degree, degree)
        for name in list(self.gauss_params.keys()):
            key = f"gauss_params.{name}"
            if key in dict:
                self.gauss_params[name] = Parameter(torch.zeros(dict[key].shape, device=self.device))
        self.step = 0
        return torch.nn.Module.load_state_dict(self, dict, **kwargs)

    # --- what the exporter reads ------------------------------------------------------------------------------
    @property
    def quats(self) -> Tensor:
        """Unit quaternions (w, x, y, z) for ``ns-export gaussian-splat``, which writes ``model.quats`` as is.

        The stored ones are raw network outputs (norms far from 1) and refinement moves them; splat viewers expect
        unit rows. Rendering reads ``gauss_params`` directly (see ``splat_render``), so this changes no image.
        """
        return torch.nn.functional.normalize(self.gauss_params["quats"], dim=-1)

    # colours: always SH, whatever the degree (colour = C0 * dc + 0.5, the degree-0 band with gsplat's offset)
    @property
    def colors(self) -> Tensor:
        return self.features_dc * C0 + 0.5

    @property
    def shs_0(self) -> Tensor:
        return self.features_dc

    # --- no schedules: predicted Gaussians are complete ------------------------------------------------------
    def _get_downscale_factor(self) -> int:
        return self._refine_downscale if self.training else 1

    def get_training_callbacks(
        self, training_callback_attributes: TrainingCallbackAttributes
    ) -> List[TrainingCallback]:
        cbs = [
            TrainingCallback(
                [TrainingCallbackLocation.BEFORE_TRAIN_ITERATION],
                self.step_cb,
                args=[training_callback_attributes.optimizers],
            )
        ]
        if self.config.refine.active:  # learning-rate / resolution schedule and the time budget
            cbs.append(TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], self._refine_before))
            cbs.append(
                TrainingCallback(
                    [TrainingCallbackLocation.AFTER_TRAIN_ITERATION],
                    self.refine_controller.after_step,
                    args=[training_callback_attributes.trainer],
                )
            )
        if self.strategy is not None:
            cbs.append(TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], self.step_post_backward))
        return cbs

    def _refine_before(self, step: int) -> None:
        self._refine_downscale = self.refine_controller.before_step(step, self.optimizers)

    def step_post_backward(self, step: int) -> None:
        if self.strategy is not None:
            super().step_post_backward(step)

    # --- rendering --------------------------------------------------------------------------------------------
    def get_outputs(self, camera: Cameras) -> Dict[str, Union[Tensor, List]]:
        """Render one camera: rgb [H, W, 3], depth [H, W, 1] (eval) or None, accumulation [H, W, 1], background."""
        # Full SH from the first step: predicted Gaussians are complete (no progressive SH).
        return render_camera(self, camera, sh_degree=self.config.sh_degree, pinhole_only=True)

    # --- evaluation -------------------------------------------------------------------------------------------
    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        """PSNR / SSIM / LPIPS of one rendered view (protocol per ``eval_ssim`` / ``eval_lpips``)."""
        from tttlrm_ns.eval import metrics

        gt = self.composite_with_background(self.get_gt_img(batch["image"]), outputs["background"])
        pred = outputs["rgb"]
        g, p = gt.permute(2, 0, 1)[None], pred.permute(2, 0, 1)[None]  # [1, 3, H, W]
        out = {
            "psnr": float(metrics.psnr(p, g)[0]),
            "ssim": float(metrics.ssim(p, g, self.config.eval_ssim)[0]),
            "lpips": float(metrics.lpips(p, g, self.config.eval_lpips)[0]),
        }
        return out, {"img": torch.cat([gt, pred], dim=1)}


__all__ = ["TttlrmNSModel", "TttlrmNSModelConfig"]

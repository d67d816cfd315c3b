"""The ``gaussian`` model kind of ``tttlrm-train``: per-pixel Gaussians (:class:`tttlrm_ns.model.TttlrmModel`).

One micro step (the Long-LRM loop that tttLRM inherits; ``docs/reference_semantics.md`` §7.1):
  images -> model (sequence-parallel shard) -> Gaussians -> all-gather over the sp group -> [free-space filter, an
  option] -> opacity pruning ->
  deferred rasterisation of this rank's target views -> MSE + LPIPS (+ opacity, depth, silhouette) -> backward.
Every term is a partial sum over a global count (:mod:`tttlrm_ns.train.losses`), so the sp ranks' values add up to
the single-process loss.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import torch

from tttlrm_ns.gaussians import prune
from tttlrm_ns.model import TttlrmModel
from tttlrm_ns.model.tttlrm import free_space_keep, own_view_depth
from tttlrm_ns.model.checkpoint import check_state_dict, expected_shapes, load_any

from . import parallel as par
from .checkpoint import export_model, history_metadata
from .config import TrainConfig
from .losses import depth_partial, log_depth_partial, mask_partial, mse_partial, opacity_partial, perceptual_partial
from .plugin import TERMS, MicroStepResult, StepRunner, sample_seed
from .render import render_views


class GaussianKind:
    """:class:`tttlrm_ns.train.plugin.ModelKind` of the Gaussian tttLRM model."""

    name = "gaussian"

    def build(self, cfg: TrainConfig) -> TttlrmModel:
        cfg.render.free_space.check()
        if cfg.render.free_space.enabled and cfg.parallel.sp_size > 1:
            raise ValueError("render.free_space needs every view's depth on one rank: use it with parallel.sp_size 1 "
                             f"(got sp_size {cfg.parallel.sp_size}), or set --render.free-space.tolerance 0")
        return TttlrmModel(cfg.model)

    def init_from(self, model: torch.nn.Module, path: str, cfg: TrainConfig, log: Callable[[str], None]) -> None:
        """All weights from one of our ``.safetensors`` files or an official ``.pt`` (shapes checked first)."""
        src = load_any(path, cfg=cfg.model)
        state = src.state_dict()
        check_state_dict(state, expected_shapes(model), source=path)
        model.load_state_dict(state, strict=True)
        log(f"initial weights from {path}")

    def micro_step(self, runner: StepRunner, batch: dict, scale: float) -> MicroStepResult:
        """Forward + backward of one micro-batch (see the module docstring)."""
        cfg, info, dev = runner.cfg, runner.info, runner.info.device
        images = batch["images"].to(dev, non_blocking=True)  # [b, V_loc, 3, H, W]
        b, v_loc, _, h, w = images.shape
        out = runner.ddp_model(images, batch["c2w"].to(dev), batch["fxfycxcy"].to(dev), sp_group=info.sp_group)
        gauss = par.gather_gaussians(out.gaussians, info)  # [b, N, ...], N = V * H * W of the whole sample
        v_all, t_loc = v_loc * info.sp_size, batch["target_images"].shape[1]
        t_all = t_loc * info.sp_size
        lw = cfg.loss
        totals = {k: torch.zeros((), device=dev) for k in TERMS}
        preview = None
        for i in range(b):  # micro-batches are small (usually 1); every sample has its own pruning and cameras
            step, slot = batch["key"][i][0], batch["key"][i][1]
            gen = torch.Generator().manual_seed(sample_seed(cfg.seed, step, slot))  # same on all sp ranks
            sample = gauss[i]
            if cfg.render.free_space.enabled:  # as at inference: drop what other views see through, then prune
                c2w_i, k_i = batch["c2w"][i].to(dev), batch["fxfycxcy"][i].to(dev)
                keep = free_space_keep(own_view_depth(sample.means.detach(), c2w_i), c2w_i, k_i, h, w,
                                       cfg.model.patch_size, cfg.render.free_space)
                sample = sample.index(keep.nonzero()[:, 0])
            kept = prune(sample, cfg.render.prune, v_all, gen)
            target = batch["target_images"][i].to(dev)  # [T, 3, s*H, s*W] (data.target_scale)
            render = render_views(kept, batch["target_c2w"][i].to(dev), batch["target_fxfycxcy"][i].to(dev),
                                  target.shape[-2], target.shape[-1], cfg, runner.rasterize_fn)
            totals["mse"] = totals["mse"] + mse_partial(render, target, t_all)
            if runner.lpips is not None:
                totals["perceptual"] = totals["perceptual"] + perceptual_partial(runner.lpips, render, target, t_all)
            if lw.opacity > 0:
                totals["opacity"] = totals["opacity"] + opacity_partial(out.gaussians.opacity_logits[i], v_all * h * w)
            if lw.depth > 0:
                depth_fn = log_depth_partial if lw.depth_mode == "log_depth" else depth_partial
                totals["depth"] = totals["depth"] + depth_fn(
                    out.gaussians.means[i], batch["c2w"][i].to(dev), batch["depth"][i].to(dev),
                    cfg.model.patch_size, v_all * h * w)
            if lw.mask > 0:
                totals["mask"] = totals["mask"] + mask_partial(
                    out.gaussians.opacity_logits[i], batch["depth"][i].to(dev), cfg.model.patch_size, v_all * h * w)
            if i == 0:
                preview = (render[0].detach().clamp(0, 1).cpu(), target[0].cpu())
        loss = sum(getattr(lw, k) * totals[k] for k in TERMS) / b  # each term's weight is the LossConfig field
        (loss * scale).backward()
        terms = {k: float(totals[k].detach()) / b for k in TERMS}
        terms["loss"] = float(loss.detach())
        return terms, preview

    def export(self, model: torch.nn.Module, path: Path, step: int, cfg: TrainConfig,
               history: Optional[list] = None) -> str:
        """The model's own ``.safetensors`` + config format (what ``ns-train tttlrm`` loads)."""
        return str(export_model(model, path, history_metadata(history or [], step, cfg), config=cfg))


__all__ = ["GaussianKind"]

"""The training loop: one script from one CPU process to many GPUs (torchrun).

Per optimiser step (the Long-LRM loop that tttLRM inherits; ``docs/reference_semantics.md`` §7.1): ``accum``
micro steps, each
  images -> model (sequence-parallel shard) -> Gaussians -> all-gather over the sp group -> opacity pruning ->
  deferred rasterisation of this rank's target views -> MSE + LPIPS (+ opacity, depth, silhouette) -> backward;
then gradient reduction, non-finite handling (nan -> 0, +-inf -> +-1e-3), global-norm clipping at
``grad_clip_norm``, and the optimiser step -- skipped (and counted) when the pre-clip norm exceeds
``skip_grad_norm`` or the loss is not finite. The scheduler steps every optimiser step, skipped or not.

Only rank 0 logs and writes; every rank computes identically-keyed samples (see :mod:`tttlrm_ns.train.data`).
"""

from __future__ import annotations

import contextlib
import json
import math
import resource
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor

from tttlrm_ns.conventions import fxfycxcy_to_K
from tttlrm_ns.gaussians import Gaussians, prune
from tttlrm_ns.render.splat import render_gaussians

from . import parallel as par
from .checkpoint import (export_model, history_metadata, history_of, load_latest, rng_state, save_checkpoint,
                         set_rng_state)
from .config import TrainConfig, config_to_dict, dump_config
from .data import RankSlots, StepBatchSampler, TrainDataset, make_loader, tokens_per_sample
from .losses import (depth_partial, log_depth_partial, mask_partial, mse_partial, opacity_partial, perceptual_lpips,
                     perceptual_partial)

TERMS = ("mse", "perceptual", "opacity", "depth", "mask")


# ---------------------------------------------------------------------------------------------------------------
# optimiser and schedule


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on tensors with >= 2 dims (incl. the initial fast weights), none on norms and biases."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_lambda(warmup: int, total: int, min_ratio: float = 0.0) -> Callable[[int], float]:
    """Linear warm-up from 0, then cosine decay to ``min_ratio`` at ``total`` (transformers' schedule)."""

    def f(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


def sanitize_gradients(params: list[Tensor]) -> int:
    """nan -> 0, +inf -> 1e-3, -inf -> -1e-3 in place (Long-LRM); returns how many entries were non-finite."""
    bad = 0
    for p in params:
        if p.grad is not None:
            finite = torch.isfinite(p.grad)
            if not bool(finite.all()):
                bad += int((~finite).sum())
                torch.nan_to_num_(p.grad, nan=0.0, posinf=1e-3, neginf=-1e-3)
    return bad


# ---------------------------------------------------------------------------------------------------------------
# rendering


def resolve_rasterize(backend: str) -> Callable:
    try:
        from tttlrm_ns.render import rasterize
    except ImportError as e:
        raise ImportError(f"the trainer renders through tttlrm_ns.render.rasterize, which cannot be imported ({e}); "
                          "build the CPU rasteriser or install gsplat for CUDA") from e
    if backend == "auto":
        return rasterize
    return lambda *a, **k: rasterize(*a, backend=backend, **k)


def render_views(g: Gaussians, c2w: Tensor, fxfycxcy: Tensor, height: int, width: int, cfg: TrainConfig,
                 rasterize_fn: Callable) -> Tensor:
    """Render unbatched Gaussians [N, ...] into T views (``c2w`` [T, 4, 4], ``fxfycxcy`` [T, 4]) -> [T, 3, H, W].

    The run's render settings (``cfg.render``, ``cfg.data.background``) through
    :func:`tttlrm_ns.render.splat.render_gaussians`: the official renderer's fp32, classic rasterisation and
    background colour. Cameras get no gradient.
    """
    r = cfg.render
    bg = torch.tensor(cfg.data.background, dtype=torch.float32, device=c2w.device)  # [3]
    out = render_gaussians(g, c2w.detach(), fxfycxcy_to_K(fxfycxcy.float()).detach(), width, height, background=bg,
                           near_plane=r.near_plane, far_plane=r.far_plane, eps2d=r.eps2d, backend=r.backend,
                           rasterize_fn=rasterize_fn, deferred=r.deferred, deferred_patch=r.deferred_patch)
    return out.rgb.permute(0, 3, 1, 2)


# ---------------------------------------------------------------------------------------------------------------
# trainer


@dataclass
class TrainSummary:
    steps: int = 0
    """Optimiser steps completed (including skipped ones) at the end of the run."""
    skipped_grad_norm: int = 0
    skipped_nonfinite: int = 0
    bad_samples: int = 0
    nonfinite_grad_entries: int = 0
    final_loss: float = float("nan")
    history: list[dict[str, float]] = field(default_factory=list)
    wall_s: float = 0.0
    tokens_per_s: float = 0.0
    peak_memory_mb: float = 0.0
    checkpoint: Optional[str] = None
    export: Optional[str] = None


def _sample_seed(seed: int, step: int, slot: int) -> int:
    return int(np.random.SeedSequence([seed, step, slot, 0x7072756E65]).generate_state(1)[0])


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class Trainer:
    """Build everything from a :class:`TrainConfig` and run ``optim.max_steps`` steps (``stop_at_step`` earlier).

    Args:
        rasterize_fn: renderer with ``tttlrm_ns.render.rasterize``'s signature (default: that function).
        info: an existing process layout (tests); default: from the environment.
        stop_at_step: overrides ``cfg.stop_at_step``.
        log: message sink (default: rich console on rank 0).
    """

    def __init__(self, cfg: TrainConfig, rasterize_fn: Optional[Callable] = None,
                 info: Optional[par.DistInfo] = None, stop_at_step: Optional[int] = None,
                 log: Optional[Callable[[str], None]] = None):
        self.info = info or par.init_distributed(cfg.parallel)
        self.cfg = cfg.validate(self.info.world_size)
        self.stop_at_step = stop_at_step if stop_at_step is not None else cfg.stop_at_step
        self.rasterize_fn = rasterize_fn or resolve_rasterize(cfg.render.backend)
        self.out = Path(cfg.output_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self._console = None
        self._log_fn = log
        info, dev = self.info, self.info.device

        from tttlrm_ns.model import TttlrmModel

        torch.manual_seed(cfg.seed)  # identical initial weights on every rank (also broadcast below)
        if cfg.model_kind == "triplane":
            from .triplane import build_model

            self.model = build_model(cfg).to(dev)
        else:
            self.model = TttlrmModel(cfg.model).to(dev)
        self.init_history: list = []  # training stages behind the initial weights (exported as train_history)
        found = load_latest(self.ckpt_dir, log=self.log) if cfg.resume else None
        if cfg.checkpoint.init_from and found is None:  # a resumed run's weights come from its checkpoint only
            self._init_weights(cfg.checkpoint.init_from)
            self.init_history = history_of(cfg.checkpoint.init_from)
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(param_groups(self.model, o.weight_decay), lr=o.lr, betas=tuple(o.betas),
                                           fused=dev.type == "cuda")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(o.warmup_steps, o.max_steps, o.min_lr_ratio))
        # bf16 needs no loss scaling; the scaler is kept (disabled) so checkpoints have one layout for fp16 too.
        self.scaler = torch.amp.GradScaler(dev.type, enabled=False)
        self.lpips = perceptual_lpips(cfg.loss.perceptual_net).to(dev) if cfg.loss.perceptual > 0 else None

        self.summary = TrainSummary()
        self.start_step = 0
        if cfg.resume:
            self._resume(found)
        if info.sp_size > 1:
            par.broadcast_parameters(self.model, info)
        self.ddp_model = par.wrap_data_parallel(self.model, info)

        self.accum = o.batch_size // (info.dp_size * o.micro_batch_size)
        self.slots = RankSlots(info.dp_rank, info.dp_size, o.micro_batch_size, self.accum)
        self.dataset = TrainDataset(cfg.data, cfg.seed, cfg.model.patch_size, info.sp_rank, info.sp_size)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self._stop_requested = False

    # --- helpers ------------------------------------------------------------------------------------------------
    def log(self, msg: str) -> None:
        if self._log_fn is not None:
            self._log_fn(msg)
        elif self.info.is_main:
            from rich.console import Console

            self._console = self._console or Console(stderr=True)
            self._console.log(msg)

    def _init_weights(self, path: str) -> None:
        if self.cfg.model_kind == "triplane":
            from .triplane import init_from

            return init_from(self.model, path, self.log)
        from tttlrm_ns.model.checkpoint import check_state_dict, expected_shapes, load_any

        src = load_any(path, cfg=self.cfg.model)
        state = src.state_dict()
        check_state_dict(state, expected_shapes(self.model), source=path)
        self.model.load_state_dict(state, strict=True)
        self.log(f"initial weights from {path}")

    def _resume(self, found) -> None:
        if found is None:
            self.log(f"--resume: no checkpoint in {self.ckpt_dir}; starting from step 0")
            return
        path, payload = found
        self.model.load_state_dict(payload["model"], strict=True)
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.scaler.load_state_dict(payload["scaler"])
        rngs = payload["rng"]
        if len(rngs) == self.info.world_size:
            set_rng_state(rngs[self.info.rank])
        else:
            self.log(f"checkpoint has RNG states of {len(rngs)} ranks, this run has {self.info.world_size}; "
                     "using rank 0's")
            set_rng_state(rngs[0])
        self.start_step = int(payload["step"])
        if "init_history" in payload:  # read when the run started: the init file may have been replaced since
            self.init_history = json.loads(payload["init_history"])
        for k in ("skipped_grad_norm", "skipped_nonfinite", "bad_samples", "nonfinite_grad_entries"):
            setattr(self.summary, k, int(payload["counters"].get(k, 0)))
        self.log(f"resumed from {path} at step {self.start_step}")

    def _save(self, step: int) -> Optional[Path]:
        rngs = par.all_gather_objects(rng_state(), self.info)  # collective: every rank takes part
        path = None
        if self.info.is_main:
            s = self.summary
            payload = {
                "step": step,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": rngs,
                "data_position": {"next_step": step, "seed": self.cfg.seed},
                "counters": {k: getattr(s, k) for k in ("skipped_grad_norm", "skipped_nonfinite", "bad_samples",
                                                        "nonfinite_grad_entries")},
                "config": config_to_dict(self.cfg),
                "world_size": self.info.world_size,
                "init_history": json.dumps(self.init_history),
            }
            path = save_checkpoint(self.ckpt_dir, step, payload, self.cfg.checkpoint.keep_last)
            self.summary.checkpoint = str(path)
        par.barrier(self.info)
        return path

    # --- one micro step -----------------------------------------------------------------------------------------
    def micro_step(self, batch: dict, scale: float) -> tuple[dict[str, float], Optional[tuple[Tensor, Tensor]]]:
        """Forward + backward of one micro-batch; returns this rank's weighted partial terms and a preview pair."""
        cfg, info, dev = self.cfg, self.info, self.info.device
        if cfg.model_kind == "triplane":
            from .triplane import triplane_micro_step

            return triplane_micro_step(self, batch, scale, _sample_seed)
        images = batch["images"].to(dev, non_blocking=True)  # [b, V_loc, 3, H, W]
        b, v_loc, _, h, w = images.shape
        out = self.ddp_model(images, batch["c2w"].to(dev), batch["fxfycxcy"].to(dev), sp_group=info.sp_group)
        gauss = par.gather_gaussians(out.gaussians, info)  # [b, N, ...], N = V * H * W of the whole sample
        v_all, t_loc = v_loc * info.sp_size, batch["target_images"].shape[1]
        t_all = t_loc * info.sp_size
        lw = cfg.loss
        totals = {k: torch.zeros((), device=dev) for k in TERMS}
        preview = None
        for i in range(b):  # micro-batches are small (usually 1); every sample has its own pruning and cameras
            step, slot = batch["key"][i][0], batch["key"][i][1]
            gen = torch.Generator().manual_seed(_sample_seed(cfg.seed, step, slot))  # same on all sp ranks
            kept = prune(gauss[i], cfg.render.prune, v_all, gen)
            target = batch["target_images"][i].to(dev)  # [T, 3, s*H, s*W] (data.target_scale)
            render = render_views(kept, batch["target_c2w"][i].to(dev), batch["target_fxfycxcy"][i].to(dev),
                                  target.shape[-2], target.shape[-1], cfg, self.rasterize_fn)
            totals["mse"] = totals["mse"] + mse_partial(render, target, t_all)
            if self.lpips is not None:
                totals["perceptual"] = totals["perceptual"] + perceptual_partial(self.lpips, render, target, t_all)
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

    # --- one optimiser step -------------------------------------------------------------------------------------
    def accumulate_step(self, loader) -> tuple[dict[str, float], Optional[tuple[Tensor, Tensor]], int]:
        """Run the ``accum`` micro steps of one optimiser step and reduce the gradients over the ranks.

        Returns (step loss terms: sum over sp ranks, mean over dp groups, plus ``rank_loss``; a preview pair;
        the number of input views). Afterwards every rank holds the full, averaged gradient in ``.grad``.
        """
        info = self.info
        acc = {k: 0.0 for k in (*TERMS, "loss")}
        preview = None
        bad = 0
        n_in = 0
        for m in range(self.accum):
            batch = next(loader)
            for msg in batch["skipped"]:
                self.log(f"[yellow]skipped bad sample[/] (rank {info.rank}): {msg}")
            bad += len(batch["skipped"])
            n_in = batch["images"].shape[1] * info.sp_size
            last = m == self.accum - 1
            no_sync = not last and hasattr(self.ddp_model, "no_sync")
            ctx = self.ddp_model.no_sync() if no_sync else contextlib.nullcontext()
            with ctx:  # DDP all-reduces only in the last micro step's backward
                terms, pv = self.micro_step(batch, 1.0 / self.accum)
            for k, v in terms.items():
                acc[k] += v / self.accum
            preview = pv if preview is None else preview
        par.reduce_gradients(self.params, info)
        red = par.all_reduce_sum(torch.tensor([acc[k] for k in (*TERMS, "loss")] + [float(bad)],
                                              dtype=torch.float64), info)
        vals = {k: float(red[j]) / info.dp_size for j, k in enumerate((*TERMS, "loss"))}
        vals["rank_loss"] = acc["loss"]
        self.summary.bad_samples += int(red[-1])
        return vals, preview, n_in

    def optimizer_step(self, loss_sum: float) -> dict[str, float]:
        """Sanitise, clip, maybe skip, step (gradients already reduced). ``loss_sum``: this rank's loss share."""
        info, o = self.info, self.cfg.optim
        flags = par.all_reduce_sum(torch.tensor([0.0 if math.isfinite(loss_sum) else 1.0]), info)
        loss_finite = float(flags[0]) == 0.0
        nonfinite = sanitize_gradients(self.params) if o.nonfinite_grad == "sanitize" else 0
        grads_finite = all(bool(torch.isfinite(p.grad).all()) for p in self.params if p.grad is not None)
        norm = float(torch.nn.utils.clip_grad_norm_(self.params, o.grad_clip_norm if o.grad_clip_norm > 0 else
                                                    float("inf")))
        skipped = ""
        if not loss_finite or not grads_finite or not math.isfinite(norm):
            skipped = "nonfinite"
            self.summary.skipped_nonfinite += 1
        elif o.skip_grad_norm > 0 and norm > o.skip_grad_norm:
            skipped = "grad_norm"
            self.summary.skipped_grad_norm += 1
        self.summary.nonfinite_grad_entries += nonfinite
        lr = self.scheduler.get_last_lr()[0]
        if not skipped:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()  # also on skipped steps (Long-LRM)
        return {"grad_norm": norm, "lr": lr, "skipped": float(bool(skipped))}

    # --- the run ------------------------------------------------------------------------------------------------
    def batches(self, start_step: int, end_step: int):
        """Iterator over this rank's micro-batches of steps ``start_step .. end_step - 1`` (worker processes)."""
        sampler = StepBatchSampler(self.cfg.data, self.cfg.seed, self.slots, start_step, end_step)
        return iter(make_loader(self.dataset, sampler, self.cfg.data.num_workers))

    def _request_stop(self, signum, frame) -> None:  # noqa: ARG002
        self._stop_requested = True

    def run(self) -> TrainSummary:
        cfg, info, o = self.cfg, self.info, self.cfg.optim
        end = o.max_steps if self.stop_at_step is None else min(o.max_steps, self.stop_at_step)
        writer = None
        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            dump_config(cfg, self.out / "config.yaml")
            if cfg.logging.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=self.start_step or None)
        old_handler = None
        try:
            old_handler = signal.signal(signal.SIGTERM, self._request_stop)
        except ValueError:  # not the main thread (e.g. embedded use): no preemption handling
            pass
        loader = self.batches(self.start_step, end)
        progress = self._progress(end) if info.is_main and cfg.logging.progress else None
        metrics_file = (self.out / "metrics.jsonl").open("a") if info.is_main else None
        t0 = time.perf_counter()
        tokens_done = 0
        step = self.start_step
        last_save = None
        try:
            if progress is not None:
                progress.start()
                task = progress.add_task("train", total=end, completed=self.start_step, loss="-", extra="",
                                         rate="- it/s")
            while step < end:
                t_step = time.perf_counter()
                vals, preview, n_in = self.accumulate_step(loader)
                stats = self.optimizer_step(vals["rank_loss"])
                if self.summary.bad_samples > cfg.data.max_bad_samples:
                    raise RuntimeError(f"{self.summary.bad_samples} bad samples skipped (data.max_bad_samples="
                                       f"{cfg.data.max_bad_samples}); the data set looks broken")
                step += 1
                dt = time.perf_counter() - t_step
                step_tokens = o.batch_size * tokens_per_sample(n_in, cfg.data.height, cfg.data.width,
                                                               cfg.model.patch_size)
                tokens_done += step_tokens
                rec = {"step": step, **{k: vals[k] for k in (*TERMS, "loss")}, **stats, "step_time_s": dt,
                       "tokens_per_s": step_tokens / dt, "tokens_per_s_per_rank": step_tokens / dt / info.world_size,
                       "n_in": n_in, "peak_memory_mb": _peak_memory_mb(info.device)}
                self.summary.history.append(rec)
                self.summary.final_loss = vals["loss"]
                if info.is_main:
                    self._log_step(rec, writer, metrics_file, preview, step)
                    if progress is not None:
                        progress.update(task, completed=step, loss=f"{vals['loss']:.4f}", rate=f"{1 / dt:.2f} it/s",
                                        extra=f"mse {vals['mse']:.4f} perc {vals['perceptual']:.3f} "
                                              f"|g| {stats['grad_norm']:.2f} {rec['tokens_per_s']:.0f} tok/s")
                stop = self._stop_requested
                budget = cfg.stop_after_minutes
                time_up = budget is not None and time.perf_counter() - t0 >= 60.0 * budget
                stop = stop or time_up
                if info.world_size > 1:
                    stop = bool(par.all_reduce_sum(torch.tensor([float(stop)]), info)[0] > 0)
                if step % cfg.checkpoint.every == 0 or step == end or stop:
                    last_save = self._save(step)
                if stop:
                    why = "SIGTERM" if self._stop_requested else f"stop_after_minutes={cfg.stop_after_minutes}"
                    self.log(f"stop requested ({why}): checkpoint at step {step} written, exiting")
                    break
        finally:
            if progress is not None:
                progress.stop()
            if metrics_file is not None:
                metrics_file.close()
            if writer is not None:
                writer.close()
            if old_handler is not None:
                signal.signal(signal.SIGTERM, old_handler)
        s = self.summary
        s.steps = step
        s.wall_s = time.perf_counter() - t0
        s.tokens_per_s = tokens_done / max(s.wall_s, 1e-9)
        s.peak_memory_mb = _peak_memory_mb(info.device)
        if last_save is not None:
            s.checkpoint = str(last_save)
        if step >= o.max_steps and cfg.checkpoint.export and info.is_main and cfg.model_kind == "triplane":
            from .triplane import export as export_triplane

            s.export = export_triplane(self.model, self.out / "model.safetensors", step, cfg, self.init_history)
        elif step >= o.max_steps and cfg.checkpoint.export and info.is_main:
            s.export = str(export_model(self.model, self.out / "model.safetensors",
                                        history_metadata(self.init_history, step, cfg), config=cfg))
        par.barrier(info)
        if info.is_main:
            self._print_summary()
            (self.out / "summary.json").write_text(json.dumps(
                {k: v for k, v in s.__dict__.items() if k != "history"}, indent=2))
        return s

    # --- logging ------------------------------------------------------------------------------------------------
    def _progress(self, total: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]}"), TextColumn("loss {task.fields[loss]}"),
                        TextColumn("{task.fields[extra]}"), TimeRemainingColumn(), transient=False)

    def _log_step(self, rec: dict, writer, metrics_file, preview, step: int) -> None:
        lg = self.cfg.logging
        if step % lg.every == 0 or step == 1:
            metrics_file.write(json.dumps(rec) + "\n")
            metrics_file.flush()
            if writer is not None:
                for k in (*TERMS, "loss", "grad_norm", "lr", "skipped", "tokens_per_s", "tokens_per_s_per_rank"):
                    writer.add_scalar(f"train/{k}", rec[k], step)
                writer.add_scalar("train/skipped_grad_norm_total", self.summary.skipped_grad_norm, step)
        if writer is not None and preview is not None and lg.preview_every and step % lg.preview_every == 0:
            writer.add_image("preview/render_vs_target", torch.cat(preview, dim=-1), step)

    def _print_summary(self) -> None:
        from rich.console import Console
        from rich.table import Table

        s = self.summary
        t = Table(title="tttLRM training summary", show_header=False)
        rows = [("steps", s.steps), ("final loss", f"{s.final_loss:.5f}"),
                ("skipped (grad norm > %g)" % self.cfg.optim.skip_grad_norm, s.skipped_grad_norm),
                ("skipped (non-finite)", s.skipped_nonfinite), ("bad samples skipped", s.bad_samples),
                ("wall time", f"{s.wall_s:.1f} s"), ("tokens/s (all ranks)", f"{s.tokens_per_s:.0f}"),
                ("peak memory (rank 0)", f"{s.peak_memory_mb:.0f} MiB"), ("checkpoint", s.checkpoint),
                ("export", s.export)]
        for k, v in rows:
            t.add_row(k, str(v))
        if self._log_fn is None:
            Console(stderr=True).print(t)
        else:
            self._log_fn("; ".join(f"{k}: {v}" for k, v in rows))


def train(cfg: TrainConfig, **kwargs) -> TrainSummary:
    """Run a training job (rank layout from the environment); tears the process group down if it made one."""
    trainer = Trainer(cfg, **kwargs)
    try:
        return trainer.run()
    finally:
        par.shutdown(trainer.info)


__all__ = ["TrainSummary", "Trainer", "lr_lambda", "param_groups", "render_views", "sanitize_gradients", "train"]

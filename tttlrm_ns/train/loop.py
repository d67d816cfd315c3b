"""The training loop: one script from one CPU process to many GPUs (torchrun).

Per optimiser step (the Long-LRM loop that tttLRM inherits; ``docs/reference_semantics.md`` §7.1): ``accum``
micro steps, each a forward + backward by the run's model kind (``cfg.model_kind``, looked up once in
:mod:`tttlrm_ns.train.kinds`; e.g. the Gaussian model's images -> Gaussians -> pruning -> rasterised target views ->
MSE + LPIPS, :mod:`tttlrm_ns.train.gaussian`), then gradient reduction, non-finite handling (nan -> 0,
+-inf -> +-1e-3), global-norm clipping at ``grad_clip_norm``, and the optimiser step -- skipped (and counted) when
the pre-clip norm exceeds ``skip_grad_norm`` or the loss is not finite. The scheduler steps every optimiser step,
skipped or not.

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

import torch
from torch import Tensor

from . import parallel as par
from .checkpoint import history_of, load_latest, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig, config_to_dict, dump_config
from .data import RankSlots, StepBatchSampler, TrainDataset, make_loader, tokens_per_sample
from .kinds import get_kind
from .losses import perceptual_lpips
from .plugin import TERMS
from .render import resolve_rasterize


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


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class Trainer:
    """Build everything from a :class:`TrainConfig` and run ``optim.max_steps`` steps (``stop_at_step`` earlier).

    What differs between model kinds (build, initial weights, the micro step's loss, export) is asked of
    ``self.kind`` (:class:`tttlrm_ns.train.plugin.ModelKind`); the rest, checkpoints included, is the same for all.

    Args:
        rasterize_fn: renderer with ``tttlrm_ns.render.rasterize``'s signature (default: that function), for the
            kinds that rasterise Gaussians.
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
        self.kind = get_kind(cfg.model_kind)  # build, initial weights, loss and export of this kind of model

        torch.manual_seed(cfg.seed)  # identical initial weights on every rank (also broadcast below)
        self.model = self.kind.build(cfg).to(dev)
        self.init_history: list = []  # training stages behind the initial weights (exported as train_history)
        found = load_latest(self.ckpt_dir, log=self.log) if cfg.resume else None
        if cfg.checkpoint.init_from and found is None:  # a resumed run's weights come from its checkpoint only
            self.kind.init_from(self.model, cfg.checkpoint.init_from, cfg, self.log)
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
        """Forward + backward of one micro-batch by the model kind; returns this rank's weighted partial terms (every
        name of ``TERMS`` plus ``loss``) and a preview pair (render, target) [3, h, w] or None."""
        return self.kind.micro_step(self, batch, scale)

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
        if step >= o.max_steps and cfg.checkpoint.export and info.is_main:
            s.export = self.kind.export(self.model, self.out / "model.safetensors", step, cfg, self.init_history)
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


__all__ = ["TrainSummary", "Trainer", "lr_lambda", "param_groups", "sanitize_gradients", "train"]

"""Process layout: torch.distributed from the environment, data parallel (DDP) and sequence parallel groups.

Ranks ``[k * sp, (k + 1) * sp)`` form sequence-parallel group ``k`` (they share one scene, each holding a contiguous
share of its views); ranks with the same position in their sp group form a data-parallel group. ``world = dp * sp``.

Gradient semantics. Every rank's loss is its *partial* term of its group's loss (partial sums divided by global
counts), so the group's loss is the sum over its ranks. The model's fast-weight all-reduce and the Gaussian
all-gather are autograd collectives whose backward passes route gradients across ranks; afterwards each rank
holds the gradient of its own partial term w.r.t. the replicated parameters, and the full gradient is their
sum. Data parallelism averages full gradients over the dp groups. Hence:

* ``sp = 1``: plain DDP (mean over ranks), accumulation steps under ``no_sync``;
* ``sp > 1``: one flat all-reduce (sum over the world, divided by ``dp``) after the last micro step.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Iterable, Optional

import torch
import torch.distributed as dist
from torch import Tensor

from tttlrm_ns.gaussians import Gaussians

from .config import ParallelConfig


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    sp_rank: int = 0
    sp_size: int = 1
    dp_rank: int = 0
    dp_size: int = 1
    sp_group: Optional[object] = None
    """Process group of this rank's sequence-parallel group (None when sp_size == 1)."""
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _pick_device(cfg: ParallelConfig, local_rank: int) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("parallel.device='cuda' but CUDA is not available; use parallel.device=cpu")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(cfg: ParallelConfig) -> DistInfo:
    """Set up ranks from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``...).

    Without those variables (plain ``python -m tttlrm_ns.train``) this is a single process and nothing is
    initialised. An already initialised default group (tests) is reused.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    already = dist.is_available() and dist.is_initialized()
    if already:
        world = dist.get_world_size()
    rank = dist.get_rank() if already else int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    device = _pick_device(cfg, local_rank)
    sp = cfg.sp_size
    if sp < 1 or world % sp:
        raise ValueError(f"world size {world} is not a multiple of parallel.sp_size={sp}")
    info = DistInfo(rank=rank, world_size=world, local_rank=local_rank, sp_size=sp, sp_rank=rank % sp,
                    dp_size=world // sp, dp_rank=rank // sp, device=device)
    if world == 1:
        return info
    if not already:
        backend = cfg.backend if cfg.backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
        info.initialized_here = True
    if sp > 1:
        # new_group must be called by every rank for every group, in the same order.
        for k in range(world // sp):
            g = dist.new_group(list(range(k * sp, (k + 1) * sp)))
            if k == info.dp_rank:
                info.sp_group = g
    return info


def shutdown(info: DistInfo) -> None:
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def wrap_data_parallel(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """DDP when data parallel without sequence parallelism; the bare module otherwise (see module docstring)."""
    if info.world_size > 1 and info.sp_size == 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [info.device.index] if info.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)
    return model


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, torch.nn.Module) else model


def broadcast_parameters(model: torch.nn.Module, info: DistInfo) -> None:
    """Make every rank start from rank 0's weights (DDP does this itself; the sp path needs it explicitly)."""
    if info.world_size > 1:
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, src=0)


def reduce_gradients(params: Iterable[Tensor], info: DistInfo) -> None:
    """Sequence-parallel gradient reduction: sum over the world (partial grads of sp ranks and the dp groups'
    full grads), divided by ``dp_size`` (mean over data-parallel groups). One flat buffer, one collective."""
    if info.world_size == 1 or info.sp_size == 1:
        return  # DDP (or nothing) already did it
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= info.dp_size
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


class _AllGatherCat(torch.autograd.Function):
    """Concatenate a tensor from every rank of ``group`` along ``dim``; backward sums the gradient over the group
    and returns this rank's slice.

    ``torch.distributed.nn.functional.all_gather`` cannot be used: on gloo its backward emulates reduce-scatter
    with ``scatter(src=i)`` calls that treat the group rank ``i`` as a global rank, which fails for every
    sub-group that does not start at global rank 0 (dp > 1 with sp > 1).
    """

    @staticmethod
    def forward(ctx, t: Tensor, group, dim: int) -> Tensor:
        t = t.contiguous()
        parts = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, t, group=group)
        ctx.group, ctx.dim, ctx.size = group, dim, t.shape[dim]
        return torch.cat(parts, dim=dim)

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)  # every rank's loss term contributes to every gathered slice
        r = dist.get_rank(ctx.group)
        return grad.narrow(ctx.dim, r * ctx.size, ctx.size), None, None


def gather_gaussians(g: Gaussians, info: DistInfo) -> Gaussians:
    """Concatenate the sp group's Gaussians along N in rank order (autograd: gradients return to their rank)."""
    if info.sp_size == 1:
        return g

    def gather(t: Tensor, n_axis: int) -> Tensor:
        return _AllGatherCat.apply(t, info.sp_group, n_axis)

    return Gaussians(means=gather(g.means, g.means.dim() - 2), sh=gather(g.sh, g.sh.dim() - 3),
                     log_scales=gather(g.log_scales, g.log_scales.dim() - 2), quats=gather(g.quats, g.quats.dim() - 2),
                     opacity_logits=gather(g.opacity_logits, g.opacity_logits.dim() - 2))


def all_reduce_sum(t: Tensor, info: DistInfo) -> Tensor:
    """Sum over every rank (no autograd); returns a new tensor."""
    t = t.detach().clone()
    if info.world_size > 1:
        dist.all_reduce(t)
    return t


def all_gather_objects(obj, info: DistInfo) -> list:
    if info.world_size == 1:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.world_size > 1:
        dist.barrier()


__all__ = [
    "DistInfo", "all_gather_objects", "all_reduce_sum", "barrier", "broadcast_parameters", "gather_gaussians",
    "init_distributed", "reduce_gradients", "shutdown", "unwrap", "wrap_data_parallel",
]

"""The ``triplane`` model kind of ``tttlrm-train`` (``model_kind: triplane``): :class:`TriplaneKind`.

Per sample of a micro-batch: the input and target cameras (already normalised by the data pipeline, which does not
matter: the object frame is similarity-invariant) are moved into the object frame of the input views
(:func:`tttlrm_ns.data.object_frame.object_frame`); the backbone predicts the planes from the input views; in every
target view ``patches_per_view`` random ``patch x patch`` pixel windows are volume-rendered (stratified samples) and
compared with the target pixels: MSE over all rendered pixels + LPIPS over the patches, and where the data has
depth (``data.load_target_depth``) a silhouette term (BCE of the accumulation against "the ray hits a surface") and
a log-depth L1 of the rendered distance on the rays that hit (:func:`geometry_terms`). Rendering a few patches
instead of whole views keeps the cost independent of the image size, and patches (not scattered rays) are what a
perceptual loss needs. Patch positions and sample jitter come from the sample's seed
(:func:`tttlrm_ns.train.plugin.sample_seed`; reproducible on resume).

``python -m tttlrm_ns.triplane.train CHECKPOINT.pt OUT.safetensors`` exports a training checkpoint
(:func:`export_checkpoint`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import torch
from torch import Tensor

from tttlrm_ns.checkpoint_io import load_checkpoint
from tttlrm_ns.data.object_frame import object_frame
from tttlrm_ns.model.checkpoint import CheckpointError, background_name, load_any
from tttlrm_ns.train.checkpoint import history_metadata, payload_history
from tttlrm_ns.train.config import TrainConfig, config_from_dict
from tttlrm_ns.train.losses import perceptual_partial
from tttlrm_ns.train.plugin import MicroStepResult, StepRunner, sample_seed

from .model import KIND_KEY, TriplaneModel, load_triplane, read_triplane_metadata, save_triplane


def patch_rays(c2w: Tensor, fxfycxcy: Tensor, y0: Tensor, x0: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Rays of ``size x size`` pixel windows: c2w [T, 4, 4], fxfycxcy [T, 4], window corners y0, x0 [T, P] (long)
    -> origins, unit directions [T, P, size, size, 3] (pixel-centre rule of :mod:`tttlrm_ns.model.rays`)."""
    ar = torch.arange(size, device=c2w.device)
    ys = (y0[..., None, None] + ar[:, None]).to(c2w.dtype) + 0.5  # [T, P, s, 1]
    xs = (x0[..., None, None] + ar[None, :]).to(c2w.dtype) + 0.5  # [T, P, 1, s]
    fx, fy, cx, cy = (fxfycxcy[:, i, None, None, None] for i in range(4))
    x = ((xs - cx) / fx).expand(-1, -1, size, size)
    y = ((ys - cy) / fy).expand(-1, -1, size, size)
    d_cam = torch.stack([x, y, torch.ones_like(x)], -1)  # [T, P, s, s, 3]
    d = torch.einsum("tij,tpabj->tpabi", c2w[:, :3, :3], d_cam)
    d = d / d.norm(dim=-1, keepdim=True)
    o = c2w[:, None, None, None, :3, 3].expand_as(d)
    return o, d


def gather_patches(images: Tensor, y0: Tensor, x0: Tensor, size: int) -> Tensor:
    """images [T, 3, H, W], corners [T, P] -> [T, P, 3, size, size]."""
    t, p = y0.shape
    ar = torch.arange(size, device=images.device)
    rows = (y0[..., None] + ar)[..., :, None]  # [T, P, s, 1]
    cols = (x0[..., None] + ar)[..., None, :]  # [T, P, 1, s]
    ti = torch.arange(t, device=images.device)[:, None, None, None]
    return images[ti, :, rows, cols].permute(0, 1, 4, 2, 3)  # advanced indexing puts the channel last


def object_frame_cameras(c2w_in: Tensor, c2w_tgt: Tensor, camera_distance: float, where: str = ""):
    """Input / target c2w [V, 4, 4], [T, 4, 4] -> both in the object frame of the inputs (float32), and the frame's
    scale (a length of the given cameras' frame times it is the length in the object frame)."""
    tr = object_frame(c2w_in, camera_distance, where=where)
    return tr.apply(c2w_in.double()).float(), tr.apply(c2w_tgt.double()).float(), float(tr.scale)


def geometry_terms(acc: Tensor, dist: Tensor, dirs: Tensor, fwd: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
    """Silhouette and depth terms of rendered rays against the data's depth.

    Args:
        acc, dist: [N] rendered accumulation and expected distance (``render_rays``). dirs: [N, 3] unit ray
            directions; fwd: [N, 3] the unit optical axis of each ray's camera. z: [N] the data's z-depth in the same
            frame (0 = no surface).
    Returns:
        (BCE of ``acc`` against "a surface is hit" (z > 0), mean over the rays;
         L1 of log distance against log of the data's ray distance ``z / cos``, mean over the rays that hit).
    """
    hit = z > 0
    mask = torch.nn.functional.binary_cross_entropy(acc.clamp(1e-5, 1 - 1e-5), hit.to(acc.dtype))
    if not bool(hit.any()):
        return mask, dist.sum() * 0.0
    cos = (dirs * fwd).sum(-1).clamp_min(1e-3)
    gt = z[hit] / cos[hit]
    depth = (dist[hit].clamp_min(1e-4).log() - gt.log()).abs().mean()
    return mask, depth


def triplane_micro_step(trainer: StepRunner, batch: dict, scale: float) -> MicroStepResult:
    """Forward + backward of one micro-batch of the triplane model (see the module docstring): images
    [b, V, 3, H, W] -> planes [b, 3, C, R, R] -> per target view ``patches_per_view`` windows of ``patch``^2 rays."""
    cfg, dev = trainer.cfg, trainer.info.device
    tc, tri = cfg.triplane_train, cfg.triplane
    images = batch["images"].to(dev)  # [b, V, 3, H, W]
    b, _, _, h, w = images.shape
    s = tc.patch
    if s > h or s > w:
        raise ValueError(f"triplane_train.patch={s} exceeds the training images ({h}x{w})")
    c2w_in, c2w_tgt, scales = [], [], []
    for i in range(b):
        ci, ct, sc = object_frame_cameras(batch["c2w"][i], batch["target_c2w"][i], tri.camera_distance,
                                          where=f"training sample {tuple(batch['key'][i])}: ")
        c2w_in.append(ci)
        c2w_tgt.append(ct)
        scales.append(sc)
    out = trainer.ddp_model(images, torch.stack(c2w_in).to(dev), batch["fxfycxcy"].to(dev))
    bg = torch.tensor(cfg.data.background, dtype=torch.float32, device=dev)
    lw = cfg.loss
    geometry = lw.depth > 0 or lw.mask > 0
    totals = {k: torch.zeros((), device=dev) for k in ("mse", "perceptual", "depth", "mask")}
    preview = None
    model = trainer.model
    for i in range(b):  # micro-batches are small; each sample has its own cameras and patch positions
        gen = torch.Generator().manual_seed(sample_seed(cfg.seed, batch["key"][i][0], batch["key"][i][1]))
        target = batch["target_images"][i].to(dev)  # [T, 3, H, W]
        t = target.shape[0]
        p = tc.patches_per_view
        y0 = torch.randint(0, h - s + 1, (t, p), generator=gen).to(dev)
        x0 = torch.randint(0, w - s + 1, (t, p), generator=gen).to(dev)
        o, d = patch_rays(c2w_tgt[i].to(dev), batch["target_fxfycxcy"][i].to(dev).float(), y0, x0, s)
        r = model.field.render_rays(out.planes[i:i + 1], o.reshape(1, -1, 3), d.reshape(1, -1, 3), bg,
                                    num_samples=tc.samples_per_ray, stratified=True, generator=gen)
        pred = r["rgb"].view(t * p, s, s, 3).permute(0, 3, 1, 2)  # [T*P, 3, s, s]
        gt = gather_patches(target, y0, x0, s).reshape(t * p, 3, s, s)
        totals["mse"] = totals["mse"] + (pred - gt).square().mean()
        if trainer.lpips is not None:
            totals["perceptual"] = totals["perceptual"] + perceptual_partial(trainer.lpips, pred, gt, t * p)
        if geometry:
            # z-depth of the data in the object frame (the item's depth is in the normalised frame)
            z = gather_patches(batch["target_depth"][i].to(dev)[:, None], y0, x0, s).reshape(-1) * scales[i]
            fwd = c2w_tgt[i][:, None, None, None, :3, 2].to(dev).expand_as(d)
            m_term, d_term = geometry_terms(r["accumulation"].reshape(-1), r["depth"].reshape(-1),
                                            d.reshape(-1, 3), fwd.reshape(-1, 3), z)
            totals["mask"] = totals["mask"] + m_term
            totals["depth"] = totals["depth"] + d_term
        if i == 0:
            preview = (pred[0].detach().clamp(0, 1).cpu(), gt[0].cpu())
    loss = sum(getattr(lw, k) * v for k, v in totals.items()) / b
    (loss * scale).backward()
    terms = {k: float(v.detach()) / b for k, v in totals.items()}
    terms.update(opacity=0.0, loss=float(loss.detach()))
    return terms, preview


def build_model(cfg: TrainConfig) -> TriplaneModel:
    """A freshly initialised triplane model: backbone ``cfg.model``, head ``cfg.triplane``."""
    return TriplaneModel(cfg.model, cfg.triplane)


def upsample_plane_queries(queries, t_old: int, t_new: int, where="") -> torch.Tensor:
    """Query tokens [3 * t_old^2, d] of a coarser triplane -> [3 * t_new^2, d]: each old token is repeated over the
    (t_new / t_old)^2 new tokens that cover its area of the plane. With the same patch size and channels the decoder
    then maps every new token to a patch of a plane with (t_new / t_old)^2 times the texels; a start for training
    finer planes from a trained coarser model (``checkpoint.init_from``)."""
    if t_new % t_old:
        raise CheckpointError(f"{where}: {t_old} query tokens per plane side cannot grow to {t_new} (not a multiple)")
    k, d = t_new // t_old, queries.shape[-1]
    q = queries.reshape(3, t_old, t_old, d)
    return q.repeat_interleave(k, 1).repeat_interleave(k, 2).reshape(3 * t_new * t_new, d)


def init_from(model: TriplaneModel, path: str, log: Callable[[str], None]) -> None:
    """Initial weights: a triplane file (all weights; coarser plane queries are repeated onto this model's finer
    grid, :func:`upsample_plane_queries`) or a Gaussian tttLRM file / official .pt (backbone only: tokenizer, input
    LayerNorm and blocks; the queries, plane decoder and MLP keep their initialisation)."""
    if str(path).endswith(".safetensors") and read_triplane_metadata(path).get(KIND_KEY) == "triplane":
        src = load_triplane(path)
        state = src.state_dict()
        t_old, t_new = src.tri.tokens_per_side, model.tri.tokens_per_side
        if t_old != t_new:
            state["plane_queries"] = upsample_plane_queries(state["plane_queries"], t_old, t_new, path)
        model.load_state_dict(state, strict=True)
        grown = f"; its {t_old}x{t_old} plane queries repeated to {t_new}x{t_new}" if t_old != t_new else ""
        log(f"initial weights (triplane model) from {path}{grown}")
        return
    src = load_any(path, cfg=model.cfg).state_dict()
    own = model.state_dict()
    backbone = {k: v for k, v in src.items() if k.startswith(("tokenizer.", "input_layernorm.", "blocks."))}
    bad = [k for k, v in backbone.items() if k not in own or own[k].shape != v.shape]
    if bad:
        raise CheckpointError(f"{path}: backbone weights do not fit the triplane model's backbone ({bad[:6]}); use "
                              "the same d / n_layer / patch_size / head sizes")
    model.load_state_dict(backbone, strict=False)
    log(f"initial backbone weights (Gaussian model) from {path}; triplane head initialised at random")


def export(model: TriplaneModel, path: str | Path, step: int, cfg: TrainConfig, history: Optional[list] = None) -> str:
    """Write the triplane ``.safetensors`` with what it was trained for and its training stages (``history``: the
    stages behind the run's initial weights, :func:`tttlrm_ns.train.checkpoint.history_metadata`)."""
    meta = {**history_metadata(history or [], step, cfg), "trained.resolution": f"{cfg.data.height}x{cfg.data.width}",
            "trained.background": background_name(cfg.data.background), "trained.preset": "custom",
            "triplane.normalization": "object_frame"}
    return str(save_triplane(model, path, meta))


class TriplaneKind:
    """:class:`tttlrm_ns.train.plugin.ModelKind` of the triplane object model (the functions above)."""

    name = "triplane"

    def build(self, cfg: TrainConfig) -> TriplaneModel:
        return build_model(cfg)

    def init_from(self, model: TriplaneModel, path: str, cfg: TrainConfig, log: Callable[[str], None]) -> None:
        init_from(model, path, log)  # the model carries its own configs; cfg adds nothing

    def micro_step(self, runner: StepRunner, batch: dict, scale: float) -> MicroStepResult:
        return triplane_micro_step(runner, batch, scale)

    def export(self, model: TriplaneModel, path: Path, step: int, cfg: TrainConfig,
               history: Optional[list] = None) -> str:
        return export(model, path, step, cfg, history)


def export_checkpoint(checkpoint, out) -> str:
    """A triplane training checkpoint (``checkpoints/step_*.pt``, e.g. of a run stopped by ``stop_after_minutes``)
    -> the ``.safetensors`` model file that ``ns-train tttlrm-triplane`` loads."""
    payload = load_checkpoint(checkpoint)
    cfg = config_from_dict(payload["config"])
    if cfg.model_kind != "triplane":
        raise ValueError(f"{checkpoint} is a checkpoint of a '{cfg.model_kind}' run, not of a triplane run")
    model = build_model(cfg)
    model.load_state_dict(payload["model"], strict=True)
    return export(model, out, int(payload["step"]), cfg, payload_history(payload))


__all__ = ["TriplaneKind", "build_model", "export", "export_checkpoint", "gather_patches", "geometry_terms",
           "init_from", "object_frame_cameras", "patch_rays", "triplane_micro_step", "upsample_plane_queries"]


if __name__ == "__main__":  # python -m tttlrm_ns.triplane.train CHECKPOINT.pt OUT.safetensors
    import sys

    print(export_checkpoint(sys.argv[1], sys.argv[2]))

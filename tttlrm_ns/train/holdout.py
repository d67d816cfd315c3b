"""Held-out novel-view PSNR of a training run on synthetic scenes: the yardstick of recipe comparisons.

Training losses are measured on views that overlap the inputs and on scenes the model has seen; recipes are
compared instead on scenes of another seed with *novel* target views, with a fixed, deterministic view choice:

* ``interp`` (scene paths, objects with ordered frames): ``n_in`` input frames evenly spaced over the first
  ``span`` frames, targets = the frames half-way between consecutive inputs (interpolation, like the paper's
  "every 8th frame held out" protocol);
* ``sphere`` (object turntables): inputs are ``n_in`` frames spread by farthest-point sampling of the camera
  centres, targets the next ``n_tgt`` remaining frames.

The prediction is the one a user gets: the views resized and normalised as the run was trained (the
normalisation of :func:`tttlrm_ns.infer.normalise_for_model`, from the world cameras of the scene, done once here),
then :func:`tttlrm_ns.infer.reconstruct` (chunked prediction -> free-space filter -> opacity pruning -> footprint
filter) with the nerfstudio pipeline's defaults for the weights' kind (:meth:`~tttlrm_ns.infer.ReconstructConfig.
for_kind`, kind from the run's config as in its weights' metadata) unless a :class:`~tttlrm_ns.infer.
ReconstructConfig` is given. The targets are rendered with the run's render settings at the run's resolution.
Gaussian model runs only (``model_kind: gaussian``); the triplane model is a different model type (no per-pixel
Gaussians, its own volume renderer) and is not evaluated here.

    python -m tttlrm_ns.train.holdout --run runs/scene_cpu --scenes '/data/rooms_val/scene_*' --num 16
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch

from tttlrm_ns.data.scene import LoadedViews, ResizeConfig, load_scene, load_views
from tttlrm_ns.eval.metrics import psnr
from tttlrm_ns.gaussians import Gaussians, input_footprint, widen_to_footprint
from tttlrm_ns.infer import ReconstructConfig, normalise_for_model, reconstruct

from .checkpoint import trained_for
from .config import TrainConfig, load_yaml_config
from .data import discover_scenes


@dataclass
class HoldoutConfig:
    """Held-out evaluation of a run (``--run``) or a weights file with a training config."""

    scenes: tuple[str, ...]
    """Held-out scene folders or globs (another seed than the training data)."""
    run: Optional[Path] = None
    """Run folder of ``tttlrm-train`` (its ``config.yaml`` and newest checkpoint or ``model.safetensors``)."""
    weights: Optional[Path] = None
    """A model ``.safetensors`` instead of the run's newest checkpoint (the run's config still gives the data)."""
    num: int = 16
    """Scenes evaluated (the first ``num`` of the sorted list)."""
    views: int = 0
    """Input views (0: the first entry of the run's ``data.num_input_views``)."""
    targets: int = 4
    """Novel target views per scene."""
    span: int = 48
    """``interp``: frames of the path used (inputs spread over the first ``span`` frames)."""
    height: int = 0
    """Input and render rows (0: the run's ``data.height``): how the model does at other inference sizes."""
    width: int = 0
    """Input and render columns (0: the run's ``data.width``)."""
    render_scale: int = 1
    """Render (and compare) the novel views at render_scale x the input size: how the Gaussians hold up when
    rendered finer than they were predicted, as at evaluation on higher-resolution frames."""
    footprint_filter: Optional[float] = None
    """Widen the Gaussians by this variance in input pixels^2 before rendering, as the nerfstudio pipeline does
    (``--pipeline.footprint-filter``, :func:`tttlrm_ns.gaussians.widen_to_footprint`); 0: the raw output; None:
    the pipeline's default (:class:`tttlrm_ns.infer.ReconstructConfig`)."""
    free_space_tolerance: Optional[float] = None
    """Tolerance of the free-space filter (``--pipeline.free-space.tolerance``); 0: off; None: the pipeline's
    default for the weights' kind (:meth:`tttlrm_ns.infer.ReconstructConfig.for_kind`)."""
    mode: Literal["auto", "interp", "sphere"] = "auto"
    """'auto': 'sphere' when the run samples views at random (objects), else 'interp'."""
    out: Optional[Path] = None
    """Write the result as JSON here."""


def choose_views(c2w: torch.Tensor, n_in: int, n_tgt: int, mode: str, span: int) -> tuple[list[int], list[int]]:
    """Deterministic (inputs, novel targets) of one scene from its cameras [F, 4, 4]."""
    f = c2w.shape[0]
    if mode == "interp":
        last = min(span, f) - 1
        inputs = sorted({round(i * last / max(n_in - 1, 1)) for i in range(n_in)})
        mids = [(a + b) // 2 for a, b in zip(inputs[:-1], inputs[1:]) if b - a >= 2]
        step = max(len(mids) / max(n_tgt, 1), 1.0)
        targets = [mids[int(i * step)] for i in range(min(n_tgt, len(mids)))]
        return inputs, targets
    centres = c2w[:, :3, 3].double()
    chosen = [0]
    dist = (centres - centres[0]).norm(dim=-1)
    for _ in range(n_in - 1):  # farthest-point sampling: well-spread inputs
        nxt = int(dist.argmax())
        chosen.append(nxt)
        dist = torch.minimum(dist, (centres - centres[nxt]).norm(dim=-1))
    rest = [i for i in range(f) if i not in set(chosen)]
    return sorted(chosen), rest[:n_tgt]


def reconstruct_config(cfg: TrainConfig, rc: Optional[ReconstructConfig] = None) -> ReconstructConfig:
    """``rc`` if given, else the nerfstudio pipeline's defaults for the kind of the run's weights (``object`` when
    the run samples views at random, else ``scene``: :func:`tttlrm_ns.train.checkpoint.trained_for`)."""
    return rc if rc is not None else ReconstructConfig.for_kind(trained_for(cfg).kind)


@dataclass
class NovelViews:
    """One scene's prediction for held-out rendering (:func:`predict_novel_views`)."""

    raw: Gaussians
    """:func:`tttlrm_ns.infer.reconstruct`'s output before its footprint filter (free-space filtered, pruned)."""
    footprint: torch.Tensor
    """[N] size of an input pixel at each Gaussian (:func:`tttlrm_ns.gaussians.input_footprint`)."""
    footprint_filter: float
    """The footprint filter of the :class:`~tttlrm_ns.infer.ReconstructConfig` used (input pixels^2)."""
    inputs: LoadedViews
    targets: LoadedViews
    """Target images at ``render_scale`` x the input size and their intrinsics."""
    c2w_targets: torch.Tensor
    """[T, 4, 4] target cameras in the normalised frame."""

    def filtered(self, footprint_filter: Optional[float] = None) -> Gaussians:
        """The Gaussians widened by ``footprint_filter`` input pixels^2 (None: :attr:`footprint_filter`, which
        makes them :func:`tttlrm_ns.infer.reconstruct`'s output)."""
        v = self.footprint_filter if footprint_filter is None else footprint_filter
        return widen_to_footprint(self.raw, self.footprint, v) if v > 0 else self.raw

    @property
    def gaussians(self) -> Gaussians:
        """What :func:`tttlrm_ns.infer.reconstruct` returns with the config used (footprint filter applied)."""
        return self.filtered()


def predict_novel_views(model: torch.nn.Module, cfg: TrainConfig, scene, inputs: list[int], targets: list[int],
                        render_scale: int = 1, reconstruct_cfg: Optional[ReconstructConfig] = None) -> NovelViews:
    """The run's evaluation steps for one scene: resize and normalise as trained (once, from the scene's world
    cameras), then :func:`tttlrm_ns.infer.reconstruct` with ``reconstruct_cfg`` (None: the pipeline's defaults for
    the run's kind, :func:`reconstruct_config`). The footprint filter is kept apart (:attr:`NovelViews.raw`,
    :attr:`NovelViews.footprint`) so renders can vary it; :attr:`NovelViews.gaussians` equals ``reconstruct``'s
    output."""
    if cfg.model_kind != "gaussian":
        raise ValueError(f"held-out evaluation is for the Gaussian model; model_kind={cfg.model_kind!r} is not "
                         "evaluated here")
    rc = reconstruct_config(cfg, reconstruct_cfg)
    dev = next(model.parameters()).device
    resize = ResizeConfig(height=cfg.data.height, width=cfg.data.width, mode=cfg.data.resize_mode,
                          orientation="fixed", patch_size=cfg.model.patch_size, background=tuple(cfg.data.background))
    resize_tgt = dataclasses.replace(resize, height=cfg.data.height * render_scale,
                                     width=cfg.data.width * render_scale)
    vin, vt = load_views(scene, inputs, resize), load_views(scene, targets, resize_tgt)
    # The frame the pipeline would use: with median-depth scale the depth is *measured* (plane sweep), not taken
    # from the renders, so held-out numbers include the measurement's error as a user's run does.
    norm = normalise_for_model(vin.images, scene.c2w[inputs], vin.fxfycxcy, cfg.data.normalize,
                               cfg.data.normalize_scale)
    c2w_in, c2w_tgt = norm.c2w.float().to(dev), norm.transform.apply(scene.c2w[targets].double())
    k_in = vin.fxfycxcy.float().to(dev)
    # reconstruct's own steps with the footprint filter split off (footprint_filtered = widen_to_footprint at
    # input_footprint of the same cameras): the same Gaussians, and renders can vary the filter without predicting
    # again.
    raw = reconstruct(model, vin.images.to(dev), c2w_in, k_in, dataclasses.replace(rc, footprint_filter=0.0))
    fp = input_footprint(raw.means, c2w_in, k_in, vin.images.shape[-2], vin.images.shape[-1])
    return NovelViews(raw, fp, rc.footprint_filter, vin, vt, c2w_tgt.float().to(dev))


def render_novel_views(nv: NovelViews, cfg: TrainConfig, footprint_filter: Optional[float] = None,
                       rasterize_fn=None) -> torch.Tensor:
    """Render the targets of ``nv`` with the run's render settings (not deferred: no backward here), the Gaussians
    widened by ``footprint_filter`` input pixels^2 (None: the prediction's own, ``nv.footprint_filter``)
    -> [T, 3, H, W] in [0, 1]."""
    from .render import render_views, resolve_rasterize

    rcfg = cfg
    if cfg.render.deferred:
        rcfg = dataclasses.replace(cfg, render=dataclasses.replace(cfg.render, deferred=False))
    g = nv.filtered(footprint_filter)
    vt = nv.targets
    return render_views(g, nv.c2w_targets, vt.fxfycxcy.float().to(nv.c2w_targets.device), vt.images.shape[-2],
                        vt.images.shape[-1], rcfg, rasterize_fn or resolve_rasterize(cfg.render.backend)).clamp(0, 1)


@torch.no_grad()
def evaluate(model: torch.nn.Module, cfg: TrainConfig, scenes: list[Path], n_in: int, n_tgt: int, mode: str,
             span: int = 48, render_scale: int = 1, reconstruct_cfg: Optional[ReconstructConfig] = None) -> dict:
    """Mean novel-view PSNR over ``scenes`` (targets at ``render_scale`` x the input size) of
    :func:`tttlrm_ns.infer.reconstruct` with ``reconstruct_cfg`` (None: the pipeline's defaults for the run's kind);
    the model runs in eval mode on the CPU/GPU it lives on."""
    from .render import resolve_rasterize

    rc = reconstruct_config(cfg, reconstruct_cfg)
    model.eval()
    raster = resolve_rasterize(cfg.render.backend)
    per_scene = []
    for k, scene_dir in enumerate(scenes):
        scene = load_scene(scene_dir, check_images=False)
        inputs, targets = choose_views(scene.c2w, n_in, n_tgt, mode, span)
        nv = predict_novel_views(model, cfg, scene, inputs, targets, render_scale, rc)
        render = render_novel_views(nv, cfg, None, raster)
        per_scene.append({"scene": scene.scene_name, "inputs": inputs, "targets": targets,
                          "psnr": float(psnr(render.cpu(), nv.targets.images).mean())})
    return {"psnr": float(np.mean([s["psnr"] for s in per_scene])), "num_scenes": len(per_scene),
            "views": n_in, "targets": n_tgt, "mode": mode, "reconstruct": dataclasses.asdict(rc),
            "per_scene": per_scene}


def load_run_model(run: Path, weights: Optional[Path] = None) -> tuple[torch.nn.Module, TrainConfig, str]:
    """(model, the run's training config, what was loaded) from a run folder: ``weights`` if given, else the
    newest resumable checkpoint, else ``model.safetensors``."""
    from tttlrm_ns.model import TttlrmModel
    from tttlrm_ns.model.checkpoint import load_model

    from tttlrm_ns.checkpoint_io import load_checkpoint

    from .checkpoint import list_checkpoints

    cfg = load_yaml_config(run / "config.yaml")
    if cfg.model_kind != "gaussian":
        raise ValueError(f"{run}: model_kind={cfg.model_kind!r}: held-out evaluation is for the Gaussian model only")
    if weights is not None:
        return load_model(weights), cfg, str(weights)
    ckpts = list_checkpoints(run / "checkpoints")
    if ckpts:
        step, path = ckpts[-1]
        model = TttlrmModel(cfg.model)
        model.load_state_dict(load_checkpoint(path)["model"])
        return model, cfg, f"{path} (step {step})"
    path = run / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{run}: no checkpoints/ and no model.safetensors to evaluate")
    return load_model(path), cfg, str(path)


def main(argv=None) -> int:
    import tyro

    hc = tyro.cli(HoldoutConfig, args=argv)
    if hc.run is None:
        raise SystemExit("--run RUN_DIR is required (its config.yaml gives resolution, normalisation, rendering)")
    model, cfg, what = load_run_model(hc.run, hc.weights)
    rc = reconstruct_config(cfg)
    if hc.footprint_filter is not None:
        rc = dataclasses.replace(rc, footprint_filter=hc.footprint_filter)
    if hc.free_space_tolerance is not None:
        rc = dataclasses.replace(rc, free_space=dataclasses.replace(rc.free_space, tolerance=hc.free_space_tolerance))
    if hc.height or hc.width:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, height=hc.height or cfg.data.height,
                                                                width=hc.width or cfg.data.width))
    scenes = discover_scenes(hc.scenes)[: hc.num]
    mode = hc.mode if hc.mode != "auto" else ("sphere" if cfg.data.sampling == "random" else "interp")
    n_in = hc.views or cfg.data.num_input_views[0]
    res = evaluate(model, cfg, scenes, n_in, hc.targets, mode, hc.span, hc.render_scale, rc)
    res["weights"] = what
    res["resolution"] = [cfg.data.height, cfg.data.width]
    res["render_scale"] = hc.render_scale
    res["footprint_filter"] = rc.footprint_filter
    print(f"{what}: held-out PSNR {res['psnr']:.2f} dB over {res['num_scenes']} scenes "
          f"({n_in} input views at {cfg.data.height}x{cfg.data.width}, {hc.targets} novel targets each rendered at "
          f"{hc.render_scale}x, {mode}; free-space tolerance {rc.free_space.tolerance:g}, prune keep_top "
          f"{rc.prune.keep_top:g} + keep_random {rc.prune.keep_random:g}, footprint filter {rc.footprint_filter:g})")
    if hc.out is not None:
        hc.out.parent.mkdir(parents=True, exist_ok=True)
        hc.out.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

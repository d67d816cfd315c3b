"""``tttlrm-stress``: feed-forward quality of model weights on the held-out stress set, with baselines.

The stress set (``tttlrm-synth stress-set``, ``configs/stress_set.yaml``, ``docs/stress_set.md``) holds captures
that break the walk-through prior: orbits, forward-facing sweeps, close-ups, wide and narrow lenses, portrait
frames, objects on white / black / cluttered backgrounds. Every recipe, default, threshold and shipped-weights choice
is made on it (issue 23), never on the real evaluation captures. This evaluator is pure torch (no nerfstudio) and
runs the nerfstudio pipeline's steps (:mod:`tttlrm_ns.ns.pipeline`) with its defaults:

* views: every 8th frame of an item is a held-out target (:func:`tttlrm_ns.data.views.eval_split`); the N input
  views are spread evenly over the other frames (:func:`tttlrm_ns.data.views.select_evenly_spaced`), N from
  ``stress_set.json`` (``input_views``) or ``--views``;
* size: room items at long side 256 (``--scene-long-side``; the short side follows the item's aspect ratio, rounded
  down to the patch size, so portrait items stay portrait: 256x144), object items at the object weights'
  ``trained.resolution``; targets are loaded the same way as the inputs and rendered at that size;
* weights: scene weights (``trained.kind = scene``) on room classes only, object weights on object classes only;
  normalisation as the weights were trained (``trained.normalization`` and ``trained.scale`` through
  :func:`tttlrm_ns.infer.normalise_for_model`: with ``median_depth`` the depth is measured by a plane sweep),
  the pipeline's feed-forward reconstruction with its defaults (:func:`tttlrm_ns.infer.reconstruct`: chunked
  prediction, free-space filter, opacity pruning, footprint filter; ``--reconstruct.*`` changes them),
  rendered with :func:`tttlrm_ns.render.splat.render_gaussians` on the weights' background; the input-view PSNR of
  :func:`tttlrm_ns.infer.check_plausibility` is recorded per item (it sets the pipeline's warning threshold);
* baselines on the same inputs and targets: ``mvs`` (:func:`tttlrm_ns.infer.mvs_gaussians` at the plane-sweep depth
  range in the median-depth frame, footprint filter as above: the pipeline's ``--pipeline.init mvs``), ``nearest``
  (the input view whose camera is closest, :func:`tttlrm_ns.eval.protocol.nearest_input_view`) and ``mean`` (the
  inputs' mean colour, :func:`tttlrm_ns.eval.protocol.mean_colour_image`), rendered on white.

Written: ``--out`` (JSON: git commit and dirty flag, sha256 of every weights file, the command line, date, per-item
and per-class numbers) and, with ``--md``, a markdown table (rows = class x input views; the target is best
feed-forward PSNR - nearest-view PSNR >= +2 dB). Deterministic: fixed generators, no other randomness.

    tttlrm-stress --weights tttlrm_ns/assets/weights/tttlrm_scene.safetensors \\
        tttlrm_ns/assets/weights/tttlrm_object.safetensors --out docs/stress_results_baseline.json \\
        --md docs/stress_results.md
"""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple

import torch
from torch import Tensor

from tttlrm_ns.checkpoint_io import sha256_file
from tttlrm_ns.conventions import fxfycxcy_to_K
from tttlrm_ns.data.scene import LoadedViews, ResizeConfig, SceneFrames, load_scene, load_views
from tttlrm_ns.data.views import eval_split, select_evenly_spaced
from tttlrm_ns.eval.metrics import psnr, ssim
from tttlrm_ns.eval.protocol import mean_colour_image, nearest_input_view
from tttlrm_ns.gaussians import Gaussians
from tttlrm_ns.geometry.depth_range import DepthRangeError
from tttlrm_ns.infer import MvsInitConfig, ReconstructConfig
from tttlrm_ns.provenance import git_state

REPO = Path(__file__).resolve().parents[2]
TARGET_GAIN_DB = 2.0
"""Goal of issue 23: the best feed-forward PSNR beats the nearest input view by at least this many dB."""
BASELINES = ("mvs", "nearest", "mean")
_BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}


@dataclass
class StressConfig:
    """Feed-forward PSNR of model weights on the held-out stress set, with baselines (see the module docstring)."""

    stress_set: Path = REPO / "data" / "stress_set"
    """Folder written by tttlrm-synth stress-set (holds stress_set.json)."""
    weights: Tuple[Path, ...] = ()
    """Model .safetensors files with trained.* metadata (kind scene: room classes; kind object: object classes)."""
    classes: Tuple[str, ...] = ()
    """Classes to evaluate (default: all of stress_set.json)."""
    views: Tuple[int, ...] = ()
    """Input view counts (default: input_views of stress_set.json)."""
    baselines: Tuple[Literal["mvs", "nearest", "mean"], ...] = BASELINES
    """Baselines computed on the same inputs and targets."""
    out: Path = Path("outputs/stress/results.json")
    """JSON with everything (per item and per class)."""
    md: Optional[Path] = None
    """Markdown table written here too (e.g. docs/stress_results.md)."""
    max_items: int = 0
    """Items per class (0: all)."""
    eval_interval: int = 8
    """Every eval_interval-th frame is a held-out target."""
    scene_long_side: int = 256
    """Room items: input long side (the short side follows the item's aspect ratio, a multiple of the patch size)."""
    object_resolution: str = ""
    """Object items: HxW ('': the object weights' trained.resolution, else the stored size)."""
    reconstruct: ReconstructConfig = field(default_factory=lambda: ReconstructConfig.for_kind("scene"))
    """Scene weights: the feed-forward's pruning, free-space filter, footprint filter and seed, as the pipeline's
    defaults of ``tttlrm`` (--pipeline.prune.*, --pipeline.free-space.*, --pipeline.footprint-filter,
    --pipeline.seed). Its footprint filter applies to the mvs baseline too."""
    object_reconstruct: ReconstructConfig = field(default_factory=lambda: ReconstructConfig.for_kind("object"))
    """Object weights: the same, as the defaults of ``tttlrm-object``."""
    mvs: MvsInitConfig = field(default_factory=MvsInitConfig)
    """The mvs baseline (the pipeline's ``--pipeline.init mvs``)."""
    ssim: bool = True
    """Also SSIM (scikit-image's, the paper's)."""
    lpips: bool = False
    """Also LPIPS (VGG; slow on CPU, off by default)."""
    backend: str = "cpu"
    """Rasteriser backend of render_gaussians (cpu: the C++ extension)."""


# --------------------------------------------------------------------------------------------------------------
# records: weights, git, hashes


@dataclass
class WeightsEntry:
    label: str
    path: Path
    sha256: str
    kind: str
    normalization: str
    scale: str
    resolution: Tuple[int, int]
    background: Tuple[float, float, float]
    trained: Dict[str, str]
    model: Any = field(repr=False, default=None)


def _parse_hw(text: str, what: str) -> Tuple[int, int]:
    try:
        h, w = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"{what}: expected HxW, got {text!r}") from None
    return h, w


def _parse_background(text: str) -> Tuple[float, float, float]:
    if text in _BACKGROUNDS:
        return _BACKGROUNDS[text]
    parts = tuple(float(c) for c in text.split(","))
    if len(parts) != 3:
        raise ValueError(f"background {text!r} is not white, black or r,g,b")
    return parts  # type: ignore[return-value]


def load_weights(paths: Tuple[Path, ...]) -> List[WeightsEntry]:
    """Load every weights file with its ``trained.*`` record (a file without one is refused: its kind, frame and
    resolution would be guesses)."""
    from tttlrm_ns.model.checkpoint import load_model, read_trained_for

    out: List[WeightsEntry] = []
    for p in paths:
        p = Path(p)
        trained, missing = read_trained_for(p)
        if trained is None:
            raise SystemExit(f"tttlrm-stress: {p} has no complete trained.* metadata (missing {missing}): its kind, "
                             "normalisation and resolution are unknown")
        label = p.stem
        if any(e.label == label for e in out):
            label = f"{label}_{len(out)}"
        out.append(WeightsEntry(
            label=label, path=p, sha256=sha256_file(p), kind=trained.kind, normalization=trained.normalization,
            scale=trained.scale, resolution=_parse_hw(trained.resolution, f"{p}: trained.resolution"),
            background=_parse_background(trained.background), trained=dataclasses.asdict(trained),
            model=load_model(p).eval()))
    return out


# --------------------------------------------------------------------------------------------------------------
# one item


def class_kind(spec: Dict[str, Any]) -> str:
    """``scene`` for room classes, ``object`` for object classes (the weights' ``trained.kind`` vocabulary)."""
    kind = spec.get("kind")
    if kind not in ("scenes", "objects"):
        raise ValueError(f"stress_set.json class kind must be 'scenes' or 'objects', got {kind!r}")
    return "scene" if kind == "scenes" else "object"


def split_views(num_frames: int, n: int, interval: int = 8) -> Tuple[List[int], List[int]]:
    """(inputs, targets): targets = every ``interval``-th frame, inputs = ``n`` evenly spaced among the others."""
    train, test = eval_split(num_frames, interval)
    return [train[i] for i in select_evenly_spaced(len(train), n)], test


def resize_for(kind: str, cfg: StressConfig, resolution: Optional[Tuple[int, int]], patch: int,
               background: Tuple[float, float, float]) -> ResizeConfig:
    if kind == "scene":
        return ResizeConfig(long_side=cfg.scene_long_side, patch_size=patch, background=background)
    if resolution is None:  # stored size rounded down to the patch size
        return ResizeConfig(patch_size=patch, background=background)
    return ResizeConfig(height=resolution[0], width=resolution[1], orientation="auto", patch_size=patch,
                        background=background)


def _metrics(pred: Tensor, gt: Tensor, cfg: StressConfig) -> Dict[str, Any]:
    pred = pred.float().clamp(0, 1).cpu()
    out: Dict[str, Any] = {"psnr_per_target": [float(x) for x in psnr(pred, gt)]}
    out["psnr"] = float(sum(out["psnr_per_target"]) / len(out["psnr_per_target"]))
    if cfg.ssim:
        out["ssim"] = float(ssim(pred, gt).mean())
    if cfg.lpips:
        from tttlrm_ns.eval.metrics import lpips

        out["lpips"] = float(lpips(pred, gt).mean())
    return out


def _renderer(background: Tuple[float, float, float], backend: str):
    """``render(g, c2w, K, width, height) -> [C, H, W, 3]`` (check_plausibility's signature)."""
    from tttlrm_ns.render.splat import render_gaussians

    bg = torch.tensor(background, dtype=torch.float32)

    def render(g: Gaussians, c2w: Tensor, ks: Tensor, width: int, height: int) -> Tensor:
        return render_gaussians(g, c2w, ks, width, height, background=bg.to(c2w.device), backend=backend).rgb

    return render


def _render_targets(g: Gaussians, c2w: Tensor, vt: LoadedViews, background: Tuple[float, float, float],
                    backend: str) -> Tuple[Tensor, float]:
    """(renders [T, 3, H, W] in [0, 1] over ``background``, mean accumulated opacity: the share of target pixels
    the Gaussians cover; the rest shows the background)."""
    from tttlrm_ns.render.splat import render_gaussians

    h, w = vt.images.shape[-2:]
    out = render_gaussians(g, c2w.float(), fxfycxcy_to_K(vt.fxfycxcy.float()), w, h,
                           background=torch.tensor(background, dtype=torch.float32), backend=backend)
    return out.rgb.permute(0, 3, 1, 2).clamp(0, 1), float(out.alpha.mean())


@torch.no_grad()
def feed_forward(entry: WeightsEntry, vin: LoadedViews, vt: LoadedViews, cfg: StressConfig) -> Dict[str, Any]:
    """The pipeline's prediction for one item, scored on the targets, plus the plausibility input-view PSNR."""
    from tttlrm_ns import infer

    t0 = time.perf_counter()
    k = vin.fxfycxcy.float()
    norm = infer.normalise_for_model(vin.images, vin.c2w, vin.fxfycxcy, entry.normalization, entry.scale)
    g = infer.reconstruct(entry.model, vin.images, norm.c2w, k,
                          cfg.object_reconstruct if entry.kind == "object" else cfg.reconstruct)
    c2w_t = norm.transform.apply(vt.c2w.double()).float()
    pred, coverage = _render_targets(g, c2w_t, vt, entry.background, cfg.backend)
    res = _metrics(pred, vt.images, cfg)
    plaus = infer.check_plausibility(g, vin.images, norm.c2w, k, _renderer(entry.background, cfg.backend))
    res.update(plausibility_psnr=plaus.input_psnr, plausibility_views=plaus.views, gaussians=g.num,
               coverage=coverage, normalisation=norm.describe(), seconds=time.perf_counter() - t0)
    return res


@torch.no_grad()
def mvs_baseline(vin: LoadedViews, vt: LoadedViews, cfg: StressConfig) -> Dict[str, Any]:
    """``--pipeline.init mvs``: Gaussians at the plane-sweep depth (median-depth frame), footprint filter, white."""
    from tttlrm_ns import infer

    t0 = time.perf_counter()
    h, w = vin.images.shape[-2:]
    k = vin.fxfycxcy.float()
    norm = infer.normalise_for_model(vin.images, vin.c2w, vin.fxfycxcy, "mean_cam", "median_depth")
    rng = norm.depth_range
    g = infer.mvs_gaussians(vin.images, norm.c2w, k, *norm.frame_range(), cfg.mvs)
    g = infer.footprint_filtered(g, norm.c2w, k, h, w, cfg.reconstruct.footprint_filter)
    c2w_t = norm.transform.apply(vt.c2w.double()).float()
    pred, coverage = _render_targets(g, c2w_t, vt, _BACKGROUNDS["white"], cfg.backend)
    res = _metrics(pred, vt.images, cfg)
    res.update(gaussians=g.num, coverage=coverage, depth_range=rng.describe(), seconds=time.perf_counter() - t0)
    return res


def nearest_baseline(vin: LoadedViews, vt: LoadedViews, cfg: StressConfig) -> Dict[str, Any]:
    idx = nearest_input_view(vin.c2w, vt.c2w)
    res = _metrics(vin.images[idx], vt.images, cfg)
    res["nearest_inputs"] = [vin.indices[int(i)] for i in idx]
    return res


def mean_baseline(vin: LoadedViews, vt: LoadedViews, cfg: StressConfig) -> Dict[str, Any]:
    h, w = vt.images.shape[-2:]
    pred = mean_colour_image(vin.images, h, w)[None].expand(len(vt.indices), 3, h, w)
    return _metrics(pred, vt.images, cfg)


def _guarded(fn, *args) -> Dict[str, Any]:
    """A measurement that cannot be made on an item (no depth range: too little overlap or texture) is recorded
    with its reason instead of stopping the run; every other error propagates."""
    try:
        return fn(*args)
    except DepthRangeError as e:
        return {"psnr": None, "error": f"DepthRangeError: {e}"}


def evaluate_item(scene: SceneFrames, kind: str, n: int, weights: List[WeightsEntry], cfg: StressConfig,
                  fallback_res: Optional[Tuple[int, int]]) -> Dict[str, Any]:
    """Every applicable weights file and every baseline on one item with ``n`` input views.

    Returns ``{"inputs", "targets", "resolutions": {"HxW": {row: metrics}}}``; the feed-forward rows are named
    ``ff:<label>``. Inputs and targets are loaded once per resolution (the weights of one kind may differ in it).
    """
    inputs, targets = split_views(len(scene), n, cfg.eval_interval)
    applicable = [e for e in weights if e.kind == kind]
    groups: Dict[Tuple[int, int] | None, List[WeightsEntry]] = {}
    for e in applicable:
        groups.setdefault(None if kind == "scene" else e.resolution, []).append(e)
    if not groups:
        groups[None if kind == "scene" else fallback_res] = []
    out: Dict[str, Any] = {"inputs": inputs, "targets": targets, "resolutions": {}}
    for res_key, entries in groups.items():
        patch = entries[0].model.cfg.patch_size if entries else 8
        bg = entries[0].background if entries else _BACKGROUNDS["white"]
        resize = resize_for(kind, cfg, res_key, patch, bg)
        vin, vt = load_views(scene, inputs, resize), load_views(scene, targets, resize)
        rows: Dict[str, Any] = {}
        for e in entries:
            if tuple(e.background) != tuple(bg):  # images composited on another background: reload for this one
                r = dataclasses.replace(resize, background=e.background)
                rows[f"ff:{e.label}"] = _guarded(feed_forward, e, load_views(scene, inputs, r),
                                                 load_views(scene, targets, r), cfg)
            else:
                rows[f"ff:{e.label}"] = _guarded(feed_forward, e, vin, vt, cfg)
        for b in cfg.baselines:
            fn = {"mvs": mvs_baseline, "nearest": nearest_baseline, "mean": mean_baseline}[b]
            rows[b] = _guarded(fn, vin, vt, cfg)
        h, w = vin.images.shape[-2:]
        out["resolutions"][f"{h}x{w}"] = rows
    return out


# --------------------------------------------------------------------------------------------------------------
# the set


def read_manifest(stress_set: Path) -> Dict[str, Any]:
    path = Path(stress_set) / "stress_set.json"
    if not path.is_file():
        raise SystemExit(f"tttlrm-stress: {path} does not exist; generate the set with "
                         f"`tttlrm-synth stress-set --out {stress_set}`")
    return json.loads(path.read_text())


def _mean(values: List[Optional[float]]) -> Optional[float]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(sum(vals) / len(vals)) if vals else None


def summarise(items: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Per class and view count: the mean over items of every row's metrics (items whose row failed are left out
    of that row's mean and counted in ``failed``)."""
    out: Dict[str, Any] = {}
    for it in items:
        cls = out.setdefault(it["class"], {"kind": it["kind"], "views": {}})
        by_n = cls["views"].setdefault(str(it["views"]), {})
        for res, rows in it["resolutions"].items():
            for name, m in rows.items():
                acc = by_n.setdefault(res, {}).setdefault(name, {"_items": []})
                acc["_items"].append(m)
    for cls in out.values():
        for by_n in cls["views"].values():
            for rows in by_n.values():
                for name, acc in list(rows.items()):
                    ms = acc.pop("_items")
                    ok = [m for m in ms if m.get("psnr") is not None]
                    summary: Dict[str, Any] = {"items": len(ok), "failed": len(ms) - len(ok)}
                    for key in ("psnr", "ssim", "lpips", "plausibility_psnr", "coverage", "seconds"):
                        if any(key in m for m in ok):
                            summary[key] = _mean([m.get(key) for m in ok])
                    if ok and "plausibility_psnr" in ok[0]:
                        summary["plausibility_psnr_min"] = min(m["plausibility_psnr"] for m in ok)
                    rows[name] = summary
    return out


def _display_path(p: Path) -> str:
    """Repository-relative when inside the repository (a page shows a path any checkout has)."""
    try:
        return str(p.resolve().relative_to(REPO.resolve()))
    except ValueError:
        return str(p)


def run(cfg: StressConfig, argv: Optional[List[str]] = None, log=print) -> Dict[str, Any]:
    """Evaluate, write ``cfg.out`` (and ``cfg.md``), return the result."""
    with torch.no_grad():  # scoped: a global switch would leak into the caller (and into later tests)
        return _run(cfg, argv, log)


def _run(cfg: StressConfig, argv: Optional[List[str]], log) -> Dict[str, Any]:
    from tttlrm_ns.eval.cli import environment, write_json

    git_start = git_state()  # the code that runs is the code of the start (a commit during the run is flagged)
    manifest = read_manifest(cfg.stress_set)
    classes = list(cfg.classes) or list(manifest["classes"])
    unknown = [c for c in classes if c not in manifest["classes"]]
    if unknown:
        raise SystemExit(f"tttlrm-stress: classes {unknown} are not in {cfg.stress_set}/stress_set.json "
                         f"(it has {sorted(manifest['classes'])})")
    views = list(cfg.views) or list(manifest.get("input_views") or [])
    if not views:
        raise SystemExit("tttlrm-stress: no input view counts (give --views or an input_views list in the manifest)")
    weights = load_weights(cfg.weights)
    obj_res: Optional[Tuple[int, int]] = None
    if cfg.object_resolution:
        obj_res = _parse_hw(cfg.object_resolution, "--object-resolution")
        weights = [dataclasses.replace(e, resolution=obj_res) if e.kind == "object" else e for e in weights]
    jobs = []
    for c in classes:
        spec = manifest["classes"][c]
        items = list(spec["items"])[: cfg.max_items or None]
        jobs += [(c, class_kind(spec), item, n) for item in items for n in views]
    log(f"tttlrm-stress: {len(jobs)} evaluations ({len(classes)} classes x items x views {views}); weights "
        + ", ".join(f"{e.label} ({e.kind}, {e.resolution[0]}x{e.resolution[1]}, {e.normalization}/{e.scale})"
                    for e in weights))
    items_out: List[Dict[str, Any]] = []
    t_start = time.perf_counter()
    scenes: Dict[str, SceneFrames] = {}
    for j, (c, kind, item, n) in enumerate(jobs):
        t0 = time.perf_counter()
        if item not in scenes:
            scenes = {item: load_scene(Path(cfg.stress_set) / item, check_images=True)}  # one item in memory
        rec = {"class": c, "kind": kind, "item": item, "views": n,
               **evaluate_item(scenes[item], kind, n, weights, cfg, obj_res)}
        rec["seconds"] = time.perf_counter() - t0
        items_out.append(rec)
        parts = []
        for res, rows in rec["resolutions"].items():
            parts.append(f"{res} " + " ".join(
                f"{name}={m['psnr']:.2f}" if m.get("psnr") is not None else f"{name}=failed"
                for name, m in rows.items()))
        log(f"[{j + 1}/{len(jobs)}] {item} {n} views: {'; '.join(parts)} ({rec['seconds']:.1f} s, "
            f"{time.perf_counter() - t_start:.0f} s total)")
    argv = sys.argv[1:] if argv is None else argv
    result = {
        "command": "tttlrm-stress " + shlex.join(str(a) for a in argv),
        "git": git_start,
        "git_changed_during_run": git_state() != git_start,
        "environment": environment(),
        "stress_set": {"path": _display_path(Path(cfg.stress_set)), "manifest_sha256": sha256_file(Path(cfg.stress_set)
                                                                                    / "stress_set.json")},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()
                     if k not in ("weights",)},
        "weights": [{"label": e.label, "path": str(e.path), "sha256": e.sha256, "trained": e.trained}
                    for e in weights],
        "views": views,
        "classes": summarise(items_out),
        "items": items_out,
        "seconds": time.perf_counter() - t_start,
    }
    write_json(result, Path(cfg.out))
    log(f"tttlrm-stress: wrote {cfg.out}")
    if cfg.md is not None:
        Path(cfg.md).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.md).write_text(markdown(result))
        log(f"tttlrm-stress: wrote {cfg.md}")
    return result


# --------------------------------------------------------------------------------------------------------------
# markdown


def _fmt(v: Optional[float], signed: bool = False) -> str:
    if v is None:
        return "—"
    return f"{v:+.2f}" if signed else f"{v:.2f}"


def _reconstruct_settings(settings: Dict[str, Any], key: str = "reconstruct") -> str:
    """The feed-forward's settings in words (results written before ``reconstruct`` existed had flat keys and no
    free-space filter)."""
    r = settings.get(key) or settings.get("reconstruct") or {
        "prune": {"keep_top": settings["keep_top"], "keep_random": settings["keep_random"]},
        "free_space": {"tolerance": 0.0, "min_views": 0}, "footprint_filter": settings["footprint_filter"],
        "seed": settings["seed"]}
    fs = r["free_space"]
    fs_text = (f"free-space filter tolerance {fs['tolerance']:g} in >= {fs['min_views']} views" if fs["tolerance"] > 0
               else "free-space filter off")
    return (f"prune keep_top {r['prune']['keep_top']} + keep_random {r['prune']['keep_random']}, {fs_text}, "
            f"footprint filter {r['footprint_filter']}, seed {r['seed']}")


def table_rows(result: Dict[str, Any]) -> List[Dict[str, Any]]:
    """One row per (class, view count): feed-forward PSNR per weights label, the baselines (at the resolution of
    the first applicable weights), the plausibility PSNR and best ff - nearest (each weights against the nearest
    view at its own resolution)."""
    labels = [w["label"] for w in result["weights"]]
    rows = []
    for cls, c in result["classes"].items():
        for n, by_res in c["views"].items():
            row: Dict[str, Any] = {"class": cls, "kind": c["kind"], "views": int(n), "ff": {}, "plaus": {},
                                   "gain": None, "res": None}
            gains = []
            for res, rs in by_res.items():
                for lab in labels:
                    m = rs.get(f"ff:{lab}")
                    if m is None:
                        continue
                    row["ff"][lab], row["plaus"][lab] = m.get("psnr"), m.get("plausibility_psnr")
                    near = rs.get("nearest", {}).get("psnr")
                    if m.get("psnr") is not None and near is not None:
                        gains.append(m["psnr"] - near)
                    row["res"] = row["res"] or res
            res = row["res"] or next(iter(by_res))
            row["res"] = res
            for b in BASELINES:
                row[b] = by_res[res].get(b, {}).get("psnr")
            row["mvs_coverage"] = by_res[res].get("mvs", {}).get("coverage")
            row["gain"] = max(gains) if gains else None
            rows.append(row)
    return rows


def markdown(result: Dict[str, Any]) -> str:
    labels = [w["label"] for w in result["weights"]]
    git = result["git"]
    commit = (git["commit"] or "unknown")[:12] + (" (dirty: uncommitted changes in "
                                                  + ", ".join(git["modified"] or []) + ")" if git["dirty"] else "")
    lines = [
        "# Stress-set results",
        "",
        "Generated by `tttlrm-stress` (`tttlrm_ns/eval/stress.py`); do not edit by hand. Held-out stress set "
        "(`tttlrm-synth stress-set`, `configs/stress_set.yaml`, `docs/stress_set.md`): every 8th frame is a "
        "target, the inputs are spread evenly over the other frames. PSNR in dB, mean over the class's items.",
        "",
        f"* command: `{result['command']}`",
        f"* commit: {commit}; date {result['environment']['date_utc']} UTC; "
        f"{result['seconds'] / 60:.1f} min on {result['environment']['torch_threads']} CPU thread(s)"
        + (" (**the checkout changed during the run**)" if result.get("git_changed_during_run") else ""),
        "* weights: " + "; ".join(f"`{w['path']}` sha256 `{w['sha256'][:16]}…` ({w['trained']['kind']}, "
                                  f"{w['trained']['resolution']}, {w['trained']['normalization']}/"
                                  f"{w['trained'].get('scale', 'extent')})" for w in result["weights"]),
        f"* stress set: `{result['stress_set']['path']}` (stress_set.json sha256 "
        f"`{result['stress_set']['manifest_sha256'][:16]}…`)",
        f"* feed-forward: scene weights {_reconstruct_settings(result['settings'])}; object weights "
        f"{_reconstruct_settings(result['settings'], 'object_reconstruct')}; scene weights on room classes only, "
        "object weights on object classes only. "
        "`input-view` = the plausibility check's PSNR on its own input views. `mvs` = `--pipeline.init mvs`, "
        "(in brackets: the share of target pixels its Gaussians cover; the rest is the white background), "
        "`nearest` = the closest input view, `mean` = the inputs' mean colour.",
        f"* target: best feed-forward - nearest >= +{TARGET_GAIN_DB:g} dB (✅ met, ❌ not)",
        "",
    ]
    head = ["class", "views", "size"] + [f"{lab} ff" for lab in labels] + ["input-view"] + \
        ["mvs", "nearest", "mean colour", "best ff - nearest"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table_rows(result):
        plaus = [v for v in r["plaus"].values() if v is not None]
        gain = r["gain"]
        mark = "" if gain is None else (" ✅" if gain >= TARGET_GAIN_DB else " ❌")
        mvs = _fmt(r["mvs"]) + (f" ({100 * r['mvs_coverage']:.0f}%)" if r["mvs"] is not None else "")
        cells = [r["class"], str(r["views"]), r["res"]] + [_fmt(r["ff"].get(lab)) for lab in labels] + \
            [", ".join(f"{v:.2f}" for v in plaus) or "—", mvs, _fmt(r["nearest"]), _fmt(r["mean"]),
             _fmt(gain, signed=True) + mark]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [(it["item"], it["views"], name, m["error"]) for it in result["items"]
              for rows in it["resolutions"].values() for name, m in rows.items() if m.get("error")]
    if failed:
        lines += ["", "Not measured (left out of the means):", ""]
        lines += [f"* {item}, {n} views, {name}: {err}" for item, n, name, err in failed]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    import tyro

    argv = sys.argv[1:] if argv is None else list(argv)
    cfg = tyro.cli(StressConfig, args=argv)
    if not cfg.weights and not cfg.baselines:
        raise SystemExit("tttlrm-stress: nothing to evaluate (give --weights and/or --baselines)")
    run(cfg, argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Synthetic multi-view training data: object turntables, furnished rooms, procedural Zeroverse-like objects
(:mod:`tttlrm_ns.synth.zeroverse`) and procedural MegaSynth-like rooms (:mod:`tttlrm_ns.synth.megasynth`), written
in the ``opencv_cameras.json`` layout with per-frame depth (rooms of both kinds: metres).

Output of one item (``<out>/object_00012/``, ``<out>/scene_00003/``, ``<out>/zeroverse_00007/`` or
``<out>/megasynth_00042/``)::

    opencv_cameras.json   {"scene_name", "frames": [{"file_path", "depth_path", "w2c", "w", "h", "fx", "fy",
                                                     "cx", "cy"}], "generator": {...}, "assets": [...]}
    images/0000.png       RGBA (objects: straight alpha, composite over white) or RGB (rooms); or .jpg
    depth/0000.npy        float32 [h, w] planar z (metres along the optical axis; objects: unit-sphere units),
                          0 = background

``w2c`` is OpenCV world-to-camera; intrinsics follow the pixel-centre rule of :mod:`tttlrm_ns.conventions`
(pixel ``(u, v)`` samples ``(u + 0.5, v + 0.5)``, a centred camera has ``cx = w / 2``).

Each item depends only on ``(seed, kind, index)`` (its own random stream), so runs are deterministic, resumable
(finished items are skipped) and parallel (items are independent). An item is written into a temporary folder and
renamed into place when complete, so an interrupted run never leaves a half-written item behind.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Optional

import numpy as np

from tttlrm_ns.synth import assets as A
from tttlrm_ns.synth.cameras import focal_from_fov, gl_c2w_to_cv_w2c, sphere_poses
from tttlrm_ns.synth.megasynth import MegaSynthConfig, build_megasynth_room
from tttlrm_ns.synth.megasynth import camera_poses as megasynth_camera_poses
from tttlrm_ns.synth.room import AssetSources, LightSpec, RoomConfig, SceneSpec, _shell, build_room
from tttlrm_ns.synth.trajectories import CAMERA_MODES, camera_poses
from tttlrm_ns.synth.zeroverse import ZeroverseConfig, make_object

SCENE_FILE = "opencv_cameras.json"
_KIND_ID = {"objects": 1, "scenes": 2, "zeroverse": 3, "megasynth": 4}
_ITEM_PREFIX = {"objects": "object", "scenes": "scene", "zeroverse": "zeroverse", "megasynth": "megasynth"}
_OBJECT_KINDS = ("objects", "zeroverse")  # object-centric kinds: ObjectsConfig cameras, views and background
_PIXEL_RULE = ("pixel (u, v) samples the continuous point (u + 0.5, v + 0.5): cx = w / 2 is a centred camera "
               "(tttlrm_ns.conventions); strict OpenCV (integer pixel centres) needs cx - 0.5, cy - 0.5")


@dataclass
class ObjectsConfig:
    """Object turntables, like ``gso_toy``: object scaled into the unit sphere, cameras on a sphere around it.
    Also the cameras, views, lighting and background of ``zeroverse`` items (whose camera distance is random, see
    :class:`~tttlrm_ns.synth.zeroverse.ZeroverseConfig`)."""

    views: int = 32
    fov_deg: float = 50.0  # gso_toy: fx = 549 px at 512 px
    distance: float = 2.7  # gso_toy camera distance
    elevation_range: tuple[float, float] = (-20.0, 60.0)
    # RGBA PNG (straight alpha) or rendered over white / black (RGB), or ``cluttered``: the object stands on the
    # floor of a textured room-like box with a few procedural pieces around (RGB; real captures have a background,
    # and a flat colour teaches the model that everything off the object is empty). None = the kind's default:
    # rgba for objects, white for zeroverse (the LRM-Zero training setting)
    background: Optional[Literal["rgba", "white", "black", "cluttered"]] = None
    # Random per item when set (else ``distance`` / ``fov_deg``; zeroverse draws its distance from its own
    # ``ZeroverseConfig.distance_range``): one value per item, all its views share it.
    distance_range: Optional[tuple[float, float]] = None
    fov_range: Optional[tuple[float, float]] = None
    ambient: float = 0.35
    headlight: float = 2.5
    supersample: int = 1  # odd; 3 = 3x3 anti-aliasing (about 5-8x slower)


@dataclass
class ScenesConfig:
    """Furnished rooms seen along a handheld-like camera path."""

    frames: int = 120
    supersample: int = 1  # odd; 3 = 3x3 anti-aliasing
    room: RoomConfig = field(default_factory=RoomConfig)
    # Chance that an item is rendered portrait (height and width swapped so that height > width); 1 = always.
    # Drawn from a separate stream so that the room and cameras of a seed do not depend on it.
    portrait_probability: float = 0.0


@dataclass
class MegaSynthScenesConfig:
    """MegaSynth-style procedural rooms (:mod:`tttlrm_ns.synth.megasynth`); cameras ``room.camera_mode``: a
    handheld-like ``path`` (default) or the paper's ``walls`` layout (walk along the walls, then the centre)."""

    frames: int = 64
    supersample: int = 1  # odd; 3 = 3x3 anti-aliasing
    room: MegaSynthConfig = field(default_factory=MegaSynthConfig)


@dataclass
class GenerateConfig:
    """What to generate and where. ``assets``: ``auto`` = Debian furniture + Sweet Home 3D textures where installed,
    procedural otherwise; ``debian`` = require them; ``cc0`` = CC0 furniture only + procedural textures (nothing
    that needs attribution or is copyleft); ``procedural`` = self-made assets only."""

    kind: Literal["objects", "scenes", "zeroverse", "megasynth"]
    out: Path
    num: int = 1
    height: int = 256
    width: int = 256
    seed: int = 0
    start: int = 0
    image_format: Literal["png", "jpg"] = "png"
    jpeg_quality: int = 95
    save_depth: bool = True
    assets: Literal["auto", "debian", "cc0", "procedural"] = "auto"
    libraries: tuple[str, ...] = ("BlendSwap-CC-0",)
    furniture_dir: Path = A.FURNITURE_DIR
    textures_jar: Optional[Path] = None
    cache_dir: Path = Path.home() / ".cache/tttlrm_ns/synth"
    workers: int = 1
    objects: ObjectsConfig = field(default_factory=ObjectsConfig)
    scenes: ScenesConfig = field(default_factory=ScenesConfig)
    zeroverse: ZeroverseConfig = field(default_factory=ZeroverseConfig)
    megasynth: MegaSynthScenesConfig = field(default_factory=MegaSynthScenesConfig)

    @property
    def background(self) -> str:
        """Object background actually used (``objects.background`` or the kind's default)."""
        return self.objects.background or ("white" if self.kind == "zeroverse" else "rgba")

    def validate(self) -> None:
        if self.kind not in _KIND_ID:
            raise ValueError(f"kind must be one of {sorted(_KIND_ID)}, got {self.kind!r}")
        if self.height < 8 or self.width < 8:
            raise ValueError(f"resolution {self.height}x{self.width} is too small (at least 8x8)")
        if self.num < 0 or self.start < 0:
            raise ValueError("num and start must be >= 0")
        if self.image_format not in ("png", "jpg"):
            raise ValueError(f"image format must be png or jpg, got {self.image_format!r}")
        if self.background not in ("rgba", "white", "black", "cluttered"):
            raise ValueError(f"object background must be rgba, white, black or cluttered, got {self.background!r}")
        if self.kind == "scenes" and self.scenes.room.camera_mode not in CAMERA_MODES:
            raise ValueError(f"room camera mode must be one of {CAMERA_MODES}, got {self.scenes.room.camera_mode!r}")
        if not 0.0 <= self.scenes.portrait_probability <= 1.0:
            raise ValueError(f"portrait probability must be in [0, 1], got {self.scenes.portrait_probability}")
        if self.kind in _OBJECT_KINDS and self.background == "rgba" and self.image_format == "jpg":
            raise ValueError("RGBA object renders need PNG: use --format png or --background white")
        bad = [lib for lib in self.libraries if lib not in A.LIBRARY_LICENSES]
        if bad:
            raise ValueError(f"unknown furniture libraries {bad}; choose from {sorted(A.LIBRARY_LICENSES)}")
        if self.assets == "cc0" and any(A.LIBRARY_LICENSES[lib] != "CC0-1.0" for lib in self.libraries):
            raise ValueError(f"--assets cc0 allows only CC0 libraries, got {list(self.libraries)}")
        for ss in (self.objects.supersample, self.scenes.supersample, self.megasynth.supersample):
            if ss < 1 or ss % 2 == 0:
                raise ValueError(f"supersample must be an odd integer >= 1, got {ss}")
        if ((self.kind in _OBJECT_KINDS and self.objects.views < 1)
                or (self.kind == "scenes" and self.scenes.frames < 2)):
            raise ValueError("need at least 1 view per object / 2 frames per scene")
        if self.kind == "zeroverse":
            self.zeroverse.validate()
        if self.kind == "megasynth" and self.megasynth.frames < 2:
            raise ValueError("need at least 2 frames per megasynth room")
        if self.kind == "megasynth" and self.megasynth.room.camera_mode not in ("path", "walls"):
            raise ValueError(f"megasynth camera mode must be path or walls, got {self.megasynth.room.camera_mode!r}")


def item_name(kind: str, index: int) -> str:
    return f"{_ITEM_PREFIX[kind]}_{index:05d}"


def item_rng(cfg: GenerateConfig, index: int) -> np.random.Generator:
    """The item's own random stream: a function of (seed, kind, index) only."""
    return np.random.default_rng(np.random.SeedSequence([cfg.seed, _KIND_ID[cfg.kind], index]))


def resolve_sources(cfg: GenerateConfig) -> AssetSources:
    """Load the asset catalogues the config asks for (see :class:`GenerateConfig`); missing packages fall back to
    procedural assets under ``auto`` and raise :class:`~tttlrm_ns.synth.assets.AssetError` under ``debian``/``cc0``."""
    furniture, textures = [], None
    if cfg.kind in ("zeroverse", "megasynth"):  # fully procedural: no asset packages
        return AssetSources(furniture=[], textures=None, cache_dir=Path(cfg.cache_dir))
    if cfg.assets != "procedural":
        try:
            # Rooms take room furniture; objects may be anything that is not a person, vehicle or garden item.
            categories = A.ROOM_CATEGORIES if cfg.kind == "scenes" else None
            furniture = A.load_furniture_catalog(cfg.libraries, cfg.furniture_dir, categories)
        except A.AssetError:
            if cfg.assets != "auto":
                raise
    if cfg.assets in ("auto", "debian"):
        jar = A.find_texture_jar(cfg.textures_jar)
        if jar is not None:
            textures = A.load_jar_textures(jar)
        elif cfg.assets == "debian":
            raise A.AssetError("sweethome3d.jar not found: apt-get download sweethome3d && dpkg -x sweethome3d_*.deb "
                               "DIR, then --textures-jar DIR/usr/share/sweethome3d/sweethome3d.jar")
    return AssetSources(furniture=furniture, textures=textures, cache_dir=Path(cfg.cache_dir))


def _object_spec(rng: np.random.Generator, cfg: GenerateConfig, sources: AssetSources) -> tuple[SceneSpec, dict]:
    """One model centred at the origin and scaled into the unit sphere, lit by ambient + headlight + a key light."""
    meshes = attribution = None
    pool = list(sources.furniture)
    for _ in range(10 if pool else 0):
        model = pool[int(rng.integers(len(pool)))]
        try:
            meshes, attribution = A.load_furniture_meshes(model, sources.cache_dir), model.attribution()
            break
        except (A.AssetError, ValueError, IndexError, KeyError):
            continue
    if meshes is None:
        meshes, attribution = A.procedural_furniture(rng)
    verts = np.concatenate([m.vertices for m in meshes])
    centre = (verts.min(0) + verts.max(0)) / 2
    scale = 1.0 / np.linalg.norm(verts - centre, axis=1).max()
    norm = np.diag([scale, scale, scale, 1.0])
    norm[:3, 3] = -scale * centre
    spec = SceneSpec(ambient=cfg.objects.ambient, bg_color=(1.0, 1.0, 1.0, 1.0))
    spec.meshes = [(m.copy().apply_transform(norm), True) for m in meshes]
    key = np.eye(4)
    key[:3, :3] = np.array([[1, 0, 0], [0, 0.5, 0.866], [0, -0.866, 0.5]])  # from above, tilted 60 degrees
    spec.lights.append(LightSpec("directional", key, np.ones(3), 1.5))
    spec.attributions.append(attribution)
    return spec, {"centre_m": centre.tolist(), "scale": float(scale)}


def _zeroverse_spec(rng: np.random.Generator, cfg: GenerateConfig) -> tuple[SceneSpec, dict]:
    """A Zeroverse-like procedural object (already centred, inside the unit sphere), lit like the objects kind.
    Flat shading: boxes and cut-outs have sharp edges that averaged vertex normals would round off."""
    obj = make_object(rng, cfg.zeroverse)
    spec = SceneSpec(ambient=cfg.objects.ambient, bg_color=(1.0, 1.0, 1.0, 1.0))
    spec.meshes = [(m, False) for m in obj.meshes]
    key = np.eye(4)
    key[:3, :3] = np.array([[1, 0, 0], [0, 0.5, 0.866], [0, -0.866, 0.5]])  # from above, tilted 60 degrees
    spec.lights.append(LightSpec("directional", key, np.ones(3), 1.5))
    spec.attributions.append({"name": "procedural Zeroverse-like object", "license": "CC0-1.0",
                              "source": "procedural (tttlrm_ns.synth.zeroverse)"})
    return spec, {"zeroverse": obj.info}


def _add_cluttered_surround(rng: np.random.Generator, spec: SceneSpec, distance: float, poses: np.ndarray) -> dict:
    """Put the object (inside the unit sphere) on the floor of a textured room-like box that encloses the cameras,
    with 2-5 procedural pieces around: a background with texture and depth instead of a flat colour. Returns
    metadata.

    The floor is just under the object (it stands there) unless a camera is lower (elevations go down to -20
    degrees): then it drops to 20 cm under the lowest camera, since a double-sided floor between camera and object
    would hide the object. Pieces stand outside the camera sphere (by their own half-size + 0.3), so none comes
    between a camera and the object: the object's pixels are those of the white-background render."""
    lowest = min(float(m.vertices[:, 1].min()) for m, _ in spec.meshes)
    floor = min(lowest - 1e-3, float(poses[:, 1, 3].min()) - 0.2)
    top = float(poses[:, 1, 3].max())
    half = distance + rng.uniform(1.5, 3.5, 2)  # walls beyond the cameras (x, z half-sizes)
    height = top - floor + rng.uniform(0.8, 2.0)  # ceiling above the highest camera
    shell = SceneSpec()
    _shell(rng, AssetSources(), 2 * half[0], 2 * half[1], height, shell)  # procedural textures: no asset files
    pieces = int(rng.integers(2, 6))
    for _ in range(pieces):
        meshes, _attribution = A.procedural_furniture(rng)
        verts = np.concatenate([m.vertices for m in meshes])
        extent = float(np.abs(verts[:, [0, 2]]).max())
        az = rng.uniform(0, 2 * np.pi)
        rad = distance + 0.3 + extent + rng.uniform(0.0, 0.5)
        pose = np.eye(4)
        pose[:3, 3] = (rad * np.sin(az), 0.0, rad * np.cos(az))
        shell.meshes += [(m.copy().apply_transform(pose), True) for m in meshes]
    lift = np.eye(4)
    lift[1, 3] = floor
    spec.meshes += [(m.apply_transform(lift), smooth) for m, smooth in shell.meshes]
    spec.attributions.append({"name": "procedural backdrop room and pieces", "license": "CC0-1.0",
                              "source": "procedural (tttlrm_ns.synth.assets)"})
    return {"backdrop_size_m": [float(2 * half[0]), height, float(2 * half[1])], "backdrop_floor_y": floor,
            "backdrop_pieces": pieces}


def _encode_image(rgb: np.ndarray, alpha: Optional[np.ndarray], path: Path, cfg: GenerateConfig) -> None:
    from PIL import Image

    if alpha is not None:
        Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(path, format="PNG")
    elif cfg.image_format == "jpg":
        Image.fromarray(rgb, "RGB").save(path, format="JPEG", quality=cfg.jpeg_quality)
    else:
        Image.fromarray(rgb, "RGB").save(path, format="PNG")


def _probe_depth(renderer, spec: SceneSpec, f: float, h: int, w: int, poses: np.ndarray) -> np.ndarray:
    """Depth [N, ph, pw] of the item's scene from ``poses`` at 24 px width and the item's field of view: enough to
    measure how far the visible surfaces are (camera planning), ~1 ms a view."""
    from tttlrm_ns.synth.render import Intrinsics

    pw = 24
    ph = max(8, int(round(pw * h / w)))
    s = pw / w
    intr = Intrinsics(fx=f * s, fy=f * s, cx=pw / 2, cy=ph / 2, width=pw, height=ph)
    return np.stack([d for _, _, d in renderer.render(spec, intr, poses)])


def generate_item(cfg: GenerateConfig, index: int, renderer, sources: AssetSources,
                  on_frame: Optional[Callable[[], None]] = None) -> Optional[int]:
    """Render item ``index`` into ``cfg.out``; returns the number of images written, or None if it already exists."""
    from tttlrm_ns.synth.render import Intrinsics

    out = Path(cfg.out)
    name = item_name(cfg.kind, index)
    final = out / name
    if (final / SCENE_FILE).is_file():
        return None
    if final.exists():
        raise FileExistsError(f"{final} exists but has no {SCENE_FILE}: not written by this tool (or damaged); "
                              "remove it to regenerate")
    rng = item_rng(cfg, index)
    h, w = cfg.height, cfg.width
    extra = {}
    if cfg.kind in _OBJECT_KINDS:
        oc = cfg.objects
        if cfg.kind == "objects":
            spec, extra = _object_spec(rng, cfg, sources)
            distance = oc.distance
            if oc.distance_range is not None:  # drawn only when asked: default items keep their random stream
                distance = float(rng.uniform(*oc.distance_range))
        else:  # geometry first, then the camera distance: the mesh depends on the rng state at the item's start
            spec, extra = _zeroverse_spec(rng, cfg)
            distance = float(rng.uniform(*cfg.zeroverse.distance_range))
        fov = oc.fov_deg if oc.fov_range is None else float(rng.uniform(*oc.fov_range))
        extra.update(camera_distance=distance, fov_x_deg=fov, background=cfg.background)
        f = focal_from_fov(fov, w)
        poses = sphere_poses(rng, oc.views, distance, oc.elevation_range)
        # Background last, so the object and cameras of a seed are the same whatever the background.
        if cfg.background == "black":
            spec.bg_color = (0.0, 0.0, 0.0, 1.0)
        elif cfg.background == "cluttered":
            extra.update(_add_cluttered_surround(rng, spec, distance, poses))
        rgba, headlight, ss = cfg.background == "rgba", oc.headlight, oc.supersample
    elif cfg.kind == "megasynth":
        ms = cfg.megasynth
        scene = build_megasynth_room(rng, ms.room)
        spec = scene.spec
        f = focal_from_fov(rng.uniform(*ms.room.fov_range), w)
        poses = megasynth_camera_poses(rng, ms.room, scene, ms.frames)
        rgba, headlight, ss = False, 0.0, ms.supersample
        extra = {"room_size_m": [scene.layout.width, scene.layout.height, scene.layout.depth],
                 "camera_mode": ms.room.camera_mode, "contents": scene.counts}
    else:
        sc = cfg.scenes
        # Orientation from its own stream (keyed on the item), so it never shifts the room's random draws.
        portrait = (sc.portrait_probability > 0 and np.random.default_rng(
            np.random.SeedSequence([cfg.seed, _KIND_ID[cfg.kind], index, 1])).uniform() < sc.portrait_probability)
        if portrait:
            h, w = max(h, w), min(h, w)
        spec, layout = build_room(rng, sc.room, sources)
        fov = float(rng.uniform(*sc.room.fov_range))  # horizontal, over the (possibly portrait) width
        f = focal_from_fov(fov, w)
        poses, cam_info = camera_poses(rng, sc.room, layout, sc.frames,
                                       probe=lambda p: _probe_depth(renderer, spec, f, h, w, p))
        rgba, headlight, ss = False, 0.0, sc.supersample
        extra = {"room_size_m": [layout.width, layout.height, layout.depth], "camera_mode": sc.room.camera_mode,
                 "fov_x_deg": fov, "orientation": "portrait" if h > w else "landscape" if w > h else "square",
                 **cam_info}
    intr = Intrinsics(fx=f, fy=f, cx=w / 2, cy=h / 2, width=w, height=h)
    w2c = gl_c2w_to_cv_w2c(poses)

    tmp = out / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    if cfg.save_depth:
        (tmp / "depth").mkdir()
    ext = "png" if rgba else cfg.image_format
    frames = []
    for i, (rgb, alpha, depth) in enumerate(renderer.render(spec, intr, poses, rgba=rgba, headlight=headlight,
                                                                     supersample=ss)):
        frame = {"file_path": f"images/{i:04d}.{ext}"}
        _encode_image(rgb, alpha, tmp / frame["file_path"], cfg)
        if cfg.save_depth:
            frame["depth_path"] = f"depth/{i:04d}.npy"
            np.save(tmp / frame["depth_path"], depth)
        frame.update(w2c=w2c[i].tolist(), w=w, h=h, fx=f, fy=f, cx=intr.cx, cy=intr.cy)
        frames.append(frame)
        if on_frame is not None:
            on_frame()
    unique_assets = list({json.dumps(a, sort_keys=True): a for a in spec.attributions}.values())
    meta = {
        "scene_name": name,
        "frames": frames,
        "generator": {"tool": "tttlrm_ns.synth (tttlrm-synth)", "kind": cfg.kind, "seed": cfg.seed,
                      "index": index, "renderer": f"pyrender 0.1.45 + OSMesa (raster, {ss}x{ss} supersampling, no global illumination)",
                      "pixel_centre": _PIXEL_RULE, **extra},
        "assets": unique_assets,
    }
    if cfg.save_depth:
        meta["generator"]["depth"] = "planar z along the optical axis (float32 .npy), 0 = background"
    (tmp / SCENE_FILE).write_text(json.dumps(meta, indent=1))
    os.rename(tmp, final)  # atomic publish: the item appears complete or not at all
    return len(frames)


def _clean_stale_tmp(out: Path) -> None:
    """Remove temporary item folders left by processes that no longer exist (killed runs)."""
    for tmp in out.glob(".tmp-*"):
        try:
            pid = int(tmp.name.rsplit("-", 1)[1])
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError):
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:
            pass  # alive, someone else's


# ----------------------------------------------------------------------------------------------------------------
# Driver: sequential in-process, or a pool of worker processes (one GL context each).

_WORKER: dict = {}


def _worker_item(cfg: GenerateConfig, index: int) -> tuple[int, Optional[int], float]:
    from tttlrm_ns.synth.render import SpecRenderer

    if "renderer" not in _WORKER:
        _WORKER["renderer"] = SpecRenderer()
        _WORKER["sources"] = resolve_sources(cfg)
    t0 = time.perf_counter()
    n = generate_item(cfg, index, _WORKER["renderer"], _WORKER["sources"])
    return index, n, time.perf_counter() - t0


@dataclass
class RunSummary:
    written: int = 0
    skipped: int = 0
    images: int = 0
    seconds: float = 0.0

    @property
    def images_per_hour(self) -> float:
        return 3600.0 * self.images / self.seconds if self.seconds > 0 else float("nan")


def generate(cfg: GenerateConfig, progress: bool = True) -> RunSummary:
    """Generate items ``start .. start + num - 1`` (skipping finished ones). Returns counts and timing."""
    cfg.validate()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    _clean_stale_tmp(out)
    todo = [i for i in range(cfg.start, cfg.start + cfg.num) if not (out / item_name(cfg.kind, i) / SCENE_FILE).is_file()]
    summary = RunSummary(skipped=cfg.num - len(todo))
    per_item = (cfg.objects.views if cfg.kind in _OBJECT_KINDS
                else cfg.megasynth.frames if cfg.kind == "megasynth" else cfg.scenes.frames)
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("images"),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn())
    t0 = time.perf_counter()
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task(f"{cfg.kind} -> {out}", total=len(todo) * per_item, rate="")

        def tick(n: int = 1) -> None:
            summary.images += n
            el = time.perf_counter() - t0
            bar.update(task, advance=n, rate=f"{summary.images / max(el, 1e-9):.1f} img/s")

        if cfg.workers <= 1:
            from tttlrm_ns.synth.render import SpecRenderer

            renderer, sources = (SpecRenderer(), resolve_sources(cfg)) if todo else (None, None)
            for i in todo:
                if generate_item(cfg, i, renderer, sources, on_frame=tick) is not None:
                    summary.written += 1
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            # spawn: each worker imports pyrender fresh and owns exactly one GL context.
            with ProcessPoolExecutor(max_workers=cfg.workers, mp_context=mp.get_context("spawn")) as pool:
                futures = [pool.submit(_worker_item, cfg, i) for i in todo]
                for fut in as_completed(futures):
                    _, n, _ = fut.result()
                    if n is not None:
                        summary.written += 1
                        tick(n)
    summary.seconds = time.perf_counter() - t0
    return summary


__all__ = ["GenerateConfig", "ObjectsConfig", "ScenesConfig", "MegaSynthScenesConfig", "RunSummary", "generate", "generate_item",
           "resolve_sources", "item_name", "item_rng", "SCENE_FILE"]

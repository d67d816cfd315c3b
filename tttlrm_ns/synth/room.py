"""Procedural rooms: textured floor / walls / ceiling, furniture placed without overlaps, lights, and a smooth
handheld-like camera path through the free space.

Everything here is GL-free (numpy + trimesh) and deterministic given the ``numpy.random.Generator``; rendering is
:mod:`tttlrm_ns.synth.render`. World frame: y up, metres, room ``[-W/2, W/2] x [0, H] x [-D/2, D/2]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from tttlrm_ns.conventions import look_at_gl
from tttlrm_ns.synth import assets as A
from tttlrm_ns.synth.cameras import smooth_noise, spline_path


@dataclass
class RoomConfig:
    """Room generator settings (sizes in metres, angles in degrees)."""

    width_range: tuple[float, float] = (3.5, 7.0)
    depth_range: tuple[float, float] = (3.5, 7.0)
    height_range: tuple[float, float] = (2.4, 3.0)
    furniture_range: tuple[int, int] = (6, 12)
    paintings_range: tuple[int, int] = (0, 3)
    rug_probability: float = 0.6
    lights_range: tuple[int, int] = (1, 3)
    wall_clearance: float = 0.5  # camera distance to walls
    furniture_clearance: float = 0.35  # camera distance to furniture footprints
    centre_reserve: float = 0.7  # free-standing furniture stays out of this radius around the room centre
    # camera path
    path_points_range: tuple[int, int] = (4, 6)
    camera_height_range: tuple[float, float] = (1.1, 1.7)
    pitch_range: tuple[float, float] = (-25.0, 5.0)
    shake_m: float = 0.01  # RMS hand shake (position)
    shake_roll_deg: float = 1.5
    fov_range: tuple[float, float] = (55.0, 75.0)  # horizontal field of view
    # Trajectory kind (see :func:`camera_poses`): the handheld walk-through ``path`` is what the model was trained
    # on; ``orbit``, ``forward`` and ``closeup`` imitate the other ways people capture (issue 23, item 4).
    camera_mode: str = "path"
    orbit_arc_range_deg: tuple[float, float] = (30.0, 360.0)  # angle swept around the subject
    orbit_radius_range: tuple[float, float] = (1.0, 2.2)  # nominal distance to the subject's centre
    orbit_ellipse: float = 0.2  # semi-axes r (1 +- e), e drawn in [0, orbit_ellipse]: people do not walk circles
    orbit_height_wobble_m: float = 0.08  # RMS slow height change along the orbit
    forward_patch_range: tuple[float, float] = (0.1, 0.3)  # side of the square patch the cameras lie on (LLFF)
    forward_jitter_deg: float = 3.0  # each view's direction within +- this (per axis) of the common direction
    closeup_distance_range: tuple[float, float] = (0.3, 0.8)  # median depth of the close-up views
    closeup_sweep_range: tuple[float, float] = (0.2, 0.5)  # sideways travel of the close-up path


@dataclass
class AssetSources:
    """Where rooms take their assets from; ``None`` / empty members fall back to procedural assets."""

    furniture: Sequence[A.FurnitureModel] = ()
    textures: Optional[dict[str, list[A.TextureAsset]]] = None
    cache_dir: Path = Path.home() / ".cache/tttlrm_ns/synth"


@dataclass
class LightSpec:
    kind: str  # "point" | "directional" | "spot"
    pose: np.ndarray  # [4, 4] world pose (directional and spot lights shine along the pose's -z)
    color: np.ndarray  # [3]
    intensity: float
    inner_cone: float = 0.0  # spot lights: cone half-angles in radians (full intensity inside inner_cone)
    outer_cone: float = math.pi / 4


@dataclass
class SceneSpec:
    """What to render: world-space meshes (trimesh, with ``smooth`` shading flag), lights, background."""

    meshes: list = field(default_factory=list)  # (trimesh.Trimesh, smooth: bool)
    lights: list[LightSpec] = field(default_factory=list)
    ambient: float = 0.3
    bg_color: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    attributions: list[dict] = field(default_factory=list)


@dataclass
class RoomLayout:
    """Room size and furniture footprints (world AABBs [x0, z0, x1, z1] and heights), for camera planning."""

    width: float
    depth: float
    height: float
    footprints: list[np.ndarray] = field(default_factory=list)
    heights: list[float] = field(default_factory=list)  # top of each footprint's piece (floor at y = 0)


def textured_quad(origin, a, b, texture: A.TextureAsset):
    """A quad ``origin + s a + t b`` (s, t in [0, 1]) facing ``a x b``, with the texture tiled at its real size."""
    import trimesh
    from PIL import Image

    origin, a, b = (np.asarray(v, float) for v in (origin, a, b))
    verts = np.stack([origin, origin + a, origin + a + b, origin + b])
    su, sv = np.linalg.norm(a) / texture.size_m[0], np.linalg.norm(b) / texture.size_m[1]
    uv = np.array([[0, 0], [su, 0], [su, sv], [0, sv]], float)
    mesh = trimesh.Trimesh(verts, [[0, 1, 2], [0, 2, 3]], process=False)
    mesh.visual = trimesh.visual.TextureVisuals(uv=uv, image=Image.fromarray(texture.image))
    return mesh


def _pick_texture(rng, sources: AssetSources, category: str, fallback: Sequence[str]) -> A.TextureAsset:
    pool = (sources.textures or {}).get(category, [])
    if pool and rng.uniform() < 0.75:
        return pool[int(rng.integers(len(pool)))]
    return A.procedural_texture(rng, fallback[int(rng.integers(len(fallback)))])


def _shell(rng, sources: AssetSources, w: float, d: float, h: float, spec: SceneSpec) -> None:
    """Floor, ceiling and four walls, all facing the room interior."""
    x0, z0 = -w / 2, -d / 2
    floor = _pick_texture(rng, sources, "Floor", ("wood", "tile", "carpet"))
    wall = _pick_texture(rng, sources, "Wall", ("plaster", "brick", "tile", "plaster"))
    accent = _pick_texture(rng, sources, "Wall", ("plaster", "brick")) if rng.uniform() < 0.3 else wall
    ceiling = A.procedural_texture(rng, "plaster")
    X, Y, Z = np.array([w, 0, 0]), np.array([0, h, 0]), np.array([0, 0, d])
    quads = [((x0, 0, z0), Z, X, floor), ((x0, h, z0), X, Z, ceiling),
             ((x0, 0, z0), X, Y, accent), ((x0, 0, -z0), Y, X, wall),
             ((x0, 0, z0), Y, Z, wall), ((-x0, 0, z0), Z, Y, wall)]
    for o, a, b, tex in quads:
        spec.meshes.append((textured_quad(o, a, b, tex), False))
    for tex in {id(t): t for t in (floor, wall, accent, ceiling)}.values():
        spec.attributions.append(tex.attribution())


def _yaw_matrix(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    m = np.eye(4)
    m[0, 0], m[0, 2], m[2, 0], m[2, 2] = c, s, -s, c  # rotation about +y: maps +z to (sin, 0, cos)
    return m


def _footprint(verts: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """AABB [x0, z0, x1, z1] of vertices [N, 3] after the rotation ``rot`` [4, 4]."""
    v = verts @ rot[:3, :3].T
    lo, hi = v.min(0), v.max(0)
    return np.array([lo[0], lo[2], hi[0], hi[2]])


def _overlaps(box: np.ndarray, boxes: list[np.ndarray], margin: float) -> bool:
    return any(box[0] < b[2] + margin and b[0] < box[2] + margin and box[1] < b[3] + margin and b[1] < box[3] + margin
               for b in boxes)


def _load_piece(rng, sources: AssetSources, max_size: float):
    """Meshes (bottom at y = 0, centred) + attribution of a random catalogue model that fits, else procedural."""
    if sources.furniture:
        for _ in range(10):
            model = sources.furniture[int(rng.integers(len(sources.furniture)))]
            if max(model.width, model.depth) <= max_size and model.height < 2.3:
                try:
                    return A.load_furniture_meshes(model, sources.cache_dir), model.attribution()
                except (A.AssetError, ValueError, IndexError, KeyError):
                    continue  # a broken model: try another (deterministically, same rng stream)
    return A.procedural_furniture(rng)


def _place_furniture(rng, cfg: RoomConfig, sources: AssetSources, layout: RoomLayout, spec: SceneSpec) -> None:
    w, d = layout.width, layout.depth
    n = int(rng.integers(cfg.furniture_range[0], cfg.furniture_range[1] + 1))
    for _ in range(n):
        meshes, attribution = _load_piece(rng, sources, max_size=0.6 * min(w, d))
        verts = np.concatenate([m.vertices for m in meshes])
        placed = False
        for _attempt in range(30):
            if rng.uniform() < 0.65:  # back against a wall, facing into the room (model front is +z)
                side = int(rng.integers(4))
                yaw = [0.0, math.pi, math.pi / 2, -math.pi / 2][side]
            else:  # free-standing, roughly axis-aligned
                side = -1
                yaw = rng.integers(4) * math.pi / 2 + math.radians(rng.uniform(-20, 20))
            rot = _yaw_matrix(yaw)
            box = _footprint(verts, rot)
            hw, hd = (box[2] - box[0]) / 2, (box[3] - box[1]) / 2
            if hw > w / 2 - 0.05 or hd > d / 2 - 0.05:
                break
            x = rng.uniform(-w / 2 + hw + 0.02, w / 2 - hw - 0.02)
            z = rng.uniform(-d / 2 + hd + 0.02, d / 2 - hd - 0.02)
            if side == 0:
                z = -d / 2 + hd + 0.02
            elif side == 1:
                z = d / 2 - hd - 0.02
            elif side == 2:
                x = -w / 2 + hw + 0.02
            elif side == 3:
                x = w / 2 - hw - 0.02
            cx, cz = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2  # rotated footprint centre offset
            world = box + np.array([x - cx, z - cz, x - cx, z - cz])
            if side < 0 and _overlaps(world, [np.array([-cfg.centre_reserve, -cfg.centre_reserve,
                                                         cfg.centre_reserve, cfg.centre_reserve])], 0.0):
                continue
            if _overlaps(world, layout.footprints, 0.05):
                continue
            pose = rot.copy()
            pose[0, 3], pose[2, 3] = x - cx, z - cz
            for m in meshes:
                spec.meshes.append((m.copy().apply_transform(pose), True))
            layout.footprints.append(world)
            layout.heights.append(float(verts[:, 1].max()))
            spec.attributions.append(attribution)
            placed = True
            break
        if not placed:
            continue


def _decorations(rng, cfg: RoomConfig, layout: RoomLayout, spec: SceneSpec) -> None:
    """Paintings on the walls (slightly in front of them) and a rug: cheap extra texture."""
    w, d, h = layout.width, layout.depth, layout.height
    for _ in range(int(rng.integers(cfg.paintings_range[0], cfg.paintings_range[1] + 1))):
        art = A.procedural_texture(rng, "art")
        pw, ph = rng.uniform(0.4, 1.2), rng.uniform(0.3, 0.9)
        art = A.TextureAsset(art.name, art.image, (pw, ph), art.license, art.source)
        y = rng.uniform(1.2, min(h - 0.2, 1.9)) - ph / 2
        side = int(rng.integers(4))
        eps = 0.01
        if side == 0:
            x = rng.uniform(-w / 2 + 0.1, w / 2 - 0.1 - pw)
            quad = ((x, y, -d / 2 + eps), (pw, 0, 0), (0, ph, 0))
        elif side == 1:
            x = rng.uniform(-w / 2 + 0.1 + pw, w / 2 - 0.1)
            quad = ((x, y, d / 2 - eps), (-pw, 0, 0), (0, ph, 0))
        elif side == 2:
            z = rng.uniform(-d / 2 + 0.1 + pw, d / 2 - 0.1)
            quad = ((-w / 2 + eps, y, z), (0, 0, -pw), (0, ph, 0))
        else:
            z = rng.uniform(-d / 2 + 0.1, d / 2 - 0.1 - pw)
            quad = ((w / 2 - eps, y, z), (0, 0, pw), (0, ph, 0))
        spec.meshes.append((textured_quad(*quad, art), False))
    spec.attributions.append({"name": "procedural paintings/rug", "license": "CC0-1.0",
                              "source": "procedural (tttlrm_ns.synth.assets)"})
    if rng.uniform() < cfg.rug_probability:
        rug = A.procedural_texture(rng, "carpet")
        rw, rd = rng.uniform(1.2, 0.7 * w), rng.uniform(1.0, 0.7 * d)
        rug = A.TextureAsset(rug.name, rug.image, (rw, rd), rug.license, rug.source)
        spec.meshes.append((textured_quad((-rw / 2, 0.004, -rd / 2), (0, 0, rd), (rw, 0, 0), rug), False))


def _lights(rng, cfg: RoomConfig, layout: RoomLayout, spec: SceneSpec) -> None:
    w, d, h = layout.width, layout.depth, layout.height
    spec.ambient = float(rng.uniform(0.25, 0.45))
    n = int(rng.integers(cfg.lights_range[0], cfg.lights_range[1] + 1))
    for _ in range(n):
        pose = np.eye(4)
        pose[:3, 3] = (rng.uniform(-w / 3, w / 3), h - 0.3, rng.uniform(-d / 3, d / 3))
        warm = rng.uniform(0, 0.25)
        spec.lights.append(LightSpec("point", pose, np.array([1.0, 1.0 - 0.3 * warm, 1.0 - warm]),
                                     float(rng.uniform(6, 12) * h * h / n)))
    # Soft "window" light from a random side, tilted down.
    sun = look_at_gl(np.zeros(3), np.array([rng.uniform(-1, 1), -1.0, rng.uniform(-1, 1)]))
    spec.lights.append(LightSpec("directional", sun, np.ones(3), float(rng.uniform(0.5, 1.5))))


def _free_mask(cfg: RoomConfig, layout: RoomLayout, xs: np.ndarray, zs: np.ndarray) -> np.ndarray:
    """Whether camera positions (x, z) [N] keep the clearances to walls and furniture footprints."""
    ok = (np.abs(xs) <= layout.width / 2 - cfg.wall_clearance) & (np.abs(zs) <= layout.depth / 2 - cfg.wall_clearance)
    c = cfg.furniture_clearance
    for b in layout.footprints:
        ok &= ~((xs > b[0] - c) & (xs < b[2] + c) & (zs > b[1] - c) & (zs < b[3] + c))
    return ok


def _view_directions(rng, cfg: RoomConfig, layout: RoomLayout, pts: np.ndarray) -> np.ndarray:
    """[K, 3] unit view directions at the control points: towards furniture or far parts of the room (not the
    nearest wall), pitched within ``pitch_range``, turning at most ~100 degrees between control points so the
    interpolated heading never passes through zero and consecutive views overlap."""
    w, d = layout.width, layout.depth
    centres = [np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2]) for b in layout.footprints]
    dirs, prev = [], None
    for p in pts:
        best = None
        for _ in range(20):
            if centres and rng.uniform() < 0.75:
                t = centres[int(rng.integers(len(centres)))] + rng.normal(0, 0.2, 2)
            else:
                t = rng.uniform([-w / 2, -d / 2], [w / 2, d / 2])
            v = t - p[[0, 2]]
            dist = np.linalg.norm(v)
            if dist < 1e-6:
                continue
            yaw = math.atan2(v[0], v[1])
            turn = 0.0 if prev is None else abs((yaw - prev + math.pi) % (2 * math.pi) - math.pi)
            score = min(dist, 2.5) - 2.0 * max(turn - math.radians(100), 0)
            if best is None or score > best[0]:
                best = (score, yaw)
        yaw = best[1] if best else (prev or 0.0)
        if prev is not None:  # hard limit: opposite consecutive directions would interpolate through zero
            turn = (yaw - prev + math.pi) % (2 * math.pi) - math.pi
            if abs(turn) > math.radians(100):
                yaw = prev + math.copysign(math.radians(100), turn)
        pitch = math.radians(rng.uniform(*cfg.pitch_range))
        dirs.append([math.cos(pitch) * math.sin(yaw), math.sin(pitch), math.cos(pitch) * math.cos(yaw)])
        prev = yaw
    return np.array(dirs)


def _free_cells(cfg: RoomConfig, layout: RoomLayout) -> np.ndarray:
    """[N, 2] (x, z) centres of the 5 cm floor cells that keep the camera clearances (the room centre if none)."""
    g = np.arange(-layout.width / 2, layout.width / 2, 0.05), np.arange(-layout.depth / 2, layout.depth / 2, 0.05)
    gx, gz = np.meshgrid(*g, indexing="ij")
    free = _free_mask(cfg, layout, gx.ravel(), gz.ravel())
    cells = np.stack([gx.ravel()[free], gz.ravel()[free]], -1)
    if len(cells) == 0:  # tiny room: fall back to the centre region
        cells = np.zeros((1, 2))
    return cells


def camera_path(rng, cfg: RoomConfig, layout: RoomLayout, frames: int) -> np.ndarray:
    """[frames, 4, 4] OpenGL c2w along a smooth path through the free space, looking around the room.

    Control points are drawn from the free floor area (grid of 5 cm cells); a path whose samples leave it is
    redrawn (up to 50 times, then the best one is kept). Views look at furniture or across the room, turning
    gradually (see :func:`_view_directions`); a small band-limited shake is added to position and roll.
    """
    cells = _free_cells(cfg, layout)
    best = None
    for _ in range(50):
        k = int(rng.integers(cfg.path_points_range[0], cfg.path_points_range[1] + 1))
        xz = cells[rng.integers(len(cells), size=k)]
        pts = np.c_[xz[:, 0], rng.uniform(*cfg.camera_height_range, k), xz[:, 1]]
        dirs = _view_directions(rng, cfg, layout, pts)
        pos, fwd = spline_path(pts, dirs, frames)
        bad = int((~_free_mask(cfg, layout, pos[:, 0], pos[:, 2])).sum())
        if best is None or bad < best[0]:
            best = (bad, pos, fwd)
        if bad == 0:
            break
    _, pos, fwd = best
    pos = pos + smooth_noise(rng, frames, 3, cfg.shake_m, (2, 8))
    roll = np.radians(smooth_noise(rng, frames, 1, cfg.shake_roll_deg, (1, 5))[:, 0])
    return np.stack([look_at_gl(p, p + f, roll=r) for p, f, r in zip(pos, fwd, roll)])


def build_room(rng: np.random.Generator, cfg: RoomConfig, sources: AssetSources) -> tuple[SceneSpec, RoomLayout]:
    """A random furnished room (see the module docstring)."""
    layout = RoomLayout(width=float(rng.uniform(*cfg.width_range)), depth=float(rng.uniform(*cfg.depth_range)),
                        height=float(rng.uniform(*cfg.height_range)))
    spec = SceneSpec(bg_color=(0.0, 0.0, 0.0, 1.0))
    _shell(rng, sources, layout.width, layout.depth, layout.height, spec)
    _place_furniture(rng, cfg, sources, layout, spec)
    _decorations(rng, cfg, layout, spec)
    _lights(rng, cfg, layout, spec)
    return spec, layout


__all__ = ["RoomConfig", "AssetSources", "SceneSpec", "LightSpec", "RoomLayout", "build_room", "camera_path",
           "textured_quad"]

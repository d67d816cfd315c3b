"""MegaSynth-style procedural rooms (after arXiv 2412.14166): a room of random size filled with groups ("object
boxes") of random primitives on the floor, the walls and the ceiling, thin sticks, slabs and wireframe boxes, with
height-field bumps, procedural PBR materials and several lights; plus two camera layouts.

GL-free (numpy + trimesh) and deterministic given the ``numpy.random.Generator``; rendering is
:mod:`tttlrm_ns.synth.render`, the item writer :mod:`tttlrm_ns.synth.generate` (``--kind megasynth``).

Units. The paper draws everything in normalised units (floor side U(17, 30), height U(10, 15), large boxes of side
4-8, small boxes 2-4, camera clearance 0.15). We build in **metres** like the furnished rooms (so depth is metric and
the two sources mix): floor sides U(4, 9) m, height U(2.5, 4) m, i.e. about 0.27 m per paper unit, and the box sizes
scaled by the same factor (large 1.0-2.0 m, small 0.4-0.9 m). World frame as :mod:`tttlrm_ns.synth.room`: y up,
room ``[-W/2, W/2] x [0, H] x [-D/2, D/2]``.

Differences from the paper, on purpose: raster lighting (pyrender) has no area lights, so the two area lights
become point lights near the ceiling and the floor, the window a soft directional light, the sun a strong one, and
"emissive sticks" are sticks with an emissive material plus a point light next to them; no mirror-like scenes (a
rasteriser without environment maps renders them black). Materials: half of the slots metallic U(0, 1) with
roughness U(0, 0.2) as in the paper, the other half dielectric with roughness U(0.4, 1).

Cameras (:func:`camera_poses`):

* ``path`` (default): the smooth handheld-like path of :func:`tttlrm_ns.synth.room.camera_path` through the free
  floor area, because the trainer's default sampler takes temporally ordered frame windows;
* ``walls``: the paper's layout: 3/4 of the frames in a band along the walls looking at the room centre, ordered
  by a walk around the room (neighbouring indices are neighbouring cameras, so frame windows still overlap), then
  1/4 in the central quarter of the room with yaw anywhere, pitch and roll within +-10 degrees, ordered by yaw.

Both keep every camera at least ``camera_clearance`` from every object's bounding box (:func:`min_clearance`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from tttlrm_ns.conventions import look_at_gl
from tttlrm_ns.synth import assets as A
from tttlrm_ns.synth.room import AssetSources, LightSpec, RoomConfig, RoomLayout, SceneSpec, _shell, camera_path

_PROC = {"license": "CC0-1.0", "source": "procedural (tttlrm_ns.synth.megasynth)"}


@dataclass
class MegaSynthConfig:
    """Procedural room settings (metres, degrees; paper values in normalised units in the module docstring)."""

    floor_range: tuple[float, float] = (4.0, 9.0)  # width and depth, drawn independently
    height_range: tuple[float, float] = (2.5, 4.0)
    large_boxes_range: tuple[int, int] = (2, 5)  # on the floor, each holding large_prims_range primitives
    large_side_range: tuple[float, float] = (1.0, 2.0)
    large_prims_range: tuple[int, int] = (4, 9)
    small_boxes_range: tuple[int, int] = (4, 8)  # on the floor or stacked on a large box
    small_side_range: tuple[float, float] = (0.4, 0.9)
    small_prims_range: tuple[int, int] = (2, 5)
    stack_probability: float = 0.4
    ceiling_boxes_range: tuple[int, int] = (2, 4)
    wall_boxes_range: tuple[int, int] = (3, 6)
    wall_depth_max: float = 0.4  # how far wall boxes, shelves and wall sticks reach into the room
    wireframe_probability: float = 0.8
    slab_probability: float = 0.7
    wall_sticks_range: tuple[int, int] = (5, 16)
    open_sticks_probability: float = 0.5
    emissive_sticks_probability: float = 0.7
    flat_face_probability: float = 0.1  # a primitive face without height-field bumps
    bump_amplitude: float = 0.15  # RMS bump height (at most) as a fraction of the primitive's smallest side
    material_slots_range: tuple[int, int] = (6, 12)
    metallic_slot_probability: float = 0.5
    centre_reserve: float = 0.9  # floor objects keep out of this half-size square around the centre (camera room)
    # cameras
    camera_mode: Literal["path", "walls"] = "path"
    fov_range: tuple[float, float] = (45.0, 70.0)  # horizontal, one per room
    camera_clearance: float = 0.2  # to any object's bounding box (3D), both modes
    path_wall_clearance: float = 0.65  # path mode: to the walls (wall objects reach wall_depth_max + sticks)
    path_floor_clearance: float = 0.35  # path mode: to floor objects' footprints
    path_height_range: tuple[float, float] = (1.1, 1.7)
    wall_band: tuple[float, float] = (0.6, 1.0)  # walls mode: distance of the camera band from the walls
    wall_fraction: float = 0.75  # walls mode: 36 of 48 in the paper


@dataclass
class MegaSynthScene:
    """A built room: what to render (``spec``), its size and floor footprints (``layout``, for the camera path) and
    the world AABB of every object ``boxes`` [K, 2, 3] (min, max corners; the shell is not included)."""

    spec: SceneSpec
    layout: RoomLayout
    boxes: np.ndarray
    counts: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------- materials


def _noise_texture(rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """uint8 [size, size, 3] tileable two-colour pattern: smooth noise, stripes, checker or blotches."""
    c1, c2 = A._palette(rng, "art"), A._palette(rng, "tile")
    n = A.tileable_noise(rng, size, octaves=int(rng.integers(2, 5)), base=int(rng.integers(1, 4)))
    y, x = np.meshgrid(np.arange(size) / size, np.arange(size) / size, indexing="ij")
    kind = int(rng.integers(4))
    if kind == 0:
        t = n
    elif kind == 1:  # stripes warped by the noise (integer frequency keeps the tiling)
        k = int(rng.integers(2, 9))
        t = 0.5 + 0.5 * np.sin(2 * math.pi * (k * (x if rng.uniform() < 0.5 else y) + 0.8 * n))
    elif kind == 2:
        k = int(rng.integers(2, 9))
        t = ((np.floor(x * k) + np.floor(y * k)) % 2) * 0.8 + 0.2 * n
    else:
        t = (n > rng.uniform(0.35, 0.65)).astype(float) * 0.85 + 0.15 * n
    img = c1 * t[..., None] + c2 * (1 - t[..., None])
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


@dataclass
class _Slot:
    image: np.ndarray  # uint8 [S, S, 3]
    tile_m: float
    metallic: float
    roughness: float
    emissive: tuple[float, float, float] = (0.0, 0.0, 0.0)


def _material_slots(rng: np.random.Generator, cfg: MegaSynthConfig) -> list[_Slot]:
    slots = []
    for _ in range(int(rng.integers(cfg.material_slots_range[0], cfg.material_slots_range[1] + 1))):
        if rng.uniform() < 0.35:
            kind = ("wood", "tile", "brick", "carpet", "art", "plaster")[int(rng.integers(6))]
            image = A.procedural_texture(rng, kind, size=128).image
        else:
            image = _noise_texture(rng)
        if rng.uniform() < cfg.metallic_slot_probability:
            metallic, rough = rng.uniform(0, 1), rng.uniform(0, 0.2)
        else:
            metallic, rough = 0.0, rng.uniform(0.4, 1.0)
        slots.append(_Slot(image, float(rng.uniform(0.2, 1.0)), float(metallic), float(rough)))
    return slots


def _apply_material(mesh, slot: _Slot, rng: np.random.Generator, box_map: bool):
    """Give ``mesh`` UVs (metres / tile size) and a PBR material. ``box_map``: per-face projection onto the plane
    most facing the face (for flat-shaded parts; unmerges vertices); otherwise one planar projection along random
    axes (keeps smooth normals of curved parts)."""
    import trimesh
    from PIL import Image

    if box_map:
        tri = mesh.vertices[mesh.faces]  # [F, 3, 3]
        axis = np.abs(mesh.face_normals).argmax(1)
        keep = np.array([[1, 2], [0, 2], [0, 1]])[axis]  # [F, 2] the two coordinates spanning that plane
        uv = np.take_along_axis(tri, np.repeat(keep[:, None, :], 3, 1), 2).reshape(-1, 2)
        mesh = trimesh.Trimesh(tri.reshape(-1, 3), np.arange(3 * len(tri)).reshape(-1, 3), process=False)
    else:
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        uv = mesh.vertices @ q[:, :2]
    uv = uv / slot.tile_m + rng.uniform(0, 1, 2)
    material = trimesh.visual.material.PBRMaterial(
        baseColorTexture=Image.fromarray(slot.image), metallicFactor=slot.metallic, roughnessFactor=slot.roughness,
        emissiveFactor=list(slot.emissive) if any(slot.emissive) else None)
    mesh.visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
    mesh.metadata["megasynth_slot"] = slot  # parts of one slot are merged into one draw (merge_by_material)
    return mesh


def merge_by_material(meshes: list) -> list:
    """Merge [(mesh, smooth)] that share a material slot and shading into one mesh each (first-appearance order).

    Each part would otherwise be its own pyrender draw call with its own texture upload; a room has ~100 parts but
    only ~10 slots, and the per-draw overhead dominated the frame time. Vertices are not shared between parts, so
    smooth normals stay per part. Meshes without a slot (the shell) pass through unchanged."""
    import trimesh

    groups: dict = {}  # (slot id, smooth) -> parts
    order: list = []  # ("keep", (mesh, smooth)) or ("group", key), in first-appearance order
    for mesh, smooth in meshes:
        slot = mesh.metadata.get("megasynth_slot")
        if slot is None:
            order.append(("keep", (mesh, smooth)))
            continue
        key = (id(slot), smooth)
        if key not in groups:
            groups[key] = []
            order.append(("group", key))
        groups[key].append(mesh)
    merged = []
    for what, item in order:
        if what == "keep":
            merged.append(item)
            continue
        parts = groups[item]
        offsets = np.cumsum([0] + [len(m.vertices) for m in parts[:-1]])
        mesh = trimesh.Trimesh(np.concatenate([m.vertices for m in parts]),
                               np.concatenate([m.faces + o for m, o in zip(parts, offsets)]), process=False)
        mesh.visual = trimesh.visual.TextureVisuals(uv=np.concatenate([m.visual.uv for m in parts]),
                                                    material=parts[0].visual.material)
        mesh.metadata["megasynth_parts"] = len(parts)
        merged.append((mesh, item[1]))
    return merged


# -------------------------------------------------------------------------------------------------- primitives


def _random_rotation(rng: np.random.Generator, axis_aligned: bool) -> np.ndarray:
    r = np.eye(4)
    if axis_aligned:  # a quarter turn about y at most: man-made looking stacks
        c, s = (math.cos(a := rng.integers(4) * math.pi / 2), math.sin(a))
        r[[0, 0, 2, 2], [0, 2, 0, 2]] = c, s, -s, c
    else:
        q, rr = np.linalg.qr(rng.normal(size=(3, 3)))
        q = q * np.sign(np.diag(rr))
        if np.linalg.det(q) < 0:
            q[:, 0] = -q[:, 0]
        r[:3, :3] = q
    return r


def _bumps(rng: np.random.Generator, mesh, size: np.ndarray, cfg: MegaSynthConfig, per_axis_face: bool) -> None:
    """Displace vertices along their normals by a smooth random height field (a few random plane waves, wave
    lengths 1/4 to 1 of the part), RMS height up to ``bump_amplitude`` x the smallest side. Boxes decide per face
    (``per_axis_face``), other parts as a whole, to stay flat with ``flat_face_probability``."""
    amp = rng.uniform(0.3, 1.0) * cfg.bump_amplitude * float(size.min())
    k = rng.normal(size=(6, 3))
    wavelength = rng.uniform(0.25, 1.0, 6) * float(size.max())
    k *= (2 * math.pi / wavelength)[:, None] / np.linalg.norm(k, axis=1, keepdims=True)
    field_ = np.sin(mesh.vertices @ k.T + rng.uniform(0, 2 * math.pi, 6)).sum(1) / math.sqrt(3)
    if per_axis_face:
        half = np.abs(mesh.vertices).max(0)
        bumpy = rng.uniform(size=(3, 2)) >= cfg.flat_face_probability  # [axis, sign]
        on = np.abs(np.abs(mesh.vertices) - half) < 1e-6 * max(half.max(), 1e-9)  # [V, 3] on an axis face
        sign = (mesh.vertices > 0).astype(int)
        w = np.zeros(len(mesh.vertices))
        for ax in range(3):
            w = np.maximum(w, on[:, ax] * bumpy[ax, sign[:, ax]])
        # faces' borders stay put, so a flat face next to a bumpy one stays flat and the box stays closed
        edge = on.sum(1) > 1
        w[edge] = 0
    else:
        if rng.uniform() < cfg.flat_face_probability:
            return
        w = np.ones(len(mesh.vertices))
    mesh.vertices = mesh.vertices + (amp * w * field_)[:, None] * mesh.vertex_normals


def _primitive(rng: np.random.Generator, kind: str, size: np.ndarray, cfg: MegaSynthConfig):
    """A closed primitive with full extents ``size`` [3] centred at the origin, with bumps. Returns (mesh, smooth)."""
    import trimesh

    if kind == "box":
        m = trimesh.creation.box(extents=np.ones(3))
        v, f = m.vertices, m.faces
        for _ in range(3):  # 768 triangles: enough vertices for the height field
            v, f = trimesh.remesh.subdivide(v, f)
        m = trimesh.Trimesh(v * size, f, process=False)
        _bumps(rng, m, size, cfg, per_axis_face=True)
        return m, False
    if kind == "ellipsoid":
        m = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    else:
        m = trimesh.creation.cylinder(radius=0.5, height=1.0, sections=20)
        v, f = trimesh.remesh.subdivide(m.vertices, m.faces)
        m = trimesh.Trimesh(v, f, process=False)
    m = trimesh.Trimesh(m.vertices * size, m.faces, process=False)
    _bumps(rng, m, size, cfg, per_axis_face=False)
    return m, kind == "ellipsoid"


def _group(rng: np.random.Generator, n: int, box: np.ndarray, cfg: MegaSynthConfig, slots: list[_Slot]):
    """``n`` random primitives fitted into an object box of extents ``box`` [3], bottom at y = 0, centred in x/z.
    Returns a list of (mesh, smooth) in box coordinates."""
    parts = []
    aligned = rng.uniform() < 0.5
    for _ in range(n):
        kind = ("box", "ellipsoid", "cylinder")[int(rng.integers(3))]
        size = box * rng.uniform(0.3, 0.8, 3)
        mesh, smooth = _primitive(rng, kind, size, cfg)
        pose = _random_rotation(rng, aligned)
        pose[:3, 3] = rng.uniform(-0.5, 0.5, 3) * (box - size.min())
        mesh.apply_transform(pose)
        parts.append((mesh, smooth, kind))
    lo = np.min([m.bounds[0] for m, _, _ in parts], 0)
    hi = np.max([m.bounds[1] for m, _, _ in parts], 0)
    scale = min(1.0, float((box / np.maximum(hi - lo, 1e-9)).min()))  # shrink to fit the box if needed
    shift = -np.array([(lo[0] + hi[0]) / 2, lo[1], (lo[2] + hi[2]) / 2]) * scale
    out = []
    for mesh, smooth, kind in parts:
        mesh.vertices = mesh.vertices * scale + shift
        out.append(_apply_material(mesh, slots[int(rng.integers(len(slots)))], rng, box_map=kind == "box"))
        out[-1] = (out[-1], smooth)
    return out


def _stick(p0: np.ndarray, p1: np.ndarray, radius: float, slot: _Slot, rng: np.random.Generator):
    """A thin cylinder from ``p0`` to ``p1`` (world), flat shaded... smooth looks better on thin round sticks."""
    import trimesh

    m = trimesh.creation.cylinder(radius=radius, segment=np.stack([p0, p1]), sections=10)
    return _apply_material(m, slot, rng, box_map=False), True


# --------------------------------------------------------------------------------------------------- placement


class _Builder:
    """Accumulates meshes, object AABBs and floor footprints while the room is filled."""

    def __init__(self, rng, cfg: MegaSynthConfig, layout: RoomLayout, spec: SceneSpec, slots: list[_Slot]):
        self.rng, self.cfg, self.layout, self.spec, self.slots = rng, cfg, layout, spec, slots
        self.boxes: list[np.ndarray] = []
        self.counts: dict[str, int] = {}

    def slot(self) -> _Slot:
        return self.slots[int(self.rng.integers(len(self.slots)))]

    def add(self, parts, pose: np.ndarray, what: str, floor: bool) -> np.ndarray:
        """Place parts [(mesh, smooth)] with ``pose`` [4, 4]; record their AABB (and footprint if on the floor)."""
        lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
        for mesh, smooth in parts:
            mesh.apply_transform(pose)
            self.spec.meshes.append((mesh, smooth))
            lo, hi = np.minimum(lo, mesh.bounds[0]), np.maximum(hi, mesh.bounds[1])
        self.boxes.append(np.stack([lo, hi]))
        if floor:
            self.layout.footprints.append(np.array([lo[0], lo[2], hi[0], hi[2]]))
        self.counts[what] = self.counts.get(what, 0) + 1
        return np.stack([lo, hi])

    def free_floor_spot(self, half: np.ndarray, margin: float = 0.1, against_wall: bool = False):
        """(x, z) for a footprint of half-sizes ``half`` [2] inside the room, off the centre reserve and other
        footprints; None if 40 tries fail."""
        w, d, r = self.layout.width, self.layout.depth, self.cfg.centre_reserve
        if half[0] > w / 2 - 0.05 or half[1] > d / 2 - 0.05:
            return None
        for _ in range(40):
            x = self.rng.uniform(-w / 2 + half[0] + 0.02, w / 2 - half[0] - 0.02)
            z = self.rng.uniform(-d / 2 + half[1] + 0.02, d / 2 - half[1] - 0.02)
            if against_wall:
                side = int(self.rng.integers(4))
                if side == 0:
                    z = -d / 2 + half[1] + 0.02
                elif side == 1:
                    z = d / 2 - half[1] - 0.02
                elif side == 2:
                    x = -w / 2 + half[0] + 0.02
                else:
                    x = w / 2 - half[0] - 0.02
            fp = np.array([x - half[0], z - half[1], x + half[0], z + half[1]])
            if fp[0] < r and -r < fp[2] and fp[1] < r and -r < fp[3]:
                continue
            if any(fp[0] < b[2] + margin and b[0] < fp[2] + margin and fp[1] < b[3] + margin and b[1] < fp[3] + margin
                   for b in self.layout.footprints):
                continue
            return x, z
        return None

    def wall_frame(self, side: int, along: float, y: float, out: float) -> np.ndarray:
        """Pose [4, 4] whose x runs along wall ``side`` (0: z = -D/2, 1: z = +D/2, 2: x = -W/2, 3: x = +W/2), y up
        and z into the room, with origin at ``along`` on the wall, height ``y``, ``out`` metres off the wall."""
        w, d = self.layout.width, self.layout.depth
        normal = [np.array([0, 0, 1.0]), np.array([0, 0, -1.0]), np.array([1.0, 0, 0]), np.array([-1.0, 0, 0])][side]
        base = [np.array([along, 0, -d / 2]), np.array([along, 0, d / 2]), np.array([-w / 2, 0, along]),
                np.array([w / 2, 0, along])][side]
        pose = np.eye(4)
        pose[:3, 0] = np.cross(np.array([0, 1.0, 0]), normal)
        pose[:3, 1] = (0, 1, 0)
        pose[:3, 2] = normal
        pose[:3, 3] = base + normal * out + np.array([0, y, 0])
        return pose

    def wall_span(self, side: int) -> float:
        return self.layout.width if side < 2 else self.layout.depth


def _translate(x: float, y: float, z: float) -> np.ndarray:
    t = np.eye(4)
    t[:3, 3] = x, y, z
    return t


def _fill(b: _Builder) -> None:
    rng, cfg, lay = b.rng, b.cfg, b.layout
    h = lay.height
    ri = lambda r: int(rng.integers(r[0], r[1] + 1))  # noqa: E731
    large = []
    for _ in range(ri(cfg.large_boxes_range)):
        side = rng.uniform(*cfg.large_side_range, 3)
        side[1] = min(side[1], h - 0.6)
        spot = b.free_floor_spot(side[[0, 2]] / 2, against_wall=rng.uniform() < 0.5)
        if spot is None:
            continue
        parts = _group(rng, ri(cfg.large_prims_range), side, cfg, b.slots)
        large.append(b.add(parts, _translate(spot[0], 0.0, spot[1]), "large_boxes", floor=True))
    for _ in range(ri(cfg.small_boxes_range)):
        side = rng.uniform(*cfg.small_side_range, 3)
        parts = _group(rng, ri(cfg.small_prims_range), side, cfg, b.slots)
        lo = np.min([m.bounds[0] for m, _ in parts], 0)
        hi = np.max([m.bounds[1] for m, _ in parts], 0)
        if large and rng.uniform() < cfg.stack_probability:  # on top of a large box, inside its footprint
            top = large[int(rng.integers(len(large)))]
            room = (top[1] - top[0])[[0, 2]] - (hi - lo)[[0, 2]]
            if (room >= 0).all() and top[1, 1] + hi[1] < h - 0.3:
                x = rng.uniform(top[0, 0] - lo[0], top[1, 0] - hi[0])
                z = rng.uniform(top[0, 2] - lo[2], top[1, 2] - hi[2])
                b.add(parts, _translate(x, top[1, 1], z), "stacked_boxes", floor=True)
                continue
        spot = b.free_floor_spot((hi - lo)[[0, 2]] / 2 + 0.01)
        if spot is not None:
            b.add(parts, _translate(spot[0], 0.0, spot[1]), "small_boxes", floor=True)
    # ceiling boxes: hang from the ceiling, their bottom above every camera height (path: <= 1.7 m + shake)
    for _ in range(ri(cfg.ceiling_boxes_range)):
        side = rng.uniform(0.4, 1.2, 3)
        side[1] = rng.uniform(0.2, max(0.25, min(1.0, h - 2.25)))
        parts = _group(rng, ri(cfg.small_prims_range), side, cfg, b.slots)
        hi_y = max(m.bounds[1][1] for m, _ in parts)
        x = rng.uniform(-lay.width / 2 + side[0] / 2, lay.width / 2 - side[0] / 2)
        z = rng.uniform(-lay.depth / 2 + side[2] / 2, lay.depth / 2 - side[2] / 2)
        b.add(parts, _translate(x, h - hi_y - 0.005, z), "ceiling_boxes", floor=False)
    # wall boxes: flat against a wall, reaching at most wall_depth_max into the room
    for _ in range(ri(cfg.wall_boxes_range)):
        side = np.array([rng.uniform(0.4, 1.2), rng.uniform(0.3, 1.0), rng.uniform(0.1, cfg.wall_depth_max)])
        parts = _group(rng, ri(cfg.small_prims_range), side, cfg, b.slots)
        lo = np.min([m.bounds[0] for m, _ in parts], 0)
        wall = int(rng.integers(4))
        span = b.wall_span(wall)
        along = rng.uniform(-span / 2 + side[0] / 2, span / 2 - side[0] / 2)
        y = rng.uniform(0.5, max(0.6, h - 0.5 - side[1]))
        # group z extends over [lo_z, lo_z + depth] about 0: put its back face on the wall
        b.add(parts, b.wall_frame(wall, along, y, -lo[2] + 0.005), "wall_boxes", floor=False)
    # wireframe box around one large object box (its 12 edges as thin sticks)
    if large and rng.uniform() < cfg.wireframe_probability:
        lo, hi = large[int(rng.integers(len(large)))]
        r = rng.uniform(0.01, 0.025)
        inner = np.array([lay.width / 2, lay.height, lay.depth / 2]) - r - 0.005  # the frame stays in the room
        lo = np.maximum(lo - np.array([0.03, 0, 0.03]), -inner)
        hi = np.minimum(hi + 0.03, inner)
        lo[1] = r
        c = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        edges = [(i, j) for i in range(8) for j in range(i + 1, 8) if (np.abs(c[i] - c[j]) > 1e-9).sum() == 1]
        slot = b.slot()
        b.add([_stick(c[i], c[j], r, slot, rng) for i, j in edges], np.eye(4), "wireframes", floor=True)
    # slabs: wall shelves (horizontal) or free-standing panels on the floor
    if rng.uniform() < cfg.slab_probability:
        for _ in range(int(rng.integers(1, 4))):
            thick = rng.uniform(0.02, 0.12)
            slot = b.slot()
            if rng.uniform() < 0.5:
                size = np.array([rng.uniform(0.6, 2.0), thick, rng.uniform(0.2, cfg.wall_depth_max)])
                wall = int(rng.integers(4))
                span = b.wall_span(wall)
                size[0] = min(size[0], span - 0.2)
                mesh, _ = _primitive(rng, "box", size, cfg)
                mesh = _apply_material(mesh, slot, rng, box_map=True)
                along = rng.uniform(-span / 2 + size[0] / 2, span / 2 - size[0] / 2)
                # bumps may bulge the back face: put the actual back (min z) on the wall
                pose = b.wall_frame(wall, along, rng.uniform(0.4, h - 0.4), -mesh.bounds[0][2] + 0.005)
                b.add([(mesh, False)], pose, "slabs", floor=False)
            else:
                size = np.array([rng.uniform(0.5, 1.5), rng.uniform(0.5, min(2.0, h - 0.3)), thick])
                mesh, _ = _primitive(rng, "box", size, cfg)
                mesh = _apply_material(mesh, slot, rng, box_map=True)
                yaw = rng.uniform(0, math.pi)
                half = np.array([abs(math.cos(yaw)) * size[0] + abs(math.sin(yaw)) * size[2],
                                 abs(math.sin(yaw)) * size[0] + abs(math.cos(yaw)) * size[2]]) / 2
                spot = b.free_floor_spot(half)
                if spot is None:
                    continue
                pose = _translate(spot[0], -mesh.bounds[0][1], spot[1])  # actual bottom (bumps) on the floor
                c, s = math.cos(yaw), math.sin(yaw)
                pose[[0, 0, 2, 2], [0, 2, 0, 2]] = c, s, -s, c
                b.add([(mesh, False)], pose, "slabs", floor=True)
    # sticks on the walls, some emissive (with a point light next to them)
    emissive = rng.uniform() < cfg.emissive_sticks_probability
    for k in range(ri(cfg.wall_sticks_range)):
        wall = int(rng.integers(4))
        span = b.wall_span(wall)
        length = rng.uniform(0.3, min(2.5, span - 0.4, h - 0.4))
        ang = rng.uniform(0, math.pi)
        half = 0.5 * length * np.array([math.cos(ang), math.sin(ang)])
        cx = rng.uniform(-span / 2 + abs(half[0]) + 0.1, span / 2 - abs(half[0]) - 0.1)
        cy = rng.uniform(abs(half[1]) + 0.1, h - abs(half[1]) - 0.1)
        r = rng.uniform(0.008, 0.03)
        out = rng.uniform(r + 0.01, 0.15)
        slot = b.slot()
        if emissive and k < 2:
            tint = np.clip(rng.uniform(0.6, 1.0, 3), 0, 1)
            slot = _Slot(np.full((4, 4, 3), 255, np.uint8), 1.0, 0.0, 1.0, tuple(float(t) for t in tint))
        pose = b.wall_frame(wall, 0.0, 0.0, out)
        p0 = np.array([cx - half[0], cy - half[1], 0.0])
        p1 = np.array([cx + half[0], cy + half[1], 0.0])
        box = b.add([_stick(p0, p1, r, slot, rng)], pose, "wall_sticks", floor=False)
        if emissive and k < 2:
            light = np.eye(4)
            light[:3, 3] = (box[0] + box[1]) / 2 + pose[:3, 2] * 0.15
            b.spec.lights.append(LightSpec("point", light, np.array(slot.emissive), float(rng.uniform(1.0, 3.0))))
    # sticks in open space: floor-to-ceiling poles, some slanted
    if rng.uniform() < cfg.open_sticks_probability:
        for _ in range(int(rng.integers(1, 4))):
            lean = rng.normal(0, 0.3, 2) * (rng.uniform() < 0.5)
            r = rng.uniform(0.01, 0.04)
            half = np.abs(lean) / 2 + r + 0.01
            spot = b.free_floor_spot(half)
            if spot is None:
                continue
            # end caps tilt with a slanted stick: keep them r off the floor and the ceiling
            p0 = np.array([spot[0] - lean[0] / 2, r, spot[1] - lean[1] / 2])
            p1 = np.array([spot[0] + lean[0] / 2, h - r, spot[1] + lean[1] / 2])
            b.add([_stick(p0, p1, r, b.slot(), rng)], np.eye(4), "open_sticks", floor=True)


def _lights(rng: np.random.Generator, lay: RoomLayout, spec: SceneSpec) -> None:
    """Stand-ins for the paper's lights (see the module docstring): ceiling and floor "area" lights as point
    lights, an optional spot light, window and sun as directional lights; colours mildly tinted."""
    w, d, h = lay.width, lay.depth, lay.height
    spec.ambient = float(rng.uniform(0.15, 0.35))
    tint = lambda: np.clip(1.0 - rng.uniform(0, 0.3, 3), 0, 1)  # noqa: E731
    area = w * d / 30.0  # bigger rooms need brighter lights for the same look
    for y, gain in ((h - 0.25, 1.0), (0.6, 0.4)):  # the low one dimmer: a point light near the floor hot-spots it
        for _ in range(int(rng.integers(1, 3))):
            pose = _translate(rng.uniform(-w / 3, w / 3), y, rng.uniform(-d / 3, d / 3))
            spec.lights.append(LightSpec("point", pose, tint(), float(gain * rng.uniform(4, 10) * h * (0.5 + area))))
    if rng.uniform() < 0.5:
        eye = np.array([rng.uniform(-w / 3, w / 3), h - 0.1, rng.uniform(-d / 3, d / 3)])
        target = np.array([rng.uniform(-w / 2, w / 2), 0.0, rng.uniform(-d / 2, d / 2)])
        spec.lights.append(LightSpec("spot", look_at_gl(eye, target), tint(), float(rng.uniform(10, 30) * h),
                                     inner_cone=float(rng.uniform(0.1, 0.4)), outer_cone=float(rng.uniform(0.5, 0.9))))
    if rng.uniform() < 0.8:  # window: soft, nearly horizontal
        spec.lights.append(LightSpec("directional", look_at_gl(np.zeros(3), np.array(
            [rng.uniform(-1, 1), -rng.uniform(0.1, 0.5), rng.uniform(-1, 1)])), tint(), float(rng.uniform(0.3, 1.0))))
    if rng.uniform() < 0.6:  # sun: steep, strength 0.2-2 as in the paper
        spec.lights.append(LightSpec("directional", look_at_gl(np.zeros(3), np.array(
            [rng.uniform(-0.5, 0.5), -1.0, rng.uniform(-0.5, 0.5)])), np.ones(3), float(rng.uniform(0.2, 2.0))))


def build_megasynth_room(rng: np.random.Generator, cfg: MegaSynthConfig) -> MegaSynthScene:
    """A random procedural room (see the module docstring). Procedural assets only (all CC0, ours)."""
    layout = RoomLayout(width=float(rng.uniform(*cfg.floor_range)), depth=float(rng.uniform(*cfg.floor_range)),
                        height=float(rng.uniform(*cfg.height_range)))
    spec = SceneSpec(bg_color=(0.0, 0.0, 0.0, 1.0))
    _shell(rng, AssetSources(), layout.width, layout.depth, layout.height, spec)  # procedural floor/walls/ceiling
    slots = _material_slots(rng, cfg)
    b = _Builder(rng, cfg, layout, spec, slots)
    _fill(b)
    _lights(rng, layout, spec)
    spec.meshes = merge_by_material(spec.meshes)
    spec.attributions.append({"name": "procedural MegaSynth-style primitives, sticks, slabs and noise textures",
                              **_PROC})
    boxes = np.stack(b.boxes) if b.boxes else np.zeros((0, 2, 3))
    return MegaSynthScene(spec=spec, layout=layout, boxes=boxes, counts=b.counts)


# ------------------------------------------------------------------------------------------------------ cameras


def min_clearance(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """[N] distance of each point [N, 3] to the nearest AABB of ``boxes`` [K, 2, 3] (0 inside one; inf if K = 0)."""
    if len(boxes) == 0:
        return np.full(len(points), np.inf)
    gap = np.maximum(np.maximum(boxes[None, :, 0] - points[:, None], points[:, None] - boxes[None, :, 1]), 0)
    return np.linalg.norm(gap, axis=-1).min(1)


def _inside_room(points: np.ndarray, lay: RoomLayout, margin: float) -> np.ndarray:
    return ((np.abs(points[:, 0]) <= lay.width / 2 - margin) & (np.abs(points[:, 2]) <= lay.depth / 2 - margin)
            & (points[:, 1] >= margin) & (points[:, 1] <= lay.height - margin))


def _path_poses(rng: np.random.Generator, cfg: MegaSynthConfig, scene: MegaSynthScene, frames: int) -> np.ndarray:
    room_cfg = RoomConfig(wall_clearance=cfg.path_wall_clearance, furniture_clearance=cfg.path_floor_clearance,
                          camera_height_range=cfg.path_height_range)
    for _ in range(8):  # camera_path keeps its best of 50 paths; a rare leftover violation gets a fresh draw
        poses = camera_path(rng, room_cfg, scene.layout, frames)
        pos = poses[:, :3, 3]
        if (min_clearance(pos, scene.boxes) >= cfg.camera_clearance).all() and _inside_room(pos, scene.layout, 0.3).all():
            return poses
    raise RuntimeError("megasynth: no camera path keeps clear of the room's objects after 8 draws (room "
                       f"{scene.layout.width:.2f} x {scene.layout.depth:.2f} m); lower centre_reserve or the "
                       "clearances")


def _free_position(rng, cfg: MegaSynthConfig, scene: MegaSynthScene, p: np.ndarray, toward: np.ndarray,
                   heights: tuple[float, float]):
    """``p`` if clear, else the first clear point stepping towards ``toward`` (10 cm steps), trying new heights."""
    for attempt in range(10):
        q = p.copy()
        if attempt:
            q[1] = rng.uniform(*heights)
        for _ in range(60):
            if min_clearance(q[None], scene.boxes)[0] >= cfg.camera_clearance and _inside_room(q[None], scene.layout,
                                                                                                0.3)[0]:
                return q
            step = toward - q
            step[1] = 0
            n = np.linalg.norm(step)
            if n < 0.1:
                break
            q = q + 0.1 * step / n
    return None


def _walls_poses(rng: np.random.Generator, cfg: MegaSynthConfig, scene: MegaSynthScene, frames: int) -> np.ndarray:
    lay = scene.layout
    w, d, h = lay.width, lay.depth, lay.height
    n_wall = int(round(cfg.wall_fraction * frames))
    n_centre = frames - n_wall
    heights = (0.8, max(1.0, min(2.1, h - 0.6)))
    poses = []
    # walk around the room: perimeter coordinate s of an inset rectangle, evenly spaced with jitter
    start = rng.uniform(0, 1)
    for k in range(n_wall):
        inset = rng.uniform(*cfg.wall_band)
        hw, hd = w / 2 - inset, d / 2 - inset
        per = 4 * (hw + hd)
        s = ((k + rng.uniform(0.25, 0.75)) / max(n_wall, 1) + start) % 1.0 * per
        corners = np.array([[-hw, -hd], [hw, -hd], [hw, hd], [-hw, hd], [-hw, -hd]])
        lengths = np.r_[2 * hw, 2 * hd, 2 * hw, 2 * hd]
        seg = int(np.searchsorted(np.cumsum(lengths), s, side="right").clip(0, 3))
        t = (s - np.r_[0, np.cumsum(lengths)][seg]) / lengths[seg]
        xz = corners[seg] + t * (corners[seg + 1] - corners[seg])
        p = np.array([xz[0], rng.uniform(*heights), xz[1]])
        p = _free_position(rng, cfg, scene, p, np.array([0.0, 0.0, 0.0]), heights)
        if p is None:
            continue
        target = np.array([rng.normal(0, w / 8), rng.uniform(0.3, 0.6) * h, rng.normal(0, d / 8)])
        poses.append(look_at_gl(p, target, roll=math.radians(rng.uniform(-5, 5))))
    centre = []
    tries = 0
    while len(centre) < n_centre + (n_wall - len(poses)) and tries < 400:  # also make up for skipped wall cameras
        tries += 1
        p = np.array([rng.uniform(-w / 4, w / 4), rng.uniform(1.0, min(1.9, h - 0.6)), rng.uniform(-d / 4, d / 4)])
        if min_clearance(p[None], scene.boxes)[0] < cfg.camera_clearance:
            continue
        yaw, pitch = rng.uniform(-math.pi, math.pi), math.radians(rng.uniform(-10, 10))
        fwd = np.array([math.cos(pitch) * math.sin(yaw), math.sin(pitch), math.cos(pitch) * math.cos(yaw)])
        centre.append((yaw, look_at_gl(p, p + fwd, roll=math.radians(rng.uniform(-10, 10)))))
    centre.sort(key=lambda c: c[0])  # consecutive centre views turn gradually
    poses += [c[1] for c in centre]
    if len(poses) < frames:
        raise RuntimeError(f"megasynth walls cameras: only {len(poses)} of {frames} clear camera positions found "
                           f"(room {w:.2f} x {d:.2f} m)")
    return np.stack(poses)


def camera_poses(rng: np.random.Generator, cfg: MegaSynthConfig, scene: MegaSynthScene, frames: int,
                 mode: str | None = None) -> np.ndarray:
    """[frames, 4, 4] OpenGL c2w for ``mode`` (``cfg.camera_mode`` by default): ``path`` or ``walls``."""
    mode = mode or cfg.camera_mode
    if mode == "path":
        return _path_poses(rng, cfg, scene, frames)
    if mode == "walls":
        return _walls_poses(rng, cfg, scene, frames)
    raise ValueError(f"megasynth camera mode must be 'path' or 'walls', got {mode!r}")


__all__ = ["MegaSynthConfig", "MegaSynthScene", "build_megasynth_room", "camera_poses", "min_clearance"]

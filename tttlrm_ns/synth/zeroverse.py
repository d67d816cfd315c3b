"""Procedural objects in the spirit of LRM-Zero's Zeroverse (arXiv 2406.09371): random primitives with bumps,
boolean cut-outs, wireframe parts and solid textures whose seams cross the parts.

One job: ``numpy.random.Generator`` -> a list of coloured trimesh meshes (the object, centred, inside the unit
sphere) plus a JSON-able description of what was drawn. Everything is GL-free and deterministic given the
generator; rendering and cameras are :mod:`tttlrm_ns.synth.generate`.

Recipe (numbers from the paper as summarised in ``procedural_data_recipes.md``; our deviations are marked):

* 1-9 primitives (box, ellipsoid, cylinder), count weights 5,5,5,4,4,3,2,1,1; axis lengths (full extents)
  U(0.25, 2); random rotation; translation up to 0.5x the primitive's largest axis; the partial shape is re-rotated
  before each new primitive.
* Every primitive is built from a subdivided cube (``grid`` x ``grid`` quads per face) mapped onto the shape, so all
  three shapes have six "faces" that get their own height field: 5x5 random heights, smoothly upsampled, times a
  window that vanishes on the face border (the faces stay welded: the mesh is watertight, which the booleans need),
  amplitude <= 0.2x the smallest axis, displaced along the analytic surface normal; a face stays flat with
  probability ``flat_face_probability``.
* Boolean cut-out (probability ``cut_probability``): a random box/ellipsoid/cylinder, axes U(0.3, 0.6), centred on a
  vertex of a random solid primitive, subtracted from every solid part it touches with trimesh's ``manifold``
  engine (PyPI ``manifold3d``). Not done: Zeroverse's thin-shell "solidify" augmentation.
* Wireframe parts: a primitive becomes the edges of a coarse version of itself (box: 12 edges, cylinder: two rings
  and struts, ellipsoid: latitude rings and meridians) as thin closed cylinders (thickness U(0.01, 0.03)) with a
  small ball on every joint.
* Textures: one random *solid* (3D) texture per primitive -- two colours mixed by 3D noise, stripes, a 3D checker,
  spots or a plain colour -- assigned by a randomly warped nearest-centre partition of space whose centres are the
  primitive centres shifted by up to ``material_shift`` x the largest axis. A part therefore shows its neighbours'
  textures near them and texture seams run across parts and faces, never along the primitive edges. Colours are
  evaluated per vertex (cut faces included), so the texture detail is the vertex spacing (``grid``); with
  ``texture_res`` > 0 uncut solid parts instead get a texture atlas baked from the same solid texture at texel
  resolution (:func:`textured_solid_mesh`).
* Normalisation (deviation, see ``ZeroverseConfig.radius_range``): centred on its bounding box and scaled to a
  bounding-sphere radius U(0.75, 1.0), i.e. inside the unit sphere like the ``objects`` kind and the evaluation
  objects, instead of Zeroverse's max coordinate U(0.3, 0.45) at camera radius U(1.5, 2.8).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

SHAPES = ("box", "ellipsoid", "cylinder")


@dataclass
class ZeroverseConfig:
    """Zeroverse-like object generator settings. Lengths before normalisation are in the paper's units (axes
    0.25-2); ``radius_range`` and ``distance_range`` are in the output (unit-sphere) units."""

    count_weights: tuple[float, ...] = (5, 5, 5, 4, 4, 3, 2, 1, 1)  # P(1..9 primitives) proportional to these
    axis_range: tuple[float, float] = (0.25, 2.0)
    translation_frac: float = 0.5  # translation up to this x the primitive's largest axis
    grid: int = 32  # quads per cube-face edge of each solid primitive (vertex spacing = texture detail)
    bump_probability: float = 0.7  # a primitive gets height fields at all
    flat_face_probability: float = 0.3  # ... and then each of its six faces stays flat with this probability
    bump_cells: int = 5  # random heights per face edge before upsampling
    bump_amplitude: float = 0.2  # max amplitude as a fraction of the smallest axis
    cut_probability: float = 0.5
    cutter_axis_range: tuple[float, float] = (0.3, 0.6)
    cutter_grid: int = 8
    # 0: colours per vertex (texture detail = vertex spacing; the setting of the first data sets). pyrender multiplies
    # vertex colours into its linear shading without sRGB decoding, so these render lighter and less saturated than
    # their sRGB values. N > 0: uncut solid parts get an N x N texel atlas tile per face baked from the same solid
    # texture (N / grid x finer detail, colours decoded correctly); cut and wireframe parts keep vertex colours, then
    # stored linearised so that they match.
    texture_res: int = 0
    wire_probability: float = 0.2  # per primitive (the first primitive is always solid)
    wire_thickness_range: tuple[float, float] = (0.01, 0.03)
    material_shift: float = 0.25  # texture-partition centres shifted by up to this x the largest axis
    # Output scale: bounding-sphere radius after normalisation. The evaluation objects (gso_toy) and the ``objects``
    # kind put the object in the unit sphere with cameras at ~2.7 and 50 degrees FOV; Zeroverse's random object size
    # (max coordinate U(0.3, 0.45)) and camera radius (U(1.5, 2.8)) become a random radius here plus a random
    # camera distance (``distance_range``), both around the evaluation setting.
    radius_range: tuple[float, float] = (0.75, 1.0)
    # Camera distance per object. >= 2.4 keeps the whole unit sphere inside a 50-degree view (asin(1 / 2.4) < 25 deg).
    distance_range: tuple[float, float] = (2.4, 3.2)

    def validate(self) -> None:
        if not (1 <= len(self.count_weights) <= 32) or min(self.count_weights) < 0 or sum(self.count_weights) <= 0:
            raise ValueError(f"zeroverse count_weights must be 1-32 non-negative weights, got {self.count_weights}")
        if not (0 < self.axis_range[0] <= self.axis_range[1]):
            raise ValueError(f"zeroverse axis_range must be 0 < lo <= hi, got {self.axis_range}")
        if self.texture_res != 0 and self.texture_res < 2:
            raise ValueError(f"zeroverse texture_res must be 0 (vertex colours) or >= 2, got {self.texture_res}")
        if self.grid < 2 or self.cutter_grid < 2:
            raise ValueError(f"zeroverse grid and cutter_grid must be >= 2, got {self.grid}, {self.cutter_grid}")
        if not (0 < self.radius_range[0] <= self.radius_range[1] <= 1.0):
            raise ValueError(f"zeroverse radius_range must lie in (0, 1] (unit sphere), got {self.radius_range}")
        if not (1.0 < self.distance_range[0] <= self.distance_range[1]):
            raise ValueError(f"zeroverse distance_range must be > 1 (outside the unit sphere), "
                             f"got {self.distance_range}")


# ---------------------------------------------------------------------------------------------------------------
# Recipe: every random draw of an object, cheap (no geometry); the geometry follows from it deterministically.


@dataclass
class Primitive:
    shape: str  # one of SHAPES
    axes: np.ndarray  # [3] full extents along the local x, y (cylinder axis), z
    transform: np.ndarray  # [4, 4] local -> object
    wire: bool = False
    wire_thickness: float = 0.0
    wire_segments: int = 0  # cylinder sides / ellipsoid meridians of the wireframe
    heights: Optional[np.ndarray] = None  # [6, cells, cells] in [-1, 1] (0 on flat faces), None = no bumps
    amplitude: float = 0.0


@dataclass
class Material:
    kind: str  # noise | stripes | checker | spots | plain
    colors: np.ndarray  # [2, 3] in [0, 1]
    frequency: float  # cycles per unit length (object units before normalisation)
    direction: np.ndarray  # [3] unit (stripes)
    waves: np.ndarray  # [K, 3] random wave vectors of the noise field (cycles per unit)
    phases: np.ndarray  # [K]
    amps: np.ndarray  # [K]


@dataclass
class Recipe:
    primitives: list[Primitive]
    materials: list[Material]
    material_centres: np.ndarray  # [P, 3] texture-partition centres (object units before normalisation)
    warp: Material  # noise field that warps the texture partition
    cutter: Optional[Primitive] = None
    cutter_anchor: tuple[int, float] = (0, 0.0)  # (solid primitive index, vertex fraction) the cutter is centred on
    radius: float = 1.0


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """[3, 3] uniformly random rotation (normalised Gaussian quaternion)."""
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - math.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


def _random_material(rng: np.random.Generator) -> Material:
    kind = ("noise", "stripes", "checker", "spots", "plain")[int(rng.choice(5, p=[0.35, 0.2, 0.15, 0.15, 0.15]))]
    colors = np.stack([_hsv_to_rgb(rng.uniform(), rng.uniform(0, 0.9), rng.uniform(0.15, 1.0)) for _ in range(2)])
    k = 12
    waves = rng.normal(size=(k, 3))
    waves /= np.linalg.norm(waves, axis=1, keepdims=True)
    scales = np.exp(rng.uniform(np.log(0.6), np.log(6.0), size=k))  # 0.6-6 cycles per unit
    amps = 1.0 / scales
    d = rng.normal(size=3)
    return Material(kind=kind, colors=colors, frequency=float(np.exp(rng.uniform(np.log(1.0), np.log(8.0)))),
                    direction=d / np.linalg.norm(d), waves=waves * scales[:, None],
                    phases=rng.uniform(0, 2 * math.pi, k), amps=amps / amps.sum())


def sample_count(rng: np.random.Generator, cfg: ZeroverseConfig) -> int:
    """Number of primitives, 1..len(count_weights), with probabilities proportional to ``count_weights``."""
    p = np.asarray(cfg.count_weights, float)
    return int(rng.choice(len(p), p=p / p.sum())) + 1


def sample_recipe(rng: np.random.Generator, cfg: ZeroverseConfig) -> Recipe:
    """Draw every random choice of one object (no geometry is built here)."""
    n = sample_count(rng, cfg)
    prims: list[Primitive] = []
    for k in range(n):
        if k > 0:  # re-rotate the partial shape before adding the next primitive (Zeroverse)
            rot = np.eye(4)
            rot[:3, :3] = random_rotation(rng)
            for p in prims:
                p.transform = rot @ p.transform
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        axes = rng.uniform(*cfg.axis_range, size=3)
        t = np.eye(4)
        t[:3, :3] = random_rotation(rng)
        t[:3, 3] = rng.uniform(-1, 1, size=3) * cfg.translation_frac * axes.max()
        wire = k > 0 and rng.uniform() < cfg.wire_probability
        prim = Primitive(shape=shape, axes=axes, transform=t, wire=wire)
        if wire:
            prim.wire_thickness = float(rng.uniform(*cfg.wire_thickness_range))
            prim.wire_segments = int(rng.integers(4, 11))
        elif rng.uniform() < cfg.bump_probability:
            heights = rng.uniform(-1, 1, size=(6, cfg.bump_cells, cfg.bump_cells))
            heights[rng.uniform(size=6) < cfg.flat_face_probability] = 0.0
            prim.heights, prim.amplitude = heights, float(rng.uniform(0.0, cfg.bump_amplitude) * axes.min())
        prims.append(prim)
    materials = [_random_material(rng) for _ in prims]
    centres = np.stack([p.transform[:3, 3] + rng.uniform(-1, 1, 3) * cfg.material_shift * p.axes.max()
                        for p in prims])
    warp = _random_material(rng)
    recipe = Recipe(primitives=prims, materials=materials, material_centres=centres, warp=warp)
    if rng.uniform() < cfg.cut_probability:
        solid = [i for i, p in enumerate(prims) if not p.wire]
        t = np.eye(4)
        t[:3, :3] = random_rotation(rng)
        recipe.cutter = Primitive(shape=SHAPES[int(rng.integers(len(SHAPES)))],
                                  axes=rng.uniform(*cfg.cutter_axis_range, size=3), transform=t)
        recipe.cutter_anchor = (solid[int(rng.integers(len(solid)))], float(rng.uniform()))
    recipe.radius = float(rng.uniform(*cfg.radius_range))
    return recipe


# ---------------------------------------------------------------------------------------------------------------
# Geometry


def _cube_grid(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The surface of [-1, 1]^3 as six (n+1) x (n+1) vertex grids with outward-facing triangles.

    Returns (points [6 (n+1)^2, 3], per-vertex face index [6 (n+1)^2], triangles [12 n^2, 3]); face ``f`` has normal
    axis ``f // 2`` and sign ``+1`` for even ``f``. Vertices on face borders are duplicated (welded later)."""
    s = np.linspace(-1.0, 1.0, n + 1)
    uu, vv = np.meshgrid(s, s, indexing="ij")  # i along the first tangent axis, j along the second
    pts, fid = [], []
    for f in range(6):
        a, sign = f // 2, 1.0 - 2.0 * (f % 2)
        b, c = (a + 1) % 3, (a + 2) % 3
        if sign < 0:  # e_b x e_c must point along the outward normal
            b, c = c, b
        p = np.empty(((n + 1) ** 2, 3))
        p[:, a], p[:, b], p[:, c] = sign, uu.ravel(), vv.ravel()
        pts.append(p)
        fid.append(np.full((n + 1) ** 2, f))
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    v00 = (i * (n + 1) + j).ravel()
    v10, v11, v01 = v00 + (n + 1), v00 + (n + 1) + 1, v00 + 1
    quad = np.concatenate([np.stack([v00, v10, v11], 1), np.stack([v00, v11, v01], 1)])
    tris = np.concatenate([quad + f * (n + 1) ** 2 for f in range(6)])
    return np.concatenate(pts), np.concatenate(fid), tris


def _face_uv(points: np.ndarray, fid: np.ndarray) -> np.ndarray:
    """[N, 2] in [0, 1]^2: a cube point's coordinates along its face's two tangent axes."""
    a = fid // 2
    b, c = (a + 1) % 3, (a + 2) % 3
    swap = fid % 2 == 1
    b, c = np.where(swap, c, b), np.where(swap, b, c)
    r = np.arange(len(points))
    return (np.stack([points[r, b], points[r, c]], 1) + 1) / 2


def _upsample_heights(heights: np.ndarray, uv: np.ndarray, fid: np.ndarray) -> np.ndarray:
    """Smooth height [N] at face coordinates ``uv`` [N, 2] from per-face random heights [6, C, C]: normalised
    Gaussian-kernel interpolation of the C x C grid, times a window that is 0 on the face border (welded edges)."""
    c = heights.shape[1]
    centres = (np.arange(c) + 0.5) / c
    sigma = 0.6 / c
    wu = np.exp(-0.5 * ((uv[:, 0:1] - centres) / sigma) ** 2)  # [N, C]
    wv = np.exp(-0.5 * ((uv[:, 1:2] - centres) / sigma) ** 2)
    wu /= wu.sum(1, keepdims=True)
    wv /= wv.sum(1, keepdims=True)
    h = np.einsum("ni,nij,nj->n", wu, heights[fid], wv)
    window = np.sin(math.pi * uv[:, 0]) * np.sin(math.pi * uv[:, 1])
    border = (uv <= 0).any(1) | (uv >= 1).any(1)  # exactly 0 there (sin(pi) is not), so duplicates stay equal
    return np.where(border, 0.0, h * window)


def _shape_surface(shape: str, cube: np.ndarray, fid: np.ndarray, axes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map cube-surface points [N, 3] onto the primitive (local frame, full extents ``axes``); returns
    (positions [N, 3], unit outward normals [N, 3])."""
    half = axes / 2
    if shape == "box":
        normals = np.zeros_like(cube)
        normals[np.arange(len(cube)), fid // 2] = 1.0 - 2.0 * (fid % 2)
        return cube * half, normals
    if shape == "ellipsoid":
        # spherified cube: more even vertex spacing than normalising the cube points
        x, y, z = cube[:, 0], cube[:, 1], cube[:, 2]
        x2, y2, z2 = x * x, y * y, z * z
        q = np.stack([x * np.sqrt(np.maximum(1 - y2 / 2 - z2 / 2 + y2 * z2 / 3, 0)),
                      y * np.sqrt(np.maximum(1 - z2 / 2 - x2 / 2 + z2 * x2 / 3, 0)),
                      z * np.sqrt(np.maximum(1 - x2 / 2 - y2 / 2 + x2 * y2 / 3, 0))], 1)
        normals = q / half ** 2
        return q * half, normals / np.linalg.norm(normals, axis=1, keepdims=True)
    if shape == "cylinder":  # axis along local y; the square (x, z) is mapped onto the disk
        x, y, z = cube[:, 0], cube[:, 1], cube[:, 2]
        d = np.stack([x * np.sqrt(1 - z * z / 2), y, z * np.sqrt(1 - x * x / 2)], 1)
        cap = fid // 2 == 1
        normals = np.where(cap[:, None], np.stack([np.zeros_like(y), np.sign(y), np.zeros_like(y)], 1),
                           np.stack([d[:, 0] / half[0] ** 2, np.zeros_like(y), d[:, 2] / half[2] ** 2], 1))
        return d * half, normals / np.linalg.norm(normals, axis=1, keepdims=True)
    raise ValueError(f"unknown primitive shape {shape!r}; choose from {SHAPES}")


def _weld(points: np.ndarray, tris: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge bitwise-equal vertices (the duplicated face borders); drops degenerate triangles (cylinder caps)."""
    uniq, first, inverse = np.unique(points.round(12), axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    t = inverse[tris]
    keep = (t[:, 0] != t[:, 1]) & (t[:, 1] != t[:, 2]) & (t[:, 0] != t[:, 2])
    return points[first], t[keep]


def _surface(prim: Primitive, cube: np.ndarray, fid: np.ndarray) -> np.ndarray:
    """Cube-surface points [N, 3] (face ``fid``) -> the primitive's bumped surface, local frame [N, 3]."""
    pos, normals = _shape_surface(prim.shape, cube, fid, prim.axes)
    if prim.heights is not None and prim.amplitude > 0:
        pos = pos + (prim.amplitude * _upsample_heights(prim.heights, _face_uv(cube, fid), fid))[:, None] * normals
    return pos


def solid_mesh(prim: Primitive, grid: int):
    """The primitive as a watertight trimesh in object coordinates (height-field bumps applied)."""
    import trimesh

    cube, fid, tris = _cube_grid(grid)
    verts, faces = _weld(_surface(prim, cube, fid), tris)
    verts = verts @ prim.transform[:3, :3].T + prim.transform[:3, 3]
    return trimesh.Trimesh(verts, faces, process=False)


_ATLAS_PAD = 2  # texels around each face tile, filled by extending the face beyond its edges (mipmaps don't bleed)


def _face_points(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cube points [N, 3] of face ``f`` [N] at face coordinates ``a, b`` [N] (0..1 on the face; outside extends it),
    the inverse of :func:`_face_uv`."""
    axis, sign = f // 2, 1.0 - 2.0 * (f % 2)
    t1, t2 = (axis + 1) % 3, (axis + 2) % 3
    swap = f % 2 == 1
    t1, t2 = np.where(swap, t2, t1), np.where(swap, t1, t2)
    p = np.empty((len(f), 3))
    r = np.arange(len(f))
    p[r, axis], p[r, t1], p[r, t2] = sign, 2 * a - 1, 2 * b - 1
    return p


def textured_solid_mesh(prim: Primitive, grid: int, res: int, colour_fn):
    """The primitive as six unwelded face grids with UVs into a 3 x 2 texture atlas of ``res`` x ``res`` texels per
    face, the atlas baked from ``colour_fn`` (object points [N, 3] -> colours [N, 3] in [0, 1]) at the bumped surface
    point of every texel: a solid texture at texel rather than vertex resolution. Positions equal those of
    :func:`solid_mesh` (the duplicated border vertices are bitwise equal, so there are no cracks).

    Returns (trimesh with object-frame vertices [6 (grid+1)^2, 3], uv [.., 2], atlas uint8 [2 tile, 3 tile, 3] in
    image row order)."""
    import trimesh

    cube, fid, tris = _cube_grid(grid)
    verts = _surface(prim, cube, fid) @ prim.transform[:3, :3].T + prim.transform[:3, 3]
    tile = res + 2 * _ATLAS_PAD
    uvf = _face_uv(cube, fid)
    # texel i of a tile is centred at param (i - pad) / (res - 1): the face spans texel centres pad .. pad + res - 1
    x = (fid % 3) * tile + _ATLAS_PAD + 0.5 + uvf[:, 0] * (res - 1)
    y = (fid // 3) * tile + _ATLAS_PAD + 0.5 + uvf[:, 1] * (res - 1)
    uv = np.stack([x / (3 * tile), y / (2 * tile)], 1)  # v up from the atlas bottom (OpenGL / trimesh)
    jj, ii = np.meshgrid(np.arange(2 * tile), np.arange(3 * tile), indexing="ij")  # [2 tile, 3 tile], row = v
    f = ((jj // tile) * 3 + ii // tile).ravel()
    a = ((ii % tile - _ATLAS_PAD) / (res - 1)).ravel()
    b = ((jj % tile - _ATLAS_PAD) / (res - 1)).ravel()
    cp = _face_points(f, a, b)
    pts = _surface(prim, cp, f) @ prim.transform[:3, :3].T + prim.transform[:3, 3]
    atlas = colour_fn(pts).reshape(2 * tile, 3 * tile, 3)[::-1]  # row 0 = top of the image (v = 1)
    return trimesh.Trimesh(verts, tris, process=False), uv, np.rint(np.clip(atlas, 0, 1) * 255).astype(np.uint8)


def _wire_edges(prim: Primitive) -> tuple[np.ndarray, np.ndarray]:
    """Joint positions [J, 3] (local frame, unit half-extents) and edges [E, 2] of the coarse primitive."""
    k = prim.wire_segments
    if prim.shape == "box":
        corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
        d = np.abs(corners[:, None] - corners[None]).sum(-1)
        e = np.argwhere(np.triu(d == 2))
        return corners, e
    ang = np.arange(k) * 2 * math.pi / k
    ring = np.stack([np.cos(ang), np.zeros(k), np.sin(ang)], 1)
    nxt = (np.arange(k) + 1) % k
    if prim.shape == "cylinder":
        pts = np.concatenate([ring + [0, -1, 0], ring + [0, 1, 0]])
        e = np.concatenate([np.stack([np.arange(k), nxt], 1), np.stack([np.arange(k), nxt], 1) + k,
                            np.stack([np.arange(k), np.arange(k) + k], 1)])
        return pts, e
    # ellipsoid: latitude rings and meridians through two poles
    lats = np.linspace(-90, 90, 5)[1:-1]
    pts = [np.array([[0, -1.0, 0], [0, 1.0, 0]])]
    edges = []
    for li, lat in enumerate(np.radians(lats)):
        pts.append(ring * math.cos(lat) + [0, math.sin(lat), 0])
        base = 2 + li * k
        edges.append(np.stack([base + np.arange(k), base + nxt], 1))
        if li > 0:
            edges.append(np.stack([base - k + np.arange(k), base + np.arange(k)], 1))
    last = 2 + (len(lats) - 1) * k
    edges.append(np.stack([np.zeros(k, int), 2 + np.arange(k)], 1))
    edges.append(np.stack([last + np.arange(k), np.ones(k, int)], 1))
    return np.concatenate(pts), np.concatenate(edges)


def _tube_template(sections: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """A closed unit tube along z (radius 1, z in [0, 1]): (vertices [2 s + 2, 3], faces [4 s, 3])."""
    ang = np.arange(sections) * 2 * math.pi / sections
    ring = np.stack([np.cos(ang), np.sin(ang)], 1)
    verts = np.concatenate([np.c_[ring, np.zeros(sections)], np.c_[ring, np.ones(sections)], [[0, 0, 0], [0, 0, 1]]])
    i, j = np.arange(sections), (np.arange(sections) + 1) % sections
    s = sections
    faces = np.concatenate([np.stack([i, j, j + s], 1), np.stack([i, j + s, i + s], 1),
                            np.stack([np.full(s, 2 * s), j, i], 1), np.stack([np.full(s, 2 * s + 1), i + s, j + s], 1)])
    return verts, faces


def wire_mesh(prim: Primitive):
    """The primitive's coarse edges as thin closed tubes plus a ball on every joint (object coordinates)."""
    import trimesh

    joints, edges = _wire_edges(prim)
    joints = (joints * prim.axes / 2) @ prim.transform[:3, :3].T + prim.transform[:3, 3]
    r = prim.wire_thickness / 2
    a, b = joints[edges[:, 0]], joints[edges[:, 1]]
    d = b - a
    length = np.linalg.norm(d, axis=1)
    z = d / length[:, None]
    helper = np.where(np.abs(z[:, :1]) < 0.9, [[1.0, 0, 0]], [[0, 1.0, 0]])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.cross(z, x)
    tv, tf = _tube_template()
    # [E, V, 3]: a + r (x tx + y ty) + length z tz, vectorised over edges
    verts = (a[:, None] + r * (tv[None, :, 0:1] * x[:, None] + tv[None, :, 1:2] * y[:, None])
             + tv[None, :, 2:3] * (length[:, None, None] * z[:, None]))
    faces = tf[None] + len(tv) * np.arange(len(edges))[:, None, None]
    ball = trimesh.creation.icosphere(subdivisions=1, radius=1.0)
    bv = joints[:, None] + 1.5 * r * ball.vertices[None]
    bf = ball.faces[None] + len(ball.vertices) * np.arange(len(joints))[:, None, None] + verts.shape[0] * verts.shape[1]
    return trimesh.Trimesh(np.concatenate([verts.reshape(-1, 3), bv.reshape(-1, 3)]),
                           np.concatenate([faces.reshape(-1, 3), bf.reshape(-1, 3)]), process=False)


def _noise(m: Material, p: np.ndarray) -> np.ndarray:
    """[N] smooth 3D noise in about [-1, 1] at points [N, 3]: a sum of random plane waves (1/f amplitudes)."""
    return 1.7 * (np.sin(2 * math.pi * p @ m.waves.T + m.phases) * m.amps).sum(1)


def material_colors(m: Material, p: np.ndarray) -> np.ndarray:
    """[N, 3] colours in [0, 1] of the solid texture ``m`` at points [N, 3]."""
    n = _noise(m, p)
    if m.kind == "noise":
        t = np.clip(0.5 + 0.5 * n, 0, 1)
    elif m.kind == "stripes":
        t = (np.sin(2 * math.pi * (m.frequency * p @ m.direction + 0.3 * n)) > 0).astype(float)
    elif m.kind == "checker":
        q = np.floor(m.frequency * (p + 0.1 * n[:, None]))
        t = (q.sum(1) % 2 == 0).astype(float)
    elif m.kind == "spots":
        t = (n > 0.35).astype(float)
    else:  # plain, slightly shaded so it is not perfectly uniform
        t = 0.15 * np.clip(0.5 + 0.5 * n, 0, 1)
    return m.colors[0] * (1 - t[:, None]) + m.colors[1] * t[:, None]


def material_index(recipe: Recipe, p: np.ndarray) -> np.ndarray:
    """[N] material of points [N, 3] (object frame before normalisation): the nearest partition centre after a
    smooth noise warp of space, so material borders are wavy and independent of the primitives' edges."""
    warp = (0.3 * _noise(recipe.warp, p)[:, None] * recipe.warp.direction
            + 0.15 * _noise(recipe.warp, p[:, ::-1])[:, None])
    d = np.linalg.norm((p + warp)[:, None] - recipe.material_centres[None], axis=2)
    return d.argmin(1)


def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB-encoded colours in [0, 1] -> linear (the exact curve of pyrender's shader for textures)."""
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _texture(recipe: Recipe, p: np.ndarray) -> np.ndarray:
    """[N, 3] colours: each point takes the solid texture of its :func:`material_index`."""
    owner = material_index(recipe, p)
    out = np.empty((len(p), 3))
    for k, m in enumerate(recipe.materials):  # loop over <= 9 materials, vectorised over points
        sel = owner == k
        if sel.any():
            out[sel] = material_colors(m, p[sel])
    return out


@dataclass
class ZeroverseObject:
    """The built object: coloured meshes (object centred, bounding-sphere radius ``recipe.radius``) and facts."""

    meshes: list  # trimesh.Trimesh with vertex colours, in output (unit-sphere) coordinates
    recipe: Recipe
    parts: list[int] = field(default_factory=list)  # recipe primitive index of each mesh
    centre: np.ndarray = field(default_factory=lambda: np.zeros(3))  # output = (object - centre) * scale
    scale: float = 1.0
    info: dict = field(default_factory=dict)


def build_object(recipe: Recipe, cfg: ZeroverseConfig) -> ZeroverseObject:
    """Geometry of a recipe: primitives, bumps, the boolean cut, wireframes, solid textures, normalisation."""
    import trimesh

    parts = [wire_mesh(p) if p.wire else solid_mesh(p, cfg.grid) for p in recipe.primitives]
    info = {"primitives": [{"shape": p.shape, "axes": [round(float(a), 4) for a in p.axes], "wire": p.wire,
                            "bumps": p.heights is not None} for p in recipe.primitives],
            "cut": None}
    if recipe.cutter is not None:
        anchor_idx, frac = recipe.cutter_anchor
        anchor_mesh = parts[anchor_idx]
        centre = anchor_mesh.vertices[min(int(frac * len(anchor_mesh.vertices)), len(anchor_mesh.vertices) - 1)]
        cutter_prim = recipe.cutter
        cutter_prim.transform = cutter_prim.transform.copy()
        cutter_prim.transform[:3, 3] = centre
        cutter = solid_mesh(cutter_prim, cfg.cutter_grid)
        lo, hi = cutter.bounds
        cut, failed = [], []
        for i, (prim, mesh) in enumerate(zip(recipe.primitives, parts)):
            if prim.wire or (mesh.bounds[1] < lo).any() or (mesh.bounds[0] > hi).any():
                continue
            try:
                result = trimesh.boolean.difference([mesh, cutter], engine="manifold")
            except Exception as e:  # recorded in the item's json (info["cut"]["failed"]), never silent
                failed.append({"part": i, "error": f"{type(e).__name__}: {e}"})
                continue
            parts[i] = result
            cut.append(i)
        info["cut"] = {"shape": cutter_prim.shape, "axes": [round(float(a), 4) for a in cutter_prim.axes],
                       "parts": cut, "failed": failed}
    kept = [(i, m) for i, m in enumerate(parts) if len(m.faces) > 0]  # a part inside the cutter vanishes
    info["removed_parts"] = [i for i, m in enumerate(parts) if len(m.faces) == 0]
    verts = np.concatenate([m.vertices for _, m in kept])
    centre = (verts.min(0) + verts.max(0)) / 2
    scale = recipe.radius / np.linalg.norm(verts - centre, axis=1).max()
    meshes = []
    cut_parts = set(info["cut"]["parts"]) if info["cut"] else set()
    for i, m in kept:
        prim = recipe.primitives[i]
        if cfg.texture_res > 0 and not prim.wire and i not in cut_parts:
            from PIL import Image

            tm, uv, atlas = textured_solid_mesh(prim, cfg.grid, cfg.texture_res, lambda p: _texture(recipe, p))
            out = trimesh.Trimesh((tm.vertices - centre) * scale, tm.faces, process=False)
            # the same material as vertex-coloured parts (pyrender's default for those): white base colour
            # factor, metallic 0.2, roughness 0.8 -- trimesh's SimpleMaterial would scale the texture by 0.4
            mat = trimesh.visual.material.PBRMaterial(baseColorTexture=Image.fromarray(atlas, "RGB"),
                                                      baseColorFactor=[255, 255, 255, 255], metallicFactor=0.2,
                                                      roughnessFactor=0.8)
            out.visual = trimesh.visual.TextureVisuals(uv=uv, material=mat)
            meshes.append(out)
            continue
        rgb = _texture(recipe, m.vertices)  # textures live in the object frame before normalisation
        if cfg.texture_res > 0:
            # pyrender decodes texture texels from sRGB but multiplies vertex colours into the linear shading
            # result as they are (then encodes the output): linearise so both kinds of part show the same colours
            rgb = _srgb_to_linear(rgb)
        out = trimesh.Trimesh((m.vertices - centre) * scale, m.faces, process=False)
        out.visual = trimesh.visual.ColorVisuals(out, vertex_colors=np.c_[np.rint(rgb * 255), np.full(len(rgb), 255)]
                                                 .astype(np.uint8))
        meshes.append(out)
    info.update(num_primitives=len(recipe.primitives), radius=round(recipe.radius, 4),
                triangles=int(sum(len(m.faces) for m in meshes)))
    return ZeroverseObject(meshes=meshes, recipe=recipe, parts=[i for i, _ in kept], centre=centre, scale=float(scale),
                           info=info)


def make_object(rng: np.random.Generator, cfg: ZeroverseConfig) -> ZeroverseObject:
    """Draw a recipe from ``rng`` and build it (the generator's one entry point)."""
    return build_object(sample_recipe(rng, cfg), cfg)


__all__ = ["ZeroverseConfig", "Primitive", "Material", "Recipe", "ZeroverseObject", "SHAPES", "sample_count",
           "sample_recipe", "build_object", "make_object", "solid_mesh", "textured_solid_mesh", "wire_mesh",
           "material_colors", "material_index", "random_rotation"]

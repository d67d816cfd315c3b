"""Asset sources for the synthetic renders: Sweet Home 3D furniture (Debian), its wall/floor textures, and
procedural textures and shapes used when those packages are missing (or when only self-made assets are wanted).

* Furniture: ``apt-get install sweethome3d-furniture`` puts five zip archives (``*.sh3f``) in
  ``/usr/share/sweethome3d/furniture/``; each has a ``PluginFurnitureCatalog.properties`` (per model ``model#N``,
  ``name#N``, ``category#N``, ``width/depth/height#N`` in cm, optional ``modelRotation#N``, ``creator#N``) and one
  folder per model with OBJ + MTL + textures. Models are extracted lazily into a cache folder.
* Textures: ``sweethome3d.jar`` (package ``sweethome3d``; ``apt-get download sweethome3d && dpkg -x`` suffices)
  holds tileable 256-px JPEGs with real-world sizes in ``DefaultTexturesCatalog.properties``.

Licences (see ``DATA_LICENSES.md``): BlendSwap-CC-0 is CC0; BlendSwap-CC-BY, Scopia, KatorLegaz are CC-BY-3.0
(every scene records the creator of each model it uses); the jar textures are GPL-2+; procedural assets are ours.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

FURNITURE_DIR = Path("/usr/share/sweethome3d/furniture")
TEXTURE_JAR_CANDIDATES = (
    Path("/usr/share/sweethome3d/sweethome3d.jar"),
    Path.home() / ".cache/tttlrm_ns/sweethome3d/usr/share/sweethome3d/sweethome3d.jar",
)
LIBRARY_LICENSES = {
    "BlendSwap-CC-0": "CC0-1.0",
    "BlendSwap-CC-BY": "CC-BY-3.0",
    "Scopia": "CC-BY-3.0",
    "KatorLegaz": "CC-BY-3.0-US",
    "Reallusion": "CC-BY-3.0-US",
}
# Not room furniture: people, cars, garden items (and doors/windows, filtered by their flag).
EXCLUDED_CATEGORIES = {"Characters", "Vehicles", "Exterior", "Staircases"}
ROOM_CATEGORIES = ("Living room", "Kitchen", "Bedroom", "Office", "Bathroom", "Lights")
# Outdoor ground textures of the jar's "Floor" category, not used for rooms.
OUTDOOR_TEXTURES = {"grass", "pebbles", "pavingStone", "boxTree"}
_TEXTURE_PREFIX = "com/eteks/sweethome3d/io/resources/textures/"


class AssetError(RuntimeError):
    """An asset source is missing or unreadable; the message says how to get it."""


def _read_properties(text: str) -> dict[str, str]:
    """Java ``.properties`` -> dict (``key=value`` lines, ``#`` comments, ``\\uXXXX`` escapes)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#!" or "=" not in line:
            continue
        key, value = line.split("=", 1)
        out[key.strip()] = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), value.strip())
    return out


@dataclass(frozen=True)
class FurnitureModel:
    """One catalogue entry. Sizes in metres (catalogue cm / 100); ``rotation`` is the row-major 3x3 model rotation."""

    library: str
    archive: Path
    model_path: str  # path inside the archive, e.g. "blendswap-cc-0/armchair/armchair.obj"
    name: str
    category: str
    creator: str
    width: float
    depth: float
    height: float
    rotation: Optional[tuple[float, ...]] = None
    elevation: float = 0.0

    @property
    def license(self) -> str:
        return LIBRARY_LICENSES.get(self.library, "see /usr/share/doc/sweethome3d-furniture/copyright")

    def attribution(self) -> dict:
        return {"name": self.name, "creator": self.creator, "library": self.library, "license": self.license,
                "source": f"Debian sweethome3d-furniture: {self.archive.name}:{self.model_path}"}


def load_furniture_catalog(libraries: Sequence[str], furniture_dir: Path = FURNITURE_DIR,
                           categories: Optional[Sequence[str]] = None) -> list[FurnitureModel]:
    """All usable models of the given libraries (archive stems), in a fixed order (library, then catalogue index).

    Skips doors/windows, wall-mounted items (``elevation`` > 0) and :data:`EXCLUDED_CATEGORIES`; ``categories``
    restricts to a set of catalogue categories. Raises :class:`AssetError` if an archive is missing.
    """
    models = []
    for lib in libraries:
        archive = Path(furniture_dir) / f"{lib}.sh3f"
        if not archive.is_file():
            raise AssetError(f"furniture library {archive} not found (apt-get install -y sweethome3d-furniture, "
                             f"or pass --furniture-dir DIR, or --assets procedural)")
        with zipfile.ZipFile(archive) as zf:
            props = _read_properties(zf.read("PluginFurnitureCatalog.properties").decode("latin-1"))
        indices = sorted(int(k.split("#")[1]) for k in props if k.startswith("model#"))
        for i in indices:
            get = lambda key, default=None: props.get(f"{key}#{i}", default)  # noqa: E731
            category = get("category", "")
            if get("doorOrWindow") == "true" or category in EXCLUDED_CATEGORIES:
                continue
            if categories is not None and category not in categories:
                continue
            elevation = float(get("elevation", 0) or 0) / 100
            if elevation > 0:
                continue
            rot = get("modelRotation")
            models.append(FurnitureModel(
                library=lib, archive=archive, model_path=get("model").lstrip("/"), name=get("name", ""),
                category=category, creator=get("creator", "unknown"), width=float(get("width")) / 100,
                depth=float(get("depth")) / 100, height=float(get("height")) / 100,
                rotation=tuple(float(x) for x in rot.split()) if rot else None, elevation=elevation))
    return models


def extract_model(model: FurnitureModel, cache_dir: Path) -> Path:
    """Extract the model's folder from its archive into ``cache_dir`` (once; atomic, so concurrent workers are safe)
    and return the OBJ path. Textures stay next to the MTL with relative names, which trimesh needs."""
    folder = model.model_path.rsplit("/", 1)[0] + "/"
    dest = Path(cache_dir) / model.library / folder
    obj = Path(cache_dir) / model.library / model.model_path
    if obj.is_file():
        return obj
    tmp = dest.parent / f".tmp-{dest.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(model.archive) as zf:
        for info in zf.infolist():
            if info.filename.startswith(folder) and not info.is_dir():
                target = tmp / info.filename[len(folder):]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(info))
    try:
        os.rename(tmp, dest)
    except OSError:  # another worker won the race
        shutil.rmtree(tmp, ignore_errors=True)
    if not obj.is_file():
        raise AssetError(f"{model.archive}: model file {model.model_path} missing from the archive")
    return obj


def load_furniture_meshes(model: FurnitureModel, cache_dir: Path) -> list:
    """The model as trimesh meshes in metres, placed like Sweet Home 3D does: model rotation applied, bounding box
    scaled to the catalogue width (x), height (y), depth (z), centred in x and z, bottom on y = 0."""
    import trimesh

    scene = trimesh.load(str(extract_model(model, cache_dir)), force="scene")
    meshes = []
    for node in scene.graph.nodes_geometry:
        transform, geom_name = scene.graph[node]
        mesh = scene.geometry[geom_name]
        if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
            continue
        mesh = mesh.copy()
        mesh.apply_transform(transform)
        meshes.append(mesh)
    if not meshes:
        raise AssetError(f"{model.model_path}: no triangles")
    rot = np.eye(4)
    if model.rotation is not None:
        rot[:3, :3] = np.array(model.rotation).reshape(3, 3)
    for m in meshes:
        m.apply_transform(rot)
    lo = np.min([m.bounds[0] for m in meshes], axis=0)
    hi = np.max([m.bounds[1] for m in meshes], axis=0)
    extent = np.maximum(hi - lo, 1e-6)
    scale = np.array([model.width, model.height, model.depth]) / extent
    place = np.diag([*scale, 1.0])
    place[:3, 3] = -scale * np.array([(lo[0] + hi[0]) / 2, lo[1], (lo[2] + hi[2]) / 2])
    for m in meshes:
        m.apply_transform(place)
    return meshes


@dataclass(frozen=True)
class TextureAsset:
    """A tileable texture image (uint8 [H, W, 3]) and its real-world tile size in metres."""

    name: str
    image: np.ndarray
    size_m: tuple[float, float]
    license: str
    source: str

    def attribution(self) -> dict:
        return {"name": self.name, "license": self.license, "source": self.source}


def find_texture_jar(explicit: Optional[Path] = None) -> Optional[Path]:
    """The Sweet Home 3D jar: ``explicit`` if given (must exist), else the first existing default location."""
    if explicit is not None:
        if not Path(explicit).is_file():
            raise AssetError(f"texture jar {explicit} not found (apt-get download sweethome3d && dpkg -x "
                             "sweethome3d_*.deb DIR gives DIR/usr/share/sweethome3d/sweethome3d.jar)")
        return Path(explicit)
    return next((p for p in TEXTURE_JAR_CANDIDATES if p.is_file()), None)


def load_jar_textures(jar: Path) -> dict[str, list[TextureAsset]]:
    """Sweet Home 3D's default textures grouped by catalogue category ("Floor", "Wall", "Sky", ...)."""
    from PIL import Image

    out: dict[str, list[TextureAsset]] = {}
    with zipfile.ZipFile(jar) as zf:
        props = _read_properties(zf.read("com/eteks/sweethome3d/io/DefaultTexturesCatalog.properties").decode("latin-1"))
        for i in sorted(int(k.split("#")[1]) for k in props if k.startswith("image#")):
            path = props[f"image#{i}"].lstrip("/")
            if not path.startswith(_TEXTURE_PREFIX) or Path(path).stem in OUTDOOR_TEXTURES:
                continue
            with zf.open(path) as f:
                img = np.asarray(Image.open(f).convert("RGB"))
            size = (float(props[f"width#{i}"]) / 100, float(props[f"height#{i}"]) / 100)
            out.setdefault(props.get(f"category#{i}", ""), []).append(TextureAsset(
                name=props.get(f"name#{i}", path), image=img, size_m=size, license="GPL-2+",
                source=f"Debian sweethome3d: sweethome3d.jar:{path} (Emmanuel Puybaret, eTeks)"))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Procedural textures (ours, CC0): vectorised numpy, tileable (integer frequencies on the unit torus).


def tileable_noise(rng: np.random.Generator, size: int, octaves: int = 4, base: int = 2) -> np.ndarray:
    """[size, size] smooth periodic noise in [0, 1]: random-phase cosines at integer frequencies ``base * 2^o``
    with 1/f amplitudes, so the image tiles seamlessly."""
    y, x = np.meshgrid(np.linspace(0, 1, size, endpoint=False), np.linspace(0, 1, size, endpoint=False), indexing="ij")
    acc = np.zeros((size, size))
    for o in range(octaves):
        f = base * 2 ** o
        k = rng.integers(-f, f + 1, size=(6, 2))
        phase = rng.uniform(0, 2 * math.pi, 6)
        acc += np.cos(2 * math.pi * (k[:, 0, None, None] * x + k[:, 1, None, None] * y) + phase[:, None, None]).sum(0) / f
    acc -= acc.min()
    return acc / max(acc.max(), 1e-9)


def _palette(rng: np.random.Generator, kind: str) -> np.ndarray:
    hues = {"wood": (0.05, 0.11), "tile": (0.0, 1.0), "plaster": (0.0, 1.0), "brick": (0.0, 0.06),
            "carpet": (0.0, 1.0), "art": (0.0, 1.0)}
    sat = {"wood": (0.35, 0.7), "tile": (0.0, 0.4), "plaster": (0.0, 0.15), "brick": (0.4, 0.7),
           "carpet": (0.2, 0.6), "art": (0.3, 0.9)}
    val = {"wood": (0.35, 0.8), "tile": (0.55, 0.95), "plaster": (0.75, 0.97), "brick": (0.35, 0.6),
           "carpet": (0.3, 0.8), "art": (0.3, 1.0)}
    h, s, v = rng.uniform(*hues[kind]), rng.uniform(*sat[kind]), rng.uniform(*val[kind])
    # HSV -> RGB, vectorised over nothing but kept explicit to avoid a colorsys dependency on floats.
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


def procedural_texture(rng: np.random.Generator, kind: str, size: int = 256) -> TextureAsset:
    """A tileable procedural texture: ``kind`` in wood | tile | plaster | brick | carpet | art."""
    n = tileable_noise(rng, size)
    y, x = np.meshgrid(np.arange(size) / size, np.arange(size) / size, indexing="ij")
    c1 = _palette(rng, kind)
    if kind == "wood":  # planks along x with per-plank tone, grain streaks and dark seams
        planks = int(rng.integers(3, 7))
        row = np.floor(y * planks)
        tone = rng.uniform(0.8, 1.15, planks)[row.astype(int)]
        grain = 0.5 + 0.5 * np.sin(2 * math.pi * (planks * 4 * y + 3 * n))
        seam = (np.abs((y * planks) % 1 - 0.5) > 0.47).astype(float)
        img = c1 * (tone * (0.8 + 0.2 * grain) * (1 - 0.5 * seam))[..., None]
        tile_m = 1.2
    elif kind == "tile":  # square tiles, grout lines, slight per-tile variation
        k = int(rng.integers(2, 5))
        cell = (np.floor(x * k) + np.floor(y * k)) % 2
        c2 = _palette(rng, "tile")
        grout = ((np.abs((x * k) % 1 - 0.5) > 0.46) | (np.abs((y * k) % 1 - 0.5) > 0.46)).astype(float)
        base = np.where(cell[..., None] > 0, c1, c2) if rng.uniform() < 0.5 else np.broadcast_to(c1, (size, size, 3))
        img = base * (0.9 + 0.1 * n)[..., None] * (1 - 0.45 * grout)[..., None]
        tile_m = float(rng.uniform(0.4, 1.2))
    elif kind == "brick":
        rows = 8
        r = np.floor(y * rows)
        xs = x * 4 + 0.5 * (r % 2)
        mortar = ((np.abs((y * rows) % 1 - 0.5) > 0.42) | (np.abs(xs % 1 - 0.5) > 0.46)).astype(float)
        tone = 0.85 + 0.3 * tileable_noise(rng, size, octaves=2, base=8)
        img = c1 * tone[..., None] * (1 - mortar)[..., None] + 0.8 * mortar[..., None]
        tile_m = 1.0
    elif kind == "carpet":
        img = c1 * (0.7 + 0.3 * n + 0.1 * rng.uniform(0, 1, (size, size)))[..., None]
        tile_m = 0.6
    elif kind == "art":  # a "painting": a few soft colour blobs
        img = np.zeros((size, size, 3))
        for _ in range(4):
            img += _palette(rng, "art") * tileable_noise(rng, size, octaves=2)[..., None] ** 2
        img /= max(img.max(), 1e-6)
        tile_m = 1.0
    else:  # plaster
        if kind != "plaster":
            raise ValueError(f"unknown procedural texture kind {kind!r}")
        img = c1 * (0.88 + 0.12 * n)[..., None]
        tile_m = 1.5
    img = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    return TextureAsset(name=f"procedural {kind}", image=img, size_m=(tile_m, tile_m), license="CC0-1.0",
                        source="procedural (tttlrm_ns.synth.assets)")


def procedural_furniture(rng: np.random.Generator) -> tuple[list, dict]:
    """A random piece of 'furniture' built from boxes and cylinders with procedural vertex colours: a table, a
    cabinet, a shelf or a stool. Returns (meshes in metres with the bottom on y = 0, attribution dict)."""
    import trimesh

    kind = ["table", "cabinet", "shelf", "stool"][int(rng.integers(4))]
    c1, c2 = _palette(rng, "wood"), _palette(rng, "tile")
    parts = []

    def box(ext, centre, colour):
        m = trimesh.creation.box(extents=ext)
        m.apply_translation(centre)
        parts.append((m, colour))

    if kind in ("table", "stool"):
        w, d = (rng.uniform(0.8, 1.8), rng.uniform(0.6, 1.0)) if kind == "table" else (0.4, 0.4)
        h = rng.uniform(0.7, 0.8) if kind == "table" else rng.uniform(0.4, 0.6)
        box((w, 0.04, d), (0, h - 0.02, 0), c1)
        for sx in (-1, 1):
            for sz in (-1, 1):
                leg = trimesh.creation.cylinder(radius=0.025, height=h - 0.04, sections=12)
                leg.apply_transform(trimesh.transformations.rotation_matrix(math.pi / 2, [1, 0, 0]))
                leg.apply_translation((sx * (w / 2 - 0.05), (h - 0.04) / 2, sz * (d / 2 - 0.05)))
                parts.append((leg, c2))
    elif kind == "cabinet":
        w, d, h = rng.uniform(0.5, 1.4), rng.uniform(0.4, 0.6), rng.uniform(0.6, 1.9)
        box((w, h, d), (0, h / 2, 0), c1)
        doors = int(rng.integers(1, 4))
        for i in range(doors):
            box((w / doors - 0.02, h - 0.06, 0.01), (-w / 2 + (i + 0.5) * w / doors, h / 2, d / 2 + 0.005), c2)
    else:  # shelf with coloured 'books'
        w, d, h = rng.uniform(0.6, 1.2), 0.3, rng.uniform(1.0, 2.0)
        levels = int(rng.integers(3, 6))
        for sx in (-1, 1):
            box((0.02, h, d), (sx * w / 2, h / 2, 0), c1)
        for i in range(levels):
            yb = i * h / levels
            box((w, 0.02, d), (0, yb + 0.01, 0), c1)
            nb = int(rng.integers(3, 10))
            xs = np.sort(rng.uniform(-w / 2 + 0.05, w / 2 - 0.05, nb))
            for xb in xs:
                bh = rng.uniform(0.12, min(0.3, h / levels - 0.04))
                box((0.03, bh, 0.2), (xb, yb + 0.02 + bh / 2, 0), _palette(rng, "art"))
    meshes = []
    for m, colour in parts:
        shade = 0.85 + 0.15 * np.sin(3.0 * m.vertices @ rng.normal(size=3))[:, None]  # mild procedural variation
        rgb = np.clip(colour * shade, 0, 1)
        m.visual = trimesh.visual.ColorVisuals(m, vertex_colors=(np.c_[rgb, np.ones(len(rgb))] * 255).astype(np.uint8))
        meshes.append(m)
    return meshes, {"name": f"procedural {kind}", "license": "CC0-1.0", "source": "procedural (tttlrm_ns.synth.assets)"}


__all__ = ["AssetError", "FurnitureModel", "TextureAsset", "load_furniture_catalog", "extract_model",
           "load_furniture_meshes", "find_texture_jar", "load_jar_textures", "procedural_texture",
           "procedural_furniture", "tileable_noise", "FURNITURE_DIR", "LIBRARY_LICENSES", "ROOM_CATEGORIES"]

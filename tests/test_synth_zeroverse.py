"""Zeroverse-like procedural objects (tttlrm_ns/synth/zeroverse.py, ``tttlrm-synth --kind zeroverse``).

GL-free tests check the mesh builder (primitive-count distribution, variety, watertight parts inside the unit
sphere, texture seams across parts); rendering tests (skipped without OSMesa, like tests/test_synth.py) check that
the CLI is deterministic and that the stored depth, unprojected through the stored cameras, lands on the mesh.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tttlrm_ns.synth.gl import osmesa_status
from tttlrm_ns.synth.zeroverse import (SHAPES, ZeroverseConfig, build_object, make_object, material_index,
                                       sample_recipe)

REPO = Path(__file__).resolve().parents[1]
_OK, _REASON = osmesa_status()
needs_gl = pytest.mark.skipif(not _OK, reason=f"OSMesa rendering unavailable: {_REASON}")

SMALL = ZeroverseConfig(grid=8, cutter_grid=4)  # coarse meshes keep the GL-free builds fast


def _item_rng(seed: int, index: int) -> np.random.Generator:
    from tttlrm_ns.synth.generate import GenerateConfig, item_rng

    return item_rng(GenerateConfig(kind="zeroverse", out=Path("unused"), seed=seed), index)


# ------------------------------------------------------------------------------------------- GL-free unit tests


def test_primitive_counts_follow_the_weights():
    cfg = ZeroverseConfig()
    n = 3000
    counts = Counter(len(sample_recipe(_item_rng(0, i), cfg).primitives) for i in range(n))
    w = np.array(cfg.count_weights, float)
    expected = w / w.sum()
    observed = np.array([counts.get(k, 0) for k in range(1, 10)]) / n
    assert set(counts) <= set(range(1, 10))
    # binomial std <= 0.009 at n = 3000; uniform 1..9 would be off by 0.056 at count 1
    np.testing.assert_allclose(observed, expected, atol=0.03)
    # every shape, wireframes, bumps and cut-outs all occur
    recipes = [sample_recipe(_item_rng(1, i), cfg) for i in range(200)]
    prims = [p for r in recipes for p in r.primitives]
    assert {p.shape for p in prims} == set(SHAPES)
    assert 0.05 < np.mean([p.wire for p in prims]) < 0.4
    assert 0.3 < np.mean([p.heights is not None for p in prims]) < 0.9
    assert 0.3 < np.mean([r.cutter is not None for r in recipes]) < 0.7
    axes = np.concatenate([p.axes for p in prims])
    assert axes.min() >= 0.25 and axes.max() <= 2.0
    assert all(not r.primitives[0].wire for r in recipes)


def test_builder_deterministic_and_varied():
    a = make_object(_item_rng(3, 0), SMALL)
    b = make_object(_item_rng(3, 0), SMALL)
    assert len(a.meshes) == len(b.meshes)
    for ma, mb in zip(a.meshes, b.meshes):
        assert np.array_equal(ma.vertices, mb.vertices) and np.array_equal(ma.faces, mb.faces)
        assert np.array_equal(ma.visual.vertex_colors, mb.visual.vertex_colors)
    others = [make_object(_item_rng(3, i), SMALL) for i in range(1, 4)]
    sig = lambda o: (len(o.meshes), sum(len(m.faces) for m in o.meshes), float(o.meshes[0].vertices.sum()))  # noqa: E731
    assert len({sig(o) for o in [a, *others]}) == 4


def test_objects_inside_unit_sphere_watertight_and_textured():
    cfg = SMALL
    cut_seen = 0
    for i in range(12):
        obj = make_object(_item_rng(4, i), cfg)
        r = max(np.linalg.norm(m.vertices, axis=1).max() for m in obj.meshes)
        np.testing.assert_allclose(r, obj.recipe.radius, rtol=1e-9)
        assert cfg.radius_range[0] <= r <= cfg.radius_range[1]
        lo = np.min([m.bounds[0] for m in obj.meshes], 0)
        hi = np.max([m.bounds[1] for m in obj.meshes], 0)
        np.testing.assert_allclose((lo + hi) / 2, 0, atol=1e-9)  # centred on its bounding box
        for m in obj.meshes:
            assert m.is_watertight  # solid parts, cut parts and the closed wire tubes alike
            colours = m.visual.vertex_colors
            assert colours.shape == (len(m.vertices), 4) and (colours[:, 3] == 255).all()
        if obj.info["cut"] is not None:
            assert not obj.info["cut"]["failed"], obj.info["cut"]
            cut_seen += bool(obj.info["cut"]["parts"])
    assert cut_seen >= 2


def test_cut_removes_volume():
    """A recipe with a cutter centred on the first primitive has less volume there than without the cutter."""
    for i in range(50):
        recipe = sample_recipe(_item_rng(5, i), SMALL)
        if recipe.cutter is not None and recipe.cutter_anchor[0] == 0 and len(recipe.primitives) == 1:
            break
    else:
        pytest.fail("no single-primitive recipe with a cut in 50 draws")
    cut = build_object(recipe, SMALL)
    recipe2 = sample_recipe(_item_rng(5, i), SMALL)
    recipe2.cutter = None
    whole = build_object(recipe2, SMALL)
    v_cut = cut.meshes[0].volume / cut.scale ** 3  # back to object units (the normalisation differs)
    v_whole = whole.meshes[0].volume / whole.scale ** 3
    assert v_cut < v_whole - 1e-3, (v_cut, v_whole)


def test_texture_seams_cross_parts():
    """Material borders do not follow the primitives: parts show more than one texture, and textures span parts."""
    mixed, parts_total, shared = 0, 0, 0
    for i in range(20):
        obj = make_object(_item_rng(6, i), SMALL)
        if len(obj.meshes) < 2:
            continue
        owners = []
        for m in obj.meshes:
            p = m.vertices / obj.scale + obj.centre  # back to the object frame the textures live in
            owners.append(set(material_index(obj.recipe, p).tolist()))
        parts_total += len(owners)
        mixed += sum(len(o) > 1 for o in owners)
        shared += sum(len(set.intersection(a, b)) > 0 for k, a in enumerate(owners) for b in owners[k + 1:])
    assert parts_total > 20
    assert mixed / parts_total > 0.3, (mixed, parts_total)
    assert shared > 0


def test_texture_atlas_matches_the_solid_texture():
    """texture_res > 0: the atlas looked up at each vertex's UV (OpenGL convention: v up from the image bottom,
    which is how pyrender uploads images) gives the solid texture at that vertex; the geometry is unchanged."""
    from tttlrm_ns.synth.zeroverse import _texture

    # texture_res - 1 = 3 x grid: every vertex sits exactly on a texel centre, so the lookup is exact
    cfg_v, cfg_t = ZeroverseConfig(grid=8, cutter_grid=4), ZeroverseConfig(grid=8, cutter_grid=4, texture_res=25)
    textured = 0
    for i in range(6):
        plain, tex = make_object(_item_rng(7, i), cfg_v), make_object(_item_rng(7, i), cfg_t)
        assert len(plain.meshes) == len(tex.meshes)
        for mv, mt in zip(plain.meshes, tex.meshes):
            # same surface: the unwelded textured grid has exactly the welded mesh's vertex positions
            assert np.array_equal(np.unique(mv.vertices, axis=0), np.unique(mt.vertices, axis=0))
            if mt.visual.kind != "texture":
                continue
            textured += 1
            img = np.asarray(mt.visual.material.baseColorTexture).astype(float) / 255
            gl = img[::-1]  # row = v
            h, w = gl.shape[:2]
            x, y = mt.visual.uv[:, 0] * w - 0.5, mt.visual.uv[:, 1] * h - 0.5
            x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
            fx, fy = (x - x0)[:, None], (y - y0)[:, None]
            lookup = (gl[y0, x0] * (1 - fx) * (1 - fy) + gl[y0, x0 + 1] * fx * (1 - fy)
                      + gl[y0 + 1, x0] * (1 - fx) * fy + gl[y0 + 1, x0 + 1] * fx * fy)
            ref = _texture(tex.recipe, mt.vertices / tex.scale + tex.centre)
            err = np.abs(lookup - ref).mean(1)
            good = (err < 0.01).mean()  # 8-bit rounding only (the sub-texel remainder is float noise)
            assert good > 0.99, good
            flipped = np.abs(img[np.clip(y0, 0, h - 1), x0] - ref).mean(1)  # forgetting the flip is caught
            assert (flipped < 0.01).mean() < 0.8 or np.ptp(ref, axis=0).max() < 0.1
    assert textured >= 3


def test_bad_config_messages():
    from tttlrm_ns.synth.generate import GenerateConfig, ObjectsConfig

    with pytest.raises(ValueError, match="radius_range"):
        GenerateConfig(kind="zeroverse", out=Path("x"), zeroverse=ZeroverseConfig(radius_range=(0.5, 1.5))).validate()
    with pytest.raises(ValueError, match="distance_range"):
        GenerateConfig(kind="zeroverse", out=Path("x"), zeroverse=ZeroverseConfig(distance_range=(0.5, 2))).validate()
    with pytest.raises(ValueError, match="RGBA object renders need PNG"):
        GenerateConfig(kind="zeroverse", out=Path("x"), image_format="jpg",
                       objects=ObjectsConfig(background="rgba")).validate()
    GenerateConfig(kind="zeroverse", out=Path("x"), image_format="jpg").validate()  # white by default: fine
    with pytest.raises(ValueError, match="texture_res"):
        GenerateConfig(kind="zeroverse", out=Path("x"), zeroverse=ZeroverseConfig(texture_res=1)).validate()


# --------------------------------------------------------------------------------------------- rendering tests

ARGS = ["--kind", "zeroverse", "--num", "2", "--views", "3", "--res", "48x48", "--seed", "9", "--zv-grid", "8"]


def _cfg(out: Path):
    """The GenerateConfig the CLI builds from ARGS (to rebuild the geometry GL-free)."""
    from tttlrm_ns.synth.generate import GenerateConfig, ObjectsConfig

    return GenerateConfig(kind="zeroverse", out=out, num=2, height=48, width=48, seed=9,
                          objects=ObjectsConfig(views=3), zeroverse=ZeroverseConfig(grid=8))


def _cli(out: Path, *extra: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "tttlrm_ns.synth.cli", "--no-progress", *ARGS,
                        "--out", str(out), *extra], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    if not _OK:
        pytest.skip(f"OSMesa rendering unavailable: {_REASON}")
    root = tmp_path_factory.mktemp("zeroverse")
    _cli(root / "a")
    return root / "a"


@needs_gl
def test_cli_deterministic_layout_white_background(rendered, tmp_path):
    _cli(tmp_path / "b", "--workers", "2")  # the process pool gives the same bytes as the single process
    files = sorted(p.relative_to(rendered) for p in rendered.rglob("*") if p.is_file())
    assert len(files) == 2 * (1 + 3 + 3)
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    for rel in files:
        assert (rendered / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    imgs = []
    for item in ("zeroverse_00000", "zeroverse_00001"):
        meta = json.loads((rendered / item / "opencv_cameras.json").read_text())
        assert meta["generator"]["kind"] == "zeroverse" and meta["assets"][0]["license"] == "CC0-1.0"
        assert 2.4 <= meta["generator"]["camera_distance"] <= 3.2
        for f in meta["frames"]:
            with Image.open(rendered / item / f["file_path"]) as im:
                assert im.mode == "RGB" and im.size == (48, 48)  # white background by default
                img = np.asarray(im)
            depth = np.load(rendered / item / f["depth_path"])
            assert 0.02 < (depth > 0).mean() < 0.9
            assert (img[depth == 0] == 255).all()  # background pixels are pure white
            imgs.append(img)
    # different items (and views) differ
    assert np.abs(imgs[0].astype(int) - imgs[3].astype(int)).mean() > 5


def _unproject(depth: np.ndarray, frame: dict, w2c: np.ndarray) -> np.ndarray:
    """World points [M, 3] of the pixels with depth > 0 (planar z, pixel centres at (u + 0.5, v + 0.5))."""
    v, u = np.nonzero(depth > 0)
    z = depth[v, u].astype(float)
    cam = np.stack([(u + 0.5 - frame["cx"]) / frame["fx"] * z, (v + 0.5 - frame["cy"]) / frame["fy"] * z, z], 1)
    c2w = np.linalg.inv(w2c)
    return cam @ c2w[:3, :3].T + c2w[:3, 3]


@needs_gl
def test_texture_atlas_mode_renders_same_geometry(rendered, tmp_path):
    _cli(tmp_path / "t", "--zv-texture-res", "16")
    for item in ("zeroverse_00000", "zeroverse_00001"):
        for k in range(3):
            assert ((tmp_path / "t" / item / f"depth/{k:04d}.npy").read_bytes()
                    == (rendered / item / f"depth/{k:04d}.npy").read_bytes())
    a = np.asarray(Image.open(rendered / "zeroverse_00000/images/0000.png")).astype(int)
    b = np.asarray(Image.open(tmp_path / "t/zeroverse_00000/images/0000.png")).astype(int)
    assert np.abs(a - b).mean() > 1  # other colours (texels, sRGB-correct), same silhouette
    assert np.array_equal(a.sum(2) == 765, b.sum(2) == 765) or np.mean((a.sum(2) == 765) != (b.sum(2) == 765)) < 0.01


@needs_gl
def test_depth_unprojects_onto_the_mesh(rendered):
    """Rendered depth unprojected through the stored K and w2c lies on the (independently rebuilt) mesh surface;
    the same check fails for a camera moved 5 cm (5 % of the unit sphere) along its optical axis."""
    import trimesh
    from scipy.spatial import cKDTree

    from tttlrm_ns.synth.generate import item_rng

    cfg = _cfg(rendered)
    for index in range(2):
        obj = make_object(item_rng(cfg, index), cfg.zeroverse)
        mesh = trimesh.util.concatenate(obj.meshes)
        samples, _ = trimesh.sample.sample_surface(mesh, 400_000, seed=0)
        tree = cKDTree(np.concatenate([samples, mesh.vertices]))
        meta = json.loads((rendered / f"zeroverse_{index:05d}" / "opencv_cameras.json").read_text())
        for f in meta["frames"]:
            depth = np.load(rendered / f"zeroverse_{index:05d}" / f["depth_path"])
            w2c = np.array(f["w2c"])
            dist, _ = tree.query(_unproject(depth, f, w2c))
            on = (dist < 0.01).mean()
            moved = w2c.copy()
            moved[2, 3] -= 0.05  # camera 5 cm further back along its optical axis
            dist_bad, _ = tree.query(_unproject(depth, f, moved))
            off = (dist_bad < 0.01).mean()
            assert on > 0.98, (index, on)
            assert off < on - 0.3, (index, on, off)


@needs_gl
def test_cli_object_size_and_camera_distance_ranges(tmp_path):
    _cli(tmp_path / "r", "--zv-radius", "0.3", "0.31", "--zv-distance", "3.0", "3.01", "--num", "1")
    meta = json.loads((tmp_path / "r/zeroverse_00000/opencv_cameras.json").read_text())["generator"]
    assert 0.3 <= meta["zeroverse"]["radius"] <= 0.31 and 3.0 <= meta["camera_distance"] <= 3.01
    depth = np.load(tmp_path / "r/zeroverse_00000" / "depth/0000.npy")
    assert (depth[depth > 0] > 3.0 - 0.31 - 1e-3).all()  # the small object stays where the ranges put it

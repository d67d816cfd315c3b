"""Synthetic data generator (tttlrm_ns.synth, ``tttlrm-synth``: tttlrm_ns/synth/cli.py).

Rendering tests need OSMesa (``apt-get install -y libosmesa6``) and pyrender (``pip install --no-deps
pyrender==0.1.45`` + ``PyOpenGL==3.1.10 "pyglet<2" freetype-py``); they skip with that reason otherwise. The camera
checks are exact: depth is compared with an independent ray cast through the pixel centres using the *stored*
K and w2c, and a half-pixel-shifted camera must fail the same check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tttlrm_ns.conventions import look_at_gl
from tttlrm_ns.synth.cameras import gl_c2w_to_cv_w2c, sphere_poses, spline_path
from tttlrm_ns.synth.gl import osmesa_status

REPO = Path(__file__).resolve().parents[1]
_OK, _REASON = osmesa_status()
needs_gl = pytest.mark.skipif(not _OK, reason=f"OSMesa rendering unavailable: {_REASON}")


# ------------------------------------------------------------------------------------------- GL-free unit tests


def test_gl_to_cv_pose_is_inverse_with_axis_flip():
    rng = np.random.default_rng(0)
    c2w_gl = np.stack([look_at_gl(rng.normal(size=3) * 3, rng.normal(size=3), roll=rng.uniform(-1, 1))
                       for _ in range(5)])
    w2c = gl_c2w_to_cv_w2c(c2w_gl)
    np.testing.assert_allclose(w2c, np.linalg.inv(c2w_gl @ np.diag([1.0, -1, -1, 1])), atol=1e-12)
    # The OpenCV camera looks along +z: the look-at target lands on the optical axis in front of the camera.
    c2w = look_at_gl(np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.5, -1.0]))
    p = gl_c2w_to_cv_w2c(c2w) @ np.array([0.0, 0.5, -1.0, 1.0])
    np.testing.assert_allclose(p[:2], 0, atol=1e-12)
    assert p[2] > 0
    # Image "up" (-y in OpenCV) points to world +y for an unrolled camera.
    assert (np.linalg.inv(gl_c2w_to_cv_w2c(c2w))[:3, 1] @ np.array([0, 1.0, 0])) < 0


def test_spline_path_interpolates_at_constant_speed():
    pts = np.array([[0.0, 1, 0], [2, 1, 0], [2, 1, 3], [0, 1.5, 4]])
    dirs = np.array([[1.0, 0, 0], [0, 0, 1], [0, 0, 1], [-1, 0, 0]])
    pos, fwd = spline_path(pts, dirs, 200)
    np.testing.assert_allclose(pos[0], pts[0], atol=1e-9)
    np.testing.assert_allclose(pos[-1], pts[-1], atol=1e-9)
    step = np.linalg.norm(np.diff(pos, axis=0), axis=1)
    assert step.max() / step.min() < 1.05  # arc-length resampling
    np.testing.assert_allclose(np.linalg.norm(fwd, axis=1), 1, atol=1e-9)


def test_sphere_poses_look_at_origin():
    poses = sphere_poses(np.random.default_rng(1), 32, 2.7, (-20, 60))
    w2c = gl_c2w_to_cv_w2c(poses)
    origin_cam = w2c[:, :3, 3]  # the world origin in camera coordinates
    np.testing.assert_allclose(origin_cam[:, :2], 0, atol=1e-9)
    np.testing.assert_allclose(origin_cam[:, 2], 2.7, atol=1e-9)
    elev = np.degrees(np.arcsin(poses[:, 1, 3] / 2.7))
    assert elev.min() >= -20 and elev.max() <= 60 and elev.std() > 5


def test_procedural_textures_tile_seamlessly():
    from tttlrm_ns.synth.assets import procedural_texture

    for kind in ("wood", "tile", "plaster", "carpet"):
        img = procedural_texture(np.random.default_rng(3), kind, size=128).image.astype(float)
        seam = np.abs(img[:, 0] - img[:, -1]).mean()  # wrapping across the edge ...
        inner = np.abs(img[:, 1:] - img[:, :-1]).mean()  # ... looks like any other neighbouring column pair
        assert seam < 3 * inner + 2, kind


def test_bad_config_messages():
    from tttlrm_ns.synth.generate import GenerateConfig, ObjectsConfig

    with pytest.raises(ValueError, match="RGBA object renders need PNG"):
        GenerateConfig(kind="objects", out=Path("x"), image_format="jpg").validate()
    with pytest.raises(ValueError, match="odd integer"):
        GenerateConfig(kind="objects", out=Path("x"), objects=ObjectsConfig(supersample=2)).validate()
    with pytest.raises(ValueError, match="allows only CC0 libraries"):
        GenerateConfig(kind="scenes", out=Path("x"), assets="cc0", libraries=("Scopia",)).validate()
    with pytest.raises(ValueError, match="unknown furniture libraries"):
        GenerateConfig(kind="scenes", out=Path("x"), libraries=("Nope",)).validate()


# --------------------------------------------------------------------------------------------- rendering tests


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "tttlrm_ns.synth.cli", "--no-progress", *args],
                          capture_output=True, text=True, env=env, timeout=240)


def _world_triangles(spec) -> np.ndarray:
    """[T, 3, 3] world-space triangles of a scene spec."""
    return np.concatenate([m.vertices[m.faces] for m, _ in spec.meshes])


def _ray_cast_depth(tris: np.ndarray, frame: dict, cx_shift: float = 0.0) -> np.ndarray:
    """Planar z [h, w] of the nearest triangle along each pixel-centre ray of the stored camera (Moller-Trumbore,
    vectorised over rays, looping over triangle chunks); 0 where nothing is hit."""
    h, w = frame["h"], frame["w"]
    w2c = np.array(frame["w2c"])
    rot, t = w2c[:3, :3], w2c[:3, 3]
    v, u = np.mgrid[0:h, 0:w]
    d_cam = np.stack([(u + 0.5 - frame["cx"] - cx_shift) / frame["fx"], (v + 0.5 - frame["cy"]) / frame["fy"],
                      np.ones((h, w))], -1).reshape(-1, 3)
    d = d_cam @ rot  # world directions (rot^T d); z-component in camera = 1, so hit distance t == planar z
    o = -rot.T @ t
    best = np.full(len(d), np.inf)
    for c in range(0, len(tris), 256):
        a, b, cc = tris[c:c + 256, 0], tris[c:c + 256, 1], tris[c:c + 256, 2]
        e1, e2 = b - a, cc - a
        p = np.cross(d[:, None, :], e2[None])  # [R, T, 3]
        det = (p * e1[None]).sum(-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / det
            s = o[None, None] - a[None]
            uu = (s * p).sum(-1) * inv
            q = np.cross(s, e1[None])
            vv = (q * d[:, None, :]).sum(-1) * inv
            tt = (q * e2[None]).sum(-1) * inv
        ok = (np.abs(det) > 1e-12) & (uu >= 0) & (vv >= 0) & (uu + vv <= 1) & (tt > 0.05)
        best = np.minimum(best, np.where(ok, tt, np.inf).min(1))
    return np.where(np.isfinite(best), best, 0).reshape(h, w)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """One procedural room (exact ray-cast check), one room with Debian furniture if installed, two objects.

    Rendered by the CLI in subprocesses (in parallel), so no GL context lives in the pytest process; the configs
    below mirror the CLI arguments and are used to rebuild the (GL-free) scene geometry for the checks."""
    if not _OK:
        pytest.skip(f"OSMesa rendering unavailable: {_REASON}")
    from tttlrm_ns.synth.generate import GenerateConfig, ObjectsConfig, ScenesConfig

    root = tmp_path_factory.mktemp("synth")
    runs = {
        "procedural": (GenerateConfig(kind="scenes", out=root / "proc", num=1, height=48, width=64, seed=7,
                                      assets="procedural", scenes=ScenesConfig(frames=2)),
                       ["--kind", "scenes", "--res", "48x64", "--seed", "7", "--assets", "procedural", "--frames", "2"]),
        "auto": (GenerateConfig(kind="scenes", out=root / "auto", num=1, height=48, width=64, seed=3,
                                scenes=ScenesConfig(frames=2)),
                 ["--kind", "scenes", "--res", "48x64", "--seed", "3", "--frames", "2"]),
        "objects": (GenerateConfig(kind="objects", out=root / "obj", num=2, height=64, width=64, seed=1,
                                   objects=ObjectsConfig(views=2)),
                    ["--kind", "objects", "--num", "2", "--res", "64x64", "--seed", "1", "--views", "2"]),
    }
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-m", "tttlrm_ns.synth.cli", "--no-progress",
                               "--out", str(cfg.out), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for cfg, args in runs.values()]
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    return {k: cfg for k, (cfg, _) in runs.items()}


def _spec_of(cfg, index=0):
    from tttlrm_ns.synth.generate import item_rng, resolve_sources
    from tttlrm_ns.synth.room import build_room

    spec, _ = build_room(item_rng(cfg, index), cfg.scenes.room, resolve_sources(cfg))
    return spec


@needs_gl
def test_layout_json_images_depth(rendered):
    for key, cfg in rendered.items():
        for folder in sorted(Path(cfg.out).iterdir()):
            meta = json.loads((folder / "opencv_cameras.json").read_text())
            assert meta["scene_name"] == folder.name and meta["assets"]
            n = cfg.objects.views if cfg.kind == "objects" else cfg.scenes.frames
            assert len(meta["frames"]) == n
            for f in meta["frames"]:
                assert set(f) == {"file_path", "depth_path", "w2c", "w", "h", "fx", "fy", "cx", "cy"}
                assert (f["w"], f["h"]) == (cfg.width, cfg.height) and (f["cx"], f["cy"]) == (cfg.width / 2, cfg.height / 2)
                w2c = np.array(f["w2c"])
                np.testing.assert_allclose(w2c[:3, :3] @ w2c[:3, :3].T, np.eye(3), atol=1e-9)
                with Image.open(folder / f["file_path"]) as im:
                    assert im.size == (cfg.width, cfg.height)
                    assert im.mode == ("RGBA" if cfg.kind == "objects" else "RGB")
                    img = np.asarray(im)
                depth = np.load(folder / f["depth_path"])
                assert depth.shape == (cfg.height, cfg.width) and depth.dtype == np.float32
                if cfg.kind == "objects":  # alpha is exactly the depth coverage (no supersampling)
                    np.testing.assert_array_equal(img[..., 3] > 0, depth > 0)
                    assert 0.02 < (depth > 0).mean() < 0.9
                    zs = depth[depth > 0]
                    assert zs.min() > 2.7 - 1.0 - 1e-3 and zs.max() < 2.7 + 1.0 + 1e-3  # unit sphere at 2.7
                else:  # closed room: every pixel sees a surface
                    assert (depth > 0).all()
    # the scene folders load with the project's own reader
    from tttlrm_ns.data.scene import load_scene

    assert len(load_scene(Path(rendered["auto"].out) / "scene_00000")) == 2


@needs_gl
def test_depth_matches_ray_cast_through_stored_cameras(rendered):
    """Exact camera model: an independent ray cast of the scene geometry through the pixel centres of the stored
    K / w2c reproduces the rendered depth; the same camera shifted by half a pixel does not."""
    cfg = rendered["procedural"]
    folder = Path(cfg.out) / "scene_00000"
    meta = json.loads((folder / "opencv_cameras.json").read_text())
    tris = _world_triangles(_spec_of(cfg))
    assert len(tris) < 3000  # procedural assets keep the brute-force ray cast cheap
    for f in meta["frames"]:
        depth = np.load(folder / f["depth_path"])
        ok = lambda ref: (np.abs(ref - depth) < 2e-3 * depth + 1e-3).mean()  # noqa: E731
        exact = ok(_ray_cast_depth(tris, f))
        shifted = ok(_ray_cast_depth(tris, f, cx_shift=0.5))
        assert exact > 0.98, exact  # the rest: pixels on silhouette edges (sub-ulp ray/edge ties)
        assert shifted < exact - 0.1, (exact, shifted)


@needs_gl
def test_projected_vertices_agree_with_depth(rendered):
    """Surface points projected with the stored K / w2c (real furniture if installed, procedural otherwise) never
    lie in front of the rendered surface, and the visible ones land on it."""
    cfg = rendered["auto"]
    folder = Path(cfg.out) / "scene_00000"
    meta = json.loads((folder / "opencv_cameras.json").read_text())
    import trimesh

    # Points spread over the surfaces by area (fixed seed) rather than the mesh vertices: vertices concentrate on
    # small parts (table legs, books, door panels), which can be thinner than a pixel at 48x64 and fall between all
    # pixel centres. How many such parts a room has depends on the asset source (Debian furniture or the procedural
    # fallback), so a vertex-based rate measured how thin the furniture is, not whether the cameras are right.
    scene = trimesh.util.concatenate([m for m, _ in _spec_of(cfg).meshes])
    verts, _ = trimesh.sample.sample_surface(scene, 20000, seed=0)

    def check(f: dict, depth: np.ndarray, w2c: np.ndarray) -> tuple[float, float, int]:
        pc = verts @ w2c[:3, :3].T + w2c[:3, 3]
        z = pc[:, 2]
        u = f["fx"] * pc[:, 0] / np.maximum(z, 1e-9) + f["cx"]
        v = f["fy"] * pc[:, 1] / np.maximum(z, 1e-9) + f["cy"]
        inside = (z > 0.1) & (u >= 1) & (u < f["w"] - 1) & (v >= 1) & (v < f["h"] - 1)
        ui, vi, z = np.floor(u[inside]).astype(int), np.floor(v[inside]).astype(int), z[inside]
        # depth of the 3x3 pixel neighbourhood: a vertex is on / behind some surface sampled there
        nb = np.stack([depth[vi + dv, ui + du] for dv in (-1, 0, 1) for du in (-1, 0, 1)])
        tol = 0.02 * z + 0.01
        return (z < nb.min(0) - tol).mean(), (np.abs(nb - z).min(0) < tol).mean(), int(inside.sum())

    c, s_ = np.cos(np.radians(10)), np.sin(np.radians(10))
    yaw4 = np.array([[c, 0, s_, 0], [0, 1, 0, 0], [-s_, 0, c, 0], [0, 0, 0, 1]])  # camera turned by 10 degrees
    for f in meta["frames"]:
        depth = np.load(folder / f["depth_path"])
        in_front, on_surface, n = check(f, depth, np.array(f["w2c"]))
        assert n > 50
        assert in_front < 0.02, in_front  # silhouette pixels and sub-pixel parts only
        assert on_surface > 0.1, on_surface  # many vertices are hidden (back sides, occluded furniture)
        bad_front, _, _ = check(f, depth, yaw4 @ np.array(f["w2c"]))
        # the same check notices a camera turned by 10 degrees
        assert bad_front > max(3 * in_front, in_front + 0.03), (in_front, bad_front)


@needs_gl
def test_cli_deterministic_and_resumable(tmp_path):
    args = ["--kind", "objects", "--num", "2", "--views", "2", "--res", "32x32", "--seed", "5"]
    a, b = tmp_path / "a", tmp_path / "b"
    r1 = _cli(*args, "--out", str(a))
    assert r1.returncode == 0, r1.stderr
    r2 = _cli(*args, "--out", str(b), "--workers", "2")  # the process-pool path gives the same bytes
    assert r2.returncode == 0, r2.stderr
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 2 * (1 + 2 + 2)
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    # resume: finished items are skipped untouched; a stale temp folder of a dead process is removed
    stamp = (a / "object_00000/opencv_cameras.json").stat().st_mtime_ns
    (a / ".tmp-object_00002-999999999").mkdir()
    r3 = _cli(*args[:2], "--num", "3", *args[4:], "--out", str(a))
    assert r3.returncode == 0, r3.stderr
    assert "1 written, 2 already done" in r3.stdout
    assert (a / "object_00000/opencv_cameras.json").stat().st_mtime_ns == stamp
    assert not list(a.glob(".tmp-*")) and (a / "object_00002/opencv_cameras.json").is_file()
    # item 2 is the same whether made alone or with the others (per-item random streams)
    r4 = _cli(*args[:2], "--num", "1", "--start", "2", *args[4:], "--out", str(b))
    assert r4.returncode == 0, r4.stderr
    assert (a / "object_00002/images/0001.png").read_bytes() == (b / "object_00002/images/0001.png").read_bytes()


@needs_gl
def test_rooms_render_byte_identical_twice(tmp_path):
    """Rooms have coplanar faces (furniture parts, rug, paintings) and several lights, where pyrender's set-ordered
    nodes used to make repeated renders differ; the name-ordered scene makes them identical."""
    args = ["--kind", "scenes", "--frames", "3", "--res", "48x64", "--seed", "11"]
    for name in ("a", "b"):
        r = _cli(*args, "--out", str(tmp_path / name))
        assert r.returncode == 0, r.stderr
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 1 + 3 + 3
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_bundled_sample_scene_is_valid_small_and_cc0():
    """The sample scene of the README's first command: loadable, small, only CC0 inputs, provenance documented."""
    from tttlrm_ns.data.scene import load_scene

    folder = REPO / "tttlrm_ns/assets/sample_scene"
    scene = load_scene(folder)  # validates poses, intrinsics, image files and sizes
    assert len(scene) == 64 and (scene.width, scene.height) == (480, 270)
    assert sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) < 4 * 2 ** 20
    meta = json.loads((folder / "opencv_cameras.json").read_text())
    assert meta["assets"] and all(a["license"] == "CC0-1.0" for a in meta["assets"])
    readme = (folder / "README.md").read_text()
    assert f"--seed {meta['generator']['seed']} --assets cc0" in readme and "CC0" in readme


def test_cli_bad_resolution_message(tmp_path):
    r = _cli("--kind", "scenes", "--out", str(tmp_path), "--res", "144by256")
    assert r.returncode == 2 and "--res must look like HxW" in r.stderr


# --------------------------------------------------------------------------------------------- tttlrm-synth stress-set


def _recipe(tmp_path: Path) -> Path:
    """A two-class stress-set recipe in the layout of configs/stress_set.yaml, small enough to render in seconds."""
    import yaml

    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({
        "scenes_per_class": 1, "input_views": [2],
        "rooms": {"res": [32, 48], "frames": 3}, "objects": {"res": [24, 24], "views": 3},
        "classes": {"orbit": {"kind": "scenes", "seed": 9002, "camera": "orbit", "fov": [55, 75]},
                    "object_black": {"kind": "objects", "seed": 9009, "background": "black",
                                     "distance": [2.2, 3.2]}}}))
    return path


def test_stress_set_refuses_bad_arguments(tmp_path, capsys):
    from tttlrm_ns.synth.stress_set import main

    for argv, message in [(["--config", str(tmp_path / "missing.yaml")], "missing.yaml does not exist"),
                          (["--config", str(_recipe(tmp_path)), "--train"], "--train needs --out"),
                          (["--config", str(_recipe(tmp_path)), "--train", "--out", str(tmp_path / "t"),
                            "--seed-base", "9001"], "seeds 9001+ are the held-out stress set's")]:
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "t").exists()  # refused before anything is written


@needs_gl
def test_stress_set_subcommand_renders_the_recipe_and_resumes(tmp_path):
    """``tttlrm-synth stress-set``: one folder per class with the recipe's seed and settings, and a manifest of the
    finished items; the same command again renders nothing."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "set"
    cmd = [sys.executable, "-m", "tttlrm_ns.synth.cli", "stress-set", "--config", str(_recipe(tmp_path)),
           "--out", str(out), "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "stress_set.json").read_text())
    assert manifest["set"] == "stress_set" and manifest["per_class"] == 1 and manifest["input_views"] == [2]
    assert manifest["classes"]["orbit"]["items"] == ["orbit/scene_00000"]
    assert manifest["classes"]["object_black"]["items"] == ["object_black/object_00000"]
    room = json.loads((out / "orbit/scene_00000/opencv_cameras.json").read_text())
    obj = json.loads((out / "object_black/object_00000/opencv_cameras.json").read_text())
    assert room["generator"]["seed"] == 9002 and len(room["frames"]) == 3
    assert (room["frames"][0]["h"], room["frames"][0]["w"]) == (32, 48)
    assert obj["generator"]["seed"] == 9009 and len(obj["frames"]) == 3
    with Image.open(out / "object_black/object_00000" / obj["frames"][0]["file_path"]) as im:
        img = np.asarray(im.convert("RGB"))
    assert img.shape == (24, 24, 3) and (img[0, 0] == 0).all()  # the class's black background
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert again.returncode == 0, again.stderr
    assert "2 items (0 written now, 2 already there" in again.stdout

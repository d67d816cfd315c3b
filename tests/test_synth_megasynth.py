"""MegaSynth-style procedural rooms (tttlrm_ns.synth.megasynth, ``--kind megasynth``).

GL-free checks build rooms and cameras directly; rendering checks run the CLI in subprocesses (no GL context in the
pytest process) and skip without OSMesa, like tests/test_synth.py. The geometry check is independent of the
renderer: rendered depth is unprojected through the *stored* K and w2c and the points must lie on the triangles of
the rebuilt scene (exact point-triangle distances); the same depth through a camera turned by one degree must not.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tttlrm_ns.synth.gl import osmesa_status
from tttlrm_ns.synth.megasynth import MegaSynthConfig, build_megasynth_room, camera_poses, min_clearance

REPO = Path(__file__).resolve().parents[1]
_OK, _REASON = osmesa_status()
needs_gl = pytest.mark.skipif(not _OK, reason=f"OSMesa rendering unavailable: {_REASON}")


def _build(seed: int):
    return build_megasynth_room(np.random.default_rng(seed), MegaSynthConfig())


@functools.lru_cache(maxsize=None)
def _room(seed: int):
    """Built once per test session (rooms are only read by the tests; ~0.4 s each)."""
    return _build(seed)


# ------------------------------------------------------------------------------------------- GL-free unit tests


def test_min_clearance_to_boxes():
    boxes = np.array([[[0.0, 0, 0], [1, 1, 1]], [[3, 0, 0], [4, 1, 1]]])
    pts = np.array([[0.5, 0.5, 0.5], [2.0, 0.5, 0.5], [1.0, 2.0, 2.0], [5.0, 0.5, 0.5]])
    np.testing.assert_allclose(min_clearance(pts, boxes), [0.0, 1.0, np.sqrt(2.0), 1.0])
    assert np.isinf(min_clearance(pts, np.zeros((0, 2, 3)))).all()


def test_room_and_cameras_are_deterministic():
    a, b = _build(5), _build(5)
    assert len(a.spec.meshes) == len(b.spec.meshes) > 20
    for (ma, sa), (mb, sb) in zip(a.spec.meshes, b.spec.meshes):
        assert sa == sb
        np.testing.assert_array_equal(ma.vertices, mb.vertices)
        np.testing.assert_array_equal(ma.faces, mb.faces)
    assert [(la.kind, la.intensity) for la in a.spec.lights] == [(lb.kind, lb.intensity) for lb in b.spec.lights]
    for mode in ("path", "walls"):
        pa = camera_poses(np.random.default_rng(1), MegaSynthConfig(), a, 24, mode)
        pb = camera_poses(np.random.default_rng(1), MegaSynthConfig(), b, 24, mode)
        np.testing.assert_array_equal(pa, pb)
    c = _room(0)
    assert (c.layout.width, c.layout.depth) != (a.layout.width, a.layout.depth)


def test_rooms_vary_and_hold_their_contents():
    cfg = MegaSynthConfig()
    rooms = [_room(s) for s in range(6)]
    sizes = np.array([[r.layout.width, r.layout.depth, r.layout.height] for r in rooms])
    assert (sizes[:, :2] >= cfg.floor_range[0]).all() and (sizes[:, :2] <= cfg.floor_range[1]).all()
    assert (sizes[:, 2] >= cfg.height_range[0]).all() and (sizes[:, 2] <= cfg.height_range[1]).all()
    assert sizes.std(0).min() > 0.1
    kinds, metallic, rough, emissive, smooth = set(), [], [], 0, set()
    for r in rooms:
        assert r.counts.get("large_boxes", 0) >= 1 and r.counts.get("wall_boxes", 0) >= 1
        assert r.counts.get("ceiling_boxes", 0) >= 1 and r.counts.get("wall_sticks", 0) >= 5
        # every object lies inside the room (bumps included)
        lo, hi = r.boxes[:, 0], r.boxes[:, 1]
        assert (lo[:, 1] >= -1e-6).all() and (hi[:, 1] <= r.layout.height + 1e-6).all()
        assert (np.abs(r.boxes[..., 0]) <= r.layout.width / 2 + 1e-6).all()
        assert (np.abs(r.boxes[..., 2]) <= r.layout.depth / 2 + 1e-6).all()
        kinds |= {light.kind for light in r.spec.lights}
        for mesh, sm in r.spec.meshes:
            smooth.add(sm)
            mat = getattr(mesh.visual, "material", None)
            if mat is not None and hasattr(mat, "metallicFactor"):
                metallic.append(mat.metallicFactor or 0.0)
                rough.append(mat.roughnessFactor)
                emissive += mat.emissiveFactor is not None and np.max(mat.emissiveFactor) > 0
    assert {"point", "directional"} <= kinds
    metallic = np.array(metallic)
    assert (metallic == 0).mean() > 0.1 and (metallic > 0.5).mean() > 0.05  # dielectric and metal slots
    assert np.ptp(rough) > 0.5 and emissive > 0 and smooth == {True, False}
    # parts that share a material slot are merged into one draw
    assert max(m.metadata.get("megasynth_parts", 1) for r in rooms for m, _ in r.spec.meshes) > 1


def test_height_field_bumps():
    """A box primitive is bumpy (vertices off its 6 face planes, within the amplitude) unless every face stays
    flat, and its edges stay on the box either way (a closed surface)."""
    from tttlrm_ns.synth.megasynth import _primitive

    size = np.array([1.0, 0.6, 0.8])
    off = []
    for flat in (0.0, 1.0):
        cfg = MegaSynthConfig(flat_face_probability=flat)
        mesh, smooth = _primitive(np.random.default_rng(2), "box", size, cfg)
        assert not smooth and len(mesh.faces) == 768
        v = mesh.vertices
        d = np.abs(np.abs(v) - size / 2).min(1)  # distance to the nearest face plane
        off.append(d.max())
        edge = (np.abs(np.abs(v) - size / 2) < 1e-9).sum(1) >= 2
        assert edge.sum() > 8
    assert off[1] < 1e-9  # all faces flat: an exact box
    assert 1e-3 < off[0] <= 6 / np.sqrt(3) * MegaSynthConfig().bump_amplitude * size.min() + 1e-9  # 6 waves


@pytest.mark.parametrize("mode", ["path", "walls"])
def test_cameras_inside_room_and_clear_of_objects(mode):
    cfg = MegaSynthConfig()
    for seed in range(4):
        r = _room(seed)
        poses = camera_poses(np.random.default_rng(seed), cfg, r, 48, mode)
        assert poses.shape == (48, 4, 4)
        rot = poses[:, :3, :3]
        np.testing.assert_allclose(rot @ rot.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rot.shape), atol=1e-9)
        pos = poses[:, :3, 3]
        assert (np.abs(pos[:, 0]) < r.layout.width / 2 - 0.3).all() and (np.abs(pos[:, 2]) < r.layout.depth / 2 - 0.3).all()
        assert (pos[:, 1] > 0.5).all() and (pos[:, 1] < r.layout.height - 0.3).all()
        assert min_clearance(pos, r.boxes).min() >= cfg.camera_clearance
        step = np.linalg.norm(np.diff(pos, axis=0), axis=1)
        if mode == "path":  # smooth walk
            assert step.max() < 0.5
        else:  # walking order along the walls: neighbouring indices are neighbouring cameras
            n_wall = int(round(cfg.wall_fraction * 48))
            perimeter = 2 * (r.layout.width + r.layout.depth)
            assert np.median(step[:n_wall - 1]) < 3 * perimeter / n_wall
            # the wall cameras look into the room (towards the centre half of the floor)
            fwd = -poses[:n_wall, :3, 2]
            assert ((fwd[:, [0, 2]] * -pos[:n_wall][:, [0, 2]]).sum(1) > 0).mean() > 0.9


def test_bad_camera_mode_message():
    from tttlrm_ns.synth.generate import GenerateConfig, MegaSynthScenesConfig

    with pytest.raises(ValueError, match="camera mode must be path or walls"):
        GenerateConfig(kind="megasynth", out=Path("x"),
                       megasynth=MegaSynthScenesConfig(room=MegaSynthConfig(camera_mode="orbit"))).validate()
    with pytest.raises(ValueError, match="at least 2 frames"):
        GenerateConfig(kind="megasynth", out=Path("x"), megasynth=MegaSynthScenesConfig(frames=1)).validate()


# --------------------------------------------------------------------------------------------- rendering tests


def _point_triangle_distance(p: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Exact distance [N] of points p [N, 3] to triangles tri [N, 3, 3] (pairwise): the plane distance where the
    projection falls inside the triangle, else the distance to the nearest edge segment."""
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    n = np.cross(b - a, c - a)
    area2 = np.linalg.norm(n, axis=1)
    nu = n / np.maximum(area2, 1e-30)[:, None]
    h = ((p - a) * nu).sum(1)
    q = p - h[:, None] * nu
    inside = area2 > 1e-14
    for u, v in ((a, b), (b, c), (c, a)):  # q on the inner side of every edge
        inside &= (np.cross(v - u, q - u) * n).sum(1) >= 0
    best = np.where(inside, np.abs(h), np.inf)
    for u, v in ((a, b), (b, c), (c, a)):
        e = v - u
        t = np.clip(((p - u) * e).sum(1) / np.maximum((e * e).sum(1), 1e-30), 0, 1)
        best = np.minimum(best, np.linalg.norm(p - (u + t[:, None] * e), axis=1))
    return best


def _surface_distance(points: np.ndarray, tris: np.ndarray, tol: float) -> np.ndarray:
    """[P] distance of each point to the nearest triangle, exact where it is below ``tol`` (inf otherwise): only
    triangles whose bounding box (grown by ``tol``) holds the point are measured."""
    lo, hi = tris.min(1) - tol, tris.max(1) + tol
    out = np.full(len(points), np.inf)
    for s in range(0, len(points), 128):
        p = points[s:s + 128]
        pi, ti = np.nonzero(((p[:, None] >= lo[None]) & (p[:, None] <= hi[None])).all(-1))
        if len(pi):
            d = _point_triangle_distance(p[pi], tris[ti])
            np.minimum.at(out[s:s + 128], pi, d)
    return out


def _unproject(depth: np.ndarray, frame: dict, w2c: np.ndarray) -> np.ndarray:
    """World points [h*w, 3] of planar depth at the pixel centres through intrinsics of ``frame`` and ``w2c``."""
    v, u = np.mgrid[0:frame["h"], 0:frame["w"]]
    x = (u + 0.5 - frame["cx"]) / frame["fx"] * depth
    y = (v + 0.5 - frame["cy"]) / frame["fy"] * depth
    cam = np.stack([x, y, depth], -1).reshape(-1, 3)
    return (cam - w2c[:3, 3]) @ w2c[:3, :3]  # R^T (p - t)


_ARGS = {"path": ["--seed", "3"], "walls": ["--seed", "4", "--camera-mode", "walls"]}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """One tiny room per camera mode (plus a second copy of the first, for byte identity), rendered by the CLI."""
    if not _OK:
        pytest.skip(f"OSMesa rendering unavailable: {_REASON}")
    root = tmp_path_factory.mktemp("megasynth")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    jobs = {**{m: _ARGS[m] for m in _ARGS}, "path_again": _ARGS["path"]}
    procs = {k: subprocess.Popen([sys.executable, "-m", "tttlrm_ns.synth.cli", "--no-progress",
                                  "--kind", "megasynth", "--res", "24x32", "--frames", "3", "--out", str(root / k),
                                  *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for k, args in jobs.items()}
    for p in procs.values():
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    return root


def _rebuild(mode: str):
    from tttlrm_ns.synth.generate import GenerateConfig, MegaSynthScenesConfig, item_rng

    seed = int(_ARGS[mode][1])
    cfg = GenerateConfig(kind="megasynth", out=Path("unused"), seed=seed,
                         megasynth=MegaSynthScenesConfig(frames=3, room=MegaSynthConfig(camera_mode=mode)))
    return build_megasynth_room(item_rng(cfg, 0), cfg.megasynth.room)


@needs_gl
@pytest.mark.parametrize("mode", ["path", "walls"])
def test_depth_lies_on_the_scene_surfaces(rendered, mode):
    folder = rendered / mode / "megasynth_00000"
    meta = json.loads((folder / "opencv_cameras.json").read_text())
    assert meta["generator"]["kind"] == "megasynth" and meta["generator"]["camera_mode"] == mode
    assert len(meta["frames"]) == 3 and all(a["license"] == "CC0-1.0" for a in meta["assets"])
    scene = _rebuild(mode)
    assert meta["generator"]["room_size_m"] == [scene.layout.width, scene.layout.height, scene.layout.depth]
    tris = np.concatenate([m.vertices[m.faces] for m, _ in scene.spec.meshes])
    axis = np.array([1.0, 1.0, 0.3]) / np.linalg.norm([1.0, 1.0, 0.3])
    ang = np.radians(1.0)  # Rodrigues: a camera turned by one degree about a generic axis
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    turn = np.eye(4)
    turn[:3, :3] = np.eye(3) + np.sin(ang) * k + (1 - np.cos(ang)) * k @ k
    for f in meta["frames"]:
        depth = np.load(folder / f["depth_path"])
        assert depth.shape == (24, 32) and depth.dtype == np.float32 and (depth > 0).all()  # closed room
        w2c = np.array(f["w2c"])
        centre = -w2c[:3, :3].T @ w2c[:3, 3]
        assert min_clearance(centre[None], scene.boxes)[0] >= MegaSynthConfig().camera_clearance
        tol = 2e-3 * depth.reshape(-1) + 2e-3
        on = (_surface_distance(_unproject(depth, f, w2c), tris, 0.05) < tol).mean()
        off = (_surface_distance(_unproject(depth, f, turn @ w2c), tris, 0.05) < tol).mean()
        print(f"{mode}: on surface {on:.4f} (stored camera), {off:.4f} (turned by 1 degree)")
        assert on > 0.99, on
        assert off < on - 0.3, (on, off)


@needs_gl
def test_render_is_byte_identical_across_runs(rendered):
    a, b = rendered / "path", rendered / "path_again"
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 1 + 3 + 3
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel

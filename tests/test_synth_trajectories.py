"""Room camera trajectories (orbit / forward / closeup), portrait renders and object backgrounds
(tttlrm_ns.synth.trajectories, tttlrm_ns.synth.generate; issue 23 item 4).

GL-free tests check the geometry of the poses directly; rendering tests (OSMesa; skipped without it) render tiny
items with the CLI in subprocesses (no GL context in the pytest process, as in tests/test_synth.py) and check them
against rendered depth and an independent ray cast.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tttlrm_ns.synth.cameras import focal_from_fov
from tttlrm_ns.synth.gl import osmesa_status
from tttlrm_ns.synth.room import AssetSources, RoomConfig, RoomLayout, build_room, camera_path
from tttlrm_ns.synth.trajectories import camera_poses, closeup_poses, forward_poses, orbit_poses

REPO = Path(__file__).resolve().parents[1]
_OK, _REASON = osmesa_status()
needs_gl = pytest.mark.skipif(not _OK, reason=f"OSMesa rendering unavailable: {_REASON}")


def _room(seed: int):
    return build_room(np.random.default_rng(seed), RoomConfig(), AssetSources())


def _assert_rigid(c2w: np.ndarray) -> None:
    r = c2w[:, :3, :3]
    np.testing.assert_allclose(r @ r.transpose(0, 2, 1), np.broadcast_to(np.eye(3), r.shape), atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-9)
    np.testing.assert_array_equal(c2w[:, 3], np.broadcast_to([0, 0, 0, 1.0], (len(c2w), 4)))


def _view_dirs(c2w: np.ndarray) -> np.ndarray:
    return -c2w[:, :3, 2]  # OpenGL cameras look along -z


# ------------------------------------------------------------------------------------------- GL-free geometry


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_orbit_looks_at_subject_over_its_arc(seed):
    cfg = RoomConfig(camera_mode="orbit", orbit_arc_range_deg=(90.0, 200.0))
    _, layout = _room(seed)
    poses, info = orbit_poses(np.random.default_rng(seed), cfg, layout, 40)
    _assert_rigid(poses)
    target = np.array(info["subject_m"])
    eyes = poses[:, :3, 3]
    to_subject = (target - eyes) / np.linalg.norm(target - eyes, axis=1, keepdims=True)
    cos = (_view_dirs(poses) * to_subject).sum(1)
    assert np.degrees(np.arccos(np.clip(cos, -1, 1))).max() < 1.0
    # the subject is a furniture piece's centre
    centres = [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in layout.footprints]
    assert min(math.hypot(target[0] - x, target[2] - z) for x, z in centres) < 1e-9
    # azimuth of the eyes around the subject sweeps the drawn arc (shake moves eyes by ~1 cm)
    az = np.unwrap(np.arctan2(eyes[:, 0] - target[0], eyes[:, 2] - target[2]))
    span = math.degrees(az.max() - az.min())
    assert abs(span - info["arc_deg"]) < 3.0, (span, info["arc_deg"])
    assert 90.0 - 3 <= span <= 200.0 + 3
    assert np.all(np.diff(az) * np.sign(az[-1] - az[0]) > 0)  # one direction, no back and forth
    # inside the room
    assert np.all(np.abs(eyes[:, 0]) < layout.width / 2) and np.all(np.abs(eyes[:, 2]) < layout.depth / 2)


@pytest.mark.parametrize("seed", [0, 3])
def test_forward_views_share_a_direction_and_a_small_patch(seed):
    cfg = RoomConfig(camera_mode="forward", forward_patch_range=(0.1, 0.3), forward_jitter_deg=3.0)
    _, layout = _room(seed)
    poses, info = forward_poses(np.random.default_rng(seed), cfg, layout, 30)
    _assert_rigid(poses)
    fwd = np.array(info["view_dir"])
    ang = np.degrees(np.arccos(np.clip(_view_dirs(poses) @ fwd, -1, 1)))
    # each view deviates by at most jitter per axis: within atan(sqrt(2) tan(3 deg)) ~ 4.24 deg of the common one
    assert ang.max() < 4.25 and ang.max() > 0.5
    right = np.cross(fwd, [0, 1.0, 0])
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    off = poses[:, :3, 3] - np.array(info["patch_centre_m"])
    side = info["patch_m"]
    assert 0.1 <= side <= 0.3
    np.testing.assert_allclose(off @ fwd, 0, atol=1e-9)  # a plane perpendicular to the view direction
    assert np.abs(off @ right).max() <= side / 2 + 1e-9 and np.abs(off @ up).max() <= side / 2 + 1e-9
    baseline = np.linalg.norm(off[:, None] - off[None], axis=-1).max()
    assert 0.5 * side < baseline <= side * math.sqrt(2) + 1e-9
    # serpentine order: consecutive cameras are neighbours (a step is far below the patch size)
    assert np.linalg.norm(np.diff(off, axis=0), axis=1).max() < 0.6 * side


def _box_probe(layout: RoomLayout, width: int = 24, height: int = 16, fov_deg: float = 60.0):
    """Exact planar depth of the empty room box (floor, ceiling, 4 walls) as seen by OpenGL c2w poses."""
    f = focal_from_fov(fov_deg, width)
    v, u = np.mgrid[0:height, 0:width]
    d_cam = np.stack([(u + 0.5 - width / 2) / f, -(v + 0.5 - height / 2) / f, -np.ones((height, width))], -1)
    lo = np.array([-layout.width / 2, 0.0, -layout.depth / 2])
    hi = np.array([layout.width / 2, layout.height, layout.depth / 2])

    def probe(poses: np.ndarray) -> np.ndarray:
        d = np.einsum("nij,hwj->nhwi", poses[:, :3, :3], d_cam)  # world rays with camera z-component -1
        o = poses[:, None, None, :3, 3]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(d > 0, (hi - o) / d, np.where(d < 0, (lo - o) / d, np.inf))
        return t.min(-1).astype(np.float32)  # planar z == ray parameter because |z_cam| = 1

    return probe


def test_closeup_moves_to_the_wanted_depth_against_a_probe():
    cfg = RoomConfig(camera_mode="closeup")
    layout = RoomLayout(width=4.0, depth=5.0, height=2.6)  # empty: the sweep faces a wall
    probe = _box_probe(layout)
    poses, info = closeup_poses(np.random.default_rng(5), cfg, layout, 12, probe)
    _assert_rigid(poses)
    med = np.median(probe(poses).reshape(len(poses), -1), axis=1)
    assert np.all((med > 0.3 - 0.03) & (med < 0.8 + 0.03)), med  # shake: ~1 cm
    assert abs(np.median(med) - info["closeup_distance_m"]) < 0.05
    assert info["probes_in_range"] >= 4
    again, _ = closeup_poses(np.random.default_rng(5), cfg, layout, 12, probe)
    np.testing.assert_array_equal(poses, again)


def test_same_seed_same_cameras_and_path_unchanged():
    _, layout = _room(4)
    for mode in ("orbit", "forward"):
        cfg = RoomConfig(camera_mode=mode)
        a, ia = camera_poses(np.random.default_rng(9), cfg, layout, 16)
        b, ib = camera_poses(np.random.default_rng(9), cfg, layout, 16)
        c, _ = camera_poses(np.random.default_rng(10), cfg, layout, 16)
        np.testing.assert_array_equal(a, b)
        assert ia == ib and not np.allclose(a, c)
    # ``path`` through the dispatcher is the walk-through generator, draw for draw
    p, info = camera_poses(np.random.default_rng(9), RoomConfig(), layout, 16)
    np.testing.assert_array_equal(p, camera_path(np.random.default_rng(9), RoomConfig(), layout, 16))
    assert info == {}
    with pytest.raises(ValueError, match="need a depth probe"):
        camera_poses(np.random.default_rng(0), RoomConfig(camera_mode="closeup"), layout, 4)
    with pytest.raises(ValueError, match="camera mode must be one of"):
        camera_poses(np.random.default_rng(0), RoomConfig(camera_mode="spiral"), layout, 4)


def test_bad_config_messages():
    from tttlrm_ns.synth.generate import GenerateConfig, ObjectsConfig, ScenesConfig

    with pytest.raises(ValueError, match="room camera mode"):
        GenerateConfig(kind="scenes", out=Path("x"), scenes=ScenesConfig(room=RoomConfig(camera_mode="x"))).validate()
    with pytest.raises(ValueError, match="portrait probability"):
        GenerateConfig(kind="scenes", out=Path("x"), scenes=ScenesConfig(portrait_probability=2)).validate()
    with pytest.raises(ValueError, match="object background"):
        GenerateConfig(kind="objects", out=Path("x"), objects=ObjectsConfig(background="grey")).validate()


# --------------------------------------------------------------------------------------------- rendering tests


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """Tiny renders by the CLI (in a subprocess: no GL context in pytest): close-ups, portrait walk-through, objects on three
    backgrounds (same seed: same object and cameras)."""
    if not _OK:
        pytest.skip(f"OSMesa rendering unavailable: {_REASON}")
    root = tmp_path_factory.mktemp("traj")
    obj = ["--kind", "objects", "--res", "32x32", "--views", "2", "--seed", "4", "--assets", "procedural",
           "--distance", "2.2", "3.2", "--fov", "40", "60"]
    runs = {
        "closeup": ["--kind", "scenes", "--res", "32x48", "--frames", "6", "--num", "1", "--seed", "11",
                    "--assets", "procedural", "--room-camera", "closeup"],
        "portrait": ["--kind", "scenes", "--res", "32x48", "--frames", "2", "--seed", "7", "--assets", "procedural",
                     "--portrait-prob", "1", "--room-camera", "orbit", "--fov", "35", "100"],
        "white": [*obj, "--background", "white"],
        "black": [*obj, "--background", "black"],
        "cluttered": [*obj, "--background", "cluttered"],
    }
    # One subprocess runs the CLI's main() for every run: one interpreter start instead of five (the suite's time).
    code = ("import json, sys; from tttlrm_ns.synth.cli import main; "
            "sys.exit(max(main(['--no-progress', *a]) for a in json.loads(sys.argv[1])))")
    argv = [["--out", str(root / k), *args] for k, args in runs.items()]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", code, json.dumps(argv)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    return root


def _frames(folder: Path):
    meta = json.loads((folder / "opencv_cameras.json").read_text())
    return meta, [(f, np.asarray(Image.open(folder / f["file_path"])), np.load(folder / f["depth_path"]))
                  for f in meta["frames"]]


@needs_gl
def test_closeup_rendered_depth_in_range(rendered):
    for folder in sorted((rendered / "closeup").glob("scene_*")):
        meta, frames = _frames(folder)
        assert meta["generator"]["camera_mode"] == "closeup"
        med = np.array([np.median(d) for _, _, d in frames])
        assert 0.3 <= np.median(med) <= 0.8 + 0.05, med  # 24-px probe vs the 48-px render: a few cm
        assert med.max() < 1.0, med


@needs_gl
def test_portrait_intrinsics_match_ray_cast(rendered):
    from test_synth import _ray_cast_depth, _world_triangles  # the exact ray caster of the layout tests

    from tttlrm_ns.synth.generate import GenerateConfig, ScenesConfig, item_rng

    folder = rendered / "portrait" / "scene_00000"
    meta, frames = _frames(folder)
    g = meta["generator"]
    assert g["orientation"] == "portrait" and g["camera_mode"] == "orbit" and 35 <= g["fov_x_deg"] <= 100
    cfg = GenerateConfig(kind="scenes", out=rendered, height=32, width=48, seed=7, assets="procedural",
                         scenes=ScenesConfig(room=RoomConfig(camera_mode="orbit", fov_range=(35.0, 100.0))))
    spec, _ = build_room(item_rng(cfg, 0), cfg.scenes.room, AssetSources())
    tris = _world_triangles(spec)
    for f, img, depth in frames:
        assert (f["w"], f["h"]) == (32, 48) and img.shape == (48, 32, 3) and depth.shape == (48, 32)
        assert (f["cx"], f["cy"]) == (16.0, 24.0)
        assert f["fx"] == f["fy"] == pytest.approx(focal_from_fov(g["fov_x_deg"], 32))
        ok = lambda ref: (np.abs(ref - depth) < 2e-3 * depth + 1e-3).mean()  # noqa: E731
        exact = ok(_ray_cast_depth(tris, f))
        landscape_centre = ok(_ray_cast_depth(tris, {**f, "cx": 24.0, "cy": 16.0}))  # cx, cy of the unswapped size
        assert exact > 0.97 and landscape_centre < exact - 0.2, (exact, landscape_centre)


@needs_gl
def test_object_backgrounds(rendered):
    _, white = _frames(rendered / "white" / "object_00000")
    _, black = _frames(rendered / "black" / "object_00000")
    meta, clut = _frames(rendered / "cluttered" / "object_00000")
    assert meta["generator"]["background"] == "cluttered" and 2.2 <= meta["generator"]["camera_distance"] <= 3.2
    for (fw, iw, dw), (fb, ib, db), (fc, ic, dc) in zip(white, black, clut):
        assert fw["w2c"] == fb["w2c"] == fc["w2c"] and fw["fx"] == fc["fx"]  # same object and cameras
        bg = dw == 0
        assert 0.05 < (~bg).mean() < 0.9
        assert iw.shape == ib.shape == ic.shape == (32, 32, 3)  # RGB, not RGBA
        assert np.all(iw[bg] == 255) and np.all(ib[bg] == 0)
        assert ib[~bg].mean() > 20  # the object itself is lit, not black
        np.testing.assert_array_equal(db, dw)
        # cluttered: a surround everywhere, not in front of the object, textured (not one flat colour)
        assert np.all(dc > 0)
        np.testing.assert_array_equal(dc[~bg], dw[~bg])
        assert ic[bg].astype(float).std(0).mean() > 8, ic[bg].std(0)

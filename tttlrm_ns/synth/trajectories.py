"""Camera trajectories for furnished rooms beyond the handheld walk-through (issue 23, item 4).

The model's depth prior was learned from :func:`tttlrm_ns.synth.room.camera_path` only (a walk through the free
space, looking around). Real captures also come as

* ``orbit``: walking around a subject (a furniture piece) while pointing the phone at it, over an arc of 30-360
  degrees; the radius shrinks along the azimuth where a wall is in the way (a person cannot walk through it);
* ``forward``: LLFF-style forward-facing captures: all cameras on a small patch (10-30 cm) looking the same way;
* ``closeup``: a short sideways sweep 0.3-0.8 m in front of a surface. The distance is set from *rendered* depth
  (tiny probe renders of the item's own scene), because furniture bounding boxes say little about where the
  surface actually is (a chair's box is mostly air).

All functions return OpenGL camera-to-world poses [frames, 4, 4] built by :func:`tttlrm_ns.conventions.look_at_gl`
(the package's one look-at) and a small dict for the item's metadata. Deterministic given the generator.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np

from tttlrm_ns.conventions import look_at_gl
from tttlrm_ns.synth.cameras import smooth_noise
from tttlrm_ns.synth.room import RoomConfig, RoomLayout, _free_cells, _free_mask, _view_directions, camera_path

CAMERA_MODES = ("path", "orbit", "forward", "closeup")
DepthProbe = Callable[[np.ndarray], np.ndarray]  # OpenGL c2w [N, 4, 4] -> planar depth [N, h, w] (0 = nothing)
_UP = np.array([0.0, 1.0, 0.0])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _distance_to_walls(origin_xz: np.ndarray, dirs_xz: np.ndarray, layout: RoomLayout) -> np.ndarray:
    """[N] distance from ``origin_xz`` [2] (inside the room) along unit directions [N, 2] to the room's walls."""
    half = np.array([layout.width / 2, layout.depth / 2])
    with np.errstate(divide="ignore", invalid="ignore"):
        # per axis: the wall on the side the direction points to; parallel directions never reach it (inf)
        t = np.where(dirs_xz > 0, (half - origin_xz) / dirs_xz,
                     np.where(dirs_xz < 0, (-half - origin_xz) / dirs_xz, np.inf))
    return t.min(-1)


def _blocked(layout: RoomLayout, pos: np.ndarray, clearance: float) -> np.ndarray:
    """[N] (x, z) of camera positions [N, 3] inside (or within ``clearance`` of) the footprint of a piece taller
    than 45 cm: a person walks round tables and shelves, and only steps over stools and low boxes (a first version
    let the camera pass over anything lower than itself: tables then filled the frame between camera and subject)."""
    bad = np.zeros(len(pos), bool)
    for b, top in zip(layout.footprints, layout.heights):
        if top > 0.45:
            bad |= ((pos[:, 0] > b[0] - clearance) & (pos[:, 0] < b[2] + clearance)
                    & (pos[:, 2] > b[1] - clearance) & (pos[:, 2] < b[3] + clearance))
    return bad


def orbit_poses(rng: np.random.Generator, cfg: RoomConfig, layout: RoomLayout, frames: int
                ) -> tuple[np.ndarray, dict]:
    """Cameras on an arc of an ellipse around a furniture piece, all looking at its centre.

    The arc span is drawn from ``orbit_arc_range_deg`` once; subject, radius, ellipse and start azimuth are drawn
    up to 60 times and the candidate with the most usable views is kept (the first with all of them). Where a wall
    is nearer than the ellipse, the camera is pulled towards the subject along the *same* azimuth (so the arc span
    is exact) to ``wall_clearance`` from the wall; a view is usable if it then stays 25 cm outside the subject's
    footprint and out of furniture taller than 45 cm. Shake moves the eye only: every view still looks exactly at the
    subject (like a person re-centring the subject on the screen).
    """
    span = math.radians(rng.uniform(*cfg.orbit_arc_range_deg))
    s = np.linspace(0.0, 1.0, frames)
    if layout.footprints:
        boxes = np.array(layout.footprints)
        tops = np.array(layout.heights)
    else:  # empty room: orbit a point at the centre
        boxes, tops = np.array([[-0.15, -0.15, 0.15, 0.15]]), np.array([1.0])
    best = None
    for _ in range(60):
        k = int(rng.integers(len(boxes)))
        b = boxes[k]
        centre = np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])
        half = 0.5 * math.hypot(b[2] - b[0], b[3] - b[1])  # footprint's circumradius
        r = max(rng.uniform(*cfg.orbit_radius_range), half + 0.4)
        e, phi, start = rng.uniform(0, cfg.orbit_ellipse), rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi)
        theta = start + span * s
        a, c = r * (1 + e), r * (1 - e)
        # polar radius of the rotated ellipse at azimuth theta: the azimuth of each camera is theta exactly
        rho = a * c / np.sqrt((c * np.cos(theta - phi)) ** 2 + (a * np.sin(theta - phi)) ** 2)
        u = np.stack([np.sin(theta), np.cos(theta)], -1)
        rho = np.minimum(rho, _distance_to_walls(centre, u, layout) - cfg.wall_clearance)
        y = rng.uniform(*cfg.camera_height_range)  # base height first, then the wobble (order = random stream)
        y = y + smooth_noise(rng, frames, 1, cfg.orbit_height_wobble_m, (0.5, 2))[:, 0]
        pos = np.stack([centre[0] + rho * u[:, 0], y, centre[1] + rho * u[:, 1]], -1)
        ok = (rho >= half + 0.25) & ~_blocked(layout, pos, 0.15)
        score = float(ok.mean())
        if best is None or score > best[0]:
            target = np.array([centre[0], float(np.clip(0.5 * tops[k], 0.25, 1.2)), centre[1]])
            best = (score, pos, target, r, e)
        if score == 1.0:
            break
    score, pos, target, r, e = best
    pos = pos + smooth_noise(rng, frames, 3, cfg.shake_m, (2, 8))
    roll = np.radians(smooth_noise(rng, frames, 1, cfg.shake_roll_deg, (1, 5))[:, 0])
    poses = np.stack([look_at_gl(p, target, roll=q) for p, q in zip(pos, roll)])
    return poses, {"subject_m": target.tolist(), "arc_deg": math.degrees(span), "orbit_radius_m": r,
                   "orbit_ellipse": e, "usable_fraction": score}


def forward_poses(rng: np.random.Generator, cfg: RoomConfig, layout: RoomLayout, frames: int
                  ) -> tuple[np.ndarray, dict]:
    """LLFF-style forward-facing capture: cameras on a jittered grid over a square patch (side drawn from
    ``forward_patch_range``) perpendicular to one view direction, visited in serpentine order (neighbouring frames
    are neighbouring cameras, as when someone sweeps a phone row by row). The direction is chosen like the
    walk-through's (towards furniture or across the room, :func:`~tttlrm_ns.synth.room._view_directions`); each
    view deviates from it by at most ``forward_jitter_deg`` per axis (hand-held, not a tripod)."""
    cells = _free_cells(cfg, layout)
    xz = cells[int(rng.integers(len(cells)))]
    centre = np.array([xz[0], rng.uniform(*cfg.camera_height_range), xz[1]])
    fwd = _view_directions(rng, cfg, layout, centre[None])[0]
    right = _unit(np.cross(fwd, _UP))
    up = np.cross(right, fwd)
    side = float(rng.uniform(*cfg.forward_patch_range))
    n_col = int(math.ceil(math.sqrt(frames)))
    n_row = int(math.ceil(frames / n_col))
    i = np.arange(frames)
    row, col = i // n_col, i % n_col
    col = np.where(row % 2 == 1, n_col - 1 - col, col)  # serpentine
    # cell centres in [-0.5, 0.5] plus jitter inside the cell: a hand does not hit grid points
    gu = (col + 0.5 + rng.uniform(-0.4, 0.4, frames)) / n_col - 0.5
    gv = (row + 0.5 + rng.uniform(-0.4, 0.4, frames)) / n_row - 0.5
    pos = centre + side * (gu[:, None] * right + gv[:, None] * up)
    j = np.tan(np.radians(rng.uniform(-cfg.forward_jitter_deg, cfg.forward_jitter_deg, (frames, 2))))
    dirs = _unit(fwd + j[:, :1] * right + j[:, 1:] * up)
    roll = np.radians(smooth_noise(rng, frames, 1, cfg.shake_roll_deg, (1, 5))[:, 0])
    poses = np.stack([look_at_gl(p, p + d, roll=q) for p, d, q in zip(pos, dirs, roll)])
    return poses, {"patch_m": side, "patch_centre_m": centre.tolist(), "view_dir": fwd.tolist(),
                   "jitter_deg": cfg.forward_jitter_deg}


def closeup_poses(rng: np.random.Generator, cfg: RoomConfig, layout: RoomLayout, frames: int,
                  probe: DepthProbe, candidates: int = 16, probe_frames: int = 5) -> tuple[np.ndarray, dict]:
    """A short sideways sweep (length from ``closeup_sweep_range``) whose views see a surface at a median depth in
    ``closeup_distance_range``.

    1. ``candidates`` cameras in the free space aim at a random furniture piece (85 %) or wall point (bare walls
       make dull close-ups); one probe render each gives the median depth ``m`` of what they see.
    2. Each moves forward along its view axis by ``m - d`` (``d`` drawn from the range): for a roughly
       fronto-parallel surface every depth drops by the same amount, so the median becomes ``d``. Moving forward
       along a ray that saw no nearer surface keeps the camera in free space.
    3. The sweep (sideways, slightly converging on a point ``d + L`` ahead) is probed at ``probe_frames`` frames; the
       candidate with the most probes inside the range (then the closest medians to ``d``) wins.
    """
    lo, hi = cfg.closeup_distance_range
    cells = _free_cells(cfg, layout)
    w, dp = layout.width, layout.depth
    eyes, targets = [], []
    for _ in range(candidates):
        xz = cells[int(rng.integers(len(cells)))]
        eye = np.array([xz[0], rng.uniform(0.6, 1.6), xz[1]])
        if layout.footprints and rng.uniform() < 0.85:
            k = int(rng.integers(len(layout.footprints)))
            b = layout.footprints[k]
            t = np.array([rng.uniform(b[0], b[2]), rng.uniform(0.3, 0.9) * layout.heights[k], rng.uniform(b[1], b[3])])
        else:
            side = int(rng.integers(4))
            along = rng.uniform(-0.4, 0.4)
            t = [np.array([along * w, 0, -dp / 2]), np.array([along * w, 0, dp / 2]),
                 np.array([-w / 2, 0, along * dp]), np.array([w / 2, 0, along * dp])][side]
            t[1] = rng.uniform(0.5, min(2.0, layout.height - 0.3))
        if np.linalg.norm(t - eye) < 1e-3:
            t = eye + np.array([0.0, 0.0, 1.0])
        eyes.append(eye)
        targets.append(t)
    eyes, targets = np.array(eyes), np.array(targets)
    fwd = _unit(targets - eyes)
    depth = probe(np.stack([look_at_gl(e, t) for e, t in zip(eyes, targets)]))
    m = np.array([np.median(d[d > 0]) if (d > 0).any() else np.inf for d in depth])
    want = rng.uniform(lo, hi, candidates)
    length = rng.uniform(*cfg.closeup_sweep_range, candidates)
    moved = eyes + fwd * np.clip(m - want, 0.0, None)[:, None]  # never backwards: behind the camera is unprobed
    right = _unit(np.cross(fwd, _UP))
    s = np.linspace(-0.5, 0.5, frames)
    paths = moved[:, None] + length[:, None, None] * s[None, :, None] * right[:, None]  # [C, frames, 3]
    focus = moved + fwd * (want + length)[:, None]  # views converge a little, like re-aiming at the subject
    sel = np.unique(np.linspace(0, frames - 1, probe_frames).round().astype(int))
    sweep = probe(np.stack([look_at_gl(p, f) for c in range(candidates) for p, f in
                            zip(paths[c, sel], [focus[c]] * len(sel))]))
    med = np.array([np.median(d[d > 0]) if (d > 0).any() else np.inf for d in sweep]).reshape(candidates, len(sel))
    inside = ((med >= lo) & (med <= hi)).sum(1)
    err = np.abs(med - want[:, None]).mean(1)
    c = int(np.lexsort((err, -inside))[0])  # most probes in range, then the closest to the wanted distance
    pos = paths[c] + smooth_noise(rng, frames, 3, cfg.shake_m, (1, 4))
    roll = np.radians(smooth_noise(rng, frames, 1, cfg.shake_roll_deg, (1, 5))[:, 0])
    poses = np.stack([look_at_gl(p, focus[c], roll=q) for p, q in zip(pos, roll)])
    return poses, {"closeup_distance_m": float(want[c]), "sweep_m": float(length[c]),
                   "probe_median_depth_m": med[c].tolist(), "probes_in_range": int(inside[c])}


def camera_poses(rng: np.random.Generator, cfg: RoomConfig, layout: RoomLayout, frames: int,
                 probe: Optional[DepthProbe] = None) -> tuple[np.ndarray, dict]:
    """[frames, 4, 4] OpenGL c2w for ``cfg.camera_mode`` plus metadata. ``path`` is exactly
    :func:`~tttlrm_ns.synth.room.camera_path` (same random draws, so existing seeds give the same cameras);
    ``closeup`` needs ``probe`` (depth renders of the item's scene)."""
    mode = cfg.camera_mode
    if mode == "path":
        return camera_path(rng, cfg, layout, frames), {}
    if mode == "orbit":
        return orbit_poses(rng, cfg, layout, frames)
    if mode == "forward":
        return forward_poses(rng, cfg, layout, frames)
    if mode == "closeup":
        if probe is None:
            raise ValueError("closeup cameras need a depth probe (renders of the scene) to find the surfaces")
        return closeup_poses(rng, cfg, layout, frames, probe)
    raise ValueError(f"room camera mode must be one of {CAMERA_MODES}, got {mode!r}")


__all__ = ["CAMERA_MODES", "camera_poses", "orbit_poses", "forward_poses", "closeup_poses"]

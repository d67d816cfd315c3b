"""Tiny procedural scenes for trainer tests and benchmarks: a textured box room with textured quads, ray-cast exactly.

Not a training data set (``tttlrm-synth`` renders those); it writes the same layout --
``opencv_cameras.json`` (OpenCV w2c, pixel intrinsics), PNG images and ``.npy`` z-depth maps (frame key
``depth_path``) -- in well under a second, with exact geometry (pixel-centre rule of :mod:`tttlrm_ns.conventions`).

Geometry: the room is the box ``[-2, 2] x [-1, 1] x [-2, 2]`` (y down, OpenCV-style world); each of its 6 faces and
``n_quads`` random interior rectangles carry a procedural texture (two-colour checker + stripes). The camera
moves along a smooth arc inside the room looking roughly at the centre, like a handheld capture.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tttlrm_ns import conventions


def _planes(rng: np.random.Generator, n_quads: int) -> list[dict]:
    """Rectangles ``origin + a*u + b*v`` (a, b in [0, 1]) with texture parameters."""
    planes = []
    lo, hi = np.array([-2.0, -1.0, -2.0]), np.array([2.0, 1.0, 2.0])
    size = hi - lo
    for axis in range(3):  # room faces
        for side in (0, 1):
            o = lo.copy()
            o[axis] = lo[axis] if side == 0 else hi[axis]
            u_ax, v_ax = [a for a in range(3) if a != axis]
            u = np.zeros(3)
            v = np.zeros(3)
            u[u_ax], v[v_ax] = size[u_ax], size[v_ax]
            planes.append({"o": o, "u": u, "v": v})
    for _ in range(n_quads):  # random interior cards
        c = rng.uniform([-1.3, -0.6, -1.3], [1.3, 0.6, 1.3])
        u = rng.normal(size=3)
        u /= np.linalg.norm(u)
        v = np.cross(u, rng.normal(size=3))
        v /= np.linalg.norm(v)
        su, sv = rng.uniform(0.4, 1.0, size=2)
        planes.append({"o": c - 0.5 * su * u - 0.5 * sv * v, "u": su * u, "v": sv * v})
    for p in planes:
        p["c1"], p["c2"] = rng.uniform(0.05, 0.95, size=3), rng.uniform(0.05, 0.95, size=3)
        p["freq"] = rng.integers(2, 7, size=2)
        p["stripe"] = rng.uniform(3, 12)
    return planes


def raycast(planes: list[dict], origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Colour [P, 3] and ray distance [P] of the nearest plane hit along ``dirs`` [P, 3] (vectorised over rays)."""
    best_t = np.full(dirs.shape[0], np.inf)
    color = np.ones((dirs.shape[0], 3))
    for p in planes:  # a handful of planes; each step is vectorised over all rays
        n = np.cross(p["u"], p["v"])
        denom = dirs @ n
        with np.errstate(divide="ignore", invalid="ignore"):
            t = ((p["o"] - origin) @ n) / denom
        hit = origin + t[:, None] * dirs - p["o"]
        # Solve hit = a u + b v in the plane via the Gram matrix.
        g = np.array([[p["u"] @ p["u"], p["u"] @ p["v"]], [p["u"] @ p["v"], p["v"] @ p["v"]]])
        ab = np.linalg.solve(g, np.stack([hit @ p["u"], hit @ p["v"]]))  # [2, P]
        a, b = ab
        ok = (np.abs(denom) > 1e-9) & (t > 1e-4) & (t < best_t) & (a >= 0) & (a <= 1) & (b >= 0) & (b <= 1)
        check = ((np.floor(a * p["freq"][0]) + np.floor(b * p["freq"][1])) % 2)[:, None]
        stripe = 0.5 + 0.5 * np.sin(2 * math.pi * p["stripe"] * (a + 0.5 * b))[:, None]
        tex = (check * p["c1"] + (1 - check) * p["c2"]) * (0.75 + 0.25 * stripe)
        best_t = np.where(ok, t, best_t)
        color = np.where(ok[:, None], tex, color)
    return color, best_t


def make_scene(folder: str | Path, num_frames: int = 24, height: int = 32, width: int = 48, n_quads: int = 4,
               seed: int = 0) -> Path:
    """Write a procedural scene (``opencv_cameras.json``, ``images/*.png``, ``depth/*.npy``) and return its folder."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "depth").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    planes = _planes(rng, n_quads)
    fx = fy = 0.8 * width
    cx, cy = width / 2, height / 2
    v, u = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    half = conventions.PIXEL_CENTER_OFFSET
    cam_dirs = np.stack([(u + half - cx) / fx, (v + half - cy) / fy,
                         np.ones_like(u, dtype=float)], -1).reshape(-1, 3)  # z = 1: depth = t * 1 on unit-z rays
    phase = rng.uniform(0, 2 * math.pi)
    frames = []
    for i in range(num_frames):
        s = i / max(num_frames - 1, 1)
        ang = phase + 1.2 * s
        eye = np.array([1.2 * math.cos(ang), 0.2 * math.sin(3 * s), 1.2 * math.sin(ang)])
        target = np.array([0.3 * math.cos(ang + 2.5), 0.0, 0.3 * math.sin(ang + 2.5)])
        c2w = conventions.look_at_cv(eye, target, up=np.array([0.0, -1.0, 0.0]))  # world +y is down, as image rows
        dirs = cam_dirs @ c2w[:3, :3].T
        color, t = raycast(planes, eye, dirs)
        depth = t.reshape(height, width).astype(np.float32)  # z-depth: rays have unit z in the camera frame
        img = (np.clip(color, 0, 1).reshape(height, width, 3) * 255 + 0.5).astype(np.uint8)
        name = f"frame{i:04d}"
        Image.fromarray(img).save(folder / "images" / f"{name}.png")
        np.save(folder / "depth" / f"{name}.npy", depth)
        frames.append({"file_path": f"images/{name}.png", "depth_path": f"depth/{name}.npy", "w": width,
                       "h": height, "fx": fx, "fy": fy, "cx": cx, "cy": cy,
                       "w2c": conventions.c2w_to_w2c(torch.from_numpy(c2w)).tolist()})
    (folder / "opencv_cameras.json").write_text(json.dumps({"scene_name": folder.name, "frames": frames}))
    return folder


__all__ = ["make_scene", "raycast"]

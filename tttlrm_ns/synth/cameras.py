"""Camera poses and intrinsics for the synthetic renders (numpy; axis conversions by :mod:`tttlrm_ns.conventions`).

World frame: y up (the Sweet Home 3D models are y-up), metres. Renderer poses are OpenGL camera-to-world
(x right, y up, looking along -z); the stored poses are OpenCV world-to-camera (:func:`gl_c2w_to_cv_w2c`).
Poses are built with :func:`tttlrm_ns.conventions.look_at_gl`, the package's one look-at.

Intrinsics: pyrender's ``IntrinsicsCamera(fx, fy, cx, cy)`` builds its projection with pixel *edges* at integer
coordinates (pixel ``u`` covers ``[u, u + 1)`` and is sampled at ``u + 0.5``), which is exactly the pixel-centre
rule of :mod:`tttlrm_ns.conventions`; so the stored ``cx, cy`` are the values given to pyrender (``W / 2`` for a
centred camera). A strict-OpenCV consumer (pixel centres at integers) must subtract 0.5 from ``cx`` and ``cy``.
``tests/test_synth.py`` checks this against rendered depth and silhouettes.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from tttlrm_ns import conventions


def gl_c2w_to_cv_w2c(c2w_gl: np.ndarray) -> np.ndarray:
    """OpenGL camera-to-world [..., 4, 4] -> OpenCV world-to-camera [..., 4, 4] (closed-form rigid inverse)."""
    return conventions.opengl_c2w_to_opencv_w2c(torch.from_numpy(np.asarray(c2w_gl, dtype=np.float64))).numpy()


def focal_from_fov(fov_x_deg: float, width: int) -> float:
    """Pixel focal length for a horizontal field of view (degrees) over ``width`` pixels."""
    return 0.5 * width / math.tan(math.radians(fov_x_deg) / 2)


def sphere_poses(rng: np.random.Generator, n: int, radius: float, elev_range_deg: tuple[float, float]) -> np.ndarray:
    """[n, 4, 4] OpenGL c2w on a sphere around the origin looking at it: azimuths evenly spread with jitter (so the
    object is seen all round), elevations uniform at random in ``elev_range_deg``."""
    az = (np.arange(n) + rng.uniform(0, 1, n)) * (2 * math.pi / n) + rng.uniform(0, 2 * math.pi)
    el = np.radians(rng.uniform(*elev_range_deg, n))
    eyes = radius * np.stack([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)], -1)
    order = rng.permutation(n)  # views in random order, like renders from a random sampler
    return np.stack([conventions.look_at_gl(eyes[i], np.zeros(3)) for i in order])


def _catmull_rom_dense(points: np.ndarray, per_segment: int = 32) -> np.ndarray:
    """Uniform Catmull-Rom spline through ``points`` [K, D] (K >= 2), ``per_segment`` samples per segment.

    Returns [(K - 1) * per_segment + 1, D]; sample ``i * per_segment`` is ``points[i]``."""
    p = np.concatenate([2 * points[:1] - points[1:2], points, 2 * points[-1:] - points[-2:-1]])
    t = np.linspace(0, 1, per_segment, endpoint=False)[:, None]
    dense = []
    for i in range(1, len(p) - 2):  # K - 1 segments, each a cubic in t (vectorised over its samples)
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        dense.append(0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                            + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3))
    dense.append(points[-1:])
    return np.concatenate(dense)


def spline_path(points: np.ndarray, directions: np.ndarray, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Camera path through control ``points`` [K, 3] with view ``directions`` [K, 3] at them.

    Both are interpolated by Catmull-Rom splines with the same parameter; the path is then resampled at ``samples``
    equal arc-length steps of the position curve (constant walking speed, like a handheld capture). Returns
    (positions [samples, 3], unit directions [samples, 3]). Consecutive directions must not be opposite.
    """
    pos = _catmull_rom_dense(points)
    dirs = _catmull_rom_dense(directions)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pos, axis=0), axis=1))])
    idx = np.interp(np.linspace(0, arc[-1], samples), arc, np.arange(len(arc)))
    lo = np.floor(idx).astype(int).clip(0, len(arc) - 2)
    w = (idx - lo)[:, None]
    out_pos = (1 - w) * pos[lo] + w * pos[lo + 1]
    out_dir = (1 - w) * dirs[lo] + w * dirs[lo + 1]
    return out_pos, out_dir / np.linalg.norm(out_dir, axis=1, keepdims=True)


def smooth_noise(rng: np.random.Generator, n: int, dims: int, amplitude: float, cycles: tuple[float, float]) -> np.ndarray:
    """[n, dims] band-limited wobble: a sum of 3 sinusoids per dimension with random frequencies (in cycles over the
    whole path) and phases, normalised to RMS ``amplitude``. Imitates hand shake without frame-to-frame jitter."""
    s = np.linspace(0, 1, n)[:, None, None]
    freq = rng.uniform(*cycles, size=(1, dims, 3))
    phase = rng.uniform(0, 2 * math.pi, size=(1, dims, 3))
    w = np.sin(2 * math.pi * freq * s + phase).sum(-1)
    return amplitude * w / math.sqrt(1.5)


__all__ = ["gl_c2w_to_cv_w2c", "focal_from_fov", "sphere_poses", "spline_path",
           "smooth_noise"]

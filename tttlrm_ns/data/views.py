"""Deterministic view selection: which frames are model inputs and which are held out for evaluation.

All functions return sorted lists of frame indices (file order) and are deterministic: the same inputs always give
the same views.

Paper protocol (the official evaluation scripts; ``docs/reference_semantics.md`` §1.4):
test frames are the indices ``≡ 0 (mod 8)``; the ``N`` input frames are the scene file's ``fold_8_kmeans_{N}_input``
list when present, otherwise k-means with ``N`` clusters on the non-test frames (feature = ``[camera centre, camera
z-axis]`` in the file's world frame), the nearest frame to each centre, sorted (duplicates kept, as in the official
code). k-means uses scikit-learn's ``KMeans(n_clusters=N, random_state=0, n_init="auto")`` like the official code
when scikit-learn is installed (results depend on its version; pinned in pyproject.toml); otherwise a seeded
k-means++ / Lloyd implementation in numpy (``backend="numpy"``), which is deterministic but not bit-identical to
scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Sequence

import numpy as np
from torch import Tensor

from tttlrm_ns.conventions import invert_rigid
from tttlrm_ns.data.scene import SceneDataError, SceneFrames


def _check_count(num_frames: int, n: int, what: str, where: str = "") -> None:
    if n < 1:
        raise ValueError(f"number of {what} must be >= 1, got {n}")
    if n > num_frames:
        raise SceneDataError(f"{where}{n} {what} requested but only {num_frames} frames are available")


def select_all(num_frames: int) -> list[int]:
    return list(range(num_frames))


def select_every_kth(num_frames: int, k: int, offset: int = 0) -> list[int]:
    """Frames ``offset, offset + k, ...``."""
    if k < 1 or not 0 <= offset < max(num_frames, 1):
        raise ValueError(f"every-k-th selection needs k >= 1 and 0 <= offset < {num_frames}, got k={k}, offset={offset}")
    return list(range(offset, num_frames, k))


def select_evenly_spaced(num_frames: int, n: int, where: str = "") -> list[int]:
    """``n`` distinct frames spread evenly over ``0..num_frames-1`` including both ends (n = 1: the middle one)."""
    _check_count(num_frames, n, "views", where)
    if n == 1:
        return [(num_frames - 1) // 2]
    # round(i * (F-1) / (n-1)) is strictly increasing for n <= F, so the frames are distinct.
    return [int(np.floor(i * (num_frames - 1) / (n - 1) + 0.5)) for i in range(n)]


def eval_split(num_frames: int, interval: int = 8) -> tuple[list[int], list[int]]:
    """(train, test) with test = every ``interval``-th frame starting at 0 (the paper's split)."""
    if interval < 2:
        raise ValueError(f"eval interval must be >= 2, got {interval}")
    test = list(range(0, num_frames, interval))
    train = [i for i in range(num_frames) if i % interval]
    return train, test


def camera_features(c2w: Tensor, float32_w2c: bool = True) -> np.ndarray:
    """k-means features [F, 6] = [camera centre, camera z-axis] of c2w [F, 4, 4] (OpenCV, world frame).

    ``float32_w2c``: compute the features from the w2c matrices rounded to float32 and inverted in float64. The
    precomputed ``fold_8_kmeans_32_input`` of the Long-LRM example scene (mydesk) is reproduced exactly this way;
    with full float64 features one near-tie between two neighbouring frames resolves the other way.
    """
    c = c2w.detach().double().cpu()
    if float32_w2c:
        w2c = invert_rigid(c).float().double().numpy()
        # A general inverse on purpose: the float32-rounded w2c is no longer exactly rigid, so the closed-form rigid
        # inverse gives other features (up to 8e-7 on mydesk; same k-means there, but near-ties could go either way).
        c = np.linalg.inv(w2c)
    else:
        c = c.numpy()
    return np.concatenate([c[:, :3, 3], c[:, :3, 2]], axis=1)


def _kmeans_numpy(x: np.ndarray, k: int, seed: int, iters: int = 300, restarts: int = 4) -> np.ndarray:
    """Seeded k-means++ initialisation + Lloyd iterations; best of ``restarts`` by inertia. Returns centres [k, D]."""
    rng = np.random.default_rng(seed)
    best, best_inertia = None, np.inf
    for _ in range(restarts):
        centres = [x[rng.integers(len(x))]]
        d2 = ((x - centres[0]) ** 2).sum(1)
        for _ in range(1, k):
            p = d2 / d2.sum() if d2.sum() > 0 else np.full(len(x), 1 / len(x))
            centres.append(x[rng.choice(len(x), p=p)])
            d2 = np.minimum(d2, ((x - centres[-1]) ** 2).sum(1))
        c = np.stack(centres)
        for _ in range(iters):
            dist = ((x[:, None] - c[None]) ** 2).sum(-1)  # [F, k]
            lab = dist.argmin(1)
            counts = np.bincount(lab, minlength=k)
            sums = np.zeros_like(c)
            np.add.at(sums, lab, x)
            new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], c)
            if np.allclose(new, c, atol=1e-12, rtol=0):
                c = new
                break
            c = new
        inertia = ((x[:, None] - c[None]) ** 2).sum(-1).min(1).sum()
        if inertia < best_inertia:
            best, best_inertia = c, inertia
    assert best is not None
    return best


def kmeans_views(
    c2w: Tensor,
    n: int,
    candidates: Optional[Sequence[int]] = None,
    seed: int = 0,
    backend: Literal["auto", "sklearn", "numpy"] = "auto",
    where: str = "",
) -> list[int]:
    """Choose ``n`` views among ``candidates`` by k-means on camera features; sorted, duplicates kept.

    Args:
        c2w: [F, 4, 4] OpenCV camera-to-world of all frames (world frame, not normalised).
        candidates: frame indices to choose from (default all).
    """
    cand = np.arange(len(c2w)) if candidates is None else np.asarray(list(candidates), dtype=np.int64)
    _check_count(len(cand), n, "input views", where)
    feats = camera_features(c2w)[cand]
    if backend == "auto":
        try:
            import sklearn  # noqa: F401

            backend = "sklearn"
        except ImportError:
            backend = "numpy"
    if backend == "sklearn":
        from sklearn.cluster import KMeans

        centres = KMeans(n_clusters=n, random_state=seed, n_init="auto").fit(feats).cluster_centers_
    elif backend == "numpy":
        centres = _kmeans_numpy(feats, n, seed)
    else:
        raise ValueError(f"k-means backend must be 'auto', 'sklearn' or 'numpy', got {backend!r}")
    nearest = ((centres[:, None, :] - feats[None]) ** 2).sum(-1).argmin(1)  # [n]
    return sorted(int(cand[j]) for j in nearest)


@dataclass
class ViewSplit:
    """Input frames (model inputs) and test frames (held out), both file indices."""

    inputs: list[int]
    test: list[int]


def paper_protocol(
    scene: SceneFrames,
    num_inputs: int,
    interval: int = 8,
    use_precomputed: bool = True,
    backend: Literal["auto", "sklearn", "numpy"] = "auto",
) -> ViewSplit:
    """The DL3DV evaluation protocol (see the module docstring): test = every ``interval``-th frame, inputs =
    k-means of the rest."""
    train, test = eval_split(len(scene), interval)
    where = f"{scene.scene_file}: "
    pre = scene.precomputed_inputs(num_inputs) if use_precomputed and interval == 8 else None
    if pre is not None:
        return ViewSplit(sorted(pre), test)
    return ViewSplit(kmeans_views(scene.c2w, num_inputs, train, backend=backend, where=where), test)


@dataclass
class ViewSelectionConfig:
    """How input views are chosen from the candidate frames (e.g. a dataparser's train split)."""

    mode: Literal["all", "every_k", "evenly", "kmeans"] = "kmeans"
    """'all' frames, 'every_k'-th frame, 'evenly' spaced num_views frames, or 'kmeans' on camera poses (paper)."""
    num_views: int = 32
    """Number of input views for 'evenly' and 'kmeans'."""
    k: int = 8
    """Stride for 'every_k'."""
    seed: int = 0
    """k-means random_state."""


def select_views(c2w: Tensor, config: ViewSelectionConfig, where: str = "") -> list[int]:
    """Indices into ``c2w`` [F, 4, 4] (the candidate frames) chosen per ``config``."""
    f = len(c2w)
    if config.mode == "all":
        return select_all(f)
    if config.mode == "every_k":
        return select_every_kth(f, config.k)
    if config.mode == "evenly":
        return select_evenly_spaced(f, config.num_views, where)
    if config.mode == "kmeans":
        return kmeans_views(c2w, config.num_views, seed=config.seed, where=where)
    raise ValueError(f"view selection mode must be all/every_k/evenly/kmeans, got {config.mode!r}")

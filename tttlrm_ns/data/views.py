"""Deterministic view selection: which frames are model inputs and which are held out for evaluation.

All functions return sorted lists of frame indices (file order) and are deterministic: the same inputs always give
the same views.

Paper protocol (the official evaluation scripts; ``docs/reference_semantics.md`` §1.4):
test frames are the indices ``≡ 0 (mod 8)``; the ``N`` input frames are the scene file's ``fold_8_kmeans_{N}_input``
list when present, otherwise k-means with ``N`` clusters on the non-test frames (feature = ``[camera centre, camera
z-axis]`` in the file's world frame), the nearest frame to each centre, sorted (duplicates kept, as in the official
code). k-means is scikit-learn's ``KMeans(n_clusters=N, random_state=0, n_init="auto")`` like the official code, and
nothing else: results depend on its version (pinned in pyproject.toml), and a second implementation would choose
other views wherever it was used instead.

One selection for everything: :func:`select_views` (the candidates' file poses, their frame indices and the scene's
precomputed list) is what :func:`paper_protocol` and the nerfstudio pipelines (``ns-train``, ``tttlrm-eval``) call,
on the file's own float64 poses. The k-means features of poses that went through float32 (nerfstudio's cameras)
differ by ~1e-7, enough to flip near-ties between neighbouring frames.
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


def kmeans_views(
    c2w: Tensor,
    n: int,
    candidates: Optional[Sequence[int]] = None,
    seed: int = 0,
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
    try:
        from sklearn.cluster import KMeans
    except ImportError as e:
        raise ImportError(
            "k-means input-view selection needs scikit-learn (a dependency of tttlrm_ns, pinned in pyproject.toml: "
            "`pip install scikit-learn==1.9.1`), or choose the views another way (--pipeline.views.mode evenly / "
            "every_k / all)"
        ) from e
    centres = KMeans(n_clusters=n, random_state=seed, n_init="auto").fit(feats).cluster_centers_
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
) -> ViewSplit:
    """The DL3DV evaluation protocol (see the module docstring): test = every ``interval``-th frame, inputs = the
    scene's precomputed list or k-means of the rest, by :func:`select_views` (what the pipelines run)."""
    train, test = eval_split(len(scene), interval)
    pre = scene.precomputed_inputs(num_inputs) if use_precomputed else None
    pos = select_views(scene.c2w[train], ViewSelectionConfig(mode="kmeans", num_views=num_inputs),
                       where=f"{scene.scene_file}: ", frames=train, precomputed=pre)
    return ViewSplit([train[p] for p in pos], test)


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


def precomputed_positions(listed: Sequence[int], frames: Sequence[int]) -> Optional[list[int]]:
    """Positions among the candidates (file frame indices ``frames``) of a precomputed input list (file frame
    indices, e.g. ``fold_8_kmeans_{N}_input``), sorted, duplicates kept; None when the list names a frame that is not
    a candidate (held out by this split, or outside the train frames): it was made for another split."""
    pos = {int(f): i for i, f in enumerate(frames)}
    if not all(int(f) in pos for f in listed):
        return None
    return sorted(pos[int(f)] for f in listed)


def select_views(
    c2w: Tensor,
    config: ViewSelectionConfig,
    where: str = "",
    frames: Optional[Sequence[int]] = None,
    precomputed: Optional[Sequence[int]] = None,
) -> list[int]:
    """Indices into ``c2w`` [F, 4, 4] (the candidate frames) chosen per ``config``, sorted.

    Args:
        c2w: the candidates' OpenCV camera-to-world in the scene file's world frame (k-means features), float64 as
            read from the file when there is one (see the module docstring).
        frames: the candidates' file frame indices (default ``0..F-1``); only used to place ``precomputed``.
        precomputed: with mode 'kmeans', the scene's precomputed input list (file frame indices), used instead of
            k-means when every frame of it is a candidate (:func:`precomputed_positions`).
    """
    f = len(c2w)
    if config.mode == "all":
        return select_all(f)
    if config.mode == "every_k":
        return select_every_kth(f, config.k)
    if config.mode == "evenly":
        return select_evenly_spaced(f, config.num_views, where)
    if config.mode == "kmeans":
        if precomputed is not None:
            pos = precomputed_positions(precomputed, range(f) if frames is None else frames)
            if pos is not None:
                return pos
        return kmeans_views(c2w, config.num_views, seed=config.seed, where=where)
    raise ValueError(f"view selection mode must be all/every_k/evenly/kmeans, got {config.mode!r}")

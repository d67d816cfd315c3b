"""nerfstudio's datamanager -> the input views as stored: which views, their images, OpenCV cameras, SfM points.

nerfstudio stores OpenGL camera-to-world matrices in the dataparser's frame (possibly re-oriented, re-centred and
scaled) and caches images as ``[H, W, C]`` tensors at the cameras' resolution (already undistorted). The inference
path (:func:`tttlrm_ns.infer.prepare_inputs`) wants OpenCV c2w and pixel intrinsics; it resizes the images itself
(:func:`~tttlrm_ns.infer.inputs.make_plan`, :func:`~tttlrm_ns.infer.inputs.prepare_images`, re-exported here).
Also here: the image check of a capture and the choice of the input views among the train images, shared by
``tttlrm`` and ``tttlrm-triplane``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import torch
from torch import Tensor

from nerfstudio.utils.rich_utils import CONSOLE

from tttlrm_ns import conventions
from tttlrm_ns.data.views import ViewSelectionConfig, precomputed_positions, select_views
from tttlrm_ns.infer import PredictionError
from tttlrm_ns.infer.inputs import make_plan, prepare_images


def cameras_to_opencv(c2w_gl: Tensor, fx: Tensor, fy: Tensor, cx: Tensor, cy: Tensor) -> tuple[Tensor, Tensor]:
    """nerfstudio camera fields -> (OpenCV c2w [V, 4, 4] float64, fxfycxcy [V, 4] float64).

    Args:
        c2w_gl: [V, 3, 4] OpenGL camera-to-world. fx, fy, cx, cy: [V, 1] (or [V]) pixel intrinsics.
    """
    c2w = conventions.opengl_to_opencv_c2w(conventions.to_homogeneous_pose(c2w_gl.detach().double().cpu()))
    k = torch.stack([t.detach().reshape(-1).double().cpu() for t in (fx, fy, cx, cy)], dim=-1)
    return c2w, k


def dataparser_to_original(c2w: Tensor, transform: Tensor, scale: float) -> Tensor:
    """c2w [V, 4, 4] in a dataparser's frame -> float64 c2w in the frame of the original data.

    ``transform`` is nerfstudio's ``dataparser_transform`` [3, 4] (rigid) and ``scale`` its ``dataparser_scale``
    (:meth:`tttlrm_ns.conventions.Similarity.from_nerfstudio`). Works for OpenCV and OpenGL camera axes alike.
    """
    return conventions.Similarity.from_nerfstudio(transform, scale).invert(c2w.double())


def check_images(datamanager, data: Optional[Path], log: Callable[[str], None]) -> None:
    """Stop on images the camera file lists but that do not exist (nerfstudio would fail later, inside an image
    cache worker thread); say which images next to the used ones have no camera (e.g. frames COLMAP could not
    register)."""
    used = set()
    for ds in (getattr(datamanager, "train_dataset", None), getattr(datamanager, "eval_dataset", None)):
        outputs = getattr(ds, "_dataparser_outputs", None)
        if outputs is not None:
            used.update(Path(f).resolve() for f in outputs.image_filenames)
    missing = sorted(str(f) for f in used if not f.is_file())
    if missing:
        shown = ", ".join(missing[:5]) + (f", ... ({len(missing) - 5} more)" if len(missing) > 5 else "")
        raise PredictionError(
            f"{len(missing)} image(s) listed in the data's camera file ({data}) do not "
            f"exist: {shown}. Restore them, or re-run ns-process-data / remove their frames from the camera file."
        )
    suffixes = {".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG"}
    for folder in sorted({f.parent for f in used}):
        unused = sorted(p.name for p in folder.iterdir() if p.suffix in suffixes and p.resolve() not in used)
        if unused:
            shown = ", ".join(unused[:8]) + (f", ... ({len(unused) - 8} more)" if len(unused) > 8 else "")
            log(
                f"[yellow]tttLRM: {len(unused)} of {len(unused) + sum(f.parent == folder for f in used)} images "
                f"in {folder} have no camera in the data's camera file and are not used: {shown}. (With "
                "ns-process-data: COLMAP could not register them; more overlap between photos or "
                "--matching-method exhaustive helps.)"
            )


def select_input_views(datamanager, views: ViewSelectionConfig, use_precomputed: bool = True,
                       log_prefix: str = "tttLRM") -> list[int]:
    """Positions in the train split of the model's input views (sorted, i.e. in frame order).

    :func:`tttlrm_ns.data.views.select_views`, the selection :func:`~tttlrm_ns.data.views.paper_protocol` runs: with
    k-means and ``use_precomputed``, the scene file's ``fold_8_kmeans_{N}_input`` list when all its frames are in the
    train split (the paper's exact inputs); else k-means on the cameras in the data's own frame, the file's float64
    poses when the dataparser passes them (``opencv_c2w``, the opencv-cameras dataparser), so the views equal
    ``paper_protocol``'s. Shared by ``tttlrm`` and ``tttlrm-triplane``.
    """
    cameras = datamanager.train_dataset.cameras
    num = len(cameras)
    if views.mode in ("kmeans", "evenly") and views.num_views > num:
        raise PredictionError(
            f"{views.num_views} input views requested (--pipeline.views.num-views) but the train split has only "
            f"{num} images; lower --pipeline.views.num-views or use --pipeline.views.mode all"
        )
    outputs = getattr(datamanager, "train_dataparser_outputs", None)
    meta = outputs.metadata if outputs is not None else {}
    frames = meta.get("frame_indices")
    listed = None
    if views.mode == "kmeans" and use_precomputed and frames is not None:
        key = f"fold_8_kmeans_{views.num_views}_input"
        listed = (meta.get("scene_extras") or {}).get(key)
        if listed is not None:
            used = precomputed_positions(listed, frames) is not None
            CONSOLE.log(f"{log_prefix}: using the scene's precomputed {key} views" if used else
                        f"{log_prefix}: the scene's precomputed {key} list includes frames outside the train split; "
                        "running k-means")
    c2w = meta.get("opencv_c2w")  # the file's own poses: k-means on them is paper_protocol's, near-ties included
    if c2w is None:  # other dataparsers: the data's own frame recovered from nerfstudio's (float32) cameras
        c2w, _ = cameras_to_opencv(cameras.camera_to_worlds, cameras.fx, cameras.fy, cameras.cx, cameras.cy)
        if outputs is not None:
            c2w = dataparser_to_original(c2w, outputs.dataparser_transform, outputs.dataparser_scale)
    return select_views(c2w, views, where="train split: ", frames=frames, precomputed=listed)


def train_image(datamanager, i: int) -> Tensor:
    """Train image ``i`` as cached ``[H, W, C]`` (loads, and undistorts, the cache first)."""
    cached = getattr(datamanager, "cached_train", None)
    if cached is not None:
        return cached[i]["image"]
    return datamanager.train_dataset.get_data(i, image_type="uint8")["image"]


def sfm_points(datamanager) -> Optional[Tensor]:
    """The dataparser's SfM points [N, 3] in its (= the cameras') frame, or None (nerfstudio-data with
    ``ply_file_path``, colmap: ``points3D_xyz`` in the dataparser outputs' metadata)."""
    outputs = getattr(datamanager, "train_dataparser_outputs", None)
    pts = None if outputs is None else outputs.metadata.get("points3D_xyz")
    return None if pts is None else torch.as_tensor(pts, dtype=torch.float64)


__all__ = ["cameras_to_opencv", "dataparser_to_original", "make_plan", "prepare_images", "check_images",
           "select_input_views", "train_image", "sfm_points"]

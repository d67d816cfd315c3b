"""Reading ``opencv_cameras.json`` scenes and loading their images at the model's resolution.

Scene file layout (Long-LRM / DL3DV convention; ``docs/reference_semantics.md`` §1.1)::

    {"scene_name": str,
     "frames": [{"file_path": "images/x.jpg", "w2c": 4x4, "w": int, "h": int, "fx", "fy", "cx", "cy"}, ...],
     "fold_8_kmeans_{N}_input": [int, ...]   # optional precomputed input views}

``w2c`` is the OpenCV (x right, y down, z forward) world-to-camera matrix; intrinsics are pixels of the stored image.
Frame order in the file defines frame indices and is never re-sorted.

Every validation error is a :class:`SceneDataError` naming the scene file and the frame (index and ``file_path``).

Resizing to the model's ``H x W`` (both multiples of the patch size), see :class:`ResizeConfig`:
  * ``mode="crop"`` (clean, default): scale uniformly so the image covers ``H x W``, then centre-crop; the aspect
    ratio is preserved and intrinsics follow exactly (scale, then shift the principal point by the crop offset).
  * ``mode="stretch"`` (compat: the official loader's anisotropic resize): scale x by ``W / w`` and y by ``H / h``
    independently.
  * ``orientation="auto"`` swaps the target to portrait for portrait images (and vice versa), so a portrait capture
    is not cropped to a landscape strip.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from tttlrm_ns import conventions

SCENE_FILE = "opencv_cameras.json"
POSE_ATOL = 1e-3
"""Tolerance on ``max |R^T R - I|`` of a w2c rotation block (files store ~1e-15; 1e-3 allows float32 round trips)."""


class SceneDataError(ValueError):
    """Bad scene data; the message names the file and, where it applies, the frame."""


@dataclass
class SceneFrames:
    """All frames of one scene, in file order.

    Attributes:
        scene_file: the ``opencv_cameras.json`` path.
        scene_name: ``scene_name`` from the file (the folder name if absent).
        image_paths: absolute image paths, length F.
        c2w: [F, 4, 4] float64 OpenCV camera-to-world.
        fxfycxcy: [F, 4] float64 pixel intrinsics of the stored images.
        width, height: stored image size (identical for all frames).
        extras: other top-level keys of the file (e.g. ``fold_8_kmeans_32_input``).
    """

    scene_file: Path
    scene_name: str
    image_paths: list[Path]
    c2w: Tensor
    fxfycxcy: Tensor
    width: int
    height: int
    extras: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.image_paths)

    def frame_name(self, i: int) -> str:
        """Human-readable frame identifier used in error messages."""
        return f"frame {i} ({self.image_paths[i].name})"

    def precomputed_inputs(self, n: int) -> Optional[list[int]]:
        """The file's ``fold_8_kmeans_{n}_input`` list, if present (validated against the frame count)."""
        key = f"fold_8_kmeans_{n}_input"
        if key not in self.extras:
            return None
        idx = [int(i) for i in self.extras[key]]
        bad = [i for i in idx if not 0 <= i < len(self)]
        if bad:
            raise SceneDataError(f"{self.scene_file}: {key} holds frame indices {bad} outside 0..{len(self) - 1}")
        return idx

    def subset(self, indices: Sequence[int]) -> "SceneFrames":
        idx = list(indices)
        return SceneFrames(
            self.scene_file,
            self.scene_name,
            [self.image_paths[i] for i in idx],
            self.c2w[idx],
            self.fxfycxcy[idx],
            self.width,
            self.height,
            self.extras,
        )


def _resolve_scene_file(path: Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / SCENE_FILE
    if not path.is_file():
        raise SceneDataError(f"{path}: scene file not found (expected a folder holding {SCENE_FILE}, or the file)")
    return path


def _frame_error(scene_file: Path, i: int, frame: dict, msg: str) -> SceneDataError:
    name = frame.get("file_path", "?") if isinstance(frame, dict) else "?"
    return SceneDataError(f"{scene_file}: frame {i} ({name}): {msg}")


def _read_pose(scene_file: Path, i: int, frame: dict) -> np.ndarray:
    if "w2c" not in frame:
        raise _frame_error(scene_file, i, frame, "missing 'w2c' (4x4 OpenCV world-to-camera matrix)")
    try:
        w2c = np.asarray(frame["w2c"], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise _frame_error(scene_file, i, frame, f"'w2c' is not a numeric matrix ({e})") from None
    if w2c.shape == (3, 4):
        w2c = np.concatenate([w2c, [[0.0, 0.0, 0.0, 1.0]]], axis=0)
    if w2c.shape != (4, 4):
        raise _frame_error(scene_file, i, frame, f"'w2c' has shape {w2c.shape}, expected (4, 4)")
    if not np.isfinite(w2c).all():
        raise _frame_error(scene_file, i, frame, "'w2c' contains NaN or infinite values")
    if not np.allclose(w2c[3], [0, 0, 0, 1], atol=1e-6):
        raise _frame_error(scene_file, i, frame, f"'w2c' bottom row is {w2c[3].tolist()}, expected [0, 0, 0, 1]")
    rot = w2c[:3, :3]
    det = float(np.linalg.det(rot))
    if abs(det) < 1e-6:
        raise _frame_error(scene_file, i, frame, f"'w2c' is not invertible (rotation block determinant {det:.3g})")
    err = float(np.abs(rot.T @ rot - np.eye(3)).max())
    if err > POSE_ATOL:
        raise _frame_error(
            scene_file, i, frame,
            f"'w2c' is not a rigid transform: rotation block is not orthonormal (max |R^T R - I| = {err:.3g} > "
            f"{POSE_ATOL}); scaled or sheared poses are not supported",
        )
    if det < 0:
        raise _frame_error(scene_file, i, frame, "'w2c' rotation block has determinant -1 (a reflection, not a rotation)")
    return w2c


def _read_intrinsics(scene_file: Path, i: int, frame: dict) -> list[float]:
    missing = [k for k in ("fx", "fy", "cx", "cy") if k not in frame]
    if missing:
        raise _frame_error(scene_file, i, frame, f"missing intrinsics {missing} (pixels of the stored image)")
    try:
        vals = [float(frame[k]) for k in ("fx", "fy", "cx", "cy")]
    except (TypeError, ValueError) as e:
        raise _frame_error(scene_file, i, frame, f"intrinsics are not numbers ({e})") from None
    if not all(math.isfinite(v) for v in vals) or vals[0] <= 0 or vals[1] <= 0:
        raise _frame_error(scene_file, i, frame, f"invalid intrinsics fx, fy, cx, cy = {vals} (need finite, fx, fy > 0)")
    return vals


def load_scene(path: Path | str, check_images: bool = True) -> SceneFrames:
    """Read and validate a scene.

    Args:
        path: the scene folder (holding ``opencv_cameras.json``) or the json file itself.
        check_images: verify every image exists and its stored size equals the frame's ``w``, ``h`` (reads image
            headers only, fast).
    Raises:
        SceneDataError naming the file and frame for: unreadable json, no frames, missing image, missing or invalid
        intrinsics, missing / non-invertible / non-rigid pose, image size different from ``w, h``, frames of
        different sizes.
    """
    scene_file = _resolve_scene_file(Path(path))
    try:
        meta = json.loads(scene_file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SceneDataError(f"{scene_file}: cannot read scene json ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list) or not meta["frames"]:
        raise SceneDataError(f"{scene_file}: expected an object with a non-empty 'frames' list")
    root = scene_file.parent
    paths, w2cs, intr, sizes = [], [], [], []
    for i, frame in enumerate(meta["frames"]):
        if not isinstance(frame, dict) or "file_path" not in frame:
            raise _frame_error(scene_file, i, frame, "missing 'file_path'")
        img_path = (root / frame["file_path"]).resolve()
        w2cs.append(_read_pose(scene_file, i, frame))
        intr.append(_read_intrinsics(scene_file, i, frame))
        size = (frame.get("w"), frame.get("h"))
        if check_images:
            if not img_path.is_file():
                raise _frame_error(scene_file, i, frame, f"image file not found: {img_path}")
            try:
                with Image.open(img_path) as im:
                    actual = im.size
            except OSError as e:
                raise _frame_error(scene_file, i, frame, f"cannot read image {img_path} ({e})") from None
            if size == (None, None):
                size = actual
            elif tuple(size) != actual:
                raise _frame_error(
                    scene_file, i, frame,
                    f"image {img_path.name} is {actual[0]}x{actual[1]} but the frame says w x h = {size[0]}x{size[1]} "
                    "(intrinsics must be in pixels of the stored image)",
                )
        if size[0] is None or size[1] is None:
            raise _frame_error(scene_file, i, frame, "missing 'w'/'h' (and images were not checked to fill them)")
        size = (int(size[0]), int(size[1]))
        if sizes and size != sizes[0]:
            raise _frame_error(
                scene_file, i, frame,
                f"inconsistent image sizes: {size[0]}x{size[1]} here, {sizes[0][0]}x{sizes[0][1]} in frame 0; "
                "all frames of a scene must share one size",
            )
        sizes.append(size)
        paths.append(img_path)
    w2c = torch.from_numpy(np.stack(w2cs))
    return SceneFrames(
        scene_file=scene_file,
        scene_name=str(meta.get("scene_name", root.name)),
        image_paths=paths,
        c2w=conventions.w2c_to_c2w(w2c),
        fxfycxcy=torch.tensor(intr, dtype=torch.float64),
        width=sizes[0][0],
        height=sizes[0][1],
        extras={k: v for k, v in meta.items() if k not in ("frames", "scene_name")},
    )


def require_frames(scene: SceneFrames, n: int, what: str = "views") -> None:
    """Raise if the scene has fewer than ``n`` frames."""
    if len(scene) < n:
        raise SceneDataError(f"{scene.scene_file}: {n} {what} requested but the scene has only {len(scene)} frames")


# --------------------------------------------------------------------------------------------------------------------
# Image loading and resizing


@dataclass
class ResizeConfig:
    """How images are brought to the model's resolution."""

    height: Optional[int] = None
    """Target rows. With height and width None: see long_side."""
    width: Optional[int] = None
    """Target columns. Give both height and width, or neither."""
    long_side: Optional[int] = None
    """When height/width are None: target long side (multiple of patch_size); the short side follows the image's
    aspect ratio, rounded down to a patch multiple. None: the stored size rounded down to patch multiples."""
    mode: Literal["crop", "stretch"] = "crop"
    """'crop': uniform scale + centre crop, aspect preserved (clean); 'stretch': independent x/y scales (official)."""
    orientation: Literal["auto", "fixed"] = "auto"
    """'auto': swap target height and width when the image orientation differs (portrait vs landscape)."""
    patch_size: int = 8
    """Target sides must be multiples of this."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Colour that transparent pixels (RGBA / LA / palette with transparency) are composited over; white = official."""


@dataclass(frozen=True)
class ResizePlan:
    """Resize ``src`` to ``scaled`` then crop the window ``[y0:y0+out_h, x0:x0+out_w]``."""

    src_w: int
    src_h: int
    scaled_w: int
    scaled_h: int
    x0: int
    y0: int
    out_w: int
    out_h: int

    def apply_to_intrinsics(self, fxfycxcy: Tensor) -> Tensor:
        """Intrinsics [..., 4] of the stored image -> intrinsics of the output image (pixel-centre rule)."""
        k = conventions.scale_intrinsics(fxfycxcy, self.scaled_w / self.src_w, self.scaled_h / self.src_h)
        return conventions.crop_intrinsics(k, self.x0, self.y0)


def plan_resize(src_w: int, src_h: int, cfg: ResizeConfig) -> ResizePlan:
    """Compute the resize + crop taking a ``src_w x src_h`` image to the configured target."""
    p = cfg.patch_size
    if (cfg.height is None) != (cfg.width is None):
        raise ValueError(f"give both resize height and width, or neither (got height={cfg.height}, width={cfg.width})")
    if cfg.height is not None and cfg.width is not None:
        tw, th = cfg.width, cfg.height
        if cfg.orientation == "auto" and (tw - th) * (src_w - src_h) < 0:
            tw, th = th, tw
    elif cfg.long_side is not None:
        if cfg.long_side % p or cfg.long_side < p:
            raise SceneDataError(f"resize long_side {cfg.long_side} is not a positive multiple of the patch size {p}")
        # Round the short side down (as the official 960x540 -> 960x536): only a few rows are cropped.
        short = max(p, int(cfg.long_side * min(src_w, src_h) / max(src_w, src_h)) // p * p)
        tw, th = (cfg.long_side, short) if src_w >= src_h else (short, cfg.long_side)
    else:  # keep the stored resolution, cropping at most patch_size - 1 pixels per side
        if src_w < p or src_h < p:
            raise SceneDataError(f"image {src_w}x{src_h} is smaller than one {p}x{p} patch")
        tw, th = src_w // p * p, src_h // p * p
    if tw % p or th % p:
        hint = f"e.g. {th // p * p}x{tw // p * p}" if th >= p and tw >= p else f"at least {p}x{p}"
        raise SceneDataError(
            f"target image size {th}x{tw} (HxW) is not a multiple of the patch size {p} ({hint}); "
            "set the resize height/width accordingly"
        )
    if cfg.mode == "stretch":
        return ResizePlan(src_w, src_h, tw, th, 0, 0, tw, th)
    if cfg.mode != "crop":
        raise ValueError(f"resize mode must be 'crop' or 'stretch', got {cfg.mode!r}")
    s = max(tw / src_w, th / src_h)
    # Round the scaled size but never below the target (floating error could make the crop window too large).
    sw, sh = max(tw, round(src_w * s)), max(th, round(src_h * s))
    return ResizePlan(src_w, src_h, sw, sh, (sw - tw) // 2, (sh - th) // 2, tw, th)


def load_image(path: Path, plan: Optional[ResizePlan] = None, background=(1.0, 1.0, 1.0)) -> Tensor:
    """Load one image as float32 [3, H, W] in [0, 1], resized per ``plan`` (Lanczos), alpha composited on ``background``.

    Order follows the official loader: resize first (RGBA resized as a whole), then composite, then crop.
    """
    with Image.open(path) as im:
        im.load()
        has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
        im = im.convert("RGBA" if has_alpha else "RGB")
        if plan is not None and (plan.scaled_w, plan.scaled_h) != im.size:
            im = im.resize((plan.scaled_w, plan.scaled_h), Image.LANCZOS)
        arr = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy())  # [h, w, 3|4]
    x = arr.permute(2, 0, 1).float() / 255.0
    if has_alpha:
        alpha = x[3:4]
        bg = torch.tensor(background, dtype=x.dtype).view(3, 1, 1)
        x = x[:3] * alpha + bg * (1 - alpha)
    if plan is not None:
        x = x[:, plan.y0 : plan.y0 + plan.out_h, plan.x0 : plan.x0 + plan.out_w]
    return x.contiguous()


def resize_tensor_images(images: Tensor, plan: ResizePlan) -> Tensor:
    """Resize + crop already-loaded images [..., 3, h, w] in [0, 1] per ``plan`` -> [..., 3, H, W].

    For images held in memory (e.g. nerfstudio's cached ones). Uses antialiased bicubic interpolation, so values
    differ slightly from :func:`load_image`'s PIL Lanczos, but geometry (and hence intrinsics) is identical.
    """
    if images.shape[-2:] != (plan.src_h, plan.src_w):
        raise ValueError(f"images are {tuple(images.shape[-2:])} (HxW), the plan expects {(plan.src_h, plan.src_w)}")
    lead = images.shape[:-3]
    x = images.reshape(-1, *images.shape[-3:]).float()
    if (plan.scaled_w, plan.scaled_h) != (plan.src_w, plan.src_h):
        x = torch.nn.functional.interpolate(
            x, size=(plan.scaled_h, plan.scaled_w), mode="bicubic", antialias=True, align_corners=False
        ).clamp(0, 1)
    x = x[..., plan.y0 : plan.y0 + plan.out_h, plan.x0 : plan.x0 + plan.out_w]
    return x.reshape(*lead, *x.shape[-3:]).contiguous()


@dataclass
class LoadedViews:
    """Views ready for the model.

    images [V, 3, H, W] float32 in [0, 1]; c2w [V, 4, 4] float64 OpenCV (not normalised); fxfycxcy [V, 4] float64
    for the H x W images; indices: file frame indices of the views.
    """

    images: Tensor
    c2w: Tensor
    fxfycxcy: Tensor
    indices: list[int]


def load_views(scene: SceneFrames, indices: Sequence[int], resize: ResizeConfig = ResizeConfig()) -> LoadedViews:
    """Load the frames ``indices`` of ``scene`` resized per ``resize``."""
    idx = [int(i) for i in indices]
    bad = [i for i in idx if not 0 <= i < len(scene)]
    if bad:
        raise SceneDataError(f"{scene.scene_file}: frame indices {bad} out of range 0..{len(scene) - 1}")
    plan = plan_resize(scene.width, scene.height, resize)
    images = []
    for i in idx:
        try:
            img = load_image(scene.image_paths[i], plan, resize.background)
        except OSError as e:
            raise SceneDataError(f"{scene.scene_file}: {scene.frame_name(i)}: cannot load image ({e})") from None
        images.append(img)
    return LoadedViews(
        images=torch.stack(images),
        c2w=scene.c2w[idx].clone(),
        fxfycxcy=plan.apply_to_intrinsics(scene.fxfycxcy[idx]),
        indices=idx,
    )

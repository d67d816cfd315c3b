"""nerfstudio DataParser for ``opencv_cameras.json`` scenes (the Long-LRM / DL3DV layout), registered as
``opencv-cameras``.

Frames (reading and validation: :mod:`tttlrm_ns.data.scene`)
    The file's OpenCV c2w (x right, y down, z forward) is flipped to nerfstudio's OpenGL camera axes
    (:mod:`tttlrm_ns.conventions`); the world frame is unchanged by that flip.

World frame
    Default: keep the file's world axes and only scale positions so every camera centre lies in [-1, 1]^3
    (``auto_scale_poses``). nerfstudio's auto-orientation / centring is available through ``orientation_method`` /
    ``center_method``. Either way the similarity is stored as ``dataparser_transform`` ([3, 4], rigid) and
    ``dataparser_scale`` with nerfstudio's meaning ``x_ns = scale * (T[:, :3] x_file + T[:, 3])``, so exports
    (``ns-export``) can be mapped back to the file's frame
    (``conventions.Similarity.from_nerfstudio(transform, scale).invert_points``).

Splits
    ``eval_mode="interval"`` (default, the paper's protocol): every ``eval_interval``-th frame (index ≡ 0) is held out.
    ``"fraction"``: nerfstudio's evenly spaced ``train_split_fraction``. ``"all"``: every frame in both splits.
    ``train_frames`` restricts the train split to a list of frames (a baseline trained on exactly the N input views).
    Transforms are computed from all frames, so train and eval cameras share one frame.

Folders from ``ns-process-data``
    A ``--data`` folder with a ``transforms.json`` and no ``opencv_cameras.json`` (or ``--data`` naming a
    ``transforms.json``) is read by nerfstudio's ``nerfstudio-data`` parser with its defaults, exactly as
    ``ns-train tttlrm --data DIR nerfstudio-data`` would; the choice and its reason are logged
    (:meth:`OpencvCamerasDataParserConfig.setup`). This parser's options then do not apply; give the
    ``nerfstudio-data`` subcommand to set that parser's options.

Metadata (``DataparserOutputs.metadata``) for the tttLRM method: ``opencv_scene_file`` (str), ``frame_indices``
(file frame index of each camera of this split), ``opencv_c2w`` (their OpenCV c2w [n, 4, 4] float64 as the file
stores them: the input-view k-means runs on these, as :func:`tttlrm_ns.data.views.paper_protocol` does; nerfstudio's
float32 cameras would move near-ties), ``scene_extras`` (top-level json keys such as ``fold_8_kmeans_32_input``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Tuple, Type

import torch
from nerfstudio.cameras import camera_utils
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.data.utils.dataparsers_utils import get_train_eval_split_fraction
from nerfstudio.plugins.registry_dataparser import DataParserSpecification

from tttlrm_ns import conventions
from tttlrm_ns.data.scene import SceneFrames, load_scene
from tttlrm_ns.data.views import eval_split


@dataclass
class OpencvCamerasDataParserConfig(DataParserConfig):
    """Scenes stored as ``opencv_cameras.json`` + images (Long-LRM / DL3DV / tttLRM layout)."""

    _target: Type = field(default_factory=lambda: OpencvCameras)
    data: Path = Path()
    """Scene folder holding opencv_cameras.json, or the json file itself."""
    eval_mode: Literal["interval", "fraction", "all"] = "interval"
    """'interval': hold out every eval_interval-th frame (paper protocol); 'fraction': evenly spaced
    train_split_fraction for training; 'all': all frames in both splits."""
    eval_interval: int = 8
    """Hold out frames whose index is a multiple of this (eval_mode='interval')."""
    train_split_fraction: float = 0.9
    """Fraction of frames used for training (eval_mode='fraction')."""
    orientation_method: Literal["none", "up", "pca", "vertical"] = "none"
    """Re-orient the world like nerfstudio's own dataparsers ('none' keeps the file's axes)."""
    center_method: Literal["none", "poses", "focus"] = "none"
    """Re-centre the world like nerfstudio's own dataparsers ('none' keeps the file's origin)."""
    auto_scale_poses: bool = True
    """Scale positions so all camera centres lie in [-1, 1]^3."""
    scale_factor: float = 1.0
    """Extra scale applied on top of auto_scale_poses."""
    scene_scale: float = 1.0
    """Half-size of the scene box (in the scaled frame)."""
    background: Optional[Tuple[float, float, float]] = (1.0, 1.0, 1.0)
    """Colour that RGBA images are composited over (white, as the official loader); None keeps RGBA untouched."""
    check_images: bool = True
    """Check that every image exists and has the frame's w x h (reads headers only)."""
    train_frames: Optional[Tuple[int, ...]] = None
    """Restrict the train split to these file frame indices (e.g. the N input views of an evaluation, so a
    per-scene optimiser sees exactly the feed-forward model's inputs); each must be in the train split. The eval
    split and the world transform are unchanged."""

    def setup(self, **kwargs) -> DataParser:
        """This parser, or nerfstudio's ``nerfstudio-data`` for an ``ns-process-data`` folder (see the module
        docstring): the tttlrm methods default to this parser, and users of nerfstudio's own capture tools would
        otherwise have to know to add the subcommand."""
        reason = nerfstudio_data_reason(self.data)
        if reason is None:
            return super().setup(**kwargs)
        from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
        from nerfstudio.utils.rich_utils import CONSOLE

        CONSOLE.log(
            f"dataparser: nerfstudio-data (its defaults, as `... nerfstudio-data` would give) instead of "
            f"opencv-cameras: {reason}. To set its options, end the command with `nerfstudio-data` and them "
            "(`ns-train tttlrm nerfstudio-data --help` lists them)."
        )
        return NerfstudioDataParserConfig(data=self.data).setup(**kwargs)


def nerfstudio_data_reason(data: Path) -> Optional[str]:
    """Why ``data`` is a nerfstudio ``transforms.json`` scene rather than an ``opencv_cameras.json`` one, or None."""
    data = Path(data)
    if data.is_file() and data.name == "transforms.json":
        return f"{data} is a nerfstudio transforms.json"
    if data.is_dir() and (data / "transforms.json").is_file() and not (data / "opencv_cameras.json").exists():
        return f"{data} holds transforms.json (ns-process-data's layout) and no opencv_cameras.json"
    return None


@dataclass
class OpencvCameras(DataParser):
    """DataParser for ``opencv_cameras.json`` scenes; see the module docstring."""

    config: OpencvCamerasDataParserConfig

    def __init__(self, config: OpencvCamerasDataParserConfig):
        super().__init__(config=config)
        self.config = config
        self._scene: Optional[SceneFrames] = None

    @property
    def scene(self) -> SceneFrames:
        if self._scene is None:
            self._scene = load_scene(self.config.data, check_images=self.config.check_images)
        return self._scene

    def split_indices(self, split: str) -> list[int]:
        """File frame indices of ``split`` ('train' or anything else = eval)."""
        n = len(self.scene)
        cfg = self.config
        if cfg.eval_mode == "interval":
            train, test = eval_split(n, cfg.eval_interval)
        elif cfg.eval_mode == "fraction":
            tr, te = get_train_eval_split_fraction(list(range(n)), cfg.train_split_fraction)
            train, test = tr.tolist(), te.tolist()
        elif cfg.eval_mode == "all":
            train = test = list(range(n))
        else:
            raise ValueError(f"eval_mode must be interval/fraction/all, got {cfg.eval_mode!r}")
        if split == "train" and cfg.train_frames is not None:
            train = self._restrict(train, cfg.train_frames, n)
        idx = train if split == "train" else test
        if not idx:
            raise ValueError(f"{self.scene.scene_file}: the {split!r} split is empty ({n} frames, eval_mode={cfg.eval_mode})")
        return [int(i) for i in idx]

    def _restrict(self, train: list[int], frames: Tuple[int, ...], n: int) -> list[int]:
        where = f"{self.scene.scene_file}: --train-frames"
        if not frames:
            raise ValueError(f"{where} is empty; give at least one frame index or leave it unset")
        bad = [int(f) for f in frames if not 0 <= int(f) < n]
        if bad:
            raise ValueError(f"{where} lists frames {bad} outside 0..{n - 1}")
        allowed = set(train)
        held = [int(f) for f in frames if int(f) not in allowed]
        if held:
            raise ValueError(
                f"{where} lists frames {held} that are not in the train split (eval_mode={self.config.eval_mode}, "
                f"eval_interval={self.config.eval_interval}: they are held out for evaluation)"
            )
        return sorted({int(f) for f in frames})

    def world_transform(self) -> tuple[torch.Tensor, float, torch.Tensor]:
        """(dataparser_transform [3, 4] float64, dataparser_scale, all OpenGL c2w [F, 4, 4] float64 in ns frame)."""
        cfg = self.config
        c2w_gl = conventions.opencv_to_opengl_c2w(self.scene.c2w)  # [F, 4, 4] float64
        if cfg.orientation_method == "none" and cfg.center_method == "none":
            transform = torch.eye(4, dtype=torch.float64)[:3]
            poses = c2w_gl.clone()
        else:
            # nerfstudio's helper mixes in float32 constants, so it must run in float32.
            poses34, transform = camera_utils.auto_orient_and_center_poses(
                c2w_gl.float(), method=cfg.orientation_method, center_method=cfg.center_method
            )
            poses = conventions.to_homogeneous_pose(poses34.double())
            transform = transform.double()
        scale = 1.0
        if cfg.auto_scale_poses:
            extent = float(poses[:, :3, 3].abs().max())
            if extent > 1e-9:  # a single camera at the origin cannot be scaled
                scale = 1.0 / extent
        scale *= cfg.scale_factor
        poses[:, :3, 3] *= scale
        return transform, scale, poses

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        scene = self.scene
        idx = self.split_indices(split)
        transform, scale, poses = self.world_transform()
        poses = poses[idx]
        k = scene.fxfycxcy[idx].float()
        n = len(idx)
        cameras = Cameras(
            camera_to_worlds=poses[:, :3, :4].float(),
            fx=k[:, 0:1],
            fy=k[:, 1:2],
            cx=k[:, 2:3],
            cy=k[:, 3:4],
            width=torch.full((n, 1), scene.width, dtype=torch.int32),
            height=torch.full((n, 1), scene.height, dtype=torch.int32),
            camera_type=CameraType.PERSPECTIVE,
        )
        b = self.config.scene_scale
        return DataparserOutputs(
            image_filenames=[scene.image_paths[i] for i in idx],
            cameras=cameras,
            alpha_color=None if self.config.background is None else torch.tensor(self.config.background),
            scene_box=SceneBox(aabb=torch.tensor([[-b, -b, -b], [b, b, b]], dtype=torch.float32)),
            dataparser_transform=transform.float(),
            dataparser_scale=scale,
            metadata={
                "opencv_scene_file": str(scene.scene_file),
                "frame_indices": idx,
                "opencv_c2w": scene.c2w[idx].clone(),
                "scene_extras": dict(scene.extras),
            },
        )


opencv_cameras_dataparser = DataParserSpecification(
    config=OpencvCamerasDataParserConfig(),
    description="opencv_cameras.json scenes (Long-LRM / DL3DV layout: OpenCV w2c + pixel intrinsics per frame); "
    "paper eval split (every 8th frame held out) by default",
)

"""The opencv-cameras nerfstudio DataParser: frames, splits, transforms and nerfstudio's own consumers."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tttlrm_ns import conventions as cv
from tttlrm_ns.data.dataparser import OpencvCamerasDataParserConfig, opencv_cameras_dataparser
from tttlrm_ns.data.scene import SceneDataError, load_scene

MINI = Path(__file__).parent / "assets" / "mydesk_mini"


def parse(split="train", **kw):
    return OpencvCamerasDataParserConfig(data=MINI, **kw).setup().get_dataparser_outputs(split)


def test_specification_object():
    from nerfstudio.plugins.registry_dataparser import DataParserSpecification

    assert isinstance(opencv_cameras_dataparser, DataParserSpecification)
    assert isinstance(opencv_cameras_dataparser.config, OpencvCamerasDataParserConfig)
    assert opencv_cameras_dataparser.config.eval_mode == "interval"


def test_default_outputs_keep_file_frame_scaled():
    scene = load_scene(MINI)
    out = parse("train")
    idx = [1, 2, 3, 4, 5, 6, 7, 9]
    assert out.metadata["frame_indices"] == idx
    assert [p.name for p in out.image_filenames] == [scene.image_paths[i].name for i in idx]
    cams = out.cameras
    assert cams.camera_to_worlds.shape == (8, 3, 4) and cams.camera_to_worlds.dtype == torch.float32
    assert int(cams.width[0]) == 480 and int(cams.height[0]) == 270
    torch.testing.assert_close(cams.fx[:, 0], scene.fxfycxcy[idx, 0].float())
    torch.testing.assert_close(cams.cy[:, 0], scene.fxfycxcy[idx, 3].float())
    # Default: identity transform, positions scaled into [-1, 1]^3 (over all frames), OpenGL axes.
    torch.testing.assert_close(out.dataparser_transform, torch.eye(4)[:3])
    s = out.dataparser_scale
    assert abs(s - 1.0 / float(scene.c2w[:, :3, 3].abs().max())) < 1e-12
    expect = cv.opencv_to_opengl_c2w(scene.c2w[idx])
    expect[:, :3, 3] *= s
    torch.testing.assert_close(cams.camera_to_worlds, expect[:, :3].float())
    assert float(out.cameras.camera_to_worlds[:, :, 3].abs().max()) <= 1.0
    assert out.alpha_color is not None and out.alpha_color.tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("orient,center", [("none", "none"), ("up", "poses"), ("pca", "focus")])
def test_nerfstudio_inverse_transform_recovers_file_poses(orient, center):
    """nerfstudio's own transform_poses_to_original_space undoes what the dataparser stored."""
    scene = load_scene(MINI)
    out = parse("test", orientation_method=orient, center_method=center)
    assert out.metadata["frame_indices"] == [0, 8]
    orig = out.transform_poses_to_original_space(out.cameras.camera_to_worlds, camera_convention="opencv")
    torch.testing.assert_close(orig.double(), scene.c2w[[0, 8], :3], atol=1e-4, rtol=0)
    sim = cv.Similarity.from_nerfstudio(out.dataparser_transform, out.dataparser_scale)
    # Our reading of the stored similarity agrees with nerfstudio's, for cameras and for points.
    ours = cv.opengl_to_opencv_c2w(sim.invert(out.cameras.camera_to_worlds.double()))  # [2, 3, 4]
    torch.testing.assert_close(ours, orig.double(), atol=1e-5, rtol=0)
    pts = torch.randn(20, 3, dtype=torch.float64)
    torch.testing.assert_close(sim.invert_points(sim.apply_points(pts)), pts, atol=1e-5, rtol=0)


def test_nerfstudio_rays_hit_the_right_pixels():
    """Rays nerfstudio generates for pixel (u, v) project back to (u+0.5, v+0.5) with the file's OpenCV camera."""
    scene = load_scene(MINI)
    out = parse("train", orientation_method="up", center_method="poses")
    cam_i, frame = 3, out.metadata["frame_indices"][3]
    coords = torch.tensor([[0.5, 0.5], [100.5, 37.5], [269.5, 479.5]])  # (row, col) pixel centres, nerfstudio order
    rays = out.cameras.generate_rays(camera_indices=cam_i, coords=coords)
    pts_ns = rays.origins + 2.0 * rays.directions  # [3, 3]
    pts_file = cv.Similarity.from_nerfstudio(out.dataparser_transform, out.dataparser_scale).invert_points(
        pts_ns.double())
    uv = cv.project_points(pts_file, cv.c2w_to_w2c(scene.c2w[frame]), scene.fxfycxcy[frame])
    torch.testing.assert_close(uv, coords.flip(-1).double(), atol=2e-3, rtol=0)


def test_splits():
    tr = parse("train", eval_mode="fraction", train_split_fraction=0.7)
    te = parse("val", eval_mode="fraction", train_split_fraction=0.7)
    assert len(tr.image_filenames) == 7 and len(te.image_filenames) == 3
    assert not set(tr.metadata["frame_indices"]) & set(te.metadata["frame_indices"])
    assert parse("train", eval_mode="all").metadata["frame_indices"] == list(range(10))
    assert parse("test", eval_mode="interval", eval_interval=3).metadata["frame_indices"] == [0, 3, 6, 9]


def test_images_load_through_nerfstudio_dataset():
    from nerfstudio.data.datasets.base_dataset import InputDataset

    out = parse("train")
    ds = InputDataset(out)
    img = ds[0]["image"]
    assert img.shape == (270, 480, 3)
    ref = torch.from_numpy(np.asarray(Image.open(out.image_filenames[0]), dtype=np.float32) / 255.0)
    torch.testing.assert_close(img, ref)


def test_bad_data_errors_name_the_frame(tmp_path):
    dst = tmp_path / "scene"
    shutil.copytree(MINI, dst)
    meta = json.loads((dst / "opencv_cameras.json").read_text())
    (dst / meta["frames"][6]["file_path"]).unlink()
    with pytest.raises(SceneDataError, match=r"frame 6 \(images/frame260\.jpg\): image file not found"):
        OpencvCamerasDataParserConfig(data=dst).setup().get_dataparser_outputs("train")
    with pytest.raises(SceneDataError, match="scene file not found"):
        OpencvCamerasDataParserConfig(data=tmp_path / "nowhere").setup().get_dataparser_outputs("train")


def _ns_scene(tmp_path: Path) -> Path:
    from test_ns_pipeline import nerfstudio_scene  # tests/ is on sys.path (rootdir conftest, no package)

    return nerfstudio_scene(tmp_path / "ns_scene")


def test_transforms_json_folder_is_read_by_nerfstudio_data_and_says_so(tmp_path, capsys):
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import Nerfstudio, NerfstudioDataParserConfig

    data = _ns_scene(tmp_path)
    parser = OpencvCamerasDataParserConfig(data=data).setup()
    log = capsys.readouterr().out
    assert isinstance(parser, Nerfstudio)
    assert "dataparser: nerfstudio-data" in log and "no opencv_cameras.json" in log
    # exactly what `ns-train tttlrm --data DIR nerfstudio-data` gives
    got = parser.get_dataparser_outputs("train")
    want = NerfstudioDataParserConfig(data=data).setup().get_dataparser_outputs("train")
    assert got.image_filenames == want.image_filenames
    torch.testing.assert_close(got.cameras.camera_to_worlds, want.cameras.camera_to_worlds)
    # --data naming the file itself
    assert isinstance(OpencvCamerasDataParserConfig(data=data / "transforms.json").setup(), Nerfstudio)


def test_opencv_cameras_json_wins_when_both_are_present(tmp_path, capsys):
    from tttlrm_ns.data.dataparser import OpencvCameras

    data = _ns_scene(tmp_path)
    shutil.copy(MINI / "opencv_cameras.json", data / "opencv_cameras.json")
    assert type(OpencvCamerasDataParserConfig(data=data).setup()) is OpencvCameras
    assert type(OpencvCamerasDataParserConfig(data=MINI).setup()) is OpencvCameras
    assert "nerfstudio-data" not in capsys.readouterr().out


@pytest.mark.parametrize("method", ["tttlrm", "tttlrm-ar", "tttlrm-object", "tttlrm-refine3"])
def test_methods_default_dataparser_reads_an_ns_process_data_folder(method, tmp_path):
    """The methods' datamanager as `ns-train METHOD --data DIR` sets it up (no dataparser subcommand)."""
    import copy

    from nerfstudio.data.dataparsers.nerfstudio_dataparser import Nerfstudio

    from tttlrm_ns import method_configs as mc

    configs = {"tttlrm": mc.tttlrm_config, "tttlrm-ar": mc.tttlrm_ar_config, "tttlrm-object": mc.tttlrm_object_config,
               "tttlrm-refine3": mc.tttlrm_refine3_config}
    dm_config = copy.deepcopy(configs[method].pipeline.datamanager)
    assert isinstance(dm_config.dataparser, OpencvCamerasDataParserConfig)
    dm_config.data = _ns_scene(tmp_path)
    dm = dm_config.setup(device="cpu", test_mode="val")
    assert isinstance(dm.dataparser, Nerfstudio)
    assert len(dm.train_dataset) + len(dm.eval_dataset) == 10  # mydesk_mini's frames, 90/10 (nerfstudio's default)

"""opencv_cameras.json reading, validation messages, image loading and resizing with matching intrinsics."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tttlrm_ns.data.scene import (
    ResizeConfig,
    SceneDataError,
    load_image,
    load_scene,
    load_views,
    plan_resize,
    require_frames,
    resize_tensor_images,
)
from tttlrm_ns.data.views import kmeans_views, select_evenly_spaced

MINI = Path(__file__).parent / "assets" / "mydesk_mini"


@pytest.fixture
def scene_copy(tmp_path):
    """A writable copy of the mini scene; returns (folder, json dict, save function)."""
    dst = tmp_path / "scene"
    shutil.copytree(MINI, dst)
    meta = json.loads((dst / "opencv_cameras.json").read_text())

    def save():
        (dst / "opencv_cameras.json").write_text(json.dumps(meta))

    return dst, meta, save


def test_load_mini_scene():
    s = load_scene(MINI)
    assert len(s) == 10 and (s.width, s.height) == (480, 270) and s.scene_name == "mydesk_mini"
    assert s.c2w.dtype == torch.float64 and s.c2w.shape == (10, 4, 4)
    assert s.fxfycxcy.shape == (10, 4)
    meta = json.loads((MINI / "opencv_cameras.json").read_text())
    w2c0 = torch.tensor(meta["frames"][3]["w2c"], dtype=torch.float64)
    torch.testing.assert_close(s.c2w[3] @ w2c0, torch.eye(4, dtype=torch.float64), atol=1e-12, rtol=0)
    assert s.image_paths[3].name == Path(meta["frames"][3]["file_path"]).name
    # The json file path works as well as the folder.
    assert len(load_scene(MINI / "opencv_cameras.json")) == 10


def _expect(folder, match):
    with pytest.raises(SceneDataError, match=match):
        load_scene(folder)


def test_missing_image_names_frame(scene_copy):
    folder, meta, _ = scene_copy
    (folder / meta["frames"][4]["file_path"]).unlink()
    _expect(folder, r"frame 4 \(images/frame180\.jpg\): image file not found")


def test_image_size_mismatch_names_frame(scene_copy):
    folder, meta, save = scene_copy
    meta["frames"][2]["w"] = 640
    save()
    _expect(folder, r"frame 2 \(images/frame100\.jpg\): image frame100\.jpg is 480x270 but the frame says w x h = 640x270")


def test_inconsistent_sizes_between_frames(scene_copy):
    folder, meta, save = scene_copy
    p = folder / meta["frames"][5]["file_path"]
    Image.open(p).resize((240, 135)).save(p)
    meta["frames"][5].update(w=240, h=135)
    save()
    _expect(folder, r"frame 5 \(images/frame220\.jpg\): inconsistent image sizes: 240x135 here, 480x270 in frame 0")


def test_non_invertible_pose(scene_copy):
    folder, meta, save = scene_copy
    w2c = np.array(meta["frames"][6]["w2c"])
    w2c[:3, :3] = 0.0
    meta["frames"][6]["w2c"] = w2c.tolist()
    save()
    _expect(folder, r"frame 6 \(images/frame260\.jpg\): 'w2c' is not invertible")


def test_non_rigid_pose(scene_copy):
    folder, meta, save = scene_copy
    w2c = np.array(meta["frames"][1]["w2c"])
    w2c[:3, :3] *= 2.0
    meta["frames"][1]["w2c"] = w2c.tolist()
    save()
    _expect(folder, r"frame 1 \(images/frame60\.jpg\): 'w2c' is not a rigid transform: rotation block is not orthonormal")


def test_reflection_pose(scene_copy):
    folder, meta, save = scene_copy
    w2c = np.array(meta["frames"][7]["w2c"])
    w2c[0, :3] *= -1
    meta["frames"][7]["w2c"] = w2c.tolist()
    save()
    _expect(folder, r"frame 7 \(images/frame300\.jpg\): 'w2c' rotation block has determinant -1")


def test_nan_and_missing_pose(scene_copy):
    folder, meta, save = scene_copy
    meta["frames"][3]["w2c"][0][0] = float("nan")
    save()
    _expect(folder, r"frame 3 .*NaN or infinite")
    del meta["frames"][3]["w2c"]
    save()
    _expect(folder, r"frame 3 \(images/frame140\.jpg\): missing 'w2c'")


def test_missing_intrinsics(scene_copy):
    folder, meta, save = scene_copy
    del meta["frames"][8]["fx"], meta["frames"][8]["cy"]
    save()
    _expect(folder, r"frame 8 \(images/frame340\.jpg\): missing intrinsics \['fx', 'cy'\]")
    meta["frames"][8].update(fx=-3.0, cy=10.0)
    save()
    _expect(folder, r"frame 8 .*invalid intrinsics")


def test_missing_scene_file_and_empty_frames(tmp_path):
    with pytest.raises(SceneDataError, match="scene file not found"):
        load_scene(tmp_path)
    (tmp_path / "opencv_cameras.json").write_text(json.dumps({"frames": []}))
    with pytest.raises(SceneDataError, match="non-empty 'frames'"):
        load_scene(tmp_path)


def test_fewer_frames_than_requested_views():
    s = load_scene(MINI)
    with pytest.raises(SceneDataError, match="16 views requested but the scene has only 10 frames"):
        require_frames(s, 16)
    with pytest.raises(SceneDataError, match="12 input views requested but only 10 frames are available"):
        kmeans_views(s.c2w, 12)
    with pytest.raises(SceneDataError, match="11 views requested"):
        select_evenly_spaced(10, 11)


# ---------------------------------------------------------------------------------------------------------------
# Resizing


def _marker_image(w, h, u, v, size=3):
    """Black image with a white (2*size+1)^2 square centred on pixel (u, v)."""
    a = np.zeros((h, w, 3), np.uint8)
    a[v - size : v + size + 1, u - size : u + size + 1] = 255
    return Image.fromarray(a)


def _centroid(img):  # img [3, H, W] -> continuous (x, y) of the bright blob (pixel-centre rule)
    m = img.mean(0).clamp_min(0).double()
    m = torch.where(m > 0.2, m, torch.zeros_like(m))
    ys, xs = torch.meshgrid(torch.arange(m.shape[0]), torch.arange(m.shape[1]), indexing="ij")
    return float((m * (xs + 0.5)).sum() / m.sum()), float((m * (ys + 0.5)).sum() / m.sum())


@pytest.mark.parametrize(
    "src,target,mode",
    [
        ((480, 270), (144, 256), "crop"),  # landscape, aspect differs slightly -> crop rows
        ((480, 270), (136, 256), "crop"),
        ((480, 270), (136, 256), "stretch"),  # official anisotropic resize
        ((270, 480), (144, 256), "crop"),  # portrait image, landscape target -> auto-swapped to 256x144
        ((300, 300), (128, 256), "crop"),  # square image -> crop rows
    ],
)
def test_resize_keeps_intrinsics_consistent(tmp_path, src, target, mode):
    """A marker at a known world point stays where the resized intrinsics project it."""
    w0, h0 = src
    u, v = int(w0 * 0.61), int(h0 * 0.43)
    path = tmp_path / "m.png"
    _marker_image(w0, h0, u, v).save(path)
    cfg = ResizeConfig(height=target[0], width=target[1], mode=mode, patch_size=8)
    plan = plan_resize(w0, h0, cfg)
    img = load_image(path, plan)
    exp_hw = target if (target[1] - target[0]) * (w0 - h0) >= 0 else target[::-1]
    assert img.shape == (3, *exp_hw)
    if mode == "crop":  # uniform scale (up to rounding of the scaled size)
        assert abs(plan.scaled_w / w0 - plan.scaled_h / h0) < 2.0 / min(w0, h0)
    k0 = torch.tensor([0.9 * w0, 0.9 * w0, w0 / 2, h0 / 2], dtype=torch.float64)
    k1 = plan.apply_to_intrinsics(k0)
    # The marker centre sits at continuous (u+0.5, v+0.5); its normalised ray (x, y) is invariant.
    x, y = (u + 0.5 - k0[2]) / k0[0], (v + 0.5 - k0[3]) / k0[1]
    exp = (float(x * k1[0] + k1[2]), float(y * k1[1] + k1[3]))
    got = _centroid(img)
    assert abs(got[0] - exp[0]) < 0.3 and abs(got[1] - exp[1]) < 0.3, (got, exp)
    # In-memory tensors resize with the same geometry.
    full = load_image(path)
    img_t = resize_tensor_images(full[None], plan)[0]
    assert img_t.shape == img.shape
    got_t = _centroid(img_t)
    assert abs(got_t[0] - exp[0]) < 0.3 and abs(got_t[1] - exp[1]) < 0.3, (got_t, exp)


def test_resize_target_must_be_patch_multiple():
    with pytest.raises(SceneDataError, match=r"target image size 270x480 \(HxW\) is not a multiple of the patch size 8 \(e\.g\. 264x480\)"):
        plan_resize(480, 270, ResizeConfig(height=270, width=480, patch_size=8))
    with pytest.raises(ValueError, match="both resize height and width"):
        plan_resize(480, 270, ResizeConfig(height=272))
    plan = plan_resize(480, 270, ResizeConfig(height=272, width=480, orientation="fixed"))
    assert (plan.out_h, plan.out_w) == (272, 480) and plan.x0 >= 0 and plan.y0 == 0


def test_resize_default_and_long_side_targets():
    # No target: stored size cropped down to patch multiples, no scaling.
    plan = plan_resize(480, 270, ResizeConfig(patch_size=8))
    assert (plan.out_w, plan.out_h, plan.scaled_w, plan.scaled_h, plan.x0, plan.y0) == (480, 264, 480, 270, 0, 3)
    # Long side: aspect-preserving target, both orientations.
    plan = plan_resize(480, 270, ResizeConfig(long_side=256, patch_size=8))
    assert (plan.out_h, plan.out_w) == (144, 256)
    plan = plan_resize(270, 480, ResizeConfig(long_side=960, patch_size=8))
    assert (plan.out_h, plan.out_w) == (960, 536)
    with pytest.raises(SceneDataError, match="long_side 250 is not a positive multiple"):
        plan_resize(480, 270, ResizeConfig(long_side=250, patch_size=8))


def test_rgba_composited_over_background(tmp_path):
    a = np.zeros((16, 16, 4), np.uint8)
    a[..., 0] = 200
    a[:8, :, 3] = 255  # top half opaque red-ish, bottom transparent
    a[8:12, :, 3] = 128
    Image.fromarray(a, "RGBA").save(tmp_path / "a.png")
    white = load_image(tmp_path / "a.png")
    black = load_image(tmp_path / "a.png", background=(0.0, 0.0, 0.0))
    torch.testing.assert_close(white[:, 0, 0], torch.tensor([200 / 255, 0, 0]))
    torch.testing.assert_close(white[:, 15, 0], torch.ones(3))
    torch.testing.assert_close(black[:, 15, 0], torch.zeros(3))
    al = 128 / 255
    torch.testing.assert_close(white[:, 9, 0], torch.tensor([200 / 255 * al + 1 - al, 1 - al, 1 - al]))


def test_load_views_mini_scene():
    s = load_scene(MINI)
    views = load_views(s, [0, 3, 9], ResizeConfig(height=128, width=224))
    assert views.images.shape == (3, 3, 128, 224) and views.images.dtype == torch.float32
    assert 0 <= float(views.images.min()) and float(views.images.max()) <= 1
    assert views.c2w.shape == (3, 4, 4) and views.fxfycxcy.shape == (3, 4) and views.indices == [0, 3, 9]
    # Uniform scale: focal lengths scale by the same factor as the image (224 / 480 up to size rounding).
    ratio = views.fxfycxcy[:, 0] / s.fxfycxcy[[0, 3, 9], 0]
    assert torch.allclose(ratio, torch.full_like(ratio, 228 / 480), atol=1e-9)  # 480x270 -> 228x128 -> crop to 224
    with pytest.raises(SceneDataError, match=r"frame indices \[10\] out of range"):
        load_views(s, [10], ResizeConfig(height=128, width=224))

"""nerfstudio cameras / cached images -> model inputs (tttlrm_ns.ns.inputs)."""

import math

import torch

from tttlrm_ns import conventions
from tttlrm_ns.ns import inputs


def _rotation(seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q * torch.sign(torch.linalg.det(q))


def test_cameras_to_opencv_flips_camera_axes_only():
    c2w_cv = torch.eye(4, dtype=torch.float64).repeat(2, 1, 1)
    c2w_cv[:, :3, :3] = torch.stack([_rotation(0), _rotation(1)])
    c2w_cv[:, :3, 3] = torch.tensor([[1.0, 2, 3], [-1, 0, 0.5]], dtype=torch.float64)
    gl = conventions.opencv_to_opengl_c2w(c2w_cv)[:, :3].float()
    f = torch.tensor([[100.0], [110.0]])
    c2w, k = inputs.cameras_to_opencv(gl, f, f + 1, f / 2, f / 3)
    torch.testing.assert_close(c2w, c2w_cv, atol=1e-6, rtol=0)
    torch.testing.assert_close(k, torch.cat([f, f + 1, f / 2, f / 3], 1).double())


def test_dataparser_to_original_inverts_nerfstudio_transform():
    c2w = torch.eye(4, dtype=torch.float64).repeat(3, 1, 1)
    for i in range(3):
        c2w[i, :3, :3] = _rotation(10 + i)
        c2w[i, :3, 3] = torch.randn(3, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
    transform = torch.cat([_rotation(5), torch.tensor([[0.3], [-0.2], [1.0]], dtype=torch.float64)], 1)  # [3, 4]
    scale = 0.37
    ns = c2w.clone()  # nerfstudio: poses = transform @ poses, then translations * scale
    ns[:, :3] = transform @ c2w
    ns[:, :3, 3] *= scale
    torch.testing.assert_close(inputs.dataparser_to_original(ns, transform.float(), scale), c2w, atol=1e-6, rtol=0)


def test_prepare_images_composites_rgba_and_resizes_with_exact_intrinsics():
    h, w = 27, 48
    rgba = torch.zeros(h, w, 4, dtype=torch.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    rgba[:, : w // 2, 3] = 0  # left half transparent
    plan = inputs.make_plan(w, h, 8, long_side=96)
    assert (plan.out_w, plan.out_h) == (96, 48) and (plan.scaled_w, plan.scaled_h) == (96, 54) and plan.y0 == 3
    img = inputs.prepare_images([rgba], plan, torch.tensor([0.0, 1.0, 0.0]))[0]  # green background
    assert img.shape == (3, 48, 96)
    torch.testing.assert_close(img[:, 10, 5], torch.tensor([0.0, 1.0, 0.0]))  # background where alpha = 0
    torch.testing.assert_close(img[:, 10, 90], torch.tensor([200 / 255, 0.0, 0.0]))
    # a world point's pixel scales with the image, and the crop shifts it (pixel-centre rule)
    k = plan.apply_to_intrinsics(torch.tensor([40.0, 40.0, w / 2, h / 2], dtype=torch.float64))
    torch.testing.assert_close(k, torch.tensor([80.0, 80.0, 48.0, 27.0 - 3.0], dtype=torch.float64))
    assert math.isclose(float(k[2]), plan.out_w / 2)


def test_float_images_resize_without_pil():
    img = torch.rand(30, 40, 3)
    plan = inputs.make_plan(40, 30, 8, long_side=80)
    out = inputs.prepare_images([img], plan, torch.ones(3))[0]
    assert out.shape == (3, 56, 80) and out.min() >= 0 and out.max() <= 1
    native = inputs.prepare_images([img], inputs.make_plan(40, 30, 8), torch.ones(3))[0]
    torch.testing.assert_close(native, img.permute(2, 0, 1)[:, 3:27])  # stored size, centre-cropped to 24x40

"""Shared fixtures of the trainer tests: tiny configs, procedural scenes and a renderer.

The trainer renders through ``tttlrm_ns.render.rasterize``. The machinery tests (parallel equivalence, resume,
skipping) inject a dense pure-torch splatting stand-in with gsplat's classic semantics instead (deterministic and
independent of tile boundaries; held to the real renderer by ``test_dense_stand_in_matches_the_real_renderer``);
the end-to-end CLI run and the deferred-rendering test use the real backend (:func:`real_renderer`), and fail if
it does not work.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tttlrm_ns.conventions import c2w_to_w2c
from tttlrm_ns.sh import sh_bases
from tttlrm_ns.train.config import TrainConfig, config_from_dict
from tttlrm_ns.train.procedural import make_scene


def dense_rasterize(means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane=0.01,
                    far_plane=1e10, eps2d=0.3, sh_degree=None, backgrounds=None, **_):
    """Every Gaussian on every pixel, sorted by depth, front-to-back compositing (classic mode). [C, H, W, 3]."""
    q = torch.nn.functional.normalize(quats, dim=-1)
    w, x, y, z = q.unbind(-1)
    R = torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                     2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                     2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1).view(-1, 3, 3)
    M = R * scales[:, None, :]
    cov = M @ M.transpose(1, 2)  # [N, 3, 3]
    Rw, tw = viewmats[:, :3, :3], viewmats[:, :3, 3]
    pc = torch.einsum("cij,nj->cni", Rw, means) + tw[:, None]  # [C, N, 3]
    cc = torch.einsum("cij,njk,clk->cnil", Rw, cov, Rw)  # [C, N, 3, 3]
    fx, fy, cx, cy = Ks[:, 0, 0, None], Ks[:, 1, 1, None], Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    zz = pc[..., 2].clamp_min(1e-6)
    zero = torch.zeros_like(zz)
    J = torch.stack([fx / zz, zero, -fx * pc[..., 0] / zz**2, zero, fy / zz, -fy * pc[..., 1] / zz**2], -1)
    J = J.view(*zz.shape, 2, 3)
    cov2 = J @ cc @ J.transpose(-1, -2) + eps2d * torch.eye(2)
    conic = torch.linalg.inv(cov2)
    m2 = torch.stack([fx * pc[..., 0] / zz + cx, fy * pc[..., 1] / zz + cy], -1)  # [C, N, 2]
    valid = (pc[..., 2] > near_plane) & (pc[..., 2] < far_plane)
    if sh_degree is not None:  # SH -> RGB per camera (direction from the camera centre to the mean)
        centres = -torch.einsum("cji,cj->ci", Rw, tw)  # [C, 3]
        dirs = torch.nn.functional.normalize(means[None] - centres[:, None], dim=-1)  # [C, N, 3]
        basis = sh_bases(sh_degree, dirs)  # [C, N, K]
        rgb = (torch.einsum("cnk,nkd->cnd", basis, colors[:, : basis.shape[-1]]) + 0.5).clamp_min(0)
    else:
        rgb = colors[None].expand(viewmats.shape[0], -1, -1)
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    pix = torch.stack([xs, ys], -1).view(1, -1, 1, 2)
    d = pix - m2[:, None]  # [C, P, N, 2]
    sig = 0.5 * torch.einsum("cpni,cnij,cpnj->cpn", d, conic, d)
    alpha = (opacities * torch.exp(-sig)).clamp(max=0.999)
    alpha = torch.where((alpha >= 1 / 255) & valid[:, None], alpha, torch.zeros_like(alpha))
    order = torch.argsort(pc[..., 2], dim=-1)  # front to back
    alpha = torch.gather(alpha, 2, order[:, None].expand_as(alpha))
    col = torch.gather(rgb, 1, order[..., None].expand(-1, -1, rgb.shape[-1]))
    T = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), 1 - alpha], -1), -1)
    wgt = T[..., :-1] * alpha
    img = torch.einsum("cpn,cnd->cpd", wgt, col)
    acc = wgt.sum(-1, keepdim=True)
    if backgrounds is not None:
        img = img + (1 - acc) * backgrounds[:, None]
    C = viewmats.shape[0]
    return img.view(C, height, width, -1), acc.view(C, height, width, 1), {}


def renderer():
    """The renderer of the machinery tests: the dense stand-in (deterministic, independent of the backend build)."""
    return dense_rasterize


def real_renderer():
    """``tttlrm_ns.render.rasterize``, checked on a one-Gaussian probe. Raises if it cannot be imported or fails: a
    test that asks for the real renderer never runs on the stand-in instead."""
    try:
        from tttlrm_ns.render import rasterize

        probe = rasterize(torch.zeros(1, 3) + torch.tensor([0.0, 0.0, 2.0]), torch.tensor([[1.0, 0, 0, 0]]),
                          torch.full((1, 3), 0.1), torch.full((1,), 0.5), torch.zeros(1, 1, 3), torch.eye(4)[None],
                          torch.tensor([[[16.0, 0, 8], [0, 16, 8], [0, 0, 1]]]), 16, 16, sh_degree=0)
    except Exception as e:  # not built / broken backend: say so (the C++ build error is in the chained exception)
        raise RuntimeError(f"tttlrm_ns.render.rasterize (the real renderer) is not usable: {e}") from e
    assert probe[0].shape == (1, 16, 16, 3) and float(probe[1].max()) > 0, "the probe Gaussian was not rendered"
    return rasterize


def test_dense_stand_in_matches_the_real_renderer():
    """The machinery tests' stand-in renders what ``tttlrm_ns.render.rasterize`` renders (classic mode, SH,
    background), so a trainer result computed with it holds for the real renderer too."""
    gen = torch.Generator().manual_seed(0)
    n = 40
    means = torch.randn(n, 3, generator=gen) * 0.4 + torch.tensor([0.0, 0.0, 2.5])
    quats = torch.randn(n, 4, generator=gen)
    scales = torch.rand(n, 3, generator=gen) * 0.15 + 0.02
    opac = torch.rand(n, generator=gen) * 0.9 + 0.05
    sh = torch.randn(n, 4, 3, generator=gen) * 0.5
    c2w = torch.eye(4).repeat(2, 1, 1)
    c2w[1, :3, 3] = torch.tensor([0.3, -0.1, 0.2])
    viewmats = c2w_to_w2c(c2w)
    Ks = torch.tensor([[30.0, 0, 16], [0, 30, 12], [0, 0, 1]]).repeat(2, 1, 1)
    bg = torch.tensor([[1.0, 1.0, 1.0], [0.2, 0.4, 0.6]])
    args = (means, quats, scales, opac, sh, viewmats, Ks, 32, 24)
    kw = dict(sh_degree=1, backgrounds=bg)
    img_ref, acc_ref, _ = real_renderer()(*args, **kw)
    img, acc, _ = dense_rasterize(*args, **kw)
    assert float(acc_ref.mean()) > 0.2  # the Gaussians cover a good part of the images
    # The real renderer cuts each Gaussian at its 3-sigma tile radius and stops a pixel once its transmittance
    # falls below 1e-4; the stand-in does neither. Measured: 14 of 4608 values differ by more than 1e-3 (at most
    # 4.2e-3), mean difference 1.2e-5. A convention error (SH, background, camera, quaternion order) is > 0.1.
    for a, b in ((img, img_ref), (acc, acc_ref)):
        d = (a - b).abs()
        assert float(d.mean()) < 1e-4 and float(d.max()) < 1e-2, (float(d.mean()), float(d.max()))


def _grad_scale_name(name: str) -> str:
    """Whose gradient norm sets the scale of ``name``'s gradient error: its own, except for the TTT learning-rate
    bias. The Newton-Schulz step divides every update by its norm, so a common shift of a learning-rate channel
    nearly cancels (``docs/reference_semantics.md`` Q3): that bias's gradient is a sum of
    per-token terms that cancel to ~1e-4 of their size (measured: norm 5e-9 .. 8e-8 against 8e-5 .. 1e-3 for
    ``lr_fc.weight``), so float32 summation order alone changes it by 2-14 %. Its error is measured against the
    same per-token terms' scale, the ``lr_fc.weight`` gradient (those terms times LayerNorm'd, unit-scale inputs)."""
    return name[: -len("bias")] + "weight" if name.endswith(".f.lr_fc.bias") else name


def assert_grads_close(got: dict, ref: dict, rel: float, what: str = "") -> dict:
    """Every parameter's gradient within ``rel`` of the reference, relative to *that parameter's* gradient norm
    (a global scale would leave small-gradient parameters unchecked; see :func:`_grad_scale_name` for the one
    exception). Every reference gradient must be non-zero, so each comparison means something.
    Returns {name: relative error}."""
    assert got.keys() == ref.keys(), f"{what}: parameters differ: {sorted(set(got) ^ set(ref))}"
    errors = {}
    for k, g in ref.items():
        assert float(g.abs().max()) > 0, f"{what}: reference gradient of {k} is zero"
        norm = float(ref[_grad_scale_name(k)].double().norm())
        errors[k] = float((got[k].double() - g.double()).norm()) / norm
    bad = {k: e for k, e in errors.items() if not e <= rel}
    assert not bad, f"{what}: gradients differ by more than {rel:g} of their norm: {bad}"
    return errors


TINY_MODEL = dict(d=32, n_layer=1, attn_head_dim=16, ttt_head_dim=32, patch_size=8, sh_degree=0, ttt_inter_multi=2,
                  ns_dtype="float32")


def tiny_config(out: Path, scenes: list[Path], **sections) -> TrainConfig:
    """A tiny, fast, deterministic config (16x16 images, 4 input / 4 target views, 1-block d=32 model)."""
    values = {
        "output_dir": str(out),
        "seed": 3,
        "data": dict(scenes=[str(s) for s in scenes], height=16, width=16, window_min=6, window_max=12,
                     frames_per_window=8, num_input_views=[4], num_target_views=4, num_workers=0),
        "optim": dict(lr=3e-3, warmup_steps=1, max_steps=4, batch_size=2, micro_batch_size=1, skip_grad_norm=0.0),
        "model": TINY_MODEL,
        "loss": dict(perceptual=0.0),
        "render": dict(prune=dict(keep_top=0.5, keep_random=0.2)),
        "checkpoint": dict(every=1, keep_last=2, export=False),
        "logging": dict(tensorboard=False, progress=False, preview_every=0),
    }
    for k, v in sections.items():
        values[k] = {**values.get(k, {}), **v} if isinstance(v, dict) else v
    return config_from_dict(values)


@pytest.fixture(scope="session")
def procedural_scenes(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("procedural")
    return [make_scene(root / f"scene{i}", num_frames=16, height=24, width=24, seed=i) for i in range(2)]


def test_procedural_scene_depth_is_consistent(tmp_path):
    """The generated depth reprojects the pixel to a point on a scene plane (checked via a second ray cast)."""
    import json

    import numpy as np

    from tttlrm_ns.train.procedural import _planes, raycast

    folder = make_scene(tmp_path / "s", num_frames=3, height=12, width=16, n_quads=2, seed=5)
    meta = json.loads((folder / "opencv_cameras.json").read_text())
    f = meta["frames"][1]
    depth = np.load(folder / f["depth_path"])
    c2w = np.linalg.inv(np.array(f["w2c"]))
    v, u = 5, 7
    ray_cam = np.array([(u + 0.5 - f["cx"]) / f["fx"], (v + 0.5 - f["cy"]) / f["fy"], 1.0])
    point = c2w[:3, :3] @ (ray_cam * depth[v, u]) + c2w[:3, 3]
    # Casting from slightly in front of the point along the same ray hits at distance ~0.
    planes = _planes(np.random.default_rng(5), 2)
    d = c2w[:3, :3] @ ray_cam
    d /= np.linalg.norm(d)
    _, t = raycast(planes, point - 0.05 * d, d[None])
    assert abs(t[0] - 0.05) < 1e-6


@pytest.fixture
def single_thread():
    """Tiny tensors: one intra-op thread is faster, and much faster on a shared, busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

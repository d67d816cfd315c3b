"""tttlrm-triplane through nerfstudio: ns-train (prediction + 2 refinement steps) -> tttlrm-export-triplane ->
ns-eval; refusal of a scene capture and of a Gaussian checkpoint; the mesh extraction itself.

The object capture is made here (no GL needed): 10 cameras on a ring around the origin (OpenCV, opencv_cameras.json
layout) looking at a painted disc; a tiny random-weight triplane model (``triplane_tiny``) predicts from 4 views.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SCENE_CAPTURE = REPO / "tests" / "assets" / "mydesk_mini"


def _env() -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def _run(args, cwd: Path, ok: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
    res = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=_env())
    if ok:
        assert res.returncode == 0, f"{args[0]} failed:\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}"
    return res


def make_object_capture(root: Path, n: int = 10, res: int = 32, depth: bool = False) -> Path:
    """A disc-coloured object capture: n views around the origin at distance 2.7, no roll. ``depth``: also write the
    z-depth of a sphere of radius 0.6 at the origin (about the disc's silhouette) as ``depth_path`` .npy maps."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    frames = []
    f = res * 1.1
    yy, xx = np.mgrid[0:res, 0:res]
    for i in range(n):
        az = 2 * math.pi * i / n
        el = math.radians(15 + 10 * (i % 3))
        eye = 2.7 * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        z = -eye / np.linalg.norm(eye)
        x = np.cross(z, [0, 0, 1.0])
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        c2w = np.eye(4)
        c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, y, z, eye
        disc = (xx - res / 2 + 0.5) ** 2 + (yy - res / 2 + 0.5) ** 2 < (res / 4) ** 2
        img = np.full((res, res, 3), 255, np.uint8)
        img[disc] = (np.array([200, 60, 40]) * (0.6 + 0.4 * i / n)).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"{i:04d}.png")
        frames.append({"file_path": f"images/{i:04d}.png", "w": res, "h": res, "fx": f, "fy": f, "cx": res / 2,
                       "cy": res / 2, "w2c": np.linalg.inv(c2w).tolist()})
        if depth:  # ray-sphere intersection per pixel centre; z-depth = hit distance x cos(angle to the axis)
            d_cam = np.stack([(xx + 0.5 - res / 2) / f, (yy + 0.5 - res / 2) / f, np.ones((res, res))], -1)
            dirs = d_cam / np.linalg.norm(d_cam, axis=-1, keepdims=True)
            d_w = dirs @ c2w[:3, :3].T
            b = (d_w * eye).sum(-1)
            disc_ = b * b - (eye @ eye - 0.36)
            t = np.where(disc_ > 0, -b - np.sqrt(np.clip(disc_, 0, None)), 0.0)
            np.save(root / "images" / f"{i:04d}_depth.npy", (t * dirs[..., 2]).astype(np.float32))
            frames[-1]["depth_path"] = f"images/{i:04d}_depth.npy"
    (root / "opencv_cameras.json").write_text(json.dumps({"scene_name": "disc", "frames": frames}))
    return root


@pytest.fixture(scope="module")
def tiny_triplane(tmp_path_factory) -> Path:
    from tttlrm_ns.triplane.model import TriplaneModel, preset, save_triplane

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tri.safetensors"
    save_triplane(TriplaneModel(*preset("triplane_tiny")), path, {"trained.resolution": "32x32"})
    return path


def _train(data: Path, ckpt: Path, out: Path, steps: int, ok: bool = True) -> subprocess.CompletedProcess:
    return _run([BIN / "ns-train", "tttlrm-triplane", "--data", data, "--output-dir", out, "--vis", "tensorboard",
                 "--max-num-iterations", steps, "--machine.device-type", "cpu", "--viewer.quit-on-train-completion",
                 "True", "--pipeline.model.checkpoint", ckpt, "opencv-cameras"], cwd=out.parent, ok=ok)


def test_ns_train_then_export_mesh_and_point_cloud(tmp_path, tiny_triplane):
    data = make_object_capture(tmp_path / "disc")
    out = tmp_path / "outputs"
    out.mkdir()
    res = _train(data, tiny_triplane, out, 2)
    assert "planes (1, 3, 8, 16, 16) predicted from 4 views" in res.stdout.replace("\n", " ")
    configs = sorted(out.rglob("config.yml"))
    assert len(configs) == 1
    ckpts = sorted(configs[0].parent.rglob("*.ckpt"))
    assert ckpts, "ns-train wrote no checkpoint"
    state = torch.load(ckpts[-1], map_location="cpu", weights_only=False)["pipeline"]
    assert state["_model.planes"].shape == (1, 3, 8, 16, 16)
    assert not torch.equal(state["_model.world_to_object"], torch.eye(4))  # the object frame was installed

    exp = tmp_path / "export"
    _run([BIN / "tttlrm-export-triplane", "--load-config", configs[0], "--output-dir", exp, "--resolution", "24",
          "--threshold-quantile", "0.7"], cwd=tmp_path)
    import open3d as o3d
    import trimesh

    mesh = trimesh.load(exp / "mesh.ply", process=False)
    assert len(mesh.faces) > 0 and mesh.visual.vertex_colors.shape == (len(mesh.vertices), 4)
    assert np.abs(mesh.vertices).max() < 10  # inside the (world-frame) object box, not at the origin of nowhere
    cloud = o3d.io.read_point_cloud(str(exp / "point_cloud.ply"))
    assert len(cloud.points) > 0 and cloud.has_colors()
    o3d_mesh = o3d.io.read_triangle_mesh(str(exp / "mesh.ply"))
    assert len(o3d_mesh.triangles) == len(mesh.faces)

    _run([BIN / "ns-eval", "--load-config", configs[0], "--output-path", tmp_path / "eval.json"], cwd=tmp_path)
    results = json.loads((tmp_path / "eval.json").read_text())["results"]
    for k in ("psnr", "ssim", "lpips"):
        assert math.isfinite(results[k]), results


def test_scene_capture_and_gaussian_checkpoint_are_refused(tmp_path, tiny_triplane):
    out = tmp_path / "outputs"
    out.mkdir()
    res = _train(SCENE_CAPTURE, tiny_triplane, out, 0, ok=False)
    assert res.returncode != 0
    assert "do not look like an object capture" in res.stdout + res.stderr

    from tttlrm_ns.model import TttlrmModel, presets
    from tttlrm_ns.model.checkpoint import save_model

    gauss = save_model(TttlrmModel(presets.tiny()), tmp_path / "gauss.safetensors")
    res = _train(make_object_capture(tmp_path / "disc"), gauss, out, 0, ok=False)
    assert res.returncode != 0
    assert "is a Gaussian tttLRM checkpoint" in (res.stdout + res.stderr).replace("\n", " ")


def test_mesh_of_a_known_density_is_a_sphere_with_vertex_colours():
    """Planes holding u^2 + v^2 make the summed features 2 |x|^2: a monotone MLP gives a sphere of known radius."""
    from tttlrm_ns.triplane.mesh_export import export_geometry
    from tttlrm_ns.triplane.model import TriplaneConfig, TriplaneField

    tri = TriplaneConfig(tokens_per_side=4, channels=1, aggregate="sum", mlp_width=1, mlp_layers=1,
                         density_bias=0.0, density_scale=1.0)
    field = TriplaneField(tri)
    r = 64
    c = (torch.arange(r) + 0.5) / r * 2 - 1
    plane = (c[None, :] ** 2 + c[:, None] ** 2)[None, None].expand(1, 3, 1, r, r).contiguous()
    with torch.no_grad():
        field.mlp[0].weight.fill_(1.0)
        field.mlp[0].bias.zero_()
        field.mlp[2].weight.copy_(torch.tensor([[-20.0], [0.0], [0.0], [0.0]]))
        field.mlp[2].bias.copy_(torch.tensor([20 * 0.5, 3.0, -3.0, 0.0]))  # density > 0 where silu(2|x|^2) < 0.5
    s = 0.5
    m = torch.eye(4)
    m[:3, :3] *= s  # world -> object: x_o = 0.5 x_w (the sphere is twice as large in the world)
    model = SimpleNamespace(planes=plane, field=field, world_to_object=m, object_scale=torch.tensor(s))
    level = 5.0
    mesh, cloud, got = export_geometry(model, 48, level)
    assert got == level
    # density = softplus(10 - 20 silu(2 r^2)) = level  <=>  silu(t) = (10 - softplus^-1(level)) / 20 at t = 2 r^2.
    target = (10 - math.log(math.expm1(level))) / 20
    t = torch.tensor(0.5)
    for _ in range(50):  # Newton on silu(t) = target
        sg = torch.sigmoid(t)
        t = t - (t * sg - target) / (sg + t * sg * (1 - sg))
    radius_world = math.sqrt(float(t) / 2) / s
    rad = np.linalg.norm(mesh.vertices, axis=1)
    assert abs(rad.mean() - radius_world) < 2 * (2 / 48) / s and rad.std() < 0.05
    col = mesh.visual.vertex_colors[:, :3].astype(float) / 255
    assert np.allclose(col, [1 / (1 + math.exp(-3)), 1 / (1 + math.exp(3)), 0.5], atol=2 / 255)
    assert np.linalg.norm(cloud.vertices, axis=1).max() <= radius_world + 2 * (2 / 48) / s


def test_prediction_runs_on_first_use_not_at_construction(tmp_path, tiny_triplane, monkeypatch):
    """As tttlrm's pipeline: construction chooses and prepares the input views (no weights read); the first use of
    the model loads the weights and predicts, once; a checkpoint saved before that holds the prediction, and a loaded
    checkpoint is never predicted over."""
    import copy

    from tttlrm_ns import method_configs as mc
    from tttlrm_ns.triplane import model as triplane_model

    loads, real = [], triplane_model.load_triplane

    def counting(path, *a, **k):
        loads.append(Path(path))
        return real(path, *a, **k)

    monkeypatch.setattr(triplane_model, "load_triplane", counting)
    cfg = copy.deepcopy(mc.tttlrm_triplane_config)
    cfg.pipeline.datamanager.data = make_object_capture(tmp_path / "disc")
    cfg.pipeline.model.checkpoint = tiny_triplane

    def setup():
        return cfg.pipeline.setup(device="cpu", test_mode="val")

    pipe = setup()
    assert loads == [] and len(pipe.input_indices) == 4 and pipe.prediction_seconds is None
    assert pipe.device == torch.device("cpu") and loads == []  # the device is not a use
    assert not torch.equal(pipe.model.world_to_object, torch.eye(4)) and loads == [tiny_triplane]
    planes = pipe.model.planes.detach().clone()
    assert planes.abs().sum() > 0 and pipe.prediction_seconds is not None
    assert torch.equal(pipe.model.planes, planes) and len(loads) == 1  # once
    state = setup().state_dict()
    assert len(loads) == 2 and torch.equal(state["_model.planes"], planes)

    saved = {k: v.clone() for k, v in state.items()}
    saved["_model.planes"] = torch.full_like(planes, 0.25)
    loaded = setup()
    loaded.load_pipeline(saved, step=1)
    assert torch.equal(loaded.model.planes, saved["_model.planes"]) and len(loads) == 2

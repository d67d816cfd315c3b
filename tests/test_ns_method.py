"""End to end through nerfstudio's own commands: ns-train tttlrm -> ns-export gaussian-splat -> ns-eval -> ns-viewer.

A tiny random-weight backbone (``presets.tiny``, SH degree 1) predicts Gaussians from 4 views of the 10-frame
``mydesk_mini`` fixture at 128x72; everything runs on CPU.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCENE = REPO / "tests" / "assets" / "mydesk_mini"
BIN = Path(sys.executable).parent
V, H, W = 4, 72, 128  # input views and model input size (480x270 images, long side 128)

# INRIA / splatfacto .ply layout at SH degree 1, the tiny backbone's: only the SH the scene has (9 f_rest columns,
# 3 * ((d + 1)^2 - 1); splatfacto's degree 3 has 45).
INRIA_PROPERTIES = (
    ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    + [f"f_rest_{i}" for i in range(9)]
    + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
)


def _env() -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def _run(args: list[str], cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    res = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=_env())
    assert res.returncode == 0, f"{args[0]} failed:\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}"
    return res


@pytest.fixture(scope="module")
def run0(tmp_path_factory, tiny_checkpoint) -> Path:
    """`ns-train tttlrm` with 0 refinement steps; returns the run directory."""
    out = tmp_path_factory.mktemp("runs")
    _run(
        [
            str(BIN / "ns-train"), "tttlrm", "--data", str(SCENE), "--output-dir", str(out), "--timestamp", "run0",
            "--pipeline.model.checkpoint", str(tiny_checkpoint), "--pipeline.views.num-views", str(V),
            "--pipeline.input-long-side", str(W), "--vis", "tensorboard",
            "--pipeline.free-space.tolerance", "0",  # every pruned Gaussian stays: the stored count is exact
        ],
        cwd=out,
    )
    return out / "mydesk_mini" / "tttlrm" / "run0"


def _ckpt_params(run: Path) -> dict[str, torch.Tensor]:
    ckpts = sorted((run / "nerfstudio_models").glob("step-*.ckpt"))
    assert ckpts, f"no checkpoint in {run}"
    state = torch.load(ckpts[-1], map_location="cpu", weights_only=False)["pipeline"]
    return {k.split("gauss_params.")[1]: v for k, v in state.items() if "gauss_params." in k}


def read_ply(path: Path) -> tuple[list[str], np.ndarray]:
    """Minimal reader of a binary little-endian float32 .ply: (property names, [N, P] values)."""
    with open(path, "rb") as f:
        assert f.readline() == b"ply\n"
        assert f.readline() == b"format binary_little_endian 1.0\n"
        props, count = [], None
        while True:
            line = f.readline().decode().strip()
            if line == "end_header":
                break
            if line.startswith("element vertex"):
                count = int(line.split()[-1])
            elif line.startswith("property"):
                kind, name = line.split()[1:]
                assert kind == "float", line
                props.append(name)
        data = np.frombuffer(f.read(), dtype="<f4")
    assert count is not None and data.size == count * len(props)
    return props, data.reshape(count, len(props))


def test_feedforward_run_stores_pruned_prediction(run0):
    params = _ckpt_params(run0)
    n0 = V * H * W
    n = int(math.floor(0.4 * n0)) + int(math.floor(0.6 * 0.1 * n0))  # official pruning, < 64 views
    assert params["means"].shape == (n, 3)
    assert params["features_rest"].shape == (n, 3, 3)  # stored at the prediction's degree (1), no zero bands
    assert params["features_rest"].abs().sum() > 0
    assert torch.isfinite(torch.cat([p.reshape(n, -1) for p in params.values()], 1)).all()
    assert (run0 / "config.yml").is_file()


@pytest.fixture(scope="module")
def exported_ply(run0, tmp_path_factory) -> Path:
    """`ns-export gaussian-splat` of the run; returns the `.ply`."""
    out = tmp_path_factory.mktemp("export")
    _run([str(BIN / "ns-export"), "gaussian-splat", "--load-config", str(run0 / "config.yml"),
          "--output-dir", str(out)], cwd=out)
    return out / "splat.ply"


def test_export_gaussian_splat_roundtrip(run0, exported_ply):
    props, data = read_ply(exported_ply)
    assert props == INRIA_PROPERTIES  # splatfacto's header at degree 1 (26 properties)
    p = _ckpt_params(run0)
    keep = (p["opacities"][:, 0] >= -5.5373).numpy()  # the exporter drops opacity < 1/255
    assert data.shape[0] == int(keep.sum()) and keep.mean() > 0.99
    col = {name: data[:, i] for i, name in enumerate(props)}
    np.testing.assert_array_equal(np.stack([col["x"], col["y"], col["z"]], 1), p["means"].numpy()[keep])
    np.testing.assert_array_equal(np.stack([col[f"f_dc_{i}"] for i in range(3)], 1), p["features_dc"].numpy()[keep])
    rest = p["features_rest"].transpose(1, 2).reshape(len(keep), 9).numpy()[keep]  # colour-major, as INRIA
    np.testing.assert_array_equal(np.stack([col[f"f_rest_{i}"] for i in range(9)], 1), rest)
    np.testing.assert_array_equal(col["opacity"], p["opacities"][:, 0].numpy()[keep])
    np.testing.assert_array_equal(np.stack([col[f"scale_{i}"] for i in range(3)], 1), p["scales"].numpy()[keep])
    rot = np.stack([col[f"rot_{i}"] for i in range(4)], 1)  # unit quaternions; the checkpoint keeps the raw ones
    np.testing.assert_allclose(np.linalg.norm(rot, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(rot, torch.nn.functional.normalize(p["quats"], dim=-1).numpy()[keep], atol=1e-6)


# --- the exported .ply in a third-party tool -------------------------------------------------------------------------
# @playcanvas/splat-transform (MIT), at the exact version of tools/splat_transform/package-lock.json, installed by
# scripts/setup.sh into the git-ignored .tools/splat_transform when Node >= 18 and npm are present.
SPLAT_TRANSFORM_DIR = REPO / ".tools" / "splat_transform"
SPLAT_TRANSFORM_LOCK = REPO / "tools" / "splat_transform" / "package-lock.json"
SH_C0 = 0.28209479177387814  # Y_0^0: the tool's colour of an f_dc value is 0.5 + SH_C0 * f_dc, as our renderer's


def _splat_transform() -> Path:
    """The pinned tool's command (skips, saying why, when it is not installed)."""
    tool = SPLAT_TRANSFORM_DIR / "node_modules" / ".bin" / "splat-transform"
    if shutil.which("node") is None:
        pytest.skip("node not found: @playcanvas/splat-transform needs Node >= 18 (and npm for scripts/setup.sh to "
                    "install it)")
    if not tool.is_file():
        pytest.skip("@playcanvas/splat-transform is not installed in .tools/splat_transform: scripts/setup.sh installs "
                    "it when node and npm are present (TTTLRM_NO_NODE=1 skips it)")
    pinned = json.loads(SPLAT_TRANSFORM_LOCK.read_text())["packages"]["node_modules/@playcanvas/splat-transform"]
    installed = json.loads((SPLAT_TRANSFORM_DIR / "node_modules" / "@playcanvas" / "splat-transform" /
                            "package.json").read_text())
    assert installed["version"] == pinned["version"], (
        f"installed splat-transform {installed['version']}, pinned {pinned['version']}: rerun scripts/setup.sh")
    return tool


def _read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path) as f:
        names = f.readline().strip().split(",")
    return names, np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)


def _rot(axis: int, degrees: float) -> torch.Tensor:
    """Right-handed rotation about coordinate axis ``axis`` (float64 [3, 3])."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    r = torch.eye(3, dtype=torch.float64)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def test_exported_ply_reads_in_splat_transform(run0, exported_ply, tmp_path):
    """A third-party splat tool reads our `.ply` as we mean it.

    1. Converted to `.ply` and to `.csv`, every column the tool writes, found by name, holds the checkpoint's value
       that the name stands for (float32 kept exactly; rotations as the exporter's unit quaternions).
    2. Moved by the tool (rotation, uniform scale, translation: it composes quaternions w-first, adds log s to the
       log scales and rotates the degree-1 SH of each colour) the Gaussians equal our own similarity transform
       (``gaussians.transform_gaussians``) of the checkpoint's Gaussians. The tool's actions act in its engine frame,
       which is the `.ply` frame turned 180 degrees about z (``Transform.PLY`` in its source), so in `.ply`
       coordinates ``x -> s P^T R P x + P^T t``.
    3. Its value filters, which take opacity, scale and colour in the units a renderer uses (sigmoid of the logit,
       exp of the log scale, 0.5 + SH_C0 * f_dc), keep exactly the Gaussians whose activated values our renderer's
       activations put above the threshold.
    The checkpoint is what our renderer draws, so 1 fails on a mislabelled, reordered or re-encoded column of our
    exporter (checked: scale_0 and rot_0 swapped in the header), and 2 and 3 hold that the tool means by each
    column what our renderer means (w-first quaternions, colour-major SH in gsplat's basis, log scales, opacity
    logits, DC colour)."""
    tool = _splat_transform()
    p = _ckpt_params(run0)
    keep = (p["opacities"][:, 0] >= -5.5373).numpy()  # the exporter drops opacity < 1/255
    n = int(keep.sum())
    means, dc, scales = p["means"][keep].double(), p["features_dc"][keep].double(), p["scales"][keep].double()
    rest = p["features_rest"][keep].double()  # [N, 3 coefficients, 3 colours]
    quats = torch.nn.functional.normalize(p["quats"][keep].double(), dim=-1)
    opac = p["opacities"][keep, 0].double()

    def columns(means, quats, scales, dc, rest) -> dict[str, np.ndarray]:
        cols = {"opacity": opac}
        cols.update({f"{a}": means[:, i] for i, a in enumerate("xyz")})
        cols.update({f"f_dc_{i}": dc[:, i] for i in range(3)})
        cols.update({f"f_rest_{c * 3 + k}": rest[:, k, c] for c in range(3) for k in range(3)})  # colour-major
        cols.update({f"scale_{i}": scales[:, i] for i in range(3)})
        cols.update({f"rot_{i}": quats[:, i] for i in range(4)})  # w, x, y, z
        return {k: v.numpy() for k, v in cols.items()}

    def convert(out: str, *actions: str) -> Path:
        res = subprocess.run([str(tool), "-q", "-w", str(exported_ply), *actions, str(tmp_path / out)],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, f"splat-transform {' '.join(actions)} -> {out} failed:\n{res.stdout}\n{res.stderr}"
        return tmp_path / out

    # 1. format conversion: nothing lost but what each format cannot hold
    want = columns(means, quats, scales, dc, rest)
    for out in ("copy.ply", "copy.csv"):
        names, data = read_ply(convert(out)) if out.endswith(".ply") else _read_csv(convert(out))
        assert data.shape[0] == n, out
        assert set(want) <= set(names), (out, names)
        for name, expected in want.items():
            got = data[:, names.index(name)].astype(np.float32)
            if name.startswith("rot_"):  # the exporter normalises the raw quaternions
                np.testing.assert_allclose(got, expected, atol=1e-6, err_msg=f"{out}: {name}")
            else:
                np.testing.assert_array_equal(got, expected.astype(np.float32), err_msg=f"{out}: {name}")

    # 2. the tool's similarity transform = ours
    from tttlrm_ns.gaussians import transform_gaussians

    flip = _rot(2, 180)
    rot = flip.T @ _rot(0, 50) @ _rot(2, 60) @ flip  # `-r 0,0,60 -r 50,0,0`: the later action applies last
    shift = flip.T @ torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    sh = torch.cat([dc[:, None], rest], 1)
    m2, q2, s2, sh2 = transform_gaussians(means, quats, scales, sh, rot, shift, 2.0)
    want = columns(m2, q2, s2, sh2[:, 0], sh2[:, 1:])
    names, data = read_ply(convert("moved.ply", "-r", "0,0,60", "-r", "50,0,0", "-s", "2", "-t", "0.5,-1,2"))
    got = {name: data[:, names.index(name)].astype(np.float64) for name in want}
    q_got = np.stack([got[f"rot_{i}"] for i in range(4)], 1)
    q_want = np.stack([want[f"rot_{i}"] for i in range(4)], 1)
    q_got *= np.sign(np.sum(q_got * q_want, 1, keepdims=True))  # q and -q are the same rotation
    np.testing.assert_allclose(q_got, q_want, atol=1e-6, err_msg="rotations")
    extent = float(np.abs(m2.numpy()).max())
    for name in want:
        if not name.startswith("rot_"):
            atol = 1e-6 * extent if name in "xyz" else 1e-5
            np.testing.assert_allclose(got[name], want[name], rtol=0, atol=atol, err_msg=name)
    assert np.abs(got["x"] - means[:, 0].numpy()).max() > 1.0  # the tool did move them

    # 3. the tool's value filters read the activated values
    for name, activated in (("opacity", torch.sigmoid(opac)), ("scale_0", scales[:, 0].exp()),
                            ("f_dc_0", 0.5 + SH_C0 * dc[:, 0])):
        values = np.unique(activated.numpy())
        threshold = float(values[len(values) // 2] + values[len(values) // 2 + 1]) / 2  # between two values
        mask = activated.numpy() > threshold
        names, data = read_ply(convert(f"filter_{name}.ply", "-V", f"{name},gt,{threshold!r}"))
        assert 0 < mask.sum() < n and data.shape[0] == int(mask.sum()), (name, data.shape[0], int(mask.sum()))
        np.testing.assert_array_equal(data[:, names.index("opacity")], opac.numpy().astype(np.float32)[mask], name)


@pytest.fixture(scope="module")
def rendered_test_views(run0, tmp_path_factory) -> Path:
    """`ns-render dataset` of the test split as lossless PNG (render and ground truth); returns the output folder."""
    out = tmp_path_factory.mktemp("render")
    _run([str(BIN / "ns-render"), "dataset", "--load-config", str(run0 / "config.yml"), "--split", "test",
          "--output-path", str(out), "--rendered-output-names", "rgb", "gt-rgb", "--image-format", "png"], cwd=out)
    return out


def _image(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(-10 * np.log10(np.mean((a - b) ** 2)))


HELD_OUT = ["frame0", "frame340"]  # every 8th of the fixture's 10 frames (sorted by name): indices 0 and 8


def test_eval_psnr_matches_the_rendered_test_views(run0, rendered_test_views, tmp_path):
    """ns-eval's PSNR equals the PSNR computed here (numpy) between ns-render's lossless renders and the fixture's
    own JPEGs of the held-out frames: same views, same resolution, same background and formula."""
    out = tmp_path / "eval.json"
    _run([str(BIN / "ns-eval"), "--load-config", str(run0 / "config.yml"), "--output-path", str(out)], cwd=tmp_path)
    results = json.loads(out.read_text())["results"]
    for key in ("psnr", "ssim", "lpips"):
        assert key in results and math.isfinite(results[key]), results
    per_frame = [_psnr(_image(rendered_test_views / "test" / "rgb" / f"{f}.png"), _image(SCENE / "images" /
                                                                                         f"{f}.jpg"))
                 for f in HELD_OUT]
    # 8-bit PNG quantisation of the render moves the PSNR by < 0.01 dB at these errors
    assert abs(results["psnr"] - float(np.mean(per_frame))) < 0.01, (results, per_frame)
    assert abs(results["psnr_std"] - float(np.std(per_frame, ddof=1))) < 0.01, (results, per_frame)
    # SSIM and LPIPS: our metric functions (tested against skimage / lpips in test_metrics) on the same images
    from tttlrm_ns.eval import metrics

    def t(a):
        return torch.from_numpy(a).float().permute(2, 0, 1)[None]

    ssim = [float(metrics.ssim(t(_image(rendered_test_views / "test" / "rgb" / f"{f}.png")),
                               t(_image(SCENE / "images" / f"{f}.jpg")))[0]) for f in HELD_OUT]
    assert abs(results["ssim"] - float(np.mean(ssim))) < 2e-3, (results, ssim)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_viewer_serves_page(run0, tmp_path):
    port = _free_port()
    log = tmp_path / "viewer.log"
    proc = subprocess.Popen(
        [str(BIN / "ns-viewer"), "--load-config", str(run0 / "config.yml"), "--viewer.websocket-port", str(port)],
        cwd=tmp_path, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=_env(),
    )
    try:
        page, deadline = None, time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    page = r.read().decode("utf8", "replace")
                    break
            except OSError:
                time.sleep(1)
        assert proc.poll() is None, log.read_text()[-3000:]
        assert page is not None and "<html" in page.lower(), page
        if shutil.which("chromium") or shutil.which("chromium-browser"):
            _assert_viewport_shows_render(_screenshot(f"http://127.0.0.1:{port}/", tmp_path / "viewer.png"))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _assert_viewport_shows_render(path: Path) -> None:
    """The 3D viewport of the screenshot shows our render, not the empty viewer.

    The empty viewer's viewport is dark (mean ~0.08); the model renders over a white background with the
    (random-weight, faint) splats as darker specks, so the viewport is bright and not uniform.
    """
    from PIL import Image

    a = np.asarray(Image.open(path).convert("L"), dtype=np.float64) / 255.0
    viewport = a[60:, :470].copy()  # left of the control panel, below the header
    viewport[-90:, :90] = np.nan  # the axes widget
    assert np.nanmean(viewport) > 0.6, f"viewport mean {np.nanmean(viewport):.3f}: nothing rendered"
    assert int(np.sum(viewport < 0.97)) > 50, "viewport is uniformly white: no Gaussians visible"


def _screenshot(url: str, path: Path, timeout: float = 150.0) -> Path:
    """Drive headless Chromium over the DevTools protocol: open the viewer and capture the page until the viewport
    shows the render (the first CPU render can take a while), or until ``timeout``; returns the last capture."""
    import base64

    from websockets.sync.client import connect

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    port = _free_port()
    browser = subprocess.Popen(
        [exe, "--headless", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
         "--window-size=800,600", f"--remote-debugging-port={port}", f"--user-data-dir={path.parent / 'chrome'}",
         "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        ws_url, deadline = None, time.time() + 30
        while ws_url is None and time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=2) as r:
                    pages = [t for t in json.loads(r.read()) if t.get("type") == "page"]
                    ws_url = pages[0]["webSocketDebuggerUrl"] if pages else None
            except OSError:
                time.sleep(0.5)
        assert ws_url, "Chromium's DevTools endpoint did not come up"
        with connect(ws_url, max_size=None, open_timeout=20) as ws:
            ids = iter(range(1, 1 << 30))

            def call(method: str, **params):
                i = next(ids)
                ws.send(json.dumps({"id": i, "method": method, "params": params}))
                while True:
                    msg = json.loads(ws.recv(timeout=60))
                    if msg.get("id") == i:
                        return msg.get("result", {})

            call("Page.enable")
            call("Emulation.setDeviceMetricsOverride", width=800, height=600, deviceScaleFactor=1, mobile=False)
            call("Page.navigate", url=url)
            end = time.time() + timeout
            while True:
                time.sleep(3)
                path.write_bytes(base64.b64decode(call("Page.captureScreenshot", format="png")["data"]))
                text = call("Runtime.evaluate", expression="document.body.innerText").get("result", {}).get("value", "")
                try:
                    # the viewer reports the size of the last image the server rendered
                    assert "Resolution:" in text and "Resolution: 0" not in text, "no render received yet"
                    _assert_viewport_shows_render(path)
                    return path
                except AssertionError:
                    if time.time() > end:
                        return path
    finally:
        browser.terminate()
        try:
            browser.wait(timeout=20)
        except subprocess.TimeoutExpired:
            browser.kill()


def test_ns_render_dataset_views(rendered_test_views):
    """Each held-out frame's file holds that frame: the ground-truth output equals the fixture's image of the same
    name (decoded JPEG, lossless PNG), and the render is at the dataset cameras' resolution."""
    for kind in ("rgb", "gt-rgb"):
        frames = sorted((rendered_test_views / "test" / kind).glob("*.png"))
        assert [f.stem for f in frames] == HELD_OUT, kind
    for f in HELD_OUT:
        gt = _image(SCENE / "images" / f"{f}.jpg")
        assert np.abs(_image(rendered_test_views / "test" / "gt-rgb" / f"{f}.png") - gt).max() <= 1 / 255 + 1e-9, f
        assert _image(rendered_test_views / "test" / "rgb" / f"{f}.png").shape == gt.shape == (270, 480, 3)


# --- ns-render interpolate: a video along the held-out cameras -------------------------------------------------------
def _ffmpeg_or_skip() -> None:
    missing = [t for t in ("ffmpeg", "ffprobe") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {' and '.join(missing)} to read the video (apt-get install ffmpeg, or scripts/setup.sh "
                    "without TTTLRM_NO_COLMAP=1)")


def _video(path: Path) -> tuple[np.ndarray, Fraction]:
    """Decoded frames [F, H, W, 3] in [0, 1] and the stream's average frame rate (ffprobe / ffmpeg)."""
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries",
                            "stream=width,height,nb_read_frames,avg_frame_rate", "-of", "json", str(path)],
                           capture_output=True, text=True, check=True)
    s = json.loads(probe.stdout)["streams"][0]
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    frames = np.frombuffer(raw, np.uint8).reshape(-1, s["height"], s["width"], 3) / 255.0
    assert len(frames) == int(s["nb_read_frames"]), (len(frames), s)
    return frames, Fraction(s["avg_frame_rate"])


def _render_interpolate(run: Path, out: Path, steps: int, frame_rate: int, downscale: int) -> Path:
    _run([str(BIN / "ns-render"), "interpolate", "--load-config", str(run / "config.yml"), "--output-path", str(out),
          "--interpolation-steps", str(steps), "--frame-rate", str(frame_rate), "--downscale-factor", str(downscale)],
         cwd=out.parent)
    return out


def test_ns_render_interpolate_video(run0, rendered_test_views, tmp_path):
    """`ns-render interpolate` renders our Gaussians along the path through the held-out cameras (README).

    nerfstudio's path: ``--interpolation-steps`` frames from each held-out camera to the next, both ends included,
    so ``steps * (cameras - 1)`` frames; its cameras carry no image size, so the frames are ``floor(2 cx) x
    floor(2 cy)`` of the first held-out camera (479x270 here: cx = 239.52), then ``floor(size / downscale)``; the
    video lasts ``steps * cameras / frame_rate`` seconds (a nerfstudio quirk: the frame rate it writes is
    ``frame_rate * (cameras - 1) / cameras``)."""
    _ffmpeg_or_skip()
    cams = {Path(f["file_path"]).stem: f for f in json.loads((SCENE / "opencv_cameras.json").read_text())["frames"]}
    full_w, full_h = int(2 * cams[HELD_OUT[0]]["cx"]), int(2 * cams[HELD_OUT[0]]["cy"])

    # full size, 3 frames: the path starts and ends at the held-out cameras and shows what ns-render dataset shows
    frames, _ = _video(_render_interpolate(run0, tmp_path / "full.mp4", steps=3, frame_rate=3, downscale=1))
    assert frames.shape == (3, full_h, full_w, 3), frames.shape
    ends = [_image(rendered_test_views / "test" / "rgb" / f"{f}.png")[:full_h, :full_w] for f in HELD_OUT]
    err = [[float(np.abs(frames[i] - e).mean()) for e in ends] for i in (0, -1)]  # H.264 error vs the other view
    assert err[0][0] < 0.02 and err[0][0] < err[0][1] / 3, f"first frame vs the held-out renders: {err[0]}"
    assert err[1][1] < 0.02 and err[1][1] < err[1][0] / 3, f"last frame vs the held-out renders: {err[1]}"

    # the README's kind of command: smaller frames, more of them
    steps, rate, down = 5, 10, 4
    frames, fps = _video(_render_interpolate(run0, tmp_path / "small.mp4", steps, rate, down))
    n = len(HELD_OUT)
    assert frames.shape == (steps * (n - 1), full_h // down, full_w // down, 3), frames.shape  # 5 frames of 119x67
    assert fps == Fraction(rate * (n - 1), n), fps
    for i, f in enumerate(frames):  # not blank: the splats, not one background colour
        off = np.abs(f - np.median(f.reshape(-1, 3), 0)).max(-1) > 0.05
        assert off.mean() > 0.1 and f.std() > 0.02, (i, float(off.mean()), float(f.std()))
    assert np.abs(frames[0] - frames[-1]).mean() > 0.01  # the camera moves

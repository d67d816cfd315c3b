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


def test_export_gaussian_splat_roundtrip(run0, tmp_path):
    _run([str(BIN / "ns-export"), "gaussian-splat", "--load-config", str(run0 / "config.yml"),
          "--output-dir", str(tmp_path)], cwd=tmp_path)
    props, data = read_ply(tmp_path / "splat.ply")
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

"""The viewer opens at the first input view: each new client gets that camera's pose and field of view."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import numpy as np
import torch


def _cameras():
    from nerfstudio.cameras.cameras import Cameras

    # two OpenGL cameras: the second one 2 units along x, rotated 90 degrees about y (looking along -x)
    c2w = torch.zeros(2, 3, 4)
    c2w[0, :3, :3] = torch.eye(3)
    c2w[1, :3, :3] = torch.tensor([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]])
    c2w[1, :3, 3] = torch.tensor([2.0, 0.5, -1.0])
    return Cameras(camera_to_worlds=c2w, fx=100.0, fy=100.0, cx=64.0, cy=36.0, width=128, height=72)


class _Client:
    def __init__(self):
        self.camera = SimpleNamespace()

    def atomic(self):
        return contextlib.nullcontext()


class _Server:
    def __init__(self):
        self.handlers = []

    def on_client_connect(self, fn):
        self.handlers.append(fn)


def test_new_clients_start_at_the_given_input_camera():
    from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO as S

    from tttlrm_ns.ns.viewer import open_viewer_at

    server = _Server()
    open_viewer_at(SimpleNamespace(viser_server=server), _cameras(), 1)
    client = _Client()
    (handler,) = server.handlers
    handler(client)
    cam = client.camera
    np.testing.assert_allclose(cam.position, np.array([2.0, 0.5, -1.0]) * S, atol=1e-9)
    # viser's camera looks along its +z: it must be the OpenGL camera's viewing direction -z_cam = (-1, 0, 0)
    import viser.transforms as vtf

    rot = vtf.SO3(np.asarray(cam.wxyz)).as_matrix()
    np.testing.assert_allclose(rot[:, 2], [-1.0, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(rot[:, 1], [0.0, -1.0, 0.0], atol=1e-9)  # image +y (down) = world -y (OpenGL up +y)
    np.testing.assert_allclose(cam.look_at, cam.position + rot[:, 2] * S, atol=1e-9)
    assert abs(cam.fov - 2 * np.arctan(36 / 100)) < 1e-6  # vertical field of view of the input camera


def test_no_viser_server_is_a_no_op():
    from tttlrm_ns.ns.viewer import open_viewer_at

    open_viewer_at(SimpleNamespace(), _cameras(), 0)  # legacy viewer / tensorboard-only runs

"""Open nerfstudio's viewer at the first input view instead of viser's default camera.

viser starts every client at a fixed pose that, for a capture in the dataparser's (re-centred, scaled) frame, often
sees nothing of the scene: the user gets a white screen. :func:`open_viewer_at` registers a client-connect handler
that moves each new browser tab to a given dataset camera (the first input view of the prediction), with the same
pose conversion nerfstudio uses when one clicks a camera frustum, and the camera's vertical field of view. The
training cameras stay drawn (nerfstudio's frustums; "Hide Train Cams" is untouched).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def viser_pose(c2w_gl: torch.Tensor, scale_ratio: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """nerfstudio camera-to-world [3, 4] (OpenGL axes) -> viser (wxyz [4], position [3], look_at [3]).

    viser cameras look along their +z axis with +y down (OpenCV), hence the rotation by pi about x, as in
    nerfstudio's ``ViewerState.init_scene``. ``scale_ratio`` is nerfstudio's ``VISER_NERFSTUDIO_SCALE_RATIO``.
    """
    import viser.transforms as vtf

    c2w = c2w_gl.detach().double().cpu().numpy()
    rot = vtf.SO3.from_matrix(c2w[:3, :3]) @ vtf.SO3.from_x_radians(np.pi)
    position = c2w[:3, 3] * scale_ratio
    forward = rot.as_matrix()[:, 2]  # = -z of the OpenGL camera: its viewing direction
    return rot.wxyz, position, position + forward * scale_ratio


def open_viewer_at(viewer_state: Any, cameras: Any, index: int) -> None:
    """Start every viewer client at camera ``index`` of ``cameras`` (nerfstudio ``Cameras``, dataparser frame)."""
    from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO

    server = getattr(viewer_state, "viser_server", None)
    if server is None or type(viewer_state).__name__ == "ViewerLegacyState":  # no viewer / the legacy one
        return
    cam = cameras[index]
    wxyz, position, look_at = viser_pose(cam.camera_to_worlds, VISER_NERFSTUDIO_SCALE_RATIO)
    fov_y = float(2 * torch.atan(cam.height.float() / (2 * cam.fy.float())).reshape(-1)[0])

    def on_connect(client: Any) -> None:
        with client.atomic():  # the assignments of nerfstudio's "click a camera frustum", plus the orbit centre
            client.camera.look_at = look_at
            client.camera.position = position
            client.camera.wxyz = wxyz
            client.camera.fov = fov_y

    server.on_client_connect(on_connect)


__all__ = ["open_viewer_at", "viser_pose"]

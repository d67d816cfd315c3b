"""Evaluation protocol pieces that need no model: the image baselines and peak-memory measurement.

The split (every 8th frame held out) and the input views (k-means on camera poses, or the scene's precomputed
``fold_8_kmeans_{N}_input`` list) are :func:`tttlrm_ns.data.views.eval_split` / :func:`paper_protocol`, and the
evaluation runs them through the method's own pipeline (:mod:`tttlrm_ns.eval.runner`), so every method and
baseline sees the same input views and the same held-out frames.

Baselines (what a reader asks "is the model better than ...?"):

* ``white``: an all-white image (the renders' background).
* ``mean_colour``: every pixel the mean colour of the N input images.
* ``nearest_view``: the input image whose camera is closest to the held-out camera (:func:`nearest_input_view`),
  copied unchanged: what a viewer sees without any 3D reconstruction.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor


def camera_centres_and_axes(c2w: Tensor) -> tuple[Tensor, Tensor]:
    """Camera centres [V, 3] and unit viewing directions [V, 3] of c2w [V, 3|4, 4].

    The viewing direction is the camera's optical axis in world coordinates: ``+z`` of an OpenCV c2w, ``-z`` of an
    OpenGL (nerfstudio) c2w; pass ``opengl=True`` to :func:`nearest_input_view` for the latter.
    """
    c2w = c2w.double()
    return c2w[:, :3, 3], torch.nn.functional.normalize(c2w[:, :3, 2], dim=-1)


def nearest_input_view(input_c2w: Tensor, target_c2w: Tensor, opengl: bool = False, rel_tol: float = 1e-9) -> Tensor:
    """Position in ``input_c2w`` [N, 3|4, 4] of the camera closest to each target [T, 3|4, 4]; returns [T] long.

    Closest = smallest distance between camera centres; cameras at the same distance (within ``rel_tol``) are
    told apart by the smaller angle between the viewing directions, then by the lower position. The axes convention
    only matters for the tie-break (both cameras use the same one).
    """
    ci, zi = camera_centres_and_axes(input_c2w)
    ct, zt = camera_centres_and_axes(target_c2w)
    if opengl:
        zi, zt = -zi, -zt
    d = torch.cdist(ct, ci)  # [T, N]
    best = d.min(dim=1, keepdim=True).values
    tied = d <= best * (1 + rel_tol) + 1e-12
    cos = zt @ zi.T  # [T, N]: larger = smaller angle
    score = torch.where(tied, cos, torch.full_like(cos, -torch.inf))
    # argmax returns the first maximum: equal angles resolve to the lower position.
    return score.argmax(dim=1)


def white_image(height: int, width: int) -> Tensor:
    """[3, H, W] ones."""
    return torch.ones(3, height, width)


def mean_colour_image(inputs: Tensor, height: int, width: int) -> Tensor:
    """[3, H, W] filled with the mean colour of the input images ``inputs`` [N, 3, h, w] in [0, 1]."""
    return inputs.float().mean(dim=(0, 2, 3))[:, None, None].expand(3, height, width).clone()


def resize_to(image: Tensor, height: int, width: int) -> Tensor:
    """[3, h, w] -> [3, H, W] (antialiased bilinear; identity when the size already matches)."""
    if image.shape[-2:] == (height, width):
        return image
    return torch.nn.functional.interpolate(
        image[None].float(), size=(height, width), mode="bilinear", antialias=True, align_corners=False
    )[0].clamp(0, 1)


# --- peak memory ----------------------------------------------------------------------------------------------


def _status_kb(key: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


@dataclass
class PeakMemory:
    """Peak memory of a block of code: CUDA ``max_memory_allocated`` on a GPU, the process' peak RSS on CPU.

    On Linux the RSS high-water mark is reset first (``/proc/self/clear_refs``, value 5) so earlier peaks (imports,
    a previous scene) do not hide this block's; where that is not permitted a 20 ms sampling thread measures it.
    ``kind`` says which one was measured.
    """

    device: str = "cpu"
    mib: float = float("nan")
    kind: str = ""

    def __enter__(self) -> "PeakMemory":
        self._stop = threading.Event()
        self._sampled = 0
        if torch.device(self.device).type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.kind = "CUDA max allocated"
            return self
        self._hwm = False
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            # Some kernels accept the write but keep the old high-water mark: use it only if it really dropped
            # to the current size (else an earlier, larger peak of the process would be reported for this block).
            hwm, rss = _status_kb("VmHWM"), _status_kb("VmRSS")
            self._hwm = hwm is not None and rss is not None and hwm <= rss + 1024
        except OSError:
            pass
        self.kind = "peak RSS" if self._hwm else "peak RSS (sampled every 20 ms)"
        if not self._hwm:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._sampled = max(self._sampled, _status_kb("VmRSS") or 0)
            time.sleep(0.02)

    def __exit__(self, *exc) -> None:
        if torch.device(self.device).type == "cuda":
            torch.cuda.synchronize()
            self.mib = torch.cuda.max_memory_allocated(self.device) / 2**20
            return
        if self._hwm:
            self.mib = (_status_kb("VmHWM") or 0) / 1024
        else:
            self._stop.set()
            self._thread.join()
            self.mib = self._sampled / 1024 if self._sampled else float("nan")


def cpu_threads() -> int:
    return int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads()))


__all__ = [
    "nearest_input_view",
    "white_image",
    "mean_colour_image",
    "resize_to",
    "PeakMemory",
    "camera_centres_and_axes",
]

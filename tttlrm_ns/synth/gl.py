"""Headless OpenGL for pyrender: OSMesa (Mesa llvmpipe, CPU), one context per process.

Measured (``synthetic_data_notes.md``): OSMesa is the fastest CPU path for pyrender. Two process-wide settings are
needed and must happen *before* ``pyrender`` / ``OpenGL`` are imported anywhere in the process:

* ``PYOPENGL_PLATFORM=osmesa`` selects the OSMesa backend of PyOpenGL.
* pyrender's shader-program cache keys on ``OpenGL.contextdata.getContext()``, which with OSMesa + PyOpenGL 3.1.10
  returns a fresh object on every call, so every draw recompiles every shader (6x slower rooms). We render with
  exactly one GL context per process, so a constant key is correct; :func:`import_pyrender` installs it.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import os
import sys
from types import ModuleType

APT_PACKAGES = "libosmesa6"
PIP_PACKAGES = ('pip install --no-deps pyrender==0.1.45 && pip install PyOpenGL==3.1.10 "pyglet<2" freetype-py '
                "trimesh imageio networkx scipy pillow")


class RendererUnavailable(RuntimeError):
    """pyrender or OSMesa is missing; the message says what to install."""


def osmesa_status() -> tuple[bool, str]:
    """(available, reason): whether pyrender can render offscreen with OSMesa in this process, without importing GL.

    Checks the shared library and the Python packages only, so it is cheap and safe to call from a test's skip
    condition.
    """
    if ctypes.util.find_library("OSMesa") is None:
        return False, f"the OSMesa library is not installed (apt-get install -y {APT_PACKAGES})"
    missing = [mod for mod in ("pyrender", "OpenGL", "trimesh") if importlib.util.find_spec(mod) is None]
    if missing:
        return False, f"Python packages missing: {', '.join(missing)} ({PIP_PACKAGES})"
    current = os.environ.get("PYOPENGL_PLATFORM")
    if current not in (None, "osmesa") and "OpenGL" in sys.modules:
        return False, f"PyOpenGL was already imported with PYOPENGL_PLATFORM={current!r}; OSMesa needs a fresh process"
    return True, "ok"


def import_pyrender() -> ModuleType:
    """Import pyrender on OSMesa with the shader-cache fix; raises :class:`RendererUnavailable` with install hints."""
    ok, reason = osmesa_status()
    if not ok:
        raise RendererUnavailable(f"cannot render synthetic data: {reason}")
    os.environ["PYOPENGL_PLATFORM"] = "osmesa"
    import OpenGL.contextdata

    # One GL context per process (see the module docstring): a constant cache key keeps compiled shaders.
    OpenGL.contextdata.getContext = lambda *args: 0
    import numpy as np

    if not hasattr(np, "infty"):  # pyrender's shadow code uses np.infty, which NumPy 2 removed
        np.infty = np.inf
    import pyrender

    return pyrender

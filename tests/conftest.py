import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "tests" / "assets"
SHARED = REPO.parent / "shared"

# Tests are sized for 2 cores; keep results independent of the machine's core count.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def assets() -> Path:
    return ASSETS


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """Random tiny tttLRM weights (``presets.tiny(sh_degree=1)``, torch seed 0) as a ``.safetensors`` file, made once
    per test module (the nerfstudio method, pipeline and refinement tests load it)."""
    from tttlrm_ns.model import TttlrmModel, presets
    from tttlrm_ns.model.checkpoint import save_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_model(TttlrmModel(presets.tiny(sh_degree=1)), path)
    return path


def optional_components() -> dict[str, bool]:
    """System parts some tests need; a test without its part skips and says which (see DEVELOPERS.md)."""
    import ctypes.util
    import shutil

    return {
        "colmap": shutil.which("colmap") is not None,  # ns-process-data images (tests/test_capture.py)
        "ffmpeg": shutil.which("ffmpeg") is not None,  # ns-process-data video, ns-render videos (test_ns_method)
        "chromium": any(shutil.which(b) for b in ("chromium", "chromium-browser")),  # viewer screenshot
        "sweethome3d-furniture": Path("/usr/share/sweethome3d/furniture").is_dir(),  # CC0 furniture (synth)
        "OSMesa": ctypes.util.find_library("OSMesa") is not None,  # headless OpenGL (synth renderer)
        "CUDA": torch.cuda.is_available(),
        "LPIPS weights": _lpips_weights_present(),
        # the pinned third-party splat tool that setup.sh installs with npm (the .ply interoperability test)
        "splat-transform": shutil.which("node") is not None
        and (REPO / ".tools" / "splat_transform" / "node_modules" / ".bin" / "splat-transform").is_file(),
    }


def _lpips_weights_present() -> bool:
    try:
        from tttlrm_ns.eval.lpips_weights import weights_present

        return weights_present()
    except Exception:
        return False


def _components_line() -> str:
    parts = optional_components()
    found = ", ".join(k for k, v in parts.items() if v) or "none"
    missing = ", ".join(k for k, v in parts.items() if not v) or "none"
    return f"optional components found: {found}; missing (their tests skip): {missing}"


def pytest_report_header(config):
    return _components_line()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    # repeated at the end, where CI logs are read: a green run without a component did not test what needs it
    terminalreporter.write_line(_components_line())

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

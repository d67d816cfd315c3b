"""tttlrm_ns: tttLRM feed-forward Gaussian reconstruction as a nerfstudio method."""

from pathlib import Path as _Path

__version__ = "0.1.0"

ASSETS = _Path(__file__).resolve().parent / "assets"
"""Package data shipped with tttlrm_ns."""
BUNDLED_CHECKPOINT = ASSETS / "weights" / "tttlrm_small.safetensors"
"""The superseded demo weights (``docs/bench_checkpoint.md``). No method loads them by default, not even when its own
weights are missing; they run only when passed by path: ``--pipeline.model.checkpoint`` followed by this file."""
SAMPLE_SCENE = ASSETS / "sample_scene"
"""The bundled synthetic sample scene (evaluation only; ``scripts/run_sample.sh``)."""

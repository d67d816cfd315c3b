"""tttlrm_ns: tttLRM feed-forward Gaussian reconstruction as a nerfstudio method."""

from pathlib import Path as _Path

__version__ = "0.1.0"

ASSETS = _Path(__file__).resolve().parent / "assets"
"""Package data shipped with tttlrm_ns."""
BUNDLED_CHECKPOINT = ASSETS / "weights" / "tttlrm_small.safetensors"
"""The bundled demo weights: the default of ``ns-train tttlrm`` without ``--pipeline.model.checkpoint``."""
SAMPLE_SCENE = ASSETS / "sample_scene"
"""The bundled synthetic sample scene (evaluation only; ``scripts/run_sample.sh``)."""

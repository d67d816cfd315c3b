"""The tttLRM model in pure torch (no nerfstudio imports)."""

from . import presets
from .config import TttlrmConfig
from .tttlrm import TttlrmModel, TttlrmOutput

__all__ = ["TttlrmConfig", "TttlrmModel", "TttlrmOutput", "presets"]

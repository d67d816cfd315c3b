"""tttlrm_ns: tttLRM feed-forward Gaussian reconstruction as a nerfstudio method."""

__version__ = "0.1.0"

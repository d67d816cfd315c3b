"""Distributed pretraining of tttLRM (torchrun; data and sequence parallel). Never imports nerfstudio.

Modules: ``config`` (typed config tree, YAML + CLI), ``data`` (scenes, view sampling, deterministic per-rank
loading), ``parallel`` (process groups, DDP, sequence-parallel collectives), ``losses``, ``checkpoint`` (atomic,
resumable, export), ``render`` (the run's Gaussian rendering), ``plugin`` (what a model kind implements),
``gaussian`` (the Gaussian model kind), ``kinds`` (the registry of kinds; the triplane kind is
:mod:`tttlrm_ns.triplane.train`), ``loop`` (the trainer), ``holdout`` (held-out evaluation of checkpoints),
``procedural`` (tiny ray-cast scenes for tests and benchmarks).
"""

from .config import TrainConfig, resolve_config

__all__ = ["TrainConfig", "resolve_config"]

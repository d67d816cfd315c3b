"""The model kinds ``tttlrm-train`` can train, by ``TrainConfig.model_kind``: the one place that names them.

Adding a kind: implement :class:`tttlrm_ns.train.plugin.ModelKind` (build, init_from, micro_step, export), add it
here and to the ``Literal`` of ``TrainConfig.model_kind`` (``tests/test_train_kinds.py`` holds the two together).
The trainer (:mod:`tttlrm_ns.train.loop`) asks :func:`get_kind` once and never looks at the name again.
"""

from __future__ import annotations

from tttlrm_ns.triplane.train import TriplaneKind

from .gaussian import GaussianKind
from .plugin import ModelKind

KINDS: dict[str, ModelKind] = {kind.name: kind for kind in (GaussianKind(), TriplaneKind())}
"""name -> the kind's implementation (the kinds hold no state: one instance serves every run)."""


def get_kind(name: str) -> ModelKind:
    """The implementation of model kind ``name``; an unknown name raises a ``ValueError`` naming the known ones."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown model_kind {name!r}; known kinds: {', '.join(sorted(KINDS))}") from None


__all__ = ["KINDS", "get_kind"]

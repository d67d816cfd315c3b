"""View choice of the held-out recipe evaluation (``tttlrm_ns.train.holdout``)."""

from __future__ import annotations

import math

import torch

from tttlrm_ns.train.holdout import choose_views


def _path(n: int) -> torch.Tensor:
    c2w = torch.eye(4).repeat(n, 1, 1)
    c2w[:, 0, 3] = torch.arange(n, dtype=torch.float32)  # frames along a line
    return c2w


def test_interp_targets_lie_between_inputs_and_never_are_inputs():
    inputs, targets = choose_views(_path(64), 8, 4, "interp", span=48)
    assert inputs == [0, 7, 13, 20, 27, 34, 40, 47]  # evenly spread over the first 48 frames
    assert len(targets) == 4 and not set(targets) & set(inputs)
    for t in targets:  # each target is the midpoint of two consecutive inputs
        i = max(k for k in range(len(inputs)) if inputs[k] < t)
        assert t == (inputs[i] + inputs[i + 1]) // 2


def test_sphere_inputs_are_spread_and_deterministic():
    n = 32
    ang = torch.arange(n) * 2 * math.pi / n
    c2w = torch.eye(4).repeat(n, 1, 1)
    c2w[:, 0, 3], c2w[:, 1, 3] = torch.cos(ang), torch.sin(ang)  # a ring of cameras
    a = choose_views(c2w, 4, 6, "sphere", span=0)
    assert a == choose_views(c2w, 4, 6, "sphere", span=0)
    inputs, targets = a
    assert inputs == [0, 8, 16, 24]  # farthest-point sampling on a ring: quarters
    assert len(targets) == 6 and not set(targets) & set(inputs)

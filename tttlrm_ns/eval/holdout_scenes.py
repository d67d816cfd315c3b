"""The evaluation-only scenes: the one list of the real captures that nothing may be chosen on.

Every recipe, default, threshold and shipped-weights choice is made on synthetic held-out data (the stress set of
``tttlrm-synth stress-set``, ``docs/stress_set.md``; the held-out synthetic sets of the training recipes) or the
bundled sample scene, never on these captures: a choice made on them would turn their numbers into a tuning score
instead of an estimate of what a user gets. They are not shipped: they live in the development machine's shared
data folder next to the checkout (``DEVELOPERS.md``, "Data rules"; licences in ``DATA_LICENSES.md``), and
``tests/assets/mydesk_mini`` is a 10-frame cut of ``mydesk`` for plumbing tests.

Code that only *evaluates* on them may name them (``tttlrm-eval``, ``scripts/reproduce_tables.sh``, the producers of
``docs/mydesk_eval.json`` and ``docs/curves/*_gso_*.json``); training configs, recipe-arms scripts and the
stress / defaults benchmarks must not. ``tests/test_eval_separation.py`` scans them with :func:`mentions`.
"""

from __future__ import annotations

import re

EVAL_ONLY_SCENES: tuple[str, ...] = ("mydesk", "gso_toy")
"""Folder names in the shared data folder (``scene_name`` of their ``opencv_cameras.json``); everything in that
folder is evaluation data."""

# A scene name with any separator (gso_toy, gso-toy, "gso toy", MyDesk) or the shared data folder in any spelling
# (a relative shared/data path, repo.parent / "shared" / "data").
_NAME = "|".join(r"[_\- ]?".join(map(re.escape, re.split(r"[_\- ]", s))) for s in EVAL_ONLY_SCENES)
_PATTERN = re.compile(rf"(?:{_NAME})|shared[\"']?\s*[/\\]\s*[\"']?data", re.IGNORECASE)


def mentions(text: str) -> list[tuple[int, str]]:
    """(1-based line number, matched text) of every mention of an evaluation-only scene or of the shared data
    folder."""
    return [(i, m.group(0)) for i, line in enumerate(text.splitlines(), 1) for m in _PATTERN.finditer(line)]

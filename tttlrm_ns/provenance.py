"""What a result record says about the code that made it: the git commit of the checkout and whether its tracked
files were changed (:func:`git_state`).

A leaf module (standard library only) so that every layer that writes result records can use it: the stress
evaluation (``eval/stress.py``), the geometry benchmark (``eval/bench_geometry.py``) and the refinement race
(``scripts/bench_refine.py``, ``eval/race.py``). The sha256 of a weights file is :func:`tttlrm_ns.checkpoint_io.sha256_file`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Dict, Optional

REPO = Path(__file__).resolve().parents[1]
"""The checkout holding this package."""


def git_state(repo: Path = REPO) -> Dict[str, Any]:
    """{"commit", "dirty", "modified"} of the checkout (commit None outside a git checkout; dirty: tracked files
    differ from the commit, untracked files do not count; modified: their paths)."""
    def git(*args: str) -> Optional[str]:
        try:
            return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit.strip() if commit else None,
            "dirty": None if status is None else bool(status.strip()),
            "modified": None if status is None else [ln[3:] for ln in status.splitlines() if ln.strip()]}


__all__ = ["git_state"]

"""pyproject.toml declares what the code imports, in the right place, at the versions of requirements-lock.txt.

Where each import may come from: tttlrm_ns outside ``synth/`` -> ``[project].dependencies``; ``tttlrm_ns/synth``
-> those or the ``synth`` extra; ``tests/`` -> those or the ``dev`` / ``synth`` extras. pyrender is the one package
installed outside pyproject (``pip install --no-deps``, see the ``synth`` extra's comment).
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
NO_DEPS_INSTALL = {"pyrender"}  # installed by scripts/setup.sh with --no-deps (its PyOpenGL pin breaks OSMesa)
# Runtime dependencies that tttlrm_ns needs without importing them itself.
INDIRECT = {
    "torchvision": "torchmetrics' LPIPS backbones (tttlrm_ns/eval/lpips_weights.py)",
    "tensorboard": "torch.utils.tensorboard (tttlrm-train logging)",
}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(*groups: str) -> dict[str, str]:
    """{normalised name: pinned version} of the main dependencies plus the given extras."""
    reqs = list(PROJECT["dependencies"])
    for g in groups:
        reqs += PROJECT["optional-dependencies"][g]
    out = {}
    for r in reqs:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([A-Za-z0-9_.+-]+)", r)
        assert m, f"{r!r} is not pinned as name==version (DEVELOPERS.md)"
        out[norm(m[1])] = m[2]
    return out


def imported_distributions(files: list[Path]) -> dict[str, set[str]]:
    """{normalised distribution: files} for the third-party modules imported anywhere in ``files``."""
    to_dist = md.packages_distributions()
    local = {p.stem for p in (REPO / "tests").glob("*.py")}  # tests import each other's helpers
    out: dict[str, set[str]] = {}
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in local or top in ("tttlrm_ns", "__future__"):
                    continue
                dists = to_dist.get(top)
                assert dists, f"{f}: imports {top!r}, which no installed distribution provides"
                out.setdefault(norm(dists[0]), set()).add(str(f.relative_to(REPO)))
    return out


def lock() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements-lock.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[norm(name)] = version
    return pins


def _missing(imports: dict[str, set[str]], allowed: dict[str, str]) -> dict[str, list[str]]:
    return {d: sorted(f)[:3] for d, f in imports.items() if d not in allowed and d not in NO_DEPS_INSTALL}


def test_package_imports_are_declared_in_the_right_place():
    pkg = sorted((REPO / "tttlrm_ns").rglob("*.py"))
    synth = [f for f in pkg if "synth" in f.relative_to(REPO / "tttlrm_ns").parts[:1]]
    core = [f for f in pkg if f not in synth]
    assert not _missing(imported_distributions(core), declared()), "declare in [project].dependencies"
    assert not _missing(imported_distributions(synth), declared("synth")), "declare in the synth extra"


def test_test_imports_are_declared():
    tests = sorted((REPO / "tests").rglob("*.py"))
    assert not _missing(imported_distributions(tests), declared("dev", "synth")), "declare in the dev extra"


def test_every_runtime_dependency_is_used_by_the_package():
    used = imported_distributions(sorted((REPO / "tttlrm_ns").rglob("*.py")))
    unused = sorted(set(declared()) - set(used) - set(INDIRECT))
    assert not unused, f"runtime dependencies tttlrm_ns never imports (move them to an extra): {unused}"


def test_pins_match_the_lock_file_and_the_lock_has_pyrender():
    pins = lock()
    wrong = {n: (v, pins.get(n)) for n, v in declared("synth", "dev").items() if pins.get(n) != v}
    assert not wrong, f"pyproject pin vs requirements-lock.txt (setup.sh installs the lock): {wrong}"
    setup = (REPO / "scripts" / "setup.sh").read_text()
    for name in NO_DEPS_INSTALL:
        assert f"--no-deps {name}=={pins[name]}" in setup, f"setup.sh's resolver path must install {name} too"

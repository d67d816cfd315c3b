"""Evaluation data stays out of every choice (issue 21, item 1).

The evaluation-only captures are listed once, in :mod:`tttlrm_ns.eval.holdout_scenes`. Whatever chooses a recipe, a
default, a threshold or the shipped weights must not name them: the training configs, the recipe-arms and other
experiment scripts, the maintained benchmarks, the stress / defaults benchmarks and the held-out recipe evaluation,
the package code, the shipped-weights floor, and the result files those choices were read from. A file that only
*evaluates* on them is listed in ``EVALUATION_ONLY`` with the reason; documents that report evaluation results
(``*.md``) are not scanned.
"""

from __future__ import annotations

from pathlib import Path

from tttlrm_ns.eval.holdout_scenes import EVAL_ONLY_SCENES, mentions

REPO = Path(__file__).resolve().parents[1]

# What is scanned: (folder, glob) pairs, relative to the repository.
SCANNED = [
    ("configs", "**/*.yaml"),  # training configs and the stress-set recipe
    ("experiments", "*.py"),  # recipe arms, aggregation choice, benchmarks
    ("experiments", "*.sh"),
    ("scripts", "*.py"),  # maintained benchmarks (rasterizer, refinement step, scaling, forward time)
    ("scripts", "*.sh"),
    ("tttlrm_ns", "**/*.py"),  # defaults; eval/stress*.py, eval/bench_*.py, train/holdout.py, synth/stress_set.py
    ("tttlrm_ns", "**/*.yaml"),
    ("tests", "quality_floor.py"),  # the floor the shipped weights must pass
    ("tests", "test_shipped_weights.py"),
    ("docs/stress", "*.json"),  # the results the defaults and the shipped weights were chosen on
    ("docs", "stress_results*.json"),
    ("docs/img", "recipe_arms.json"),
    ("docs", "bench_geometry.json"),
]

# Files that may name an evaluation scene, and why. None: evaluation code, any number of mentions; an int: exactly
# that many (a file that chooses things but names a scene for a reason stated here; a new mention fails).
EVALUATION_ONLY: dict[str, tuple[int | None, str]] = {
    "tttlrm_ns/eval/holdout_scenes.py": (None, "the list itself"),
    "tttlrm_ns/eval/cli.py": (None, "tttlrm-eval, the evaluation CLI: usage examples"),
    "tttlrm_ns/eval/race.py": (None, "the refinement race (an evaluation): a path example"),
    "tttlrm_ns/eval/learning_curve.py": (None, "fits and plots result files, evaluation series included"),
    "scripts/reproduce_tables.sh": (None, "regenerates docs/results.md: evaluates on the captures"),
    "experiments/eval_triplane.py": (None, "feed-forward evaluation of the triplane model (its gso_toy numbers)"),
    "experiments/plot_object_curves.sh": (None, "plots the committed learning curves, gso_toy series included"),
    "tttlrm_ns/data/views.py": (2, "comments: the k-means view choice reproduces mydesk's precomputed protocol "
                                   "inputs (the protocol, tests/test_views.py), not a tuned choice"),
    "tttlrm_ns/synth/generate.py": (3, "ObjectsConfig's camera defaults (FOV 50, distance 2.7) copy the object "
                                       "evaluation protocol's camera layout (its camera file, not its images)"),
    "tttlrm_ns/synth/zeroverse.py": (1, "comment: the object scale and camera ranges are centred on that layout"),
}


def scanned_files() -> list[Path]:
    files = set()
    for folder, pattern in SCANNED:
        files |= {p for p in (REPO / folder).glob(pattern) if p.is_file()}
    return sorted(files)


def violations(files: list[Path], allowed: dict[str, tuple[int | None, str]]) -> list[str]:
    """'path:line: text' for every mention of an evaluation scene not allowed by ``allowed``; a wrong count of an
    allowed file's mentions is one entry naming all its lines."""
    out = []
    for path in files:
        rel = path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else str(path)
        found = mentions(path.read_text(errors="replace"))
        if rel in allowed:
            count, _ = allowed[rel]
            if count is None or count == len(found):
                continue
            lines = ", ".join(str(i) for i, _ in found)
            out.append(f"{rel}: {len(found)} mentions (lines {lines}), {count} allowed")
            continue
        out += [f"{rel}:{i}: {text!r}" for i, text in found]
    return out


def test_the_list_names_the_shared_scenes():
    assert set(EVAL_ONLY_SCENES) == {"mydesk", "gso_toy"}
    shared = REPO.parent / "shared" / "data"
    if shared.is_dir():  # every capture there is evaluation data; the list must name them all
        assert {p.name for p in shared.iterdir() if p.is_dir()} <= set(EVAL_ONLY_SCENES)


def test_the_checker_catches_mentions(tmp_path):
    bad = tmp_path / "arms.py"
    bad.write_text("steps = 80\nscenes = ['data/synthetic/rooms_val_s8', 'MyDesk']\n"
                   "data = REPO.parent / 'shared' / 'data' / 'x'\nother = '../shared/data/gso-toy'\n")
    found = violations([bad], {})
    assert [f.split(": ")[0] for f in found] == [f"{bad}:2", f"{bad}:3", f"{bad}:4", f"{bad}:4"], found
    good = tmp_path / "config.yaml"
    good.write_text("data:\n  scenes: data/stress_set/walkthrough/*\n# held out: tests/assets/object_sample\n")
    assert violations([good], {}) == []
    # an allowed file with a pinned count fails when a mention is added
    rel = str(bad)
    assert violations([bad], {rel: (4, "")}) == [] and len(violations([bad], {rel: (3, "")})) == 1


def test_scan_covers_the_files_that_choose_things():
    files = {p.relative_to(REPO).as_posix() for p in scanned_files()}
    for must in ["configs/scene_geometry_cpu.yaml", "configs/stress_set.yaml", "experiments/recipe_arms.py",
                 "tttlrm_ns/eval/stress.py", "tttlrm_ns/eval/stress_compare.py", "tttlrm_ns/eval/bench_geometry.py",
                 "tttlrm_ns/train/holdout.py", "tttlrm_ns/synth/stress_set.py", "scripts/bench_refine.py",
                 "tests/quality_floor.py", "docs/stress_results.json", "docs/img/recipe_arms.json"]:
        assert must in files, must
    assert set(EVALUATION_ONLY) <= files, set(EVALUATION_ONLY) - files  # no stale entries


def test_no_evaluation_scene_where_things_are_chosen():
    bad = violations(scanned_files(), EVALUATION_ONLY)
    assert not bad, ("evaluation-only scenes (tttlrm_ns/eval/holdout_scenes.py) named where recipes, defaults or "
                     "weights are chosen; choose on the stress set or the sample scene instead, or, for code that "
                     "only evaluates, add it to EVALUATION_ONLY with the reason:\n" + "\n".join(bad))

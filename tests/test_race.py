"""The refinement race's reading of its curves (tttlrm_ns.eval.race): PSNR at a budget, the table, the verdicts
against splatfacto-cpu, and the results-page section with its figure."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from tttlrm_ns.eval.race import (append_run, load_runs, portable_path, psnr_at, race_markdown, race_table, scene_of,
                                 verdicts)


def _run(label, method, pts, views="input", data="/x/sample_scene"):
    return {"label": label, "method": method, "views": views, "data": data, "median_step_s": 0.1,
            "points": [{"t": t, "psnr": p, "step": i, "gaussians": 1, "wall": t} for i, (t, p) in enumerate(pts)]}


OURS = _run("ours", "tttlrm", [(5.2, 20.0), (10.1, 24.0), (15.0, 25.0), (20.2, 26.0), (30.1, 27.0)])
THEIRS = _run("sf", "splatfacto", [(1.3, 8.0), (10.0, 17.0), (15.1, 25.5), (20.0, 25.0), (30.2, 28.5), (60.1, 30.0)])


def test_psnr_at_takes_the_last_point_by_the_budget():
    assert psnr_at(OURS, 10) == 24.0  # recorded at 10.1 s: the first step past the mark counts for it
    assert psnr_at(OURS, 12) == 24.0  # between marks: the last point before
    assert psnr_at(OURS, 60) is None  # the run ended at 30 s: not reached
    late = _run("late", "tttlrm", [(12.0, 20.0), (20.0, 21.0)])
    assert psnr_at(late, 10) == -math.inf  # still in setup (prediction) at 10 s: no result yet


def test_verdicts_name_the_budgets_where_each_method_leads():
    (line,) = verdicts([OURS, THEIRS], marks=(10, 15, 20, 30, 60))
    assert "sample_scene, input views" in line and "behind at some budgets" in line
    assert "At or above: 10 s (+7.00), 20 s (+1.00)" in line
    assert "behind: 15 s (-0.50), 30 s (-1.50)" in line
    assert "not reached by both: 60 s" in line
    (win,) = verdicts([OURS, THEIRS], marks=(10, 20))
    assert "at or above at every measured budget" in win
    late = _run("late", "tttlrm", [(12.0, 30.0), (20.0, 31.0)])
    (slow,) = verdicts([late, THEIRS], marks=(10, 20))
    assert "behind: 10 s (no result yet)" in slow  # a prediction that is not done yet loses that budget
    # other views / scenes are never compared with each other
    assert verdicts([OURS, _run("sf", "splatfacto", [(1, 1.0), (40, 2.0)], views="train")]) == []


def test_table_and_page_section(tmp_path):
    f = tmp_path / "race.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in (OURS, THEIRS)) + "\n")
    runs = load_runs([f])
    table = race_table(runs, marks=(5, 10, 60))
    rows = table.splitlines()
    assert rows[2].startswith("| sample_scene | ours | tttlrm | input | 5.2 | 20.00 |")
    assert rows[2].endswith("| setup | 24.00 | - |")  # at 5 s tttlrm was still predicting (first point 5.2 s)
    assert rows[3].endswith("| 8.00 | 17.00 | 30.00 |")
    md = race_markdown(runs, tmp_path / "img")
    assert (tmp_path / "img" / "refine_race_sample_scene.png").stat().st_size > 10_000
    assert "![refinement race, sample_scene](img/refine_race_sample_scene.png)" in md and "behind at some" in md


def _absolute_strings(value, found=None):
    """Every string of a JSON value that is an absolute path or a ``key=/abs/path`` override."""
    found = [] if found is None else found
    if isinstance(value, dict):
        for v in value.values():
            _absolute_strings(v, found)
    elif isinstance(value, list):
        for v in value:
            _absolute_strings(v, found)
    elif isinstance(value, str) and (os.path.isabs(value) or os.path.isabs(value.partition("=")[2])):
        found.append(value)
    return found


def test_race_records_are_written_without_absolute_paths(tmp_path, monkeypatch):
    """The race JSONL is committed: a record names its data relative to the repository, never by a machine path."""
    repo = Path(__file__).resolve().parents[1]
    rec = dict(OURS, data=str(repo / "tttlrm_ns" / "assets" / "sample_scene"),
               sets=["pipeline.model.checkpoint=/opt/elsewhere/w.safetensors",
                     f"pipeline.datamanager.data={repo.parent / 'shared' / 'data' / 'mydesk'}",
                     "pipeline.model.refine.max_gaussians=60000"])
    out = tmp_path / "race.jsonl"
    append_run(out, rec)
    append_run(out, dict(THEIRS, data=Path("/somewhere/else/sample_scene")))
    monkeypatch.chdir(repo)  # a relative --data is read from the current directory, as the command read it
    append_run(out, dict(OURS, data="tests/assets/mydesk_mini"))
    lines = out.read_text().splitlines()
    assert len(lines) == 3 and "\"/" not in out.read_text()
    runs = load_runs([out])
    assert [_absolute_strings(r) for r in runs] == [[], [], []]
    assert [r["data"] for r in runs] == ["tttlrm_ns/assets/sample_scene", "sample_scene", "tests/assets/mydesk_mini"]
    assert runs[0]["sets"] == ["pipeline.model.checkpoint=w.safetensors",
                               "pipeline.datamanager.data=../shared/data/mydesk",
                               "pipeline.model.refine.max_gaussians=60000"]
    assert runs[0]["points"] == OURS["points"] and scene_of(runs[1]) == "sample_scene"


def test_portable_path_forms(tmp_path):
    repo = tmp_path / "checkout"
    assert portable_path(repo / "a" / "b", repo) == "a/b"
    assert portable_path(tmp_path / "shared" / "data" / "mydesk", repo) == "../shared/data/mydesk"
    assert portable_path("/unrelated/x/scene", repo) == "scene"
    assert portable_path("/data/scene", Path("/repo")) == "scene"  # never "../" up to the file-system root


def test_committed_race_runs_hold_no_absolute_paths():
    committed = Path(__file__).resolve().parents[1] / "docs" / "refine_race.jsonl"
    runs = load_runs([committed])
    assert runs and [_absolute_strings(r) for r in runs] == [[] for _ in runs]

"""The refinement race's reading of its curves (tttlrm_ns.eval.race): PSNR at a budget, the table, the verdicts
against splatfacto-cpu, and the results-page section with its figure."""

from __future__ import annotations

import json
import math

from tttlrm_ns.eval.race import load_runs, psnr_at, race_markdown, race_table, verdicts


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

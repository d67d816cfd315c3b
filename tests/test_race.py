"""The refinement race's reading of its curves (tttlrm_ns.eval.race): PSNR at a budget, the table, the verdicts
against splatfacto-cpu over every run (groups of seeds), the plateau rule, the SfM-points check, the results-page
section with its figure; and scripts/bench_refine.py's records (provenance fields), its sfm error and the race
command's dry run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tttlrm_ns.eval.race import (SfmPointsError, append_run, group_runs, load_runs, mean_curve, plateau_reached,
                                 portable_path, psnr_at, race_figure, race_markdown, race_table, scene_of,
                                 sfm_points_file, verdicts)

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "scripts" / "bench_refine.py"


def _run(label, method, pts, views="input", data="/x/sample_scene", **extra):
    return {"label": label, "method": method, "views": views, "data": data, "median_step_s": 0.1,
            "points": [{"t": t, "psnr": p, "step": i, "gaussians": 1, "wall": t} for i, (t, p) in enumerate(pts)],
            **extra}


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
    assert "not reached by every run: 60 s" in line
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
    rows = table.splitlines()  # one row per group, sorted: splatfacto before tttlrm; seeds unknown in old records
    assert rows[3].startswith("| sample_scene | tttlrm | input | 1 (?) | ? | 5.2 | 20.00 | 0.100 |")
    assert rows[3].endswith("| setup | 24.00 | - | 30 | 27.00 |")  # at 5 s tttlrm was still predicting (5.2 s)
    assert rows[2].startswith("| sample_scene | splatfacto random | input | 1 (?) |")
    assert rows[2].endswith("| 8.00 | 17.00 | 30.00 | 60 | 30.00 |")
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


# --- every run counts -------------------------------------------------------------------------------------------


def test_every_run_counts_and_a_worse_run_changes_the_verdict():
    """Appending a run never replaces one: a worse tttlrm seed pulls the mean down and turns the verdict."""
    marks = (10, 20)
    (win,) = verdicts([OURS, THEIRS], marks=marks)
    assert "at or above at every measured budget" in win and "1 run vs splatfacto random, 1 run" in win
    worse = _run("ours-s1", "tttlrm", [(5.1, 18.0), (10.2, 12.0), (20.1, 20.0), (30.0, 22.0)], seed=1)
    for order in ([OURS, THEIRS, worse], [worse, OURS, THEIRS]):  # the order of the file does not matter
        (line,) = verdicts(order, marks=marks)
        assert "tttlrm, 2 runs vs splatfacto random, 1 run; means" in line
        # tttlrm's means 18.0 and 23.0 dB at 10 and 20 s against 17.0 and 25.0
        assert "**behind at some budgets**. At or above: 10 s (+1.00); behind: 20 s (-2.00)." in line
    table = race_table([OURS, THEIRS, worse], marks=marks)
    row = [r for r in table.splitlines() if "| tttlrm |" in r][0]
    assert "| 2 (?, 1) |" in row and "| 18.00 (12.00-24.00) | 23.00 (20.00-26.00) |" in row
    assert len(group_runs([OURS, THEIRS, worse])) == 2


def test_groups_split_by_init_and_overrides_and_partial_cells_are_marked():
    sf_sfm = [_run(f"sfm{s}", "splatfacto", [(1, 10.0), (10, 20.0 + s), (20, 21.0 + s)], init="sfm", seed=s)
              for s in range(3)]
    tuned = _run("tuned", "tttlrm", [(5, 20.0), (10, 30.0)], sets=["pipeline.model.refine.max_gaussians=60000"])
    groups = group_runs([OURS, THEIRS, tuned, *sf_sfm])
    assert [k[2:4] for k in groups] == [("splatfacto", "random"), ("splatfacto", "sfm"), ("tttlrm", "model"),
                                        ("tttlrm", "model")]
    assert list(groups)[3][4] == ("refine.max_gaussians=60000",)
    lines = verdicts([OURS, THEIRS, tuned, *sf_sfm], marks=(10, 20))
    assert len(lines) == 4  # each tttlrm configuration against each splatfacto init
    assert any(ln.startswith("* sample_scene, input views (tttlrm, 1 run vs splatfacto sfm, 3 runs; means): **at or "
                             "above at every measured budget**. At or above: 10 s (+3.00), 20 s (+4.00)") for ln in lines)
    # the tuned run stopped at 10 s by its budget: 20 s is not reached by every run of that pair
    assert any("[refine.max_gaussians=60000]" in ln and "not reached by every run: 20 s" in ln for ln in lines)
    short = _run("short", "splatfacto", [(1, 9.0), (10, 19.0)], init="sfm", seed=3)
    table = race_table([*sf_sfm, short], marks=(10, 20))
    assert "| 20.50 (19.00-22.00) | 22.00 (21.00-23.00) [3/4] |" in table


def test_a_run_that_ended_on_its_own_keeps_its_last_value():
    plateaued = dict(THEIRS, stopped="plateau")
    assert psnr_at(THEIRS, 120) is None and psnr_at(plateaued, 120) == 30.0
    scheduled = dict(OURS, stopped="stop_training (refine.seconds)")
    (line,) = verdicts([scheduled, plateaued], marks=(60, 120))
    assert "behind: 60 s (-3.00), 120 s (-3.00)" in line and "27.00 dB after 30 s vs 30.00 dB after 60 s" in line
    ts, ys = mean_curve([plateaued, dict(THEIRS, points=THEIRS["points"][:3], stopped="plateau")])
    assert ts[-1] == 60.1 and ys[-1] == (30.0 + 25.5) / 2


def test_committed_records_without_the_new_fields_load():
    runs = load_runs([REPO / "docs" / "refine_race.jsonl"])
    table = race_table(runs)
    assert table.count("| 1 (?) |") == len(runs) == len(group_runs(runs))  # seed unknown, one run per cell
    assert "| splatfacto random |" in table and "| budget |" in table
    assert len(verdicts(runs)) == len(runs) // 2


def test_figure_draws_runs_and_group_means(tmp_path):
    runs = [OURS, dict(OURS, label="o2", seed=2, points=[dict(p, psnr=p["psnr"] + 1) for p in OURS["points"]]),
            THEIRS, _run("sfm", "splatfacto", [(1, 12.0), (40, 27.0)], init="sfm", stopped="plateau")]
    race_figure(runs, tmp_path / "f.png", "t")
    assert (tmp_path / "f.png").stat().st_size > 10_000


# --- the plateau rule -------------------------------------------------------------------------------------------


def test_plateau_rule_on_a_synthetic_psnr_sequence():
    """Stop when the best of the last `window` evaluations gains <= threshold over the best before them."""
    rising = [10.0 + 2.0 * (1 - 0.5 ** i) * 5 for i in range(12)]  # 10 -> 20 dB, gains halving
    stops = [n for n in range(1, len(rising) + 1) if plateau_reached(rising[:n], window=3, threshold=0.2)]
    # gains of the last 3 steps: 1.25+0.625+0.3125 at n=6 ... the first window under 0.2 dB ends at n=10
    gain = [max(rising[n - 3:n]) - max(rising[:n - 3]) for n in range(4, 13)]
    assert stops and stops[0] == 4 + next(i for i, g in enumerate(gain) if g <= 0.2)
    assert not plateau_reached(rising[:3], window=3, threshold=100)  # never before window + 1 evaluations
    # splatfacto's opacity resets: a dip inside the window does not stop a run whose best still improves
    resets = [20.0, 22.0, 18.0, 23.0, 19.0, 24.0, 20.0, 25.0]
    assert not any(plateau_reached(resets[:n], window=3, threshold=0.05) for n in range(1, 9))
    flat = resets + [24.9, 24.0, 25.04]
    assert plateau_reached(flat, window=3, threshold=0.05) and not plateau_reached(flat, window=3, threshold=0.01)
    with pytest.raises(ValueError):
        plateau_reached([1.0, 2.0], window=0)


# --- SfM points of a capture ------------------------------------------------------------------------------------


def _capture(folder: Path, ply: bool = True, n_points: int = 64) -> Path:
    """A nerfstudio capture (transforms.json, OpenGL c2w) of the tests' mydesk_mini frames, with a random coloured
    point cloud as its SfM points when ``ply``."""
    import numpy as np

    src = REPO / "tests" / "assets" / "mydesk_mini"
    scene = json.loads((src / "opencv_cameras.json").read_text())
    frames = []
    for f in scene["frames"]:
        c2w = np.linalg.inv(np.array(f["w2c"]))
        c2w[:3, 1:3] *= -1  # OpenCV -> OpenGL camera axes
        frames.append({"file_path": str(src / f["file_path"]), "transform_matrix": c2w.tolist(), "fl_x": f["fx"],
                       "fl_y": f["fy"], "cx": f["cx"], "cy": f["cy"], "w": f["w"], "h": f["h"]})
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"camera_model": "OPENCV", "frames": frames}
    if ply:
        rng = np.random.default_rng(0)
        centres = np.array([fr["transform_matrix"] for fr in frames])[:, :3, 3]
        pts = centres.mean(0) + rng.normal(size=(n_points, 3))
        rows = [f"{x} {y} {z} {r} {g} {b}" for (x, y, z), (r, g, b) in zip(pts, rng.integers(0, 256, (n_points, 3)))]
        (folder / "sparse_pc.ply").write_text(
            f"ply\nformat ascii 1.0\nelement vertex {n_points}\nproperty float x\nproperty float y\nproperty float z\n"
            "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n" + "\n".join(rows) + "\n")
        meta["ply_file_path"] = "sparse_pc.ply"
    (folder / "transforms.json").write_text(json.dumps(meta))
    return folder


def test_sfm_points_file_names_what_is_missing(tmp_path):
    with pytest.raises(SfmPointsError, match=f"{tmp_path / 'none' / 'transforms.json'} does not exist"):
        sfm_points_file(tmp_path / "none")
    bare = _capture(tmp_path / "bare", ply=False)
    with pytest.raises(SfmPointsError, match=f"{bare / 'transforms.json'} names no SfM point cloud"):
        sfm_points_file(bare)
    cap = _capture(tmp_path / "cap")
    assert sfm_points_file(cap) == cap / "sparse_pc.ply" == sfm_points_file(cap / "transforms.json")
    (cap / "sparse_pc.ply").unlink()
    with pytest.raises(SfmPointsError, match=f"the SfM point cloud {cap / 'sparse_pc.ply'} .* does not exist"):
        sfm_points_file(cap)


def _bench(*args, timeout=170):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(BENCH), *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)


def test_bench_sfm_init_on_a_capture_without_points_stops_with_one_message(tmp_path):
    bare = _capture(tmp_path / "bare", ply=False)
    res = _bench("run", "--method", "splatfacto", "--init", "sfm", "--data", bare, "--out", tmp_path / "r.jsonl")
    assert res.returncode != 0 and not (tmp_path / "r.jsonl").exists()
    assert res.stderr.strip().splitlines()[-1] == (
        f"--init sfm: {bare / 'transforms.json'} names no SfM point cloud (no ply_file_path entry) (made by "
        "`ns-process-data`, which writes the COLMAP points as sparse_pc.ply and names it in transforms.json as "
        "ply_file_path)")
    res = _bench("run", "--method", "splatfacto", "--init", "sfm", "--data", REPO / "tests/assets/mydesk_mini",
                 "--out", tmp_path / "r.jsonl")  # an opencv_cameras.json scene has no SfM points
    assert res.returncode != 0 and "mydesk_mini/transforms.json does not exist" in res.stderr
    res = _bench("run", "--method", "tttlrm", "--init", "sfm", "--out", tmp_path / "r.jsonl")
    assert res.returncode != 0 and "--init sfm: tttlrm starts from model" in res.stderr


def test_bench_record_carries_its_provenance_and_the_sfm_seed(tmp_path):
    """One tiny splatfacto run from a capture's SfM points (2 steps, plateau rule every step): the record names the
    commit, the command, the seed, the init, why it stopped, and no weights; its Gaussians are the ply's points."""
    cap = _capture(tmp_path / "cap", n_points=64)
    out = tmp_path / "runs.jsonl"
    res = _bench("run", "--method", "splatfacto", "--init", "sfm", "--seed", 7, "--data", cap, "--views", "train",
                 "--until-plateau", "--plateau-every", 1, "--plateau-window", 1, "--plateau-threshold", 100,
                 "--out", out, "--label", "tiny")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (rec,) = load_runs([out])
    assert rec["init"] == "sfm" and rec["seed"] == 7 and rec["method"] == "splatfacto" and rec["label"] == "tiny"
    assert rec["stopped"] == "plateau" and rec["steps"] == 1  # 2 evaluations: step 0 and step 1, window 1
    assert rec["plateau"] == {"every": 1, "window": 1, "threshold_db": 100.0, "max_steps": 30000,
                              "psnr": [p["psnr"] for p in rec["points"]]}
    assert rec["points"][0]["gaussians"] == 64  # seeded from the 64 SfM points, not 50k random ones
    assert rec["weights"] is None and rec["weights_sha256"] is None
    assert len(rec["git"]["commit"]) == 40 and isinstance(rec["git"]["dirty"], bool)
    assert rec["argv"][:4] == ["scripts/bench_refine.py", "run", "--method", "splatfacto"]
    assert "--seed" in rec["argv"] and "--until-plateau" in rec["argv"] and "\"/" not in out.read_text()


# --- the whole race, as one command -----------------------------------------------------------------------------


def test_race_dry_run_prints_the_whole_protocol(tmp_path):
    res = _bench("race", "--data", "tests/assets/mydesk_mini", "--dry-run")
    assert res.returncode == 0, res.stderr
    cmds = [ln for ln in res.stdout.splitlines() if not ln.startswith("#")]
    assert len(cmds) == 3 * 2 + 3 + 1 and all(c.startswith("OMP_NUM_THREADS=1 ") for c in cmds)
    runs = [c for c in cmds if " run " in c]
    for seed in (0, 1, 2):
        for init in ("random", "sfm"):
            assert sum(f"--method splatfacto --init {init} --seed {seed} --until-plateau" in c for c in runs) == 1
        assert sum(f"--method tttlrm --seed {seed} --set 'pipeline.model.refine.seconds=<S>'" in c for c in runs) == 1
    assert all(f"--out {REPO / 'outputs/race/mydesk_mini/runs.jsonl'}" in c for c in runs)
    assert " plot --runs " in cmds[-1] and "refine_race_mydesk_mini.png" in cmds[-1]
    res = _bench("race", "--data", "tests/assets/mydesk_mini", "--out-dir", tmp_path, "--seeds", 5,
                 "--inits", "random", "--tttlrm-seconds", 900, "--dry-run")
    cmds = [ln for ln in res.stdout.splitlines() if not ln.startswith("#")]
    assert len(cmds) == 3 and "refine.seconds=900 " in cmds[1] and str(tmp_path / "runs.jsonl") in cmds[0]
    assert not list(tmp_path.iterdir())  # a dry run writes nothing
    res = _bench("race", "--help")
    assert res.returncode == 0 and "--dry-run" in res.stdout and "until the held-out PSNR plateaus" in res.stdout

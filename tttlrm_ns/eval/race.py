"""The refinement race: held-out PSNR against CPU time for ``tttlrm`` + refinement and ``splatfacto-cpu``.

Runs are the JSON lines ``scripts/bench_refine.py run`` appends (one curve each: ``label``, ``method``, ``views``,
``data``, ``points`` = [{"t": CPU s since setup start, "psnr": dB, "step", "gaussians", "wall"}], ``median_step_s``,
``stopped``), since issue 21 also their provenance: ``init`` (``model`` for tttlrm, ``random`` / ``sfm`` for
splatfacto), ``seed``, ``git`` (commit, dirty), ``weights`` and ``weights_sha256`` (tttlrm; null for splatfacto),
``argv`` (the exact command line) and the plateau rule of ``--until-plateau`` runs. Older records without these
fields still load: their init is what the bench did then (tttlrm: the model, splatfacto: random points), their seed
is shown as unknown.

This module turns the runs into what a reader looks at: one figure per scene, the table of PSNR at fixed budgets,
and the verdict per budget (is tttlrm + refinement at or above splatfacto-cpu with the same views?), so the page
says what the curves say and nothing typed in. **Every run counts**: runs are grouped by (scene, views, method,
init, overrides) -- the seeds of one configuration -- and each cell of the table is the mean over the group's runs
with its spread (min-max) and the number of runs; the verdict compares the means. Appending a run never replaces
another one.

A run that ended on its own (``stopped``: its held-out PSNR plateaued, its schedule's ``refine.seconds`` ran out,
or its ``max_steps``) keeps its last PSNR at every later budget: that is what its user has from then on. A run cut
off by the benchmark's ``--budget`` has no value past its end.

Runs are appended with :func:`append_run`, which stores paths (``data``, paths in ``sets`` overrides and ``argv``)
relative to the repository (:func:`portable_path`): the JSONL is committed (``docs/refine_race.jsonl``) and must
read the same in every checkout, without the absolute paths of the machine that ran it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

MARKS = (10, 15, 20, 30, 60, 120, 300)
"""Budgets (CPU seconds since setup start) of the table and the verdict."""
LONG_MARKS = (600, 1200, 1800, 3600, 7200, 14400, 28800)
"""Further budgets, in the table and the verdict when a run lasts that long (runs to convergence)."""
ENDED = ("plateau", "max_steps", "stop_training (refine.seconds)")
"""``stopped`` values of a run that ended on its own (it keeps its last PSNR at later budgets)."""
PLATEAU_WINDOW = 5
"""Default window of the plateau rule (held-out evaluations), see :func:`plateau_reached`."""
PLATEAU_THRESHOLD_DB = 0.05
"""Default threshold of the plateau rule (dB), see :func:`plateau_reached`."""

REPO = Path(__file__).resolve().parents[2]
"""The repository holding this package (what recorded paths are relative to)."""


def portable_path(path: Any, repo: Path = REPO) -> str:
    """``path`` as a race record stores it: relative to ``repo`` when inside it (``tttlrm_ns/assets/sample_scene``),
    relative to it through its parent folder for data in a folder next to the checkout (``../data/mydesk``), else
    only the last component (the scene name, all the race reads of it).

    A relative ``path`` is taken from the current directory, as the command that received it would.
    """
    p = Path(os.path.abspath(os.fspath(path)))
    repo = Path(os.path.abspath(repo))
    if p == repo or repo in p.parents:
        return p.relative_to(repo).as_posix()
    if repo.parent != Path(repo.anchor) and repo.parent in p.parents:  # not "../" up to the root
        return "../" + p.relative_to(repo.parent).as_posix()
    return p.name


def portable_record(value: Any, repo: Path = REPO) -> Any:
    """A copy of a run record (any JSON value) in which every absolute path is :func:`portable_path`'s form:
    strings that are absolute paths, and the value of ``key=/abs/path`` override strings (``--set``)."""
    if isinstance(value, dict):
        return {k: portable_record(v, repo) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable_record(v, repo) for v in value]
    if isinstance(value, Path):
        value = os.fspath(value)
    if isinstance(value, str):
        if os.path.isabs(value):
            return portable_path(value, repo)
        key, eq, rest = value.partition("=")
        if eq and os.path.isabs(rest):
            return f"{key}={portable_path(rest, repo)}"
    return value


def append_run(out: Path, record: Dict[str, Any], repo: Path = REPO) -> Dict[str, Any]:
    """Append ``record`` (made portable, see :func:`portable_record`) as one JSON line to ``out``; returns what
    was written."""
    rec = portable_record(record, repo)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    return rec


def load_runs(paths: Iterable[Path]) -> List[Dict[str, Any]]:
    """Every run of the given JSONL files, in file order."""
    runs = []
    for path in paths:
        for line in Path(path).read_text().splitlines():
            if line.strip():
                runs.append(json.loads(line))
    return runs


# --------------------------------------------------------------------------------------------------------------
# provenance of a record, and the checks before a run


def provenance(argv: Sequence[str], weights: Optional[Path] = None) -> Dict[str, Any]:
    """What a race record says about how it was made: ``git`` (commit, dirty flag, modified files of the checkout),
    ``weights`` and ``weights_sha256`` (None without a weights file: splatfacto), ``argv`` (the command line)."""
    from tttlrm_ns.checkpoint_io import sha256_file
    from tttlrm_ns.provenance import git_state

    return {"git": git_state(REPO), "weights": None if weights is None else os.fspath(weights),
            "weights_sha256": None if weights is None else sha256_file(weights), "argv": list(argv)}


class SfmPointsError(ValueError):
    """``--init sfm`` on a capture that has no SfM point cloud."""


def sfm_points_file(data: Path) -> Path:
    """The SfM point cloud that nerfstudio's ``nerfstudio-data`` parser loads for ``load_3D_points`` (the
    ``ply_file_path`` of the capture's ``transforms.json``, relative to its folder), checked to exist; raises
    :class:`SfmPointsError` naming the file that is missing or lacks the entry.

    Checked before nerfstudio reads the capture because its parser, without the entry, falls back to random points
    with a warning (or asks on the terminal whether to convert a ``colmap/`` folder), which a splatfacto ``sfm``
    run must not silently do."""
    data = Path(data)
    transforms = data if data.name == "transforms.json" else data / "transforms.json"
    hint = ("(made by `ns-process-data`, which writes the COLMAP points as sparse_pc.ply and names it in "
            "transforms.json as ply_file_path)")
    if not transforms.is_file():
        raise SfmPointsError(f"--init sfm needs a nerfstudio capture with SfM points: {transforms} does not exist "
                             f"{hint}")
    try:
        meta = json.loads(transforms.read_text())
    except json.JSONDecodeError as e:
        raise SfmPointsError(f"--init sfm: {transforms} is not valid JSON ({e})") from None
    if not meta.get("ply_file_path"):
        raise SfmPointsError(f"--init sfm: {transforms} names no SfM point cloud (no ply_file_path entry) {hint}")
    ply = transforms.parent / meta["ply_file_path"]
    if not ply.is_file():
        raise SfmPointsError(f"--init sfm: the SfM point cloud {ply} (ply_file_path of {transforms}) does not exist")
    return ply


def plateau_reached(psnrs: Sequence[float], window: int = PLATEAU_WINDOW,
                    threshold: float = PLATEAU_THRESHOLD_DB) -> bool:
    """The stopping rule of ``scripts/bench_refine.py run --until-plateau``.

    ``psnrs`` are the held-out PSNRs of the evaluations made every ``--plateau-every`` steps so far (p_1 .. p_n,
    the first at step 0). The run has plateaued when n > ``window`` and the best of the last ``window``
    evaluations is not more than ``threshold`` dB above the best of all evaluations before them:

        max(p_{n-window+1}, ..., p_n) <= max(p_1, ..., p_{n-window}) + threshold

    (using the best rather than the last value, the dips of splatfacto's opacity resets every 3000 steps do not
    end a run that still improves between them, as long as the window spans more than one reset).
    """
    if window < 1:
        raise ValueError(f"plateau window must be >= 1, got {window}")
    if len(psnrs) <= window:
        return False
    return max(psnrs[-window:]) <= max(psnrs[:-window]) + threshold


# --------------------------------------------------------------------------------------------------------------
# reading runs: groups of seeds, PSNR at a budget


def scene_of(run: Dict[str, Any]) -> str:
    """The scene folder's name (the ``data`` a run was made on)."""
    return Path(run.get("data", "?")).name


def init_of(run: Dict[str, Any]) -> str:
    """``model`` / ``random`` / ``sfm``; records without it were made when tttlrm started from its prediction and
    splatfacto from random points (the opencv-cameras scenes of the race have no SfM points)."""
    return run.get("init") or ("model" if run["method"] == "tttlrm" else "random")


def overrides_of(run: Dict[str, Any]) -> Tuple[str, ...]:
    """The run's ``--set`` overrides, shortened (without the ``pipeline.model.`` prefix)."""
    return tuple(s.removeprefix("pipeline.model.") for s in run.get("sets") or ())


GroupKey = Tuple[str, str, str, str, Tuple[str, ...]]


def group_key(run: Dict[str, Any]) -> GroupKey:
    """(scene, views, method, init, overrides): runs that differ only by seed (or label) share it."""
    return (scene_of(run), run["views"], run["method"], init_of(run), overrides_of(run))


def group_runs(runs: Sequence[Dict[str, Any]]) -> Dict[GroupKey, List[Dict[str, Any]]]:
    """Every run under its :func:`group_key`, groups in sorted order, runs in file order."""
    groups: Dict[GroupKey, List[Dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault(group_key(r), []).append(r)
    return dict(sorted(groups.items()))


def group_name(key: GroupKey) -> str:
    """``tttlrm`` / ``splatfacto random`` / ``splatfacto sfm``, with the overrides in brackets."""
    _, _, method, init, sets = key
    name = method if init == "model" else f"{method} {init}"
    return name + (f" [{', '.join(sets)}]" if sets else "")


def ended(run: Dict[str, Any]) -> bool:
    """True if the run ended on its own (see :data:`ENDED`), not cut off by the benchmark's budget."""
    return run.get("stopped") in ENDED


def psnr_at(run: Dict[str, Any], budget: float) -> Optional[float]:
    """PSNR of the last point recorded at or before ``budget`` (+3 %: points land on the first step past a mark);
    -inf if it had no result yet at the budget (still in setup). Past the run's end: its last PSNR if the run ended
    on its own (:func:`ended`), else None (not reached)."""
    pts = run["points"]
    if not pts:
        return None
    if pts[-1]["t"] < 0.97 * budget:
        return pts[-1]["psnr"] if ended(run) else None
    before = [p for p in pts if p["t"] <= 1.03 * budget]
    return before[-1]["psnr"] if before else float("-inf")


def marks_for(runs: Sequence[Dict[str, Any]]) -> Tuple[float, ...]:
    """:data:`MARKS`, and the :data:`LONG_MARKS` that the longest run reaches."""
    end = max((r["points"][-1]["t"] for r in runs if r["points"]), default=0.0)
    return MARKS + tuple(m for m in LONG_MARKS if 0.97 * m <= end)


def cell(runs: Sequence[Dict[str, Any]], budget: float) -> Dict[str, Any]:
    """The group's PSNR at ``budget``: ``mean``, ``lo``, ``hi`` over the runs that reached it (-inf if one of them
    had no result yet), ``n`` of them out of ``total``."""
    vals = [v for v in (psnr_at(r, budget) for r in runs) if v is not None]
    out: Dict[str, Any] = {"n": len(vals), "total": len(runs), "mean": None, "lo": None, "hi": None}
    if vals:
        out.update(mean=sum(vals) / len(vals) if all(math.isfinite(v) for v in vals) else float("-inf"),
                   lo=min(vals), hi=max(vals))
    return out


def _fmt(c: Dict[str, Any]) -> str:
    """'27.10', '27.10 (26.90-27.30)' over several runs, '[2/3]' when only some runs reached the budget."""
    if c["mean"] is None:
        return "-"
    if c["mean"] == float("-inf"):
        text = "setup"
    elif c["n"] > 1:
        text = f"{c['mean']:.2f} ({c['lo']:.2f}-{c['hi']:.2f})"
    else:
        text = f"{c['mean']:.2f}"
    return text + (f" [{c['n']}/{c['total']}]" if c["n"] < c["total"] else "")


def _seeds(runs: Sequence[Dict[str, Any]]) -> str:
    seeds = [r.get("seed") for r in runs]
    return ", ".join("?" if s is None else str(s) for s in seeds)


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values)


def race_table(runs: Sequence[Dict[str, Any]], marks: Optional[Sequence[float]] = None) -> str:
    """Markdown, one row per group of runs (:func:`group_runs`): the number of runs and their seeds ('?' =
    not recorded), means over the runs of the start (setup + prediction: CPU s and PSNR) and of the step time,
    then the PSNR at each budget and at the end of the runs as 'mean (min-max)' ('-' = not reached; '[k/n]' =
    reached by k of the n runs; 'setup' = still predicting)."""
    marks = marks_for(runs) if marks is None else marks
    lines = ["| scene | method | views | runs (seeds) | stopped | start s | start dB | s/step | "
             + " | ".join(f"{m:g} s" for m in marks) + " | end s | end dB |",
             "|---|---|---|---|---|---|---|---|" + "---|" * (len(marks) + 2)]
    for key, rs in group_runs(runs).items():
        scene, views = key[0], key[1]
        stopped = ", ".join(sorted({str(r.get("stopped", "?")) for r in rs}))
        ends = [r["points"][-1] for r in rs]
        end_psnr = {"n": len(rs), "total": len(rs), "mean": _mean(p["psnr"] for p in ends),
                    "lo": min(p["psnr"] for p in ends), "hi": max(p["psnr"] for p in ends)}
        lines.append(
            f"| {scene} | {group_name(key)} | {views} | {len(rs)} ({_seeds(rs)}) | {stopped} | "
            f"{_mean(r['points'][0]['t'] for r in rs):.1f} | {_mean(r['points'][0]['psnr'] for r in rs):.2f} | "
            f"{_mean(r['median_step_s'] for r in rs):.3f} | " + " | ".join(_fmt(cell(rs, m)) for m in marks)
            + f" | {_mean(p['t'] for p in ends):.0f} | {_fmt(end_psnr)} |")
    return "\n".join(lines)


def verdicts(runs: Sequence[Dict[str, Any]], marks: Optional[Sequence[float]] = None) -> List[str]:
    """One line per (scene, views) and pair of a tttlrm group and a splatfacto group (one per init): the budgets
    where tttlrm's mean over its runs is at or above splatfacto's mean, and where it is behind, by how much; a
    budget counts only when every run of both groups reached it. Every run counts (no run replaces another)."""
    marks = marks_for(runs) if marks is None else marks
    groups = group_runs(runs)
    out = []
    for okey, ours in groups.items():
        if okey[2] != "tttlrm":
            continue
        for tkey, theirs in groups.items():
            if tkey[2] != "splatfacto" or tkey[:2] != okey[:2]:
                continue
            ahead, behind, missing = [], [], []
            for m in marks:
                a, b = cell(ours, m), cell(theirs, m)
                if a["n"] < a["total"] or b["n"] < b["total"] or not a["n"] or not b["n"]:
                    missing.append(f"{m:g}")
                elif a["mean"] >= b["mean"]:
                    ahead.append(f"{m:g} s" + ("" if b["mean"] == float("-inf") else f" (+{a['mean'] - b['mean']:.2f})"))
                else:
                    behind.append(f"{m:g} s" + (" (no result yet)" if a["mean"] == float("-inf")
                                                else f" ({a['mean'] - b['mean']:.2f})"))
            verdict = "**at or above at every measured budget**" if ahead and not behind else (
                "**behind at some budgets**" if behind else "not comparable")
            scene, views = okey[:2]
            line = (f"* {scene}, {views} views ({group_name(okey)}, {_runs(ours)} vs {group_name(tkey)}, "
                    f"{_runs(theirs)}; means): {verdict}. At or above: {', '.join(ahead) or 'none'}; "
                    f"behind: {', '.join(behind) or 'none'}")
            if missing:
                line += f"; not reached by every run: {', '.join(missing)} s"
            line += (f". At the end of the runs: {_mean(r['points'][-1]['psnr'] for r in ours):.2f} dB after "
                     f"{_mean(r['points'][-1]['t'] for r in ours):.0f} s vs "
                     f"{_mean(r['points'][-1]['psnr'] for r in theirs):.2f} dB after "
                     f"{_mean(r['points'][-1]['t'] for r in theirs):.0f} s")
            out.append(line + ".")
    return out


def _runs(rs: Sequence[Dict[str, Any]]) -> str:
    return f"{len(rs)} run" + ("s" if len(rs) != 1 else "")


def mean_curve(runs: Sequence[Dict[str, Any]]) -> Tuple[List[float], List[float]]:
    """The group's mean curve: at every time one of its runs recorded a point (from the first time every run has a
    result), the mean over its runs of their last PSNR by then; a run that ended on its own keeps its last value,
    and the curve stops where a run cut off by the budget stops."""
    times = sorted({p["t"] for r in runs for p in r["points"]})
    ts, ys = [], []
    for t in times:
        vals = []
        for r in runs:
            pts = r["points"]
            if t > pts[-1]["t"] and not ended(r):
                vals = None
                break
            before = [p["psnr"] for p in pts if p["t"] <= t]
            if not before:
                vals = None
                break
            vals.append(before[-1])
        if vals:
            ts.append(t)
            ys.append(sum(vals) / len(vals))
    return ts, ys


_STYLE = {("tttlrm", "model"): ("C0", "-"), ("splatfacto", "random"): ("C1", "--"), ("splatfacto", "sfm"): ("C2", ":")}


def race_figure(runs: Sequence[Dict[str, Any]], png: Path, title: str = "") -> None:
    """One panel per views setting ('input' / 'train'): PSNR against CPU seconds. Every run is a thin line, each
    group's mean over its runs (:func:`mean_curve`) a thick one (tttlrm solid, splatfacto random dashed, sfm
    dotted); between tttlrm's mean and the best splatfacto mean the band is green where tttlrm is ahead and red
    where it is behind; the range 10 s - 5 min is shaded grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    views_list = sorted({r["views"] for r in runs})
    fig, axes = plt.subplots(1, max(len(views_list), 1), figsize=(6.5 * max(len(views_list), 1), 4.5),
                             squeeze=False)
    for ax, views in zip(axes[0], views_list):
        curves = {}
        for i, (key, rs) in enumerate(group_runs([r for r in runs if r["views"] == views]).items()):
            color, ls = _STYLE.get((key[2], key[3]), (f"C{3 + i % 7}", "-."))
            if key[4] and key[2] == "tttlrm":  # tttlrm variants (overrides) each get their own colour
                color = f"C{3 + i % 7}"
            for r in rs:
                ax.plot([p["t"] for p in r["points"]], [p["psnr"] for p in r["points"]], color=color, ls=ls, lw=0.8,
                        alpha=0.35 if len(rs) > 1 else 1.0, marker="o" if len(rs) == 1 else None, ms=3)
            ts, ys = mean_curve(rs)
            curves[key] = (ts, ys)
            if len(rs) > 1:
                ax.plot(ts, ys, color=color, ls=ls, lw=2.2)
            ax.plot([], [], color=color, ls=ls, lw=2.2, label=f"{group_name(key)} ({_runs(rs)}"
                    + (", mean" if len(rs) > 1 else "") + ")")
        ours = [c for k, c in curves.items() if k[2] == "tttlrm"]
        theirs = [c for k, c in curves.items() if k[2] == "splatfacto"]
        if len(ours) == 1 and theirs and ours[0][0]:
            grid = np.array(sorted({t for ts, _ in [ours[0], *theirs] for t in ts}))
            grid = grid[(grid >= ours[0][0][0]) & (grid <= ours[0][0][-1])]
            a = np.interp(grid, *ours[0])
            best = np.full_like(grid, -np.inf)
            for ts, ys in theirs:
                if ts:
                    inside = (grid >= ts[0]) & (grid <= ts[-1])
                    best = np.where(inside, np.maximum(best, np.interp(grid, ts, ys)), best)
            ok = np.isfinite(best)
            ax.fill_between(grid, a, np.where(ok, best, a), where=ok & (a >= best), color="green", alpha=0.15,
                            interpolate=True, label="tttlrm ahead (mean vs best splatfacto mean)")
            ax.fill_between(grid, a, np.where(ok, best, a), where=ok & (a < best), color="red", alpha=0.15,
                            interpolate=True, label="tttlrm behind")
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlabel("CPU seconds since setup start (1 thread; includes data loading and prediction)")
        ax.set_ylabel("held-out PSNR (dB)")
        ax.set_title(f"{title} -- {views} views" if title else f"{views} views")
        ax.axvspan(10, 300, color="0.93", zorder=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def race_markdown(runs: Sequence[Dict[str, Any]], img_dir: Path, img_prefix: str = "img") -> str:
    """The results-page section: per scene a figure (written to ``img_dir``), then the table and the verdicts."""
    parts = ["## Refinement race", "",
             "Held-out PSNR against CPU time (one thread, from the start of nerfstudio's `Trainer.setup()`, so "
             "tttlrm's first point includes its prediction; evaluation pauses the clock), made by "
             "`scripts/bench_refine.py run` through nerfstudio's training loop. `input` views: both methods fit "
             "only tttlrm's N input views; `train`: every train image. tttlrm runs with the refinement defaults "
             "(`--pipeline.model.refine.*`); splatfacto-cpu with its own, from random points (`random`) or the "
             "capture's SfM points (`sfm`). Every run counts: a row is the mean over the runs (seeds) of one "
             "configuration, with the min-max in brackets and the number of runs; the verdict compares the means.",
             ""]
    for scene in sorted({scene_of(r) for r in runs}):
        mine = [r for r in runs if scene_of(r) == scene]
        png = Path(img_dir) / f"refine_race_{scene}.png"
        race_figure(mine, png, scene)
        parts += [f"![refinement race, {scene}]({img_prefix}/{png.name})", ""]
    parts += [race_table(runs), "", "Against the goal (tttlrm + refinement at or above splatfacto-cpu at every "
              "budget from 10 s to 5 min, same views):", ""] + verdicts(runs) + [""]
    return "\n".join(parts)


__all__ = ["ENDED", "LONG_MARKS", "MARKS", "PLATEAU_THRESHOLD_DB", "PLATEAU_WINDOW", "SfmPointsError", "append_run",
           "cell", "ended", "group_key", "group_name", "group_runs", "init_of", "load_runs", "marks_for", "mean_curve",
           "plateau_reached", "portable_path", "portable_record", "provenance", "psnr_at", "race_figure",
           "race_markdown", "race_table", "scene_of", "sfm_points_file", "verdicts"]

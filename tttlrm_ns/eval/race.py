"""The refinement race: held-out PSNR against CPU time for ``tttlrm`` + refinement and ``splatfacto-cpu``.

Runs are the JSON lines ``scripts/bench_refine.py run`` appends (one curve each: ``label``, ``method``, ``views``,
``data``, ``points`` = [{"t": CPU s since setup start, "psnr": dB, "step", "gaussians", "wall"}], ``median_step_s``).
This module turns them into what a reader looks at: one figure per scene, the table of PSNR at fixed budgets, and
the verdict per budget (is tttlrm + refinement at or above splatfacto-cpu with the same views?), so the page says
what the curves say and nothing typed in.

Runs are appended with :func:`append_run`, which stores paths (``data``, paths in ``sets`` overrides) relative to
the repository (:func:`portable_path`): the JSONL is committed (``docs/refine_race.jsonl``) and must read the same
in every checkout, without the absolute paths of the machine that ran it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

MARKS = (10, 15, 20, 30, 60, 120, 300)
"""Budgets (CPU seconds since setup start) of the table and the verdict."""

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


def scene_of(run: Dict[str, Any]) -> str:
    """The scene folder's name (the ``data`` a run was made on)."""
    return Path(run.get("data", "?")).name


def psnr_at(run: Dict[str, Any], budget: float) -> Optional[float]:
    """PSNR of the last point recorded at or before ``budget`` (+3 %: points land on the first step past a mark);
    None if the run did not reach the budget, -inf if it had no result yet at the budget (still in setup)."""
    pts = run["points"]
    if not pts or pts[-1]["t"] < 0.97 * budget:
        return None
    before = [p for p in pts if p["t"] <= 1.03 * budget]
    return before[-1]["psnr"] if before else float("-inf")


def race_table(runs: Sequence[Dict[str, Any]], marks: Sequence[float] = MARKS) -> str:
    """Markdown: per run its start (setup + prediction), step time and PSNR at each budget ('-' = not reached)."""
    lines = ["| scene | run | method | views | start s | start dB | s/step | "
             + " | ".join(f"{m:g} s" for m in marks) + " |",
             "|---|---|---|---|---|---|---|" + "---|" * len(marks)]
    for r in runs:
        p0 = r["points"][0]
        cells = []
        for m in marks:
            v = psnr_at(r, m)
            cells.append("-" if v is None else "setup" if v == float("-inf") else f"{v:.2f}")
        lines.append(f"| {scene_of(r)} | {r['label']} | {r['method']} | {r['views']} | {p0['t']:.1f} | "
                     f"{p0['psnr']:.2f} | {r['median_step_s']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdicts(runs: Sequence[Dict[str, Any]], marks: Sequence[float] = MARKS) -> List[str]:
    """One line per (scene, views) with a tttlrm and a splatfacto run: the budgets where tttlrm is at or above
    splatfacto (the later run of each method counts), and where it is behind, by how much."""
    latest: Dict[tuple, Dict[str, Any]] = {}
    for r in runs:
        latest[(scene_of(r), r["views"], r["method"])] = r
    out = []
    for scene, views in sorted({(s, v) for s, v, _ in latest}):
        ours, theirs = latest.get((scene, views, "tttlrm")), latest.get((scene, views, "splatfacto"))
        if ours is None or theirs is None:
            continue
        ahead, behind, missing = [], [], []
        for m in marks:
            a, b = psnr_at(ours, m), psnr_at(theirs, m)
            if a is None or b is None:
                missing.append(f"{m:g}")
            elif a >= b:
                ahead.append(f"{m:g} s" + ("" if b == float("-inf") else f" (+{a - b:.2f})"))
            else:
                behind.append(f"{m:g} s" + (" (no result yet)" if a == float("-inf") else f" ({a - b:.2f})"))
        verdict = "**at or above at every measured budget**" if ahead and not behind else (
            "**behind at some budgets**" if behind else "not comparable")
        line = (f"* {scene}, {views} views ({ours['label']} vs {theirs['label']}): {verdict}. At or above: "
                f"{', '.join(ahead) or 'none'}; behind: {', '.join(behind) or 'none'}")
        if missing:
            line += f"; not reached by both: {', '.join(missing)} s"
        out.append(line + ".")
    return out


def race_figure(runs: Sequence[Dict[str, Any]], png: Path, title: str = "") -> None:
    """One panel per views setting ('input' / 'train'): PSNR against CPU seconds, tttlrm solid, splatfacto dashed;
    the compared range, 10 s - 5 min, is shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({r["views"] for r in runs})
    fig, axes = plt.subplots(1, max(len(groups), 1), figsize=(6.5 * max(len(groups), 1), 4.5), squeeze=False)
    for ax, views in zip(axes[0], groups):
        for r in runs:
            if r["views"] != views:
                continue
            t = [p["t"] for p in r["points"]]
            y = [p["psnr"] for p in r["points"]]
            ax.plot(t, y, marker="o", ms=3, label=r["label"], ls="-" if r["method"] == "tttlrm" else "--")
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlabel("CPU seconds since setup start (1 thread; includes data loading and prediction)")
        ax.set_ylabel("held-out PSNR (dB)")
        ax.set_title(f"{title} -- {views} views" if title else f"{views} views")
        ax.axvspan(10, 300, color="0.93", zorder=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
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
             "(`--pipeline.model.refine.*`); splatfacto-cpu with its own (random initialisation).", ""]
    for scene in sorted({scene_of(r) for r in runs}):
        mine = [r for r in runs if scene_of(r) == scene]
        png = Path(img_dir) / f"refine_race_{scene}.png"
        race_figure(mine, png, scene)
        parts += [f"![refinement race, {scene}]({img_prefix}/{png.name})", ""]
    parts += [race_table(runs), "", "Against the goal (tttlrm + refinement at or above splatfacto-cpu at every "
              "budget from 10 s to 5 min, same views):", ""] + verdicts(runs) + [""]
    return "\n".join(parts)


__all__ = ["MARKS", "append_run", "load_runs", "portable_path", "portable_record", "psnr_at", "race_figure",
           "race_markdown", "race_table", "scene_of", "verdicts"]

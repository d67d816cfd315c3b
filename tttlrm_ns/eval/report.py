"""Tables, quality-vs-time plots and image grids from ``tttlrm-eval`` results; ``docs/results.md``.

``python -m tttlrm_ns.eval.report --results A/results.json [B/results.json ...] [--scaling S.json]
[--race RACE.jsonl] --out docs/results.md`` writes the page and its PNGs (next to it, under ``img/``) from result
files only: nothing is typed in, every number comes from a run (``scripts/reproduce_tables.sh`` runs everything).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

ENTRY_LABELS = {
    "tttlrm": "tttLRM (ours)",
    "splatfacto_cpu_time": "splatfacto-cpu, same wall-clock",
    "splatfacto_cpu_steps": "splatfacto-cpu, fixed steps",
    "mvs": "plane sweep, no network (--pipeline.init mvs)",
    "nearest_view": "nearest input view",
    "mean_colour": "mean colour",
    "white": "all white",
}


def _f(v: Any, fmt: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, fmt)


def _method_label(key: str, e: Dict[str, Any]) -> str:
    label = ENTRY_LABELS.get(key, key)
    if key == "tttlrm":
        k = e.get("refine_steps", 0)
        label += " feed-forward" if k == 0 else f" + {k} refinement steps"
    elif key.startswith("splatfacto"):
        label += f" ({e.get('steps')} steps)"
        if e.get("note"):
            label += f" [{e['note']}]"
    return label


def results_table(summary: Dict[str, Any]) -> str:
    """Markdown: one block of rows per scene (PSNR / SSIM / LPIPS, time, Gaussians, peak memory); failed scenes
    are listed with their error."""
    lines = [
        "| scene | method | PSNR (dB) | SSIM | LPIPS (VGG) | feed-forward (s) | refinement / training (s) | Gaussians "
        "| peak memory (MiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    failed = []
    for s in summary["scenes"]:
        if s.get("status") != "ok":
            failed.append(s)
            continue
        name = f"{s['scene']} ({s['num_inputs']} views, {len(s['test_frames'])} held out)"
        for key in ENTRY_LABELS:
            e = s["entries"].get(key)
            if e is None:
                continue
            if "error" in e:  # a baseline that could not run on this scene (e.g. mvs: the views do not match)
                why = e["error"][:120]
                lines.append(f"| {name} | {_method_label(key, e)} | not possible: {why} |  |  |  |  |  |  |")
                name = ""
                continue
            ff = e.get("feedforward_s") if key == "tttlrm" else None
            rt = e.get("refine_s") if key == "tttlrm" else e.get("seconds") if key.startswith("splatfacto") else None
            lines.append(
                f"| {name} | {_method_label(key, e)} | {_f(e['psnr'], '.2f')} | {_f(e['ssim'], '.4f')} | "
                f"{_f(e.get('lpips'), '.4f')} | {_f(ff, '.2f')} | {_f(rt, '.2f')} | {_f(e.get('gaussians'), ',')} | "
                f"{_f(e.get('peak_memory_mib'), '.0f')} |"
            )
            name = ""
    out = "\n".join(lines)
    if failed:
        out += "\n\nFailed scenes: " + "; ".join(f"**{s['scene']}** ({s['path']}): {s['error']}" for s in failed)
    return out


def plot_quality_vs_time(result: Dict[str, Any], path: Path) -> None:
    """PSNR against wall-clock seconds: tttLRM feed-forward + K refinement steps, splatfacto-cpu over its steps,
    and the image baselines as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ours = result["curves"]["tttlrm"]
    ax.plot([c["seconds"] for c in ours], [c["psnr"] for c in ours], "o-", color="C0", label="tttLRM + K steps")
    for c in ours:  # label: "feed-forward", "merged, 0 steps" (refinement's starting set), "3 steps", ...
        ax.annotate(c.get("label", f"K={c['steps']}"), (c["seconds"], c["psnr"]), textcoords="offset points",
                    xytext=(4, -10), fontsize=7, color="C0")
    sf = [c for c in result["curves"].get("splatfacto_cpu", []) if c["seconds"] > 0]
    if sf:
        ax.plot([c["seconds"] for c in sf], [c["psnr"] for c in sf], "s-", ms=3, color="C1",
                label=f"splatfacto-cpu on the same {result['num_inputs']} views")
    colours = {"nearest_view": "C2", "mean_colour": "C7", "white": "C3"}
    for key, col in colours.items():
        e = result["entries"].get(key)
        if e is not None:
            ax.axhline(e["psnr"], ls="--", lw=1, color=col, label=ENTRY_LABELS[key])
    ax.set_xscale("log")
    ax.set_xlabel("wall-clock seconds (feed-forward + refinement / training)")
    ax.set_ylabel("PSNR on held-out frames (dB)")
    ax.set_title(f"{result['scene']}: quality vs time ({result['eval_resolution'][1]}x{result['eval_resolution'][0]})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


GRID_COLUMNS = (("input.png", "input view"), ("gt.png", "ground truth"), ("ours.png", "tttLRM (ours)"),
                ("splatfacto.png", "splatfacto-cpu"), ("nearest.png", "nearest input view"))


def image_grid(rows: List[Tuple[str, Path]], path: Path) -> None:
    """One row per scene (label, folder with the GRID_COLUMNS PNGs); missing images are left blank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    fig, axes = plt.subplots(len(rows), len(GRID_COLUMNS), figsize=(2.6 * len(GRID_COLUMNS), 1.9 * len(rows) + 0.4),
                             squeeze=False)
    for r, (label, folder) in enumerate(rows):
        for c, (fname, title) in enumerate(GRID_COLUMNS):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            f = folder / fname
            if f.is_file():
                ax.imshow(Image.open(f))
            else:
                ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
            if r == 0:
                ax.set_title(title, fontsize=9)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _env_line(env: Dict[str, Any]) -> str:
    dev = env.get("cuda") or f"CPU ({env.get('cpu')}, {env.get('cores')} cores, {env.get('torch_threads')} torch threads)"
    load = env.get("load_average")
    load_s = f", load average {load[0]:.1f}" if load else ""
    return f"{env.get('date_utc')} UTC on {dev}, torch {env.get('torch')}{load_s}"


def write_results_page(result_files: List[Path], out: Path, scaling: Optional[Path] = None,
                       command: str = "", race: Sequence[Path] = ()) -> None:
    """docs/results.md with the tables, one quality-vs-time plot per scene, the image grid, the refinement race
    (``scripts/bench_refine.py`` runs, if given) and the scaling study."""
    img = out.parent / "img"
    parts = [
        "# Results",
        "",
        "Generated by `scripts/reproduce_tables.sh` from the result files of `tttlrm-eval` and "
        "`scripts/bench_scaling.py`; nothing on this page is typed in." + (f" Command: `{command}`." if command else ""),
        "",
        "Protocol (per scene): every 8th frame is held out; the N input views are chosen among the other frames by "
        "k-means on camera poses (or the scene's precomputed `fold_8_kmeans_N_input` list); held-out frames are "
        "rendered at the stored image resolution and scored with PSNR, SSIM (scikit-image, the paper's) and LPIPS "
        "(VGG). Every baseline uses the same input views and held-out frames: an all-white image, the mean colour "
        "of the inputs, the input image whose camera is nearest, and `splatfacto-cpu` trained on only the N input "
        "views (stock splatfacto settings, random initialisation: these scenes carry no SfM points) for a fixed "
        "number of steps and for the wall-clock time tttLRM took. Times are wall-clock on the machine named below "
        "(feed-forward includes loading the weights). Evaluation scenes are never used for training or tuning.",
        "",
    ]
    grid_rows = []
    for rf in result_files:
        summary = json.loads(Path(rf).read_text())
        cfg = summary["config"]
        parts += [
            f"## {', '.join(s['scene'] for s in summary['scenes'])} — `{cfg['method']}`",
            "",
            f"{_env_line(summary['environment'])}; N = {cfg['num_views']} input views, input size "
            + (f"{cfg['input_height']}x{cfg['input_width']}" if cfg.get("input_height")
               else f"long side {cfg['input_long_side']}" if cfg.get("input_long_side") else "method default")
            + f", refinement K = {cfg['refine_steps']}; weights "
            + ", ".join(sorted({f"`{Path(s['checkpoint']).name}` (sha256 {s['checkpoint_sha256'][:12]})"
                                for s in summary["scenes"] if s.get("status") == "ok"})) + ".",
            "",
            results_table(summary),
            "",
        ]
        for s in summary["scenes"]:
            if s.get("status") != "ok":
                continue
            png = img / f"results_{s['scene']}_quality_vs_time.png"
            plot_quality_vs_time(s, png)
            parts += [f"![{s['scene']} quality vs time](img/{png.name})", ""]
            folder = Path(rf).parent / s["scene"] / "grid"
            grid_rows.append((f"{s['scene']} frame {s['grid_test_frame']}", folder))
    if grid_rows:
        png = img / "results_grid.png"
        image_grid(grid_rows, png)
        parts += ["## Held-out views", "",
                  "One held-out frame per scene: the first input view, the ground truth, tttLRM (reported K), "
                  "splatfacto-cpu (fixed steps) and the nearest input view.", "", f"![image grid](img/{png.name})", ""]
    if race:
        from tttlrm_ns.eval.race import load_runs, race_markdown

        parts += [race_markdown(load_runs(race), img), ""]
    if scaling is not None and Path(scaling).is_file():
        from tttlrm_ns.eval.scaling import scaling_markdown

        parts += [scaling_markdown(json.loads(Path(scaling).read_text()), "img"), ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text("\n".join(parts))
    tmp.replace(out)


@dataclass
class ReportConfig:
    """Write docs/results.md from tttlrm-eval results (and the scaling study)."""

    results: Tuple[Path, ...] = ()
    """results.json files written by tttlrm-eval."""
    scaling: Optional[Path] = None
    """JSON written by scripts/bench_scaling.py."""
    out: Path = Path("docs/results.md")
    """The page to write (PNGs go to img/ next to it)."""
    command: str = ""
    """The command that produced the results (printed on the page)."""
    race: Tuple[Path, ...] = ()
    """JSONL files of ``scripts/bench_refine.py run`` (the refinement race section)."""


def main() -> None:
    import tyro

    c = tyro.cli(ReportConfig)
    if not c.results:
        raise SystemExit("give at least one --results file")
    write_results_page(list(c.results), c.out, c.scaling, c.command, c.race)
    print(f"wrote {c.out}")


if __name__ == "__main__":
    main()

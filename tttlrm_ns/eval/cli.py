"""``tttlrm-eval``: the paper's evaluation protocol on one or more scenes, with baselines, as JSON + markdown.

Examples::

    # bundled sample scene, bundled weights, 8 k-means input views at long side 256, pure feed-forward
    tttlrm-eval tttlrm_ns/assets/sample_scene --num-views 8 --input-long-side 256

    # a DL3DV-style scene (e.g. Long-LRM's mydesk capture) with its precomputed 32 input views, + 10 refinement
    # steps, curve up to 300 steps
    tttlrm-eval path/to/mydesk --num-views 32 --input-long-side 256 --refine-steps 10 \\
        --checkpoint weights.safetensors --splatfacto.steps 1500 --output-dir outputs/eval_mydesk

    # object-level model on an object scene (e.g. a Google Scanned Objects render), no splatfacto baseline
    tttlrm-eval path/to/gso_toy --method tttlrm-object --num-views 8 --input-long-side 256 \\
        --splatfacto.no-enabled

Per scene: the input views are chosen as in the paper (every 8th frame held out; N views by k-means on the other
frames' cameras, or the scene's ``fold_8_kmeans_{N}_input`` list), the held-out frames are rendered at the dataset's
resolution and scored with PSNR / SSIM (scikit-image's, the paper's) / LPIPS (VGG). Written to ``--output-dir``:
``results.json`` (everything, including the quality-vs-time curves), ``results.md`` (the table), and per scene
``<scene>/result.json``, ``<scene>/grid/*.png`` (one held-out frame: input, GT, ours, splatfacto-cpu, nearest view)
and ``<scene>/runs/`` (nerfstudio runs that ``ns-eval`` / ``ns-export`` / ``ns-viewer`` load). A scene that fails
is reported by name with its error; the others still run, and the exit status is 1.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch
import tyro

from tttlrm_ns.eval.runner import SceneEvalConfig, evaluate_scene, scene_name


@dataclass
class EvalConfig(SceneEvalConfig):
    """tttLRM evaluation: paper protocol, baselines, quality-vs-time curves (see the examples above)."""

    scenes: tyro.conf.Positional[Tuple[Path, ...]] = ()
    """Scene folders (opencv_cameras.json layout, or any nerfstudio dataparser's data with --dataparser)."""
    output_dir: Path = Path("outputs/eval")
    """Where results.json, results.md and the per-scene folders go."""


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_json(obj: Any, path: Path) -> None:
    """Atomic JSON write (a crash never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=_json_default, allow_nan=True))
    tmp.replace(path)


def environment() -> Dict[str, Any]:
    return {
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        # repository-relative, so a page generated in any checkout shows the command a reader can type
        "command": " ".join(sys.argv).replace(str(Path(__file__).resolve().parents[2]) + os.sep, ""),
    }


def run(config: EvalConfig) -> Dict[str, Any]:
    """Evaluate every scene (errors are recorded per scene); write the JSON and markdown; return the summary."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tttlrm_ns.eval.report import results_table

    if not config.scenes:
        raise SystemExit("tttlrm-eval: give at least one scene folder (see --help)")
    console = Console(stderr=True)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg_dict = {k: v for k, v in asdict(config).items() if k not in ("scenes", "output_dir")}
    summary: Dict[str, Any] = {"config": cfg_dict, "environment": environment(), "scenes": []}
    names: List[str] = []
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("scenes", total=len(config.scenes))
        for scene in config.scenes:
            name = scene_name(scene)
            if name in names:  # two folders with the same name would share an output folder
                name = f"{name}_{len(names)}"
            names.append(name)
            progress.update(task, description=f"scene {name}")
            t0 = time.perf_counter()
            try:
                res = evaluate_scene(config, Path(scene), out / name, log=lambda m: progress.console.log(m))
                res["status"] = "ok"
            except Exception as e:  # one bad scene must not stop the others; it is reported by name below
                res = {"scene": name, "path": str(scene), "status": "error", "error": f"{type(e).__name__}: {e}",
                       "traceback": traceback.format_exc()}
                progress.console.print(f"[bold red]scene {name} ({scene}) failed:[/] {type(e).__name__}: {e}")
            res["wall_s"] = time.perf_counter() - t0
            write_json(res, out / name / "result.json")
            summary["scenes"].append(res)
            progress.advance(task)
    write_json(summary, out / "results.json")
    md = out / "results.md"
    tmp = md.with_suffix(".md.tmp")
    tmp.write_text(results_table(summary) + "\n")
    tmp.replace(md)
    failed = [s for s in summary["scenes"] if s["status"] != "ok"]
    console.print(results_table(summary))
    if failed:
        console.print(f"[bold red]{len(failed)} of {len(summary['scenes'])} scenes failed:[/] "
                      + "; ".join(f"{s['scene']}: {s['error']}" for s in failed))
    console.print(f"results: {out / 'results.json'}  table: {md}")
    return summary


def main() -> None:
    config = tyro.cli(EvalConfig, description=__doc__)
    summary = run(config)
    sys.exit(1 if any(s["status"] != "ok" for s in summary["scenes"]) else 0)


if __name__ == "__main__":
    main()

"""What the measured geometry costs: CPU prediction time with and without the plane sweep.

Same architecture and input twice: the bundled scene model (no sweep) and the same weights with the geometry
options switched on by :func:`tttlrm_ns.model.surgery.add_geometry` (sweep + two tokenizer channels + depth
anchor). The input is an analytic room seen by an orbit of ``--views`` cameras (:mod:`tttlrm_ns.geometry.analytic`);
both predictions run through :func:`tttlrm_ns.infer.predict.predict_gaussians` (what ``ns-train tttlrm`` runs), in
alternation so that a change in machine load hits both alike; the median of ``--reps`` runs is reported.

    python -m tttlrm_ns.eval.bench_geometry --views 32 --height 144 --width 256 --reps 5 --md docs/bench_geometry.md
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from tttlrm_ns import ASSETS
from tttlrm_ns.data.normalize import compute_transform, scale_to_depth
from tttlrm_ns.geometry import analytic as A
from tttlrm_ns.model import TttlrmModel
from tttlrm_ns.model.checkpoint import load_model
from tttlrm_ns.model.surgery import add_geometry
from tttlrm_ns.provenance import git_state
from tttlrm_ns.infer.predict import predict_gaussians


def _commit() -> str:
    """Short commit of the checkout, ``-dirty`` with uncommitted changes to tracked files (``unknown`` outside git)."""
    state = git_state()
    if state["commit"] is None:
        return "unknown"
    return state["commit"][:7] + ("-dirty" if state["dirty"] else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=str(ASSETS / "weights" / "tttlrm_scene.safetensors"))
    ap.add_argument("--views", type=int, default=32)
    ap.add_argument("--height", type=int, default=144)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--md", type=Path, default=None, help="write a markdown table here")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    v, h, w = args.views, args.height, args.width
    cams = A.orbit_cameras(v, 1.5, arc_deg=120)
    k = A.intrinsics(v, h, w, 60)
    img, dep = A.render(A.room_scene(1), cams, k, h, w)
    tf = compute_transform(cams, "mean_cam")
    c2w_extent = tf.apply(cams.double()).float()
    c2w_depth = scale_to_depth(tf, float(dep.median())).apply(cams.double()).float()
    base = load_model(args.weights).eval()
    surgery = add_geometry(base, geometry_input=True, depth_anchor=True, old_median=4.0)
    geo = TttlrmModel(surgery.cfg.replace(sweep_fill=True)).eval()  # as configs/scene_geometry_cpu.yaml
    geo.load_state_dict(surgery.state_dict())
    runs = {"without": [], "with": [], "sweep": []}
    for _ in range(args.reps):  # alternate, so load changes on a shared machine hit both
        t = time.perf_counter()
        predict_gaussians(base, img, c2w_extent, k)
        runs["without"].append(time.perf_counter() - t)
        t = time.perf_counter()
        predict_gaussians(geo, img, c2w_depth, k)
        runs["with"].append(time.perf_counter() - t)
        t = time.perf_counter()
        geo.measure_geometry(img[None], c2w_depth[None], k[None])
        runs["sweep"].append(time.perf_counter() - t)
    med = {n: statistics.median(x) for n, x in runs.items()}
    ratio = med["with"] / med["without"]
    rec = {"views": v, "height": h, "width": w, "reps": args.reps, "threads": torch.get_num_threads(),
           "median_s": med, "runs_s": runs, "ratio": ratio, "weights": str(args.weights), "commit": _commit(),
           "cpu": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d"),
           "sweep": {"planes": geo.cfg.sweep_planes, "neighbours": geo.cfg.sweep_neighbours,
                     "long_side": geo.cfg.sweep_long_side, "downsample": geo.cfg.sweep_downsample(h, w)}}
    print(json.dumps(rec, indent=2))
    if args.json:
        args.json.write_text(json.dumps(rec, indent=2) + "\n")
    if args.md:
        cmd = ("python -m tttlrm_ns.eval.bench_geometry --views {views} --height {height} --width {width} "
               "--reps {reps}").format(**rec)
        args.md.write_text(
            "# Prediction time with the plane sweep (generated)\n\n"
            f"`{cmd}` at commit {rec['commit']}, {rec['date']}, {rec['threads']} intra-op thread(s); "
            f"median of {args.reps} alternating runs. Sweep: {rec['sweep']['planes']} planes, "
            f"{rec['sweep']['neighbours']} neighbours, at 1/{rec['sweep']['downsample']} of the input.\n\n"
            "| prediction | seconds |\n|---|---|\n"
            f"| scene model, no sweep | {med['without']:.2f} |\n"
            f"| same weights with geometry input + depth anchor + sweep fill | {med['with']:.2f} |\n"
            f"| of which the plane sweep | {med['sweep']:.2f} |\n\n"
            f"Ratio: **{ratio:.2f}x** ({v} views at {h}x{w}; target <= 1.2x).\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

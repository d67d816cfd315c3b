"""Refinement race: held-out PSNR against time for ``tttlrm`` + refinement and ``splatfacto-cpu``.

    # one curve (appends a JSON line to --out); every override is a dotted TrainerConfig path
    python scripts/bench_refine.py run --method tttlrm --data tttlrm_ns/assets/sample_scene --views input \\
        --budget 120 --label tuned --set pipeline.model.refine.max_gaussians=60000
    python scripts/bench_refine.py run --method splatfacto --data ... --views input --budget 120
    # per-step cost of the levers (Gaussian count, resolution, SSIM, Adam) on one predicted scene
    python scripts/bench_refine.py cost --data tttlrm_ns/assets/sample_scene --out /tmp/cost.json
    # plot curves and write the markdown table
    python scripts/bench_refine.py plot --runs /tmp/race.jsonl --png docs/img/refine_race.png

Both methods run through nerfstudio's real code paths: ``TrainerConfig.setup()`` -> ``Trainer.setup()`` (data
loading; for tttlrm also the feed-forward prediction) and then the body of ``Trainer.train``'s loop
(callbacks, ``train_iteration``) step by step, so refinement uses exactly the schedule, the time budget and the
optimisers of ``ns-train``. The clock is the process's CPU time (``time.process_time``), from the start of
``Trainer.setup()`` (so tttlrm's curve starts after its prediction); run with ``OMP_NUM_THREADS=1`` it equals the
wall clock of one idle core and stays meaningful when other jobs share the machine (the wall clock is recorded
too). Evaluation pauses the clock: at each mark (first step past 0, 5, 10, 20, ... s) every held-out image (the
dataparser's eval split, every 8th frame) is rendered and its PSNR against the image computed; the curve value
is the mean PSNR.

``--views input`` restricts splatfacto to tttlrm's input views (the same k-means selection, or the scene's
precomputed list), ``--views train`` gives both methods every train image.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MARKS = (0, 5, 10, 15, 20, 30, 45, 60, 90, 120, 150, 180, 240, 300)


def _set_dotted(cfg: Any, dotted: str, raw: str) -> None:
    """Set ``a.b.c=value`` on a nested dataclass config; the value is parsed as JSON when possible."""
    *path, leaf = dotted.split(".")
    obj = cfg
    for p in path:
        obj = getattr(obj, p)
    if not hasattr(obj, leaf):
        raise SystemExit(f"--set {dotted}: {type(obj).__name__} has no field {leaf!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    setattr(obj, leaf, value)


def build_config(method: str, data: Path, views: str, num_views: int, long_side: int, out_dir: Path,
                 overrides: List[str], max_steps: int):
    from tttlrm_ns.data.dataparser import OpencvCamerasDataParserConfig
    from tttlrm_ns.data.views import ViewSelectionConfig

    if method == "tttlrm":
        from tttlrm_ns.method_configs import tttlrm_config

        cfg = copy.deepcopy(tttlrm_config)
        cfg.pipeline.views = ViewSelectionConfig(mode="kmeans", num_views=num_views)
        cfg.pipeline.input_long_side = long_side
        cfg.pipeline.model.refine.steps = max_steps
        cfg.pipeline.model.refine.views = views
        cfg.max_num_iterations = None
    elif method == "splatfacto":
        from tttlrm_ns.ns.splatfacto_cpu import splatfacto_cpu_config

        cfg = copy.deepcopy(splatfacto_cpu_config)
        cfg.pipeline.datamanager.dataparser = OpencvCamerasDataParserConfig()
        cfg.max_num_iterations = max_steps
    else:
        raise SystemExit(f"unknown method {method!r}")
    cfg.pipeline.datamanager.data = data
    cfg.output_dir = out_dir
    cfg.vis = "tensorboard"
    cfg.logging.local_writer.enable = False
    cfg.steps_per_save = 10**9
    cfg.machine.device_type = "cpu"
    for item in overrides:
        key, _, value = item.partition("=")
        _set_dotted(cfg, key, value)
    if method == "tttlrm":
        r = cfg.pipeline.model.refine  # re-run validation after overrides
        type(r).__post_init__(r)
    return cfg


def input_indices(trainer) -> List[int]:
    """tttlrm's input views among the train images (its own selection code, for splatfacto's 'input' runs)."""
    from tttlrm_ns.data.views import ViewSelectionConfig
    from tttlrm_ns.ns.inputs import select_input_views

    args = trainer._bench_args
    views = ViewSelectionConfig(mode="kmeans", num_views=args.num_views)
    return select_input_views(trainer.pipeline.datamanager, views, use_precomputed=True)


@torch.no_grad()
def eval_psnr(pipeline, stride: int) -> float:
    from tttlrm_ns.eval.metrics import psnr_from_mse

    """Mean PSNR over the eval split (every ``stride``-th eval image), full resolution."""
    dm = pipeline.datamanager
    model = pipeline.model
    model.eval()
    vals = []
    cams = dm.eval_dataset.cameras
    for i in range(0, len(dm.eval_dataset), stride):
        gt = dm.cached_eval[i]["image"]
        gt = gt.float() / 255.0 if gt.dtype == torch.uint8 else gt
        out = model.get_outputs_for_camera(cams[i : i + 1].to(model.device))
        rgb = out["rgb"].clamp(0, 1)
        gt = gt[..., :3]
        mse = torch.mean((rgb - gt) ** 2).item()
        vals.append(psnr_from_mse(mse))
    model.train()
    return float(sum(vals) / len(vals))


def _preload_extension() -> None:
    """Use an already built rasterizer module (``TTTLRM_BENCH_EXT_SO=path/to/tttlrm_ns_cpu_raster_<hash>.so``).

    For machines where compiling the extension again is not affordable (each build is ~1-2 CPU minutes, and a
    shared cache directory written by two toolchains rebuilds on every load); the module name must carry the
    hash of the current sources, which is checked here.
    """
    so = os.environ.get("TTTLRM_BENCH_EXT_SO")
    if not so:
        return
    import hashlib
    import importlib.machinery
    import importlib.util

    from tttlrm_ns.render import cpu_backend

    h = hashlib.sha256()
    for name in cpu_backend._SOURCES + cpu_backend._HEADERS:
        h.update((cpu_backend._SRC_DIR / name).read_bytes())
    cflags = ["-O3", "-fopenmp", "-fno-trapping-math", "-fno-math-errno"] + cpu_backend._cpu_flags()
    h.update(" ".join(cflags).encode())
    h.update(torch.__version__.encode())
    name = Path(so).stem
    if name != f"tttlrm_ns_cpu_raster_{h.hexdigest()[:12]}":
        raise SystemExit(f"TTTLRM_BENCH_EXT_SO={so} was built from other sources or flags; unset it to compile")
    loader = importlib.machinery.ExtensionFileLoader(name, so)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader))
    loader.exec_module(module)
    cpu_backend._ext = module


def run(args) -> Dict[str, Any]:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    _preload_extension()
    from tttlrm_ns.eval.race import portable_path
    from tttlrm_ns.eval.runner import run_iterations

    out_dir = Path(tempfile.mkdtemp(prefix="bench_refine_"))
    cfg = build_config(args.method, args.data, args.views, args.num_views, args.long_side, out_dir, args.set,
                       args.max_steps)
    torch.manual_seed(0)
    random.seed(0)
    t_cpu0, t_wall0 = time.process_time(), time.perf_counter()
    trainer = cfg.setup(local_rank=0, world_size=1)
    trainer._bench_args = args
    trainer.setup()
    if args.method == "splatfacto" and args.views == "input":
        idx = input_indices(trainer)
        dm = trainer.pipeline.datamanager
        rng = random.Random(0)

        def sample() -> List[int]:
            order = list(idx)
            rng.shuffle(order)
            return order

        dm.sample_train_cameras = sample
        dm.train_unseen_cameras = sample()
    setup_cpu, setup_wall = time.process_time() - t_cpu0, time.perf_counter() - t_wall0
    n_train = len(trainer.pipeline.datamanager.train_dataset)
    points: List[Dict[str, float]] = []
    paused = 0.0  # CPU seconds spent evaluating (excluded from the clock)
    paused_wall = 0.0

    def clock() -> float:
        return time.process_time() - t_cpu0 - paused

    def record(step: int) -> None:
        nonlocal paused, paused_wall
        c0, w0 = time.process_time(), time.perf_counter()
        psnr = eval_psnr(trainer.pipeline, args.eval_stride)
        paused += time.process_time() - c0
        paused_wall += time.perf_counter() - w0
        n = int(trainer.pipeline.model.gauss_params["means"].shape[0])
        t = time.process_time() - t_cpu0 - paused
        wall = time.perf_counter() - t_wall0 - paused_wall
        points.append({"t": t, "wall": wall, "step": step, "psnr": psnr, "gaussians": n})
        print(f"[{args.label}] t={t:7.1f}s wall={wall:7.1f}s step={step:5d} N={n:7d} psnr={psnr:.3f}", flush=True)

    marks = [m for m in MARKS if m <= args.budget] + ([args.budget] if args.budget not in MARKS else [])
    record(0)
    next_mark = 1
    while next_mark < len(marks) and marks[next_mark] <= clock():
        next_mark += 1
    trainer.stop_training = False
    step_times: List[float] = []
    step = 0
    stopped = "budget"
    for step in range(cfg.max_num_iterations):
        if trainer.stop_training:
            stopped = "stop_training (refine.seconds)"
            break
        c0 = time.process_time()
        run_iterations(trainer, step, step + 1)  # one step exactly as nerfstudio's Trainer.train runs it
        step_times.append(time.process_time() - c0)
        now = clock()
        if next_mark < len(marks) and now >= marks[next_mark]:
            record(step + 1)
            while next_mark < len(marks) and marks[next_mark] <= clock():
                next_mark += 1
        if now >= args.budget:
            break
    else:
        stopped = "max_steps"
    if points[-1]["step"] != step + 1 and step_times:
        record(len(step_times))
    st = sorted(step_times[len(step_times) // 10:]) or [float("nan")]
    return {
        "label": args.label, "method": args.method, "views": args.views, "data": portable_path(args.data),
        "sets": args.set, "setup_cpu_s": setup_cpu, "setup_wall_s": setup_wall, "n_train": n_train,
        "steps": len(step_times), "median_step_s": st[len(st) // 2], "stopped": stopped, "points": points,
        "threads": torch.get_num_threads(), "host": platform.node(),
        "loadavg": os.getloadavg(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def cost(args) -> Dict[str, Any]:
    """Per-step CPU time of the refinement's parts against the Gaussian count, resolution, SSIM and Adam variant."""
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    _preload_extension()
    out_dir = Path(tempfile.mkdtemp(prefix="bench_refine_cost_"))
    cfg = build_config("tttlrm", args.data, "input", args.num_views, args.long_side, out_dir, args.set, 10)
    trainer = cfg.setup(local_rank=0, world_size=1)
    trainer.setup()
    pipe = trainer.pipeline
    model = pipe.model
    full = model.get_gaussians()
    from tttlrm_ns.ns.refine import RefineConfig, prepare_gaussians

    dm = pipe.datamanager
    i = pipe.input_indices[0]
    cam = dm.train_cameras[i : i + 1]
    data = dict(dm.cached_train[i])
    rows = []
    counts = [c for c in args.counts if c < full.num] + [full.num]
    for n in counts:
        model.set_gaussians(prepare_gaussians(full, RefineConfig(steps=1, max_gaussians=n)))
        params = list(model.gauss_params.values())
        # the levers one at a time on top of each other: Adam kernel, then resolution, then the SSIM term
        variants = [(False, 1, 0.2), (True, 1, 0.2)] + [(True, d, 0.2) for d in args.scales if d > 1]
        variants += [(True, max(args.scales), 0.0), (True, 1, 0.0)]
        for fused, scale, ssim in variants:
            opt = torch.optim.Adam([{"params": [p], "lr": 1e-3} for p in params], eps=1e-15, fused=fused)
            model.config.ssim_lambda = ssim
            model._refine_downscale = scale
            model.train()
            times = {"render": [], "loss": [], "backward": [], "adam": []}
            for rep in range(args.reps + 1):
                t0 = time.process_time()
                out = model(cam)
                t1 = time.process_time()
                loss = sum(model.get_loss_dict(out, data).values())
                t2 = time.process_time()
                loss.backward()
                t3 = time.process_time()
                opt.step()
                opt.zero_grad()
                t4 = time.process_time()
                if rep:  # first repetition is warm-up
                    for k, v in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                        times[k].append(v)
            med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
            med["total"] = sum(med.values())
            row = {"gaussians": n, "fused_adam": fused, "downscale": scale, "ssim_lambda": ssim, **med}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return {"rows": rows, "image": [int(cam.height), int(cam.width)], "threads": torch.get_num_threads(),
            "loadavg": os.getloadavg(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def plot(args) -> None:
    """Figure + markdown table (+ verdicts) of the runs, by the results page's own code (tttlrm_ns.eval.race)."""
    from tttlrm_ns.eval.race import load_runs, race_figure, race_table, verdicts

    runs = load_runs([args.runs]) if args.runs is not None and args.runs.is_file() else []
    for path, method, views in args.log:
        # An interrupted run: its progress lines "[label] t=... wall=... step=... N=... psnr=..." (no summary line).
        pts, label = [], None
        for line in Path(path).read_text().splitlines():
            m = re.match(r"\[(\S+)\] t=\s*([\d.]+)s wall=\s*([\d.]+)s step=\s*(\d+) N=\s*(\d+) psnr=([\d.]+)", line)
            if m:
                label = m.group(1)
                pts.append({"t": float(m.group(2)), "wall": float(m.group(3)), "step": int(m.group(4)),
                            "gaussians": int(m.group(5)), "psnr": float(m.group(6))})
        if pts:
            steps = pts[-1]["step"] or 1
            run_t = pts[-1]["t"] - pts[0]["t"]
            runs.append({"label": label + " (interrupted)", "method": method, "views": views, "points": pts,
                         "data": args.data_name, "setup_cpu_s": pts[0]["t"], "median_step_s": run_t / steps})
    if args.labels:
        runs = [r for r in runs if r["label"] in args.labels]
    race_figure(runs, args.png, args.title)
    print(f"wrote {args.png}")
    table = "\n".join([race_table(runs), "", *verdicts(runs)])
    print(table)
    if args.table:
        Path(args.table).write_text(table + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("run", "cost"):
        p = sub.add_parser(name)
        p.add_argument("--data", type=Path, default=REPO / "tttlrm_ns/assets/sample_scene")
        p.add_argument("--num-views", type=int, default=32)
        p.add_argument("--long-side", type=int, default=256)
        p.add_argument("--set", action="append", default=[], help="dotted TrainerConfig override key=value")
        p.add_argument("--out", type=Path, required=True)
    r = sub.choices["run"]
    r.add_argument("--method", choices=("tttlrm", "splatfacto"), required=True)
    r.add_argument("--views", choices=("input", "train"), default="input")
    r.add_argument("--budget", type=float, default=60.0, help="CPU seconds since setup start")
    r.add_argument("--max-steps", type=int, default=100000)
    r.add_argument("--eval-stride", type=int, default=1)
    r.add_argument("--label", default=None)
    c = sub.choices["cost"]
    c.add_argument("--counts", type=int, nargs="+", default=[25000, 50000, 100000, 200000])
    c.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4])
    c.add_argument("--reps", type=int, default=3)
    pl = sub.add_parser("plot")
    pl.add_argument("--runs", type=Path, default=None)
    pl.add_argument("--log", nargs=3, action="append", default=[], metavar=("LOG", "METHOD", "VIEWS"),
                    help="progress log of an interrupted run (s/step is then the mean, evaluation excluded)")
    pl.add_argument("--png", type=Path, required=True)
    pl.add_argument("--table", type=Path, default=None)
    pl.add_argument("--title", default="")
    pl.add_argument("--labels", nargs="*", default=None)
    pl.add_argument("--data-name", default="?", help="scene of the --log runs (their lines do not name it)")
    args = ap.parse_args()
    if args.cmd == "plot":
        plot(args)
        return
    if args.cmd == "run":
        args.label = args.label or f"{args.method}-{args.views}"
        result = run(args)
    else:
        result = cost(args)
    from tttlrm_ns.eval.race import append_run

    append_run(args.out, result)  # paths relative to the repository: the race JSONL is committed


if __name__ == "__main__":
    main()

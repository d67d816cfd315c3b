"""Refinement race: held-out PSNR against time for ``tttlrm`` + refinement and ``splatfacto-cpu``.

    # one curve (appends a JSON line to --out); every override is a dotted TrainerConfig path
    python scripts/bench_refine.py run --method tttlrm --data tttlrm_ns/assets/sample_scene --views input \\
        --budget 120 --label tuned --set pipeline.model.refine.max_gaussians=60000
    python scripts/bench_refine.py run --method splatfacto --data ... --views input --budget 120
    # to convergence: splatfacto's stock schedule from the capture's SfM points, until the held-out PSNR plateaus
    python scripts/bench_refine.py run --method splatfacto --init sfm --data CAPTURE --views train --seed 1 \
        --until-plateau --out /tmp/race.jsonl
    # the whole protocol of issue 21 (3 seeds x tttlrm refine.seconds, splatfacto random, splatfacto sfm; report)
    python scripts/bench_refine.py race --data CAPTURE --out-dir outputs/race/CAPTURE_NAME [--dry-run]
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

Data: an ``opencv_cameras.json`` scene (the opencv-cameras parser, every 8th frame held out), or a nerfstudio
capture (``transforms.json``, e.g. from ``ns-process-data`` on photos, COLMAP poses): then every method reads it
with nerfstudio's ``nerfstudio-data`` parser, held-out frames every 8th (``eval_mode interval``, the same split for
both methods), and ``--init sfm`` seeds splatfacto from the capture's SfM points (``load_3D_points``: the
``ply_file_path`` of ``transforms.json``, what ``ns-train splatfacto`` does), ``--init random`` from random points.
A capture without points stops an ``sfm`` run before it starts, naming the file.

Seeds: ``--seed S`` sets ``machine.seed`` and seeds Python, numpy and torch from it as ``ns-train`` does, and for
tttlrm also ``pipeline.seed`` (its pruning's random part and the refinement's view order); without it the bench
seeds torch and Python with 0 and leaves the configs' seeds (recorded as seed null).

``--until-plateau``: a held-out evaluation every ``--plateau-every`` steps (besides the time marks), and the run
stops when the best PSNR of the last ``--plateau-window`` of these evaluations is not more than
``--plateau-threshold`` dB above the best of all earlier ones (:func:`tttlrm_ns.eval.race.plateau_reached`), or at
``--max-steps`` (30000 with this flag: splatfacto's stock schedule), whichever comes first; no time budget unless
``--budget`` is given. A tttlrm run with ``--set pipeline.model.refine.seconds=S`` stops when its schedule ends
(no time budget either unless given).

Every record carries its provenance (:func:`tttlrm_ns.eval.race.provenance`): git commit and dirty flag, the
weights file and its sha256 (tttlrm; null for splatfacto), the command line (``argv``), the ``seed``, the ``init``
and why it stopped (``stopped``: budget, max_steps, plateau, stop_training (refine.seconds)).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import random
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MARKS = (0, 5, 10, 15, 20, 30, 45, 60, 90, 120, 150, 180, 240, 300, 450, 600, 900, 1200, 1800, 2700, 3600, 5400,
         7200, 10800, 14400, 21600, 28800)
INITS = {"tttlrm": ("model",), "splatfacto": ("random", "sfm")}
"""Initialisations per method (the first is the default)."""
PLATEAU_MAX_STEPS = 30000
"""``--max-steps`` under ``--until-plateau`` unless given: splatfacto's stock schedule."""


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


def dataparser_for(data: Path, init: str):
    """The dataparser config of every method on ``data`` (see the module docstring): nerfstudio-data with every 8th
    frame held out for a nerfstudio capture (SfM points loaded for ``init`` sfm, after checking they exist), else
    the opencv-cameras parser (no points: ``sfm`` is an error there)."""
    from tttlrm_ns.data.dataparser import OpencvCamerasDataParserConfig, nerfstudio_data_reason
    from tttlrm_ns.eval.race import SfmPointsError, sfm_points_file

    if init == "sfm":
        try:
            sfm_points_file(data)
        except SfmPointsError as e:
            raise SystemExit(str(e)) from None
    if nerfstudio_data_reason(data) is None:
        return OpencvCamerasDataParserConfig()
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    return NerfstudioDataParserConfig(load_3D_points=init == "sfm", eval_mode="interval", eval_interval=8)


def build_config(method: str, data: Path, views: str, num_views: int, long_side: int, out_dir: Path,
                 overrides: List[str], max_steps: int, init: str = "", seed: Optional[int] = None):
    """The nerfstudio TrainerConfig of one run (``long_side`` 0: the method's own default input size)."""
    from tttlrm_ns.data.views import ViewSelectionConfig

    if method == "tttlrm":
        from tttlrm_ns.method_configs import tttlrm_config

        cfg = copy.deepcopy(tttlrm_config)
        cfg.pipeline.views = ViewSelectionConfig(mode="kmeans", num_views=num_views)
        if long_side:
            cfg.pipeline.input_long_side = long_side
        cfg.pipeline.model.refine.steps = max_steps
        cfg.pipeline.model.refine.views = views
        cfg.max_num_iterations = None
        if seed is not None:
            cfg.pipeline.seed = seed
    elif method == "splatfacto":
        from tttlrm_ns.ns.splatfacto_cpu import splatfacto_cpu_config

        cfg = copy.deepcopy(splatfacto_cpu_config)
        cfg.max_num_iterations = max_steps
    else:
        raise SystemExit(f"unknown method {method!r}")
    init = init or INITS[method][0]
    if init not in INITS[method]:
        raise SystemExit(f"--init {init}: {method} starts from {' or '.join(INITS[method])}")
    cfg.pipeline.datamanager.dataparser = dataparser_for(data, init)
    if seed is not None:
        cfg.machine.seed = seed
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
    from tttlrm_ns.eval.race import plateau_reached, portable_path, provenance
    from tttlrm_ns.eval.runner import run_iterations

    out_dir = Path(tempfile.mkdtemp(prefix="bench_refine_"))
    cfg = build_config(args.method, args.data, args.views, args.num_views, args.long_side, out_dir, args.set,
                       args.max_steps, args.init, args.seed)
    if args.seed is None:
        torch.manual_seed(0)
        random.seed(0)
    else:
        from nerfstudio.scripts.train import _set_random_seed

        _set_random_seed(cfg.machine.seed)  # what ns-train does with --machine.seed (one process: rank 0)
    t_cpu0, t_wall0 = time.process_time(), time.perf_counter()
    trainer = cfg.setup(local_rank=0, world_size=1)
    trainer._bench_args = args
    trainer.setup()
    if args.init == "sfm" and "points3D_xyz" not in trainer.pipeline.datamanager.train_dataparser_outputs.metadata:
        raise SystemExit(f"--init sfm: nerfstudio loaded no SfM points from {args.data}")
    if args.method == "splatfacto" and args.views == "input":
        idx = input_indices(trainer)
        dm = trainer.pipeline.datamanager
        rng = random.Random(0 if args.seed is None else args.seed)

        def sample() -> List[int]:
            order = list(idx)
            rng.shuffle(order)
            return order

        dm.sample_train_cameras = sample
        dm.train_unseen_cameras = sample()
    setup_cpu, setup_wall = time.process_time() - t_cpu0, time.perf_counter() - t_wall0
    n_train = len(trainer.pipeline.datamanager.train_dataset)
    weights = trainer.pipeline.resolve_model_config()[0] if args.method == "tttlrm" else None
    points: List[Dict[str, float]] = []
    plateau_psnrs: List[float] = []  # the evaluations every --plateau-every steps (the plateau rule's input)
    paused = 0.0  # CPU seconds spent evaluating (excluded from the clock)
    paused_wall = 0.0

    def clock() -> float:
        return time.process_time() - t_cpu0 - paused

    def record(step: int) -> float:
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
        return psnr

    budget = args.budget
    marks = [m for m in MARKS if m <= budget] + ([budget] if budget not in MARKS and math.isfinite(budget) else [])
    plateau_psnrs.append(record(0))
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
        psnr = None
        if next_mark < len(marks) and now >= marks[next_mark]:
            psnr = record(step + 1)
            while next_mark < len(marks) and marks[next_mark] <= clock():
                next_mark += 1
        if args.until_plateau and (step + 1) % args.plateau_every == 0:
            plateau_psnrs.append(record(step + 1) if psnr is None else psnr)
            if plateau_reached(plateau_psnrs, args.plateau_window, args.plateau_threshold):
                stopped = "plateau"
                break
        if now >= budget:
            break
    else:
        stopped = "max_steps"
    if points[-1]["step"] != len(step_times) and step_times:
        record(len(step_times))
    st = sorted(step_times[len(step_times) // 10:]) or [float("nan")]
    rec = {
        "label": args.label, "method": args.method, "init": args.init, "seed": args.seed, "views": args.views,
        "data": portable_path(args.data), "sets": args.set, **provenance(sys.argv, weights),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "setup_cpu_s": setup_cpu, "setup_wall_s": setup_wall, "n_train": n_train,
        "steps": len(step_times), "median_step_s": st[len(st) // 2], "stopped": stopped, "points": points,
        "threads": torch.get_num_threads(), "host": platform.node(),
        "loadavg": os.getloadavg(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if args.until_plateau:
        rec["plateau"] = {"every": args.plateau_every, "window": args.plateau_window,
                          "threshold_db": args.plateau_threshold, "max_steps": args.max_steps,
                          "psnr": plateau_psnrs}
    return rec


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


def race_plan(args, seconds: Optional[float]) -> List[Dict[str, Any]]:
    """The runs of ``race`` in order: the seeds x splatfacto (``args.inits``: random, sfm) until plateau, then the seeds of tttlrm with
    the documented time-budget schedule (``refine.seconds`` = ``seconds``: as long as the longest splatfacto run;
    None while unknown), then the report. Each entry: ``label`` (None for the report) and ``argv``."""
    scene = Path(args.data).name
    py, script = sys.executable, str(Path(__file__).resolve())
    common = ["--data", str(args.data), "--views", args.views, "--num-views", str(args.num_views), "--long-side",
              str(args.long_side), "--out", str(args.out_dir / "runs.jsonl")]
    plan = []
    for seed in args.seeds:
        for init in args.inits:
            label = f"{scene}-splatfacto-{init}-{args.views}-s{seed}"
            plan.append({"label": label, "argv": [py, script, "run", "--method", "splatfacto", "--init", init,
                                                  "--seed", str(seed), "--until-plateau", "--label", label, *common]})
    s = "<S>" if seconds is None else f"{seconds:g}"
    for seed in args.seeds:
        label = f"{scene}-tttlrm-{args.views}-s{seed}"
        plan.append({"label": label, "argv": [py, script, "run", "--method", "tttlrm", "--seed", str(seed),
                                              "--set", f"pipeline.model.refine.seconds={s}", "--label", label,
                                              *common]})
    plan.append({"label": None, "argv": [py, script, "plot", "--runs", str(args.out_dir / "runs.jsonl"), "--png",
                                         str(args.out_dir / f"refine_race_{scene}.png"), "--table",
                                         str(args.out_dir / f"refine_race_{scene}.md"), "--title", scene]})
    return plan


def splatfacto_seconds(runs_file: Path, data: Path, views: str) -> Optional[float]:
    """CPU seconds of the longest splatfacto run on ``data`` with ``views`` in ``runs_file`` (rounded up), or None."""
    from tttlrm_ns.eval.race import load_runs, scene_of

    if not runs_file.is_file():
        return None
    ends = [r["points"][-1]["t"] for r in load_runs([runs_file])
            if r["method"] == "splatfacto" and scene_of(r) == Path(data).name and r["views"] == views and r["points"]]
    return float(math.ceil(max(ends))) if ends else None


def race(args) -> int:
    """The whole race of issue 21 on one scene (see ``race --help``); returns the exit status."""
    args.out_dir = Path(args.out_dir or REPO / "outputs" / "race" / Path(args.data).name)
    runs_file = args.out_dir / "runs.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if args.dry_run:
        print(f"# race on {args.data}: {len(args.seeds)} seeds x (splatfacto random, splatfacto sfm, tttlrm); runs "
              f"append to {runs_file}, logs in {args.out_dir / 'logs'}; runs already in the file are skipped.\n"
              "# <S>: --tttlrm-seconds, else the CPU seconds of the longest splatfacto run above (rounded up)")
        for item in race_plan(args, args.tttlrm_seconds):
            print("OMP_NUM_THREADS=1 " + shlex.join(item["argv"]))
        return 0
    args.data, args.out_dir = Path(args.data).resolve(), args.out_dir.resolve()  # the runs start in the repository
    if "sfm" in args.inits:
        from tttlrm_ns.eval.race import SfmPointsError, sfm_points_file

        try:
            sfm_points_file(args.data)  # before hours of other runs
        except SfmPointsError as e:
            raise SystemExit(str(e)) from None
    (args.out_dir / "logs").mkdir(parents=True, exist_ok=True)
    status = 0
    for phase in ("splatfacto", "tttlrm", "report"):
        seconds = args.tttlrm_seconds or splatfacto_seconds(runs_file, args.data, args.views)
        if phase == "tttlrm" and seconds is None:
            print("no splatfacto run finished: no time for tttlrm (give --tttlrm-seconds)", file=sys.stderr)
            return 1
        from tttlrm_ns.eval.race import load_runs

        done = {r.get("label") for r in load_runs([runs_file])} if runs_file.is_file() else set()
        for item in race_plan(args, seconds):
            kind = "report" if item["label"] is None else item["argv"][item["argv"].index("--method") + 1]
            if kind != phase:
                continue
            if item["label"] in done:
                print(f"{item['label']}: already in {runs_file}, skipped", flush=True)
                continue
            print("OMP_NUM_THREADS=1 " + shlex.join(item["argv"]), flush=True)
            log = args.out_dir / "logs" / f"{item['label'] or 'report'}.log"
            with open(log, "a") as f:
                rc = subprocess.call(item["argv"], env=env, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
            if rc:
                print(f"  exit status {rc}; see {log}", file=sys.stderr)
                status = 1
    return status


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("run", "cost"):
        p = sub.add_parser(name)
        p.add_argument("--data", type=Path, default=REPO / "tttlrm_ns/assets/sample_scene")
        p.add_argument("--num-views", type=int, default=32)
        p.add_argument("--long-side", type=int, default=256, help="tttlrm input long side (0: the method's default)")
        p.add_argument("--set", action="append", default=[], help="dotted TrainerConfig override key=value")
        p.add_argument("--out", type=Path, required=True)
    r = sub.choices["run"]
    r.add_argument("--method", choices=("tttlrm", "splatfacto"), required=True)
    r.add_argument("--views", choices=("input", "train"), default="input")
    r.add_argument("--init", choices=("model", "random", "sfm"), default=None,
                   help="tttlrm: model; splatfacto: random (default) or sfm (the capture's SfM points)")
    r.add_argument("--seed", type=int, default=None, help="machine.seed (and tttlrm's pipeline.seed)")
    r.add_argument("--budget", type=float, default=None, help="CPU seconds since setup start (default 60; none "
                   "with --until-plateau or --set pipeline.model.refine.seconds=S)")
    r.add_argument("--max-steps", type=int, default=None,
                   help=f"default 100000; {PLATEAU_MAX_STEPS} with --until-plateau")
    r.add_argument("--until-plateau", action="store_true", help="stop when the held-out PSNR plateaus (see above)")
    r.add_argument("--plateau-every", type=int, default=1000, help="steps between the plateau rule's evaluations")
    r.add_argument("--plateau-window", type=int, default=5, help="evaluations in the plateau rule's window")
    r.add_argument("--plateau-threshold", type=float, default=0.05, help="dB the window must gain to go on")
    r.add_argument("--eval-stride", type=int, default=1)
    r.add_argument("--label", default=None)
    c = sub.choices["cost"]
    c.add_argument("--counts", type=int, nargs="+", default=[25000, 50000, 100000, 200000])
    c.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4])
    c.add_argument("--reps", type=int, default=3)
    rc = sub.add_parser("race", description="The race of issue 21 to convergence on one scene: for each seed, "
                        "splatfacto-cpu from random points and from the capture's SfM points with its stock 30k-step "
                        "schedule until the held-out PSNR plateaus (run --until-plateau); then tttlrm with the shipped "
                        "defaults and the documented time budget (--set pipeline.model.refine.seconds=S, S = the CPU "
                        "seconds of the longest splatfacto run); then the report (plot: figure and table with "
                        "verdicts). Every run is its own process with OMP_NUM_THREADS=1 and appends to "
                        "OUT_DIR/runs.jsonl (runs whose label is already there are skipped, so an interrupted race "
                        "resumes); logs in OUT_DIR/logs. Hours of CPU: run it on an otherwise idle core.")
    rc.add_argument("--data", type=Path, required=True, help="the capture (transforms.json with ply_file_path for sfm)")
    rc.add_argument("--out-dir", type=Path, default=None, help="default: outputs/race/<scene> in the repository")
    rc.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    rc.add_argument("--views", choices=("input", "train"), default="train")
    rc.add_argument("--inits", nargs="+", choices=("random", "sfm"), default=["random", "sfm"],
                    help="splatfacto initialisations (sfm needs the capture's SfM points)")
    rc.add_argument("--num-views", type=int, default=32)
    rc.add_argument("--long-side", type=int, default=0, help="tttlrm input long side (0: the method's default)")
    rc.add_argument("--tttlrm-seconds", type=float, default=None, help="refine.seconds of tttlrm (default: the "
                    "CPU seconds of the longest splatfacto run)")
    rc.add_argument("--dry-run", action="store_true", help="print the commands and exit")
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
    if args.cmd == "race":
        sys.exit(race(args))
    if args.cmd == "run":
        args.label = args.label or f"{args.method}-{args.views}"
        args.init = args.init or INITS[args.method][0]
        if args.init not in INITS[args.method]:
            ap.error(f"--init {args.init}: {args.method} starts from {' or '.join(INITS[args.method])}")
        if args.max_steps is None:
            args.max_steps = PLATEAU_MAX_STEPS if args.until_plateau else 100000
        if args.budget is None:
            seconds = any(s.startswith("pipeline.model.refine.seconds=") for s in args.set)
            args.budget = math.inf if args.until_plateau or seconds else 60.0
        result = run(args)
    else:
        result = cost(args)
    from tttlrm_ns.eval.race import append_run

    append_run(args.out, result)  # paths relative to the repository: the race JSONL is committed


if __name__ == "__main__":
    main()

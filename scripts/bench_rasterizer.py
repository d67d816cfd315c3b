#!/usr/bin/env python
"""Benchmark the CPU Gaussian rasteriser (C++ extension) against the pure-torch reference.

Measures forward (no autograd graph) and forward+backward (graph, then backward of a random linear image loss)
wall time, median of several runs after warm-up, for the target configurations: 50k Gaussians at 256x256 and
500k at 540x960 (height x width), SH degree 0 and 3. A sweep over the number of Gaussians gives the plot.

The reference is far slower (it loops over tiles in Python and builds an autograd graph per tile); it runs in a
child process with a memory cap and a time budget, at subsampled Gaussian counts (a prefix of the same i.i.d.
scene, same image size), doubling from N/256 while the next size fits the budget. Nothing is extrapolated: the
table gives (a) the like-for-like speedup at the largest reference size, with the C++ backend timed on the same
subsampled scene, and (b) a lower bound for the speedup at the full size, reference time at the subsampled size
divided by the C++ time at the full size (rendering more Gaussians never takes the reference less time).

    python scripts/bench_rasterizer.py                 # full benchmark -> docs/bench_rasterizer.md + PNG
    python scripts/bench_rasterizer.py --quick         # fewer runs, smaller sweep (smoke test)
    python scripts/bench_rasterizer.py --cuda-check    # CPU backend vs gsplat CUDA: outputs and gradients
    python scripts/bench_rasterizer.py --ref-check     # the same comparison against the torch reference

Scene model (the same at every size, so times scale with N and pixels only): one camera at the origin looking
down +z (OpenCV), f = 0.8 * width; Gaussian centres unprojected from uniform pixel positions (10 % margin outside
the image) at depth U(2, 6); per-axis scale so that the projected standard deviation is log-uniform in
[0.5, 4] px with anisotropy exp(U(-0.5, 0.5)); random rotations; opacity sigmoid(N(0, 2)); SH coefficients
N(0, 0.3^2) (DC term shifted so base colours are in [0, 1]).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TARGETS = {(256, 256): 0.35, (540, 960): 1.3}  # F+B seconds on 2 cores (issue 4)
CONFIGS = [(50_000, 256, 256), (500_000, 540, 960)]  # (N, height, width)
LONG_CALL_S = 10.0


# --------------------------------------------------------------------------------------------------- scene
def make_scene(n: int, height: int, width: int, sh_degree: int, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Random Gaussians filling one camera's view (see module docstring). Float32, CPU."""
    g = torch.Generator().manual_seed(seed)
    f = 0.8 * width
    u = (torch.rand(n, generator=g) * 1.2 - 0.1) * width
    v = (torch.rand(n, generator=g) * 1.2 - 0.1) * height
    z = 2 + 4 * torch.rand(n, generator=g)
    cx, cy = width / 2, height / 2
    means = torch.stack([(u - cx) / f * z, (v - cy) / f * z, z], -1)
    sigma_px = torch.exp(math.log(0.5) + (math.log(4.0) - math.log(0.5)) * torch.rand(n, 1, generator=g))
    aniso = torch.exp(torch.rand(n, 3, generator=g) - 0.5)
    scales = sigma_px * z[:, None] / f * aniso
    quats = torch.randn(n, 4, generator=g)
    opacities = torch.sigmoid(2 * torch.randn(n, generator=g))
    k = (sh_degree + 1) ** 2
    sh = 0.3 * torch.randn(n, k, 3, generator=g)
    sh[:, 0] = (torch.rand(n, 3, generator=g) - 0.5) / 0.28209479177387814  # Y00: base colour in [0, 1]
    viewmats = torch.eye(4)[None]
    Ks = torch.tensor([[[f, 0, cx], [0, f, cy], [0, 0, 1]]], dtype=torch.float32)
    return dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=sh, viewmats=viewmats, Ks=Ks)


def subsample(scene: Dict[str, torch.Tensor], n: int) -> Dict[str, torch.Tensor]:
    """First ``n`` Gaussians (they are i.i.d., so this is a uniform subsample with the same statistics)."""
    out = dict(scene)
    for key in ("means", "quats", "scales", "opacities", "colors"):
        out[key] = scene[key][:n]
    return out


# --------------------------------------------------------------------------------------------------- renderers
def get_renderer(name: str) -> Callable:
    """``cpu`` = our C++ extension via ``rasterize(backend="cpu")``; ``reference`` = the pure-torch rasteriser."""
    if name == "cpu":
        from tttlrm_ns.render import rasterize

        return lambda *a, **k: rasterize(*a, backend="cpu", **k)
    if name == "reference":
        from tttlrm_ns.render import rasterize

        return lambda *a, **k: rasterize(*a, backend="reference", **k)
    raise ValueError(f"unknown renderer {name!r}; use 'cpu' or 'reference'")


def _call(render: Callable, s: Dict[str, torch.Tensor], width: int, height: int, sh_degree: int):
    return render(s["means"], s["quats"], s["scales"], s["opacities"], s["colors"], s["viewmats"], s["Ks"],
                  width, height, sh_degree=sh_degree, packed=False)


def time_config(render: Callable, s: Dict[str, torch.Tensor], width: int, height: int, sh_degree: int,
                warmup: int, runs: int, budget_s: float = float("inf")) -> Tuple[float, float]:
    """Median forward (no grad) and forward+backward seconds. Stops repeating early once ``budget_s`` is spent."""
    leaves = {k: s[k].clone().requires_grad_(True) for k in ("means", "quats", "scales", "opacities", "colors")}
    sg = {**s, **leaves}
    weight = torch.randn(1, height, width, 3, generator=torch.Generator().manual_seed(1))

    def fwd():
        with torch.no_grad():
            _call(render, s, width, height, sh_degree)

    def fwd_bwd():
        for leaf in leaves.values():
            leaf.grad = None
        colors, alphas, _ = _call(render, sg, width, height, sh_degree)
        ((colors * weight).sum() + alphas.sum()).backward()

    out = []
    for fn in (fwd, fwd_bwd):
        times: List[float] = []
        start = time.perf_counter()
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            # A call of many seconds is its own warm-up: one-off costs are negligible next to it.
            if i >= warmup or dt > LONG_CALL_S:
                times.append(dt)
            if len(times) >= runs or (time.perf_counter() - start > budget_s and times):
                break
        out.append(statistics.median(times))
    return out[0], out[1]


# --------------------------------------------------------------------------------------------------- reference
def reference_worker(args) -> None:
    """Child process: time the reference at one size, print one JSON line (run with a memory cap)."""
    torch.set_num_threads(args.threads)
    cap = int(args.mem_cap_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    s = subsample(make_scene(args.n_full, args.height, args.width, args.sh), args.n)
    try:
        f, fb = time_config(get_renderer("reference"), s, args.width, args.height, args.sh, warmup=1,
                            runs=args.runs, budget_s=args.budget)
        print(json.dumps({"ok": True, "f": f, "fb": fb}))
    except (MemoryError, RuntimeError) as e:  # torch reports failed allocations as RuntimeError
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {str(e)[:200]}"}))


def run_reference(n: int, n_full: int, height: int, width: int, sh: int,
                  args) -> Tuple[Optional[Tuple[float, float]], str]:
    """(forward, F+B) seconds of the reference on the first ``n`` Gaussians, or (None, why it failed)."""
    cmd = [sys.executable, __file__, "--_ref-worker", "--n", str(n), "--n-full", str(n_full), "--height",
           str(height), "--width", str(width), "--sh", str(sh), "--threads", str(args.threads), "--runs",
           str(args.ref_runs), "--budget", str(args.ref_budget), "--mem-cap-gb", str(args.ref_mem_gb)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(120.0, 8 * args.ref_budget))
    except subprocess.TimeoutExpired:
        print(f"  reference n={n}: timed out", flush=True)
        return None, "timed out"
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        print(f"  reference n={n}: failed (rc={proc.returncode}) {proc.stderr[-300:]}", flush=True)
        return None, f"failed (exit code {proc.returncode})"
    res = json.loads(lines[-1])
    if not res["ok"]:
        print(f"  reference n={n}: {res['error']}", flush=True)
        oom = "allocate" in res["error"] or "MemoryError" in res["error"]
        return None, (f"out of memory under the {args.ref_mem_gb:g} GB cap" if oom else "failed")
    return (res["f"], res["fb"]), ""


def reference_scaling(n_full: int, height: int, width: int, sh: int,
                      args) -> Tuple[List[Tuple[int, float, float]], str]:
    """Time the reference at N = n_full / 2^k, k = 8, 7, ..., 0, while the next size fits budget and memory.

    Returns the measured (N, forward s, F+B s) points and why it stopped short of n_full ("" if it did not).
    """
    points: List[Tuple[int, float, float]] = []
    for k in range(8, -1, -1):
        n = max(1, round(n_full / 2**k))
        res, why = run_reference(n, n_full, height, width, sh, args)
        if res is None:
            return points, f"N={n:,}: {why}"
        points.append((n, *res))
        print(f"  reference N={n:>7} {height}x{width} sh{sh}: F {res[0]:.3f} s  F+B {res[1]:.3f} s", flush=True)
        # Doubling N roughly doubles the time; stop when the next size would exceed the budget.
        if k > 0 and 2 * (res[0] + res[1]) * args.ref_runs > args.ref_budget:
            return points, f"N={round(n_full / 2 ** (k - 1)):,}: over the {args.ref_budget:g} s budget"
    return points, ""


# --------------------------------------------------------------------------------------------------- cuda check
def cuda_check(tol: float, against: str = "gsplat", quick: bool = False) -> int:
    """CPU backend vs gsplat's CUDA rasterization (or the torch reference): outputs and gradients.

    Error per output = max abs difference / max |other| (each output and each input's gradient on its own scale,
    viewmats and backgrounds included; an all-zero reference must be matched exactly). Radii are integers (ceil of
    3 sigma): at most 2 % may differ, by one pixel. Returns 0 if everything is within ``tol``. ``quick``: the
    first two (small) cases only.
    """
    if against == "gsplat":
        if not torch.cuda.is_available():
            print("--cuda-check: no CUDA device here; nothing compared (run this on a GPU machine)")
            return 2
        from gsplat import rasterization as other_fn

        other_dev = "cuda"
    else:
        other_fn, other_dev = get_renderer("reference"), "cpu"
    cpu = get_renderer("cpu")
    cases = [
        dict(n=3000, H=64, W=96, sh=0, mode="RGB", raster="classic", bg=False),
        dict(n=3000, H=64, W=96, sh=3, mode="RGB", raster="classic", bg=True),
        dict(n=3000, H=80, W=48, sh=1, mode="RGB+ED", raster="classic", bg=False),
        dict(n=3000, H=64, W=64, sh=2, mode="RGB+D", raster="antialiased", bg=True),
        dict(n=20000, H=128, W=128, sh=3, mode="RGB", raster="classic", bg=False),
    ]
    if quick:
        cases = [dict(c, n=300) for c in cases[:2]]
    worst, radii_ok = 0.0, True
    print("| case | output | max abs err | scale | rel err |\n| --- | --- | --- | --- | --- |")
    for ci, c in enumerate(cases):
        s = make_scene(c["n"], c["H"], c["W"], c["sh"], seed=10 + ci)
        # Put a few Gaussians behind the camera / at huge scale: culling must agree too.
        s["means"][:20, 2] *= -1
        s["scales"][20:30] *= 50
        bg = torch.rand(1, 3) if c["bg"] else None
        results = {}
        for side, dev in (("cpu", "cpu"), ("other", other_dev)):
            leaves = {k: s[k].to(dev).clone().requires_grad_(True)
                      for k in ("means", "quats", "scales", "opacities", "colors", "viewmats")}
            bg_leaf = None if bg is None else bg.to(dev).clone().requires_grad_(True)
            kw = dict(sh_degree=c["sh"], packed=False, render_mode=c["mode"], rasterize_mode=c["raster"],
                      backgrounds=bg_leaf)
            fn = cpu if side == "cpu" else other_fn
            colors, alphas, meta = fn(leaves["means"], leaves["quats"], leaves["scales"], leaves["opacities"],
                                      leaves["colors"], leaves["viewmats"], s["Ks"].to(dev), c["W"], c["H"], **kw)
            g = torch.Generator().manual_seed(ci)
            wc = torch.randn(colors.shape, generator=g).to(dev)
            wa = torch.randn(alphas.shape, generator=g).to(dev)
            ((colors * wc).sum() + (alphas * wa).sum()).backward()
            results[side] = {"colors": colors, "alphas": alphas, "radii": meta["radii"],
                             "means2d": meta["means2d"], **{f"d_{k}": v.grad for k, v in leaves.items()}}
            if bg_leaf is not None:
                results[side]["d_backgrounds"] = bg_leaf.grad
        r_cpu, r_gpu = results["cpu"].pop("radii").long(), results["other"].pop("radii").cpu().long()
        # Radii are integers (ceil of 3 sigma): a float rounding difference at the ceiling flips one by 1 px, so
        # they are counted and bounded, not put under the float tolerance.
        n_diff = int((r_cpu != r_gpu).sum())
        max_diff = int((r_cpu - r_gpu).abs().max()) if r_cpu.numel() else 0
        ok = max_diff <= 1 and n_diff <= 0.02 * r_gpu.numel()
        radii_ok &= ok
        print(f"| {ci} | radii | {n_diff} of {r_gpu.numel()} differ, by at most {max_diff} px | | "
              f"{'' if ok else '**FAIL**'} |")
        visible = (r_gpu > 0)[..., None]  # gsplat leaves culled entries of means2d uninitialised
        for key, a in results["cpu"].items():
            b = results["other"][key]
            if a is None or b is None:
                print(f"| {ci} | {key} | missing on {'cpu' if a is None else against} | | **FAIL** |")
                worst = math.inf
                continue
            a, b = a.detach().cpu(), b.detach().cpu()
            if key == "means2d":
                a, b = a * visible, b * visible
            err = float((a - b).abs().max()) if a.numel() else 0.0
            scale = float(b.abs().max()) if b.numel() else 0.0
            rel = err / scale if scale > 0 else (0.0 if err == 0 else math.inf)
            worst = max(worst, rel)
            flag = "" if rel <= tol else " **FAIL**"
            print(f"| {ci}: N={c['n']} {c['H']}x{c['W']} sh{c['sh']} {c['mode']} {c['raster']} | {key} | "
                  f"{err:.2e} | {scale:.2e} | {rel:.2e}{flag} |")
    ok = worst <= tol and radii_ok
    print(f"\nworst relative error {worst:.2e} (tolerance {tol:g}), radii {'ok' if radii_ok else 'FAIL'}: "
          f"{'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


# --------------------------------------------------------------------------------------------------- report
@dataclass
class Row:
    n: int
    height: int
    width: int
    sh: int
    f: float
    fb: float
    ref_n: Optional[int] = None
    """Largest Gaussian count the reference was timed at (a prefix of this scene)."""
    ref_f: Optional[float] = None
    ref_fb: Optional[float] = None
    cpu_f_at_ref_n: Optional[float] = None
    cpu_fb_at_ref_n: Optional[float] = None
    ref_stop: str = ""
    """Why the reference was not timed at a larger N ("" if it reached the full N)."""


def write_markdown(rows: List[Row], sweep: List[Row], args, path: Path, elapsed: float) -> None:
    def fmt(t: Optional[float]) -> str:
        return "n/a" if t is None else (f"{t:.3f}" if t < 100 else f"{t:.0f}")

    lines = [
        "# Rasteriser benchmark (CPU)",
        "",
        f"`python scripts/bench_rasterizer.py` on this machine ({os.cpu_count()} cores visible, "
        f"{args.threads} torch threads), torch {torch.__version__}. Median of {args.runs} runs after "
        f"{args.warmup} warm-up (reference: {args.ref_runs} run(s), calls over {LONG_CALL_S:.0f} s are their own "
        f"warm-up); forward without autograd graph, F+B = forward with graph + backward of a random "
        f"linear loss on colours and alphas. Scene model: see the script's docstring (Gaussians fill the view, "
        f"projected sigma 0.5-4 px). Total benchmark time {elapsed:.0f} s; 1-minute load average "
        f"{args.load_start:.1f} at the start and {os.getloadavg()[0]:.1f} at the end (other processes on the machine "
        f"inflate and scatter the timings when it exceeds the core count).",
        "",
        "| Gaussians | image (HxW) | SH | C++ fwd (s) | C++ F+B (s) | target F+B | reference timed at N | "
        "reference fwd / F+B (s) | C++ fwd / F+B at that N (s) | speedup fwd / F+B at that N | "
        "speedup F+B at full N |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        target = TARGETS.get((r.height, r.width))
        ok = "" if target is None else (f"{target} s " + ("met" if r.fb <= target else "**missed**"))
        if r.ref_n is None:
            ref_cols = f"not measured ({r.ref_stop}) | n/a | n/a | n/a | n/a"
        else:
            full = r.ref_n == r.n
            where = f"{r.ref_n:,}" + ("" if full else f" (next {r.ref_stop})")
            ref_cols = (f"{where} | {fmt(r.ref_f)} / {fmt(r.ref_fb)} | {fmt(r.cpu_f_at_ref_n)} / "
                        f"{fmt(r.cpu_fb_at_ref_n)} | {r.ref_f / r.cpu_f_at_ref_n:.0f}x / "
                        f"{r.ref_fb / r.cpu_fb_at_ref_n:.0f}x | {'' if full else '>= '}{r.ref_fb / r.fb:.0f}x")
        lines.append(f"| {r.n:,} | {r.height}x{r.width} | {r.sh} | {fmt(r.f)} | {fmt(r.fb)} | {ok} | {ref_cols} |")
    lines += [
        "",
        "Where the pure-torch reference does not fit the time budget or memory cap at the full size it was timed "
        "on a subsample of the same scene (first N Gaussians, same image size; the column says why it stopped); "
        "no value is extrapolated. The last column is then a lower bound (\">=\"): reference F+B at the "
        "subsample divided by C++ F+B at the full N. The C++ times at the subsample come from a separate run and "
        "can differ slightly from the sweep's.",
        "",
        "## Sweep (SH 3)",
        "",
        "| Gaussians | image (HxW) | C++ fwd (s) | C++ F+B (s) | reference F+B (s) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in sweep:
        lines.append(f"| {r.n:,} | {r.height}x{r.width} | {fmt(r.f)} | {fmt(r.fb)} | {fmt(r.ref_fb)} |")
    lines += ["", "![time vs Gaussians](img/bench_rasterizer.png)", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def plot(sweep: List[Row], ref_points: Dict[Tuple[int, int], List[Tuple[int, float, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (h, w), color in zip(sorted({(r.height, r.width) for r in sweep}), ("tab:blue", "tab:orange")):
        rs = sorted([r for r in sweep if (r.height, r.width) == (h, w)], key=lambda r: r.n)
        ns = [r.n for r in rs]
        ax.plot(ns, [r.fb for r in rs], "o-", color=color, label=f"C++ CPU F+B {h}x{w}")
        ax.plot(ns, [r.f for r in rs], "o--", color=color, alpha=0.6, label=f"C++ CPU fwd {h}x{w}")
        pts = ref_points.get((h, w), [])
        if pts:
            ax.plot([p[0] for p in pts], [p[2] for p in pts], "x:", color=color, label=f"torch reference F+B {h}x{w}")
        target = TARGETS.get((h, w))
        if target:
            ax.axhline(target, color=color, lw=0.8, ls="-.", alpha=0.5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of Gaussians")
    ax.set_ylabel("seconds (median)")
    ax.set_title("Gaussian rasterisation on 2 CPU cores, SH degree 3 (dash-dot: F+B targets)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


# --------------------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cuda-check", action="store_true", help="compare the CPU backend with gsplat CUDA and exit")
    ap.add_argument("--ref-check", action="store_true",
                    help="the --cuda-check comparison against the pure-torch reference instead (no GPU needed)")
    ap.add_argument("--tol", type=float, default=1e-4,
                    help="--cuda-check tolerance (max abs err / max |ref|, per output and per gradient)")
    ap.add_argument("--quick", action="store_true", help="2 runs, small sweep, tiny reference budget")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--ref-runs", type=int, default=1)
    ap.add_argument("--ref-budget", type=float, default=40.0,
                    help="seconds per reference measurement (warm-up + runs, F and F+B); sizes double while they fit")
    ap.add_argument("--ref-mem-gb", type=float, default=8.0, help="address-space cap of the reference process")
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument("--out", type=Path, default=REPO / "docs/bench_rasterizer.md")
    ap.add_argument("--plot", type=Path, default=REPO / "docs/img/bench_rasterizer.png")
    # worker-only arguments
    ap.add_argument("--_ref-worker", dest="ref_worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--n-full", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--height", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--width", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--sh", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--budget", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--mem-cap-gb", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.ref_worker:
        reference_worker(args)
        return
    if args.cuda_check or args.ref_check:
        sys.exit(cuda_check(args.tol, "gsplat" if args.cuda_check else "reference", quick=args.quick))
    if args.quick:
        args.runs, args.ref_runs, args.ref_budget = 2, 1, 5.0
        args.ref_mem_gb = min(args.ref_mem_gb, 6.0)
    torch.set_num_threads(args.threads)
    args.load_start = os.getloadavg()[0]
    cpu = get_renderer("cpu")
    t_start = time.perf_counter()

    rows: List[Row] = []
    ref_points: Dict[Tuple[int, int], List[Tuple[int, float, float]]] = {}
    for n, h, w in CONFIGS:
        for sh in (0, 3):
            scene = make_scene(n, h, w, sh)
            f, fb = time_config(cpu, scene, w, h, sh, args.warmup, args.runs)
            print(f"CPU N={n:>7} {h}x{w} sh{sh}: F {f:.3f} s  F+B {fb:.3f} s", flush=True)
            row = Row(n, h, w, sh, f, fb)
            pts, row.ref_stop = reference_scaling(n, h, w, sh, args)
            if sh == 3:
                ref_points[(h, w)] = pts
            if pts:
                row.ref_n, row.ref_f, row.ref_fb = pts[-1]
                row.cpu_f_at_ref_n, row.cpu_fb_at_ref_n = time_config(cpu, subsample(scene, row.ref_n), w, h, sh,
                                                                      args.warmup, args.runs)
            rows.append(row)

    sweep: List[Row] = []
    if not args.no_sweep:
        fractions = (0.125, 0.25, 0.5, 1.0) if not args.quick else (0.25, 1.0)
        for n_full, h, w in CONFIGS:
            scene = make_scene(n_full, h, w, 3)
            for frac in fractions:
                n = int(n_full * frac)
                done = [r for r in rows if (r.n, r.height, r.width, r.sh) == (n, h, w, 3)]
                if done:
                    f, fb = done[0].f, done[0].fb
                else:
                    f, fb = time_config(cpu, subsample(scene, n), w, h, 3, args.warmup, args.runs)
                ref = next((p[2] for p in ref_points.get((h, w), []) if p[0] == n), None)
                sweep.append(Row(n, h, w, 3, f, fb, ref_fb=ref))
                print(f"sweep N={n:>7} {h}x{w}: F {f:.3f} s  F+B {fb:.3f} s", flush=True)
        # Reference points measured at other counts also go into the table.
        for n_full, h, w in CONFIGS:
            scene = make_scene(n_full, h, w, 3)  # the reference worker subsamples this same scene
            for pn, _, pfb in ref_points.get((h, w), []):
                if not any((r.n, r.height, r.width) == (pn, h, w) for r in sweep):
                    f, fb = time_config(cpu, subsample(scene, pn), w, h, 3, args.warmup, args.runs)
                    sweep.append(Row(pn, h, w, 3, f, fb, ref_fb=pfb))
        sweep.sort(key=lambda r: (r.height, r.n))
        plot(sweep, ref_points, args.plot)

    elapsed = time.perf_counter() - t_start
    write_markdown(rows, sweep, args, args.out, elapsed)
    print(json.dumps([asdict(r) for r in rows]))
    print(f"wrote {args.out} and {args.plot} in {elapsed:.0f} s")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Fixed-budget recipe comparison for the CPU-trained models (issue: weights that beat the baselines).

Every arm is the base config plus a few overrides, trained from the same seed on the same training scenes for the
same number of optimiser steps, then scored by novel-view PSNR on held-out synthetic scenes of another seed
(:mod:`tttlrm_ns.train.holdout`). The budget is counted in steps, not minutes: on a shared 2-core machine the
wall-clock of a step varies by 2-3x with the load, while arms of equal model size do the same work per step
(arms that change the work per step say so in the table, with their measured step time).

    python experiments/recipe_arms.py --base configs/scene_cpu.yaml --scenes 'data/synthetic/rooms_s7/scene_*' \\
        --val 'data/synthetic/rooms_val_s8/scene_*' --steps 150 --runs runs/arms --out docs/recipe_arms.json

Resumable: a finished arm (its held-out result exists) is skipped, an interrupted one resumes from its checkpoint.
``--plot`` rebuilds the learning-curve PNG and the markdown table from the JSON without training.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# name -> (what it tests, CLI overrides on top of the base config)
ARMS: dict[str, tuple[str, list[str]]] = {
    "official_init": ("no depth-range prior, no depth loss (the previous recipe)",
                      ["--model.dist-shift", "0.0", "--loss.depth", "0.0"]),
    "prior": ("depth-range prior only (dist_shift = logit(4/500))", ["--loss.depth", "0.0"]),
    "prior+logdepth0.1": ("prior + log-depth L1, weight 0.1 (base)", []),
    "prior+logdepth0.5": ("prior + log-depth L1, weight 0.5", ["--loss.depth", "0.5"]),
    "prior+disparity0.1": ("prior + the official normalised-disparity term, weight 0.1",
                           ["--loss.depth-mode", "disparity"]),
    "views16": ("base with 16 input views (about 2x the work per step)", ["--data.num-input-views", "16"]),
    "deep_narrow": ("base, d=96 x 7 blocks instead of d=128 x 4 (about equal FLOPs per token)",
                    ["--model.d", "96", "--model.n-layer", "7", "--model.ttt-head-dim", "96"]),
    "lowres": ("base at 40x72 instead of 72x128 (about 3x less work per step)",
               ["--data.height", "40", "--data.width", "72"]),
    "mix_megasynth": ("base on furniture rooms + MegaSynth-style procedural rooms (union of both lists, scenes drawn uniformly)",
                      ["--data.scenes", "{scenes}", "{megasynth}"]),
}


def run_arm(name: str, overrides: list[str], a: argparse.Namespace) -> dict:
    out = Path(a.runs) / name.replace("+", "_")
    res_file = out / "holdout.json"
    if res_file.is_file():
        return json.loads(res_file.read_text())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if "--data.scenes" in overrides:  # data-mix arms name their own scene lists
        subst = {"{scenes}": a.scenes, "{megasynth}": a.megasynth or []}
        overrides = [x for o in overrides for x in subst.get(o, [o])]
        scenes = []
    else:
        scenes = ["--data.scenes", *a.scenes]
    cmd = [sys.executable, "-m", "tttlrm_ns.train", "--config", a.base, *scenes,
           "--output-dir", str(out), "--optim.max-steps", str(a.steps), "--optim.warmup-steps", str(a.warmup),
           "--checkpoint.every", str(max(a.steps // 2, 1)), "--checkpoint.keep-last", "1",
           "--checkpoint.no-export", "--logging.every", "5", "--seed", str(a.seed), *overrides]
    if (out / "checkpoints").is_dir():
        cmd.append("--resume")
    t0 = time.time()
    print(f"[arms] {name}: {' '.join(overrides) or '(base)'}", flush=True)
    subprocess.run(cmd, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    train_s = time.time() - t0
    hold = subprocess.run([sys.executable, "-m", "tttlrm_ns.train.holdout", "--run", str(out), "--scenes", *a.val,
                           "--num", str(a.val_num), "--out", str(out / "holdout_tmp.json")],
                          check=True, env=env, cwd=REPO, capture_output=True, text=True)
    res = json.loads((out / "holdout_tmp.json").read_text())
    hist = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    step_times = [h["step_time_s"] for h in hist]
    res.update({"arm": name, "overrides": overrides, "steps": a.steps, "train_wall_s": train_s,
                "median_step_s": float(sorted(step_times)[len(step_times) // 2]) if step_times else None,
                "curve": [(h["step"], h["mse"]) for h in hist]})
    res_file.write_text(json.dumps(res, indent=2))
    print(f"[arms] {name}: held-out {res['psnr']:.2f} dB ({hold.stdout.strip()})", flush=True)
    return res


def report(results: list[dict], out_json: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tttlrm_ns.eval.metrics import psnr_from_mse

    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(results, indent=2))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in results:
        steps = [s for s, _ in r["curve"]]
        psnr = [psnr_from_mse(m) for _, m in r["curve"]]
        k = 5  # moving average over 5 logged points (25 steps): one sample per step is noisy
        sm = [sum(psnr[max(0, i - k + 1): i + 1]) / len(psnr[max(0, i - k + 1): i + 1]) for i in range(len(psnr))]
        ax.plot(steps, sm, label=f"{r['arm']} ({r['psnr']:.2f} dB held-out)")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("training PSNR of target views (dB, moving avg.)")
    ax.set_title("Recipe arms: same seed, same data, same steps")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    png = out_json.with_suffix(".png")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    lines = ["| arm | what it tests | held-out PSNR (dB) | median step (s) |", "|---|---|---|---|"]
    for r in sorted(results, key=lambda r: -r["psnr"]):
        lines.append(f"| `{r['arm']}` | {ARMS.get(r['arm'], ('?',))[0]} | {r['psnr']:.2f} | "
                     f"{r['median_step_s']:.1f} |")
    md = out_json.with_suffix(".md")
    md.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"[arms] wrote {out_json}, {png}, {md}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="configs/scene_cpu.yaml")
    p.add_argument("--scenes", nargs="+", required=True, help="training scene globs")
    p.add_argument("--val", nargs="+", required=True, help="held-out scene globs (another seed)")
    p.add_argument("--megasynth", nargs="*", help="procedural-room scene globs for the data-mix arm")
    p.add_argument("--val-num", type=int, default=12)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", default="runs/arms")
    p.add_argument("--out", default="docs/img/recipe_arms.json")
    p.add_argument("--only", nargs="*", help="arms to run (default: all)")
    p.add_argument("--plot", action="store_true", help="only rebuild the plot/table from finished arms")
    a = p.parse_args()
    names = a.only or list(ARMS)
    unknown = [n for n in names if n not in ARMS]
    if unknown:
        p.error(f"unknown arms {unknown}; choose from {list(ARMS)}")
    results = []
    for n in names:
        f = Path(a.runs) / n.replace("+", "_") / "holdout.json"
        if a.plot:
            if f.is_file():
                results.append(json.loads(f.read_text()))
            continue
        results.append(run_arm(n, ARMS[n][1], a))
        report(results, Path(a.out))  # after every arm: partial results survive an interruption
    if a.plot:
        report(results, Path(a.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Plot a tttlrm-train learning curve from the run's metrics.jsonl (loss terms and training PSNR vs step).

    python experiments/plot_train_curve.py RUN_DIR/metrics.jsonl OUT.png [--title TEXT] [--smooth N]

Training PSNR is -10 log10(MSE) of the rendered target views (MSE of images in [0, 1]); the thin lines are the
logged values, the thick ones a running mean over ``--smooth`` log points.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_metrics(path: Path) -> list[dict]:
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    last: dict[int, dict] = {}
    for r in recs:  # a resumed run may log a step twice: keep the latest record
        last[int(r["step"])] = r
    return [last[s] for s in sorted(last)]


def running_mean(xs: list[float], n: int) -> list[float]:
    out, acc = [], 0.0
    for i, x in enumerate(xs):
        acc += x
        if i >= n:
            acc -= xs[i - n]
        out.append(acc / min(i + 1, n))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("metrics", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--title", default=None)
    ap.add_argument("--smooth", type=int, default=10)
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tttlrm_ns.eval.metrics import psnr_from_mse

    recs = read_metrics(args.metrics)
    steps = [r["step"] for r in recs]
    psnr = [psnr_from_mse(r["mse"]) for r in recs]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key, colour in (("loss", "C0"), ("mse", "C1"), ("perceptual", "C2")):
        if any(r.get(key, 0.0) for r in recs):
            ys = [r[key] for r in recs]
            a.plot(steps, ys, color=colour, alpha=0.25, lw=0.8)
            a.plot(steps, running_mean(ys, args.smooth), color=colour, lw=1.8, label=key)
    a.set_yscale("log")
    a.set_xlabel("optimiser step")
    a.set_title("training loss terms")
    a.legend()
    b.plot(steps, psnr, color="C3", alpha=0.25, lw=0.8)
    b.plot(steps, running_mean(psnr, args.smooth), color="C3", lw=1.8)
    b.set_xlabel("optimiser step")
    b.set_ylabel("dB")
    b.set_title("training PSNR (target views)")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    if args.title:
        fig.suptitle(args.title, fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()

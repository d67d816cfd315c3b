#!/usr/bin/env python
"""Compare tttlrm_ns against golden tensors of the official implementation.

Usage: python scripts/check_reference_parity.py GOLDEN.safetensors [GOLDEN2.safetensors ...] [--threads N]

Builds the model from each golden's JSON config, loads its ``model.*`` weights, runs its ``input.*`` tensors
and prints max abs / relative errors for every reference tensor. Every compared tensor gates, with the limits
defined in ``tttlrm_ns/model/parity.py`` (never read from a golden): ``tight`` 1e-5 normwise (float32
Newton-Schulz variant, tokens), ``coarse`` 0.15 normwise and Frobenius (official bfloat16 path: outputs and
residual streams), ``chaotic`` 0.5 Frobenius (official path's final fast weights). Exits 0 only if every tensor of
every golden is within its limit; otherwise names the first diverging tensor and exits 1. Exits 2 on unusable
input: a missing JSON, no reference tensors, an unknown tensor name or scan, a ``pass_criterion`` key.
"""

from __future__ import annotations

import argparse
import sys

from tttlrm_ns.model.parity import CHAOTIC_FRO, COARSE, TIGHT, GoldenConfigError, check_golden, format_table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("goldens", nargs="+", help="golden .safetensors files (with their .json beside them)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (the goldens used 2)")
    args = ap.parse_args(argv)
    failed = []
    print(f"limits: tight {TIGHT:g} (normwise), coarse {COARSE:g} (normwise and Frobenius), "
          f"chaotic {CHAOTIC_FRO:g} (Frobenius)")
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
            b = bad[0]
            print(f"FAIL: first diverging tensor: {b.name} (run {b.run}, gate {b.kind}): normwise rel "
                  f"{b.rel_normwise:.3e}, fro rel {b.rel_fro:.3e}, limit {b.threshold:g} ({len(bad)} of "
                  f"{len(rows)} tensors fail)")
            failed.append(path)
        else:
            print(f"PASS: {len(rows)} tensors within tolerance")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

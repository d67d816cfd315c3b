"""Weight surgery: turn trained weights into a model with an extension switched on, starting where they were.

``add_geometry``: the plane-sweep channels (``geometry_input``) and / or the depth anchor (``depth_anchor``) on a
model trained without them, for a fine-tune under median-depth normalisation.

* Tokenizer: the patch vector is ``(row, column, channel)`` with the channel fastest
  (:class:`tttlrm_ns.model.tttlrm.Patchify`), so the old columns move to their new positions and the two new
  channels (log depth, confidence) get zero weights: before the fine-tune, the tokens are the old ones.
* Frame scale: the old weights place Gaussians around depth ``old_median`` (their frame's typical median depth;
  the scene model's depth-range prior is 4); the new frame has median depth 1. ``max_dist * sigmoid(x + shift)``
  is ``~ max_dist * exp(x + shift)`` far below ``max_dist``, so adding ``log(1 / old_median)`` to ``dist_shift``
  divides every predicted distance by ``old_median``; the same offset on ``scale_shift`` and ``max_log_scale``
  divides the Gaussians' sizes. The ray encoding (origins) still sees the rescaled frame: the fine-tune adapts.

    python -m tttlrm_ns.model.surgery SRC.safetensors DST.safetensors --geometry-input --depth-anchor --old-median 4
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from tttlrm_ns.model.checkpoint import load_model, read_metadata, read_trained_for, save_model
from tttlrm_ns.model.tttlrm import TttlrmModel


def tokenizer_columns(patch: int, old_channels: int, new_channels: int) -> torch.Tensor:
    """[p*p*old] positions of the old tokenizer columns in the new (more channels) patch vector."""
    pix = torch.arange(patch * patch)[:, None]
    return (pix * new_channels + torch.arange(old_channels)[None]).reshape(-1)


def add_geometry(src: TttlrmModel, geometry_input: bool, depth_anchor: bool, old_median: float) -> TttlrmModel:
    """A copy of ``src`` with the geometry options on (see the module docstring)."""
    if src.cfg.uses_geometry:
        raise ValueError("the source weights already read measured geometry")
    if old_median <= 0:
        raise ValueError(f"old_median must be > 0, got {old_median}")
    shift = math.log(1.0 / old_median)
    cfg = src.cfg.replace(geometry_input=geometry_input, depth_anchor=depth_anchor,
                          dist_shift=src.cfg.dist_shift + shift, scale_shift=src.cfg.scale_shift + shift,
                          max_log_scale=src.cfg.max_log_scale + shift)
    model = TttlrmModel(cfg)
    state = src.state_dict()
    key = "tokenizer.1.weight"
    old = state.pop(key)
    new = torch.zeros(old.shape[0], cfg.token_channels * cfg.patch_size**2, dtype=old.dtype)
    new[:, tokenizer_columns(cfg.patch_size, src.cfg.token_channels, cfg.token_channels)] = old
    state[key] = new
    model.load_state_dict(state, strict=True)
    return model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Switch the measured-geometry options on for trained weights")
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--geometry-input", action="store_true", help="plane-sweep depth + confidence tokenizer channels")
    ap.add_argument("--depth-anchor", action="store_true", help="Gaussians at the measured depth where confident")
    ap.add_argument("--old-median", type=float, required=True,
                    help="typical median depth of the source weights' frame (the scene model's prior: 4)")
    args = ap.parse_args(argv)
    if not (args.geometry_input or args.depth_anchor):
        ap.error("choose --geometry-input and/or --depth-anchor")
    model = add_geometry(load_model(args.src), args.geometry_input, args.depth_anchor, args.old_median)
    trained, _ = read_trained_for(args.src)
    extra = {k: v for k, v in read_metadata(args.src).items() if k in ("train_step", "train_history",
                                                                     "train_step_total")}
    extra.update(derived_from=Path(args.src).name,
                 surgery=f"geometry_input={args.geometry_input} depth_anchor={args.depth_anchor}, frame scale "
                         f"1/{args.old_median:g} folded into dist/scale shifts, new tokenizer columns zero")
    save_model(model, args.dst, extra_metadata=extra, trained_for=trained)
    print(f"wrote {args.dst}: {extra['surgery']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

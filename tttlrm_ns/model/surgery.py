"""Weight surgery: turn trained weights into a model with an extension switched on, starting where they were.

``add_geometry``: the plane-sweep channels (``geometry_input``) and / or the depth anchor (``depth_anchor``) on a
model trained without them, for a fine-tune under median-depth normalisation.

``add_rgb_skip``: the input pixel colour added to each Gaussian's degree-0 SH coefficient (``rgb_skip``,
``tttlrm_ns/model/head.py``). A model trained without the skip already emits the colour through the decoder, so
switching the skip on alone would add the colour twice: the decoder rows of the degree-0 SH channels are zeroed (the
colour then equals the input pixel exactly) and every other weight is kept, so a fine-tune starts from the trained
positions, scales and opacities with a lossless colour path.

* Tokenizer: the patch vector is ``(row, column, channel)`` with the channel fastest
  (:class:`tttlrm_ns.model.tttlrm.Patchify`), so the old columns move to their new positions and the two new
  channels (log depth, confidence) get zero weights: before the fine-tune, the tokens are the old ones.
* Frame scale: the old weights place Gaussians around depth ``old_median`` (their frame's typical median depth;
  the scene model's depth-range prior is 4); the new frame has median depth 1. ``max_dist * sigmoid(x + shift)``
  is ``~ max_dist * exp(x + shift)`` far below ``max_dist``, so adding ``log(1 / old_median)`` to ``dist_shift``
  divides every predicted distance by ``old_median``; the same offset on ``scale_shift`` and ``max_log_scale``
  divides the Gaussians' sizes. The ray encoding (origins) still sees the rescaled frame: the fine-tune adapts.

    python -m tttlrm_ns.model.surgery SRC.safetensors DST.safetensors --geometry-input --depth-anchor --old-median 4
    python -m tttlrm_ns.model.surgery SRC.safetensors DST.safetensors --rgb-skip

The written weights keep what the source was trained for (``trained.*``: scan, normalisation, resolution, ...) and
its step counts, and record the surgery in their metadata.
"""

from __future__ import annotations

import argparse
import math
import sys
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


def dc_rows(patch_size: int, gaussian_channels: int) -> torch.Tensor:
    """Indices of the decoder output rows holding the degree-0 SH coefficients (R, G, B) of every pixel of a
    patch: the decoder emits ``[pixel, channel]`` with the channel fastest and SH starting at channel 3."""
    pix = torch.arange(patch_size * patch_size)[:, None] * gaussian_channels
    return (pix + 3 + torch.arange(3)).reshape(-1)


def add_rgb_skip(src: TttlrmModel) -> TttlrmModel:
    """A copy of ``src`` with ``rgb_skip`` on and the decoder's degree-0 SH rows zeroed (see the module docstring)."""
    if src.cfg.rgb_skip:
        raise ValueError("the source weights already have rgb_skip=True")
    model = TttlrmModel(src.cfg.replace(rgb_skip=True))
    model.load_state_dict(src.state_dict(), strict=True)
    with torch.no_grad():
        model.decoder[1].weight[dc_rows(model.cfg.patch_size, model.cfg.gaussian_channels)] = 0.0
    return model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tttlrm_ns.model.surgery",
                                 description="Switch an extension on for trained weights: the measured-geometry "
                                             "options and / or the input-colour skip")
    ap.add_argument("src", help="trained model .safetensors")
    ap.add_argument("dst", help="output .safetensors")
    ap.add_argument("--geometry-input", action="store_true", help="plane-sweep depth + confidence tokenizer channels")
    ap.add_argument("--depth-anchor", action="store_true", help="Gaussians at the measured depth where confident")
    ap.add_argument("--old-median", type=float, default=None,
                    help="with --geometry-input / --depth-anchor: typical median depth of the source weights' frame "
                         "(the scene model's prior: 4)")
    ap.add_argument("--rgb-skip", action="store_true",
                    help="input pixel colour into the degree-0 SH coefficient, decoder degree-0 SH rows zeroed")
    args = ap.parse_args(argv)
    geometry = args.geometry_input or args.depth_anchor
    if not (geometry or args.rgb_skip):
        ap.error("choose --geometry-input and/or --depth-anchor, and/or --rgb-skip")
    if geometry and args.old_median is None:
        ap.error("--geometry-input / --depth-anchor need --old-median (the scene model's prior: 4, objects: 1)")
    if args.old_median is not None and not geometry:
        ap.error("--old-median only applies with --geometry-input / --depth-anchor")
    model, done = load_model(args.src), []
    try:
        if args.rgb_skip:
            model = add_rgb_skip(model)
            done.append("rgb_skip on, decoder degree-0 SH rows zeroed")
        if geometry:
            model = add_geometry(model, args.geometry_input, args.depth_anchor, args.old_median)
            done.append(f"geometry_input={args.geometry_input} depth_anchor={args.depth_anchor}, frame scale "
                        f"1/{args.old_median:g} folded into dist/scale shifts, new tokenizer columns zero")
    except ValueError as e:
        print(f"error: {args.src}: {e}", file=sys.stderr)
        return 2
    trained, _ = read_trained_for(args.src)
    extra = {k: v for k, v in read_metadata(args.src).items() if k in ("train_step", "train_history",
                                                                     "train_step_total")}
    extra.update(derived_from=Path(args.src).name, surgery="; ".join(done))
    save_model(model, args.dst, extra_metadata=extra, trained_for=trained)
    print(f"wrote {args.dst}: {extra['surgery']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

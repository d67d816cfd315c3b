"""Turn a trained model into an ``rgb_skip`` model that starts from the same geometry.

With ``rgb_skip`` the degree-0 SH coefficient of every Gaussian is its input pixel's colour plus the decoder's
output (``tttlrm_ns/model/head.py``). A model trained without the skip already emits the colour through the decoder,
so switching the skip on would add the colour twice. This script zeroes the decoder rows of the degree-0 SH
channels (the colour then equals the input pixel exactly) and keeps every other weight, so a finetune starts from
the trained positions, scales and opacities with a lossless colour path.

    python scripts/add_rgb_skip.py tttlrm_ns/assets/weights/tttlrm_scene.safetensors /tmp/scene_skip.safetensors
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from tttlrm_ns.model import TttlrmModel
from tttlrm_ns.model.checkpoint import load_model, read_metadata, read_trained_for, save_model


def dc_rows(patch_size: int, gaussian_channels: int) -> torch.Tensor:
    """Indices of the decoder output rows holding the degree-0 SH coefficients (R, G, B) of every pixel of a
    patch: the decoder emits ``[pixel, channel]`` with the channel fastest and SH starting at channel 3."""
    pix = torch.arange(patch_size * patch_size)[:, None] * gaussian_channels
    return (pix + 3 + torch.arange(3)).reshape(-1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", help="trained model .safetensors (rgb_skip off)")
    ap.add_argument("dst", help="output .safetensors (rgb_skip on, degree-0 SH decoder rows zeroed)")
    args = ap.parse_args(argv)
    src = load_model(args.src)
    if src.cfg.rgb_skip:
        raise SystemExit(f"{args.src} already has rgb_skip=True")
    model = TttlrmModel(dataclasses.replace(src.cfg, rgb_skip=True))
    model.load_state_dict(src.state_dict())
    with torch.no_grad():
        model.decoder[1].weight[dc_rows(model.cfg.patch_size, model.cfg.gaussian_channels)] = 0.0
    # The weights keep what they were trained for (scan, normalisation, resolution, ...) and their step count.
    trained, _ = read_trained_for(args.src)
    extra = {k: v for k, v in read_metadata(args.src).items() if k == "train_step"}
    extra.update(derived_from=Path(args.src).name, surgery="rgb_skip on, decoder degree-0 SH rows zeroed")
    save_model(model, args.dst, extra_metadata=extra, trained_for=trained)
    print(f"wrote {args.dst}: rgb_skip=True, decoder degree-0 SH rows zeroed, other weights from {args.src}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``tttlrm-synth``: render synthetic multi-view training data (opencv_cameras.json + images + depth) on CPU with
pyrender + OSMesa.

  tttlrm-synth --kind objects --num 1000 --out data/synthetic/objects --res 256x256
  tttlrm-synth --kind scenes  --num 200  --out data/synthetic/scenes  --res 144x256 --workers 2
  tttlrm-synth --kind zeroverse --num 400 --out data/synthetic/zeroverse --res 256x256   # procedural objects
  tttlrm-synth --kind megasynth --num 300 --out data/synthetic/megasynth --frames 64 --format jpg  # procedural rooms
  tttlrm-synth stress-set [--train ...]    # the held-out stress set or a training mix (tttlrm-synth stress-set -h)

Resumable (finished items are skipped; each item appears atomically), deterministic by --seed (item i depends on
(seed, kind, i) only, so --start/--num can split a run across machines). Layout and conventions:
tttlrm_ns/synth/generate.py; asset licences: DATA_LICENSES.md. Needs `apt-get install libosmesa6`; optional:
`apt-get install sweethome3d-furniture` (furniture) and `apt-get download sweethome3d && dpkg -x sweethome3d_*.deb
~/.cache/tttlrm_ns/sweethome3d` (wall/floor textures); without them assets are procedural. Install lines and speed:
docs/bench_synthetic_data.md. Without the console script: ``python -m tttlrm_ns.synth.cli``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tttlrm_ns.synth import assets as A
from tttlrm_ns.synth.generate import GenerateConfig, MegaSynthScenesConfig, ObjectsConfig, ScenesConfig, generate
from tttlrm_ns.synth.gl import RendererUnavailable
from tttlrm_ns.synth.megasynth import MegaSynthConfig
from tttlrm_ns.synth.room import RoomConfig
from tttlrm_ns.synth.trajectories import CAMERA_MODES
from tttlrm_ns.synth.zeroverse import ZeroverseConfig


def _res(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--res must look like HxW (e.g. 144x256), got {text!r}") from None
    return h, w


def parse_args(argv=None) -> GenerateConfig:
    p = argparse.ArgumentParser(prog="tttlrm-synth", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", choices=["objects", "scenes", "zeroverse", "megasynth"], required=True,
                   help="objects: furniture turntables; scenes: furnished rooms; zeroverse: procedural objects "
                        "(LRM-Zero-like primitives, bumps, cut-outs, wireframes; tttlrm_ns/synth/zeroverse.py); megasynth: "
                        "procedural rooms of primitives (MegaSynth-like; tttlrm_ns/synth/megasynth.py)")
    p.add_argument("--num", type=int, default=1, help="number of objects / scenes")
    p.add_argument("--out", type=Path, required=True, help="output folder (one sub-folder per item)")
    p.add_argument("--res", type=_res, default=None, help="HxW (default 256x256 objects, 144x256 scenes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", type=int, default=0, help="index of the first item (to split runs)")
    p.add_argument("--workers", type=int, default=1, help="render processes (2 on 2 cores gives ~+40%%)")
    p.add_argument("--views", type=int, default=32, help="views per object")
    p.add_argument("--frames", type=int, default=120, help="frames per scene")
    p.add_argument("--camera-mode", choices=["path", "walls"], default="path",
                   help="megasynth: handheld-like path through the room (default) or MegaSynth's layout (cameras "
                        "along the walls looking in, in walking order, then a few in the centre)")
    p.add_argument("--room-camera", choices=list(CAMERA_MODES), default="path",
                   help="scenes: path = handheld walk-through (default); orbit = around a furniture piece, looking "
                        "at it; forward = LLFF-style, all cameras on a 10-30 cm patch looking one way; closeup = "
                        "short sweep 0.3-0.8 m from a surface (tttlrm_ns/synth/trajectories.py)")
    p.add_argument("--fov", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                   help="scenes: horizontal field-of-view range in degrees, one value per item (default "
                        f"{RoomConfig.fov_range[0]:g} {RoomConfig.fov_range[1]:g}); objects/zeroverse: random "
                        "per item instead of the fixed 50")
    p.add_argument("--portrait-prob", type=float, default=0.0,
                   help="scenes: chance that an item is portrait (--res HxW swapped to height > width); 1 = all")
    p.add_argument("--distance", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                   help="objects: camera distance range (unit-sphere units; default fixed 2.7; zeroverse: "
                        "--zv-distance)")
    p.add_argument("--background", choices=["rgba", "white", "black", "cluttered"], default=None,
                   help="objects/zeroverse: RGBA PNG, on white, on black, or cluttered (inside a textured room-like "
                        "box with a few pieces; RGB) (default: rgba for objects, white for zeroverse)")
    p.add_argument("--zv-grid", type=int, default=ZeroverseConfig.grid,
                   help="zeroverse: quads per cube-face edge of a primitive (vertex spacing = texture detail)")
    p.add_argument("--zv-texture-res", type=int, default=ZeroverseConfig.texture_res,
                   help="zeroverse: 0 = colours per vertex; N > 0 = N x N texels per primitive face (crisper "
                        "textures on uncut solid parts)")
    p.add_argument("--zv-radius", type=float, nargs=2, metavar=("LO", "HI"), default=ZeroverseConfig.radius_range,
                   help="zeroverse: bounding-sphere radius range of the objects (unit-sphere units; LRM-Zero's "
                        "objects span about 0.3-0.78 at camera distances 1.5-2.8, i.e. smaller in the frame than "
                        "the default's)")
    p.add_argument("--zv-distance", type=float, nargs=2, metavar=("LO", "HI"), default=ZeroverseConfig.distance_range,
                   help="zeroverse: camera distance range (unit-sphere units)")
    p.add_argument("--supersample", type=int, default=1,
                   help="odd S: render at S x resolution and box-filter colour (anti-aliasing); depth stays exact")
    p.add_argument("--format", choices=["png", "jpg"], default="png", dest="image_format")
    p.add_argument("--jpeg-quality", type=int, default=95)
    p.add_argument("--no-depth", action="store_true", help="do not write depth .npy files")
    p.add_argument("--assets", choices=["auto", "debian", "cc0", "procedural"], default="auto",
                   help="auto: Debian furniture/textures if installed, else procedural; cc0: CC0 furniture + "
                        "procedural textures only; procedural: self-made only")
    p.add_argument("--libraries", default="BlendSwap-CC-0",
                   help=f"comma-separated furniture libraries from {sorted(A.LIBRARY_LICENSES)} (CC-BY ones are "
                        "attributed in each item's json)")
    p.add_argument("--furniture-dir", type=Path, default=A.FURNITURE_DIR)
    p.add_argument("--textures-jar", type=Path, default=None, help="sweethome3d.jar (wall/floor textures)")
    p.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache/tttlrm_ns/synth",
                   help="where furniture models are extracted")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    h, w = a.res or ((144, 256) if a.kind in ("scenes", "megasynth") else (256, 256))
    return GenerateConfig(kind=a.kind, out=a.out, num=a.num, height=h, width=w, seed=a.seed, start=a.start,
                          image_format=a.image_format, jpeg_quality=a.jpeg_quality, save_depth=not a.no_depth,
                          assets=a.assets, libraries=tuple(s for s in a.libraries.split(",") if s),
                          furniture_dir=a.furniture_dir, textures_jar=a.textures_jar, cache_dir=a.cache_dir,
                          workers=a.workers, objects=ObjectsConfig(views=a.views, background=a.background,
                                                supersample=a.supersample,
                                                distance_range=tuple(a.distance) if a.distance else None,
                                                fov_range=tuple(a.fov) if a.fov else None),
                          scenes=ScenesConfig(frames=a.frames, supersample=a.supersample,
                                              portrait_probability=a.portrait_prob,
                                              room=RoomConfig(camera_mode=a.room_camera,
                                                              **({"fov_range": tuple(a.fov)} if a.fov else {}))),
                          megasynth=MegaSynthScenesConfig(frames=a.frames, supersample=a.supersample,
                                                          room=MegaSynthConfig(camera_mode=a.camera_mode)),
                          zeroverse=ZeroverseConfig(grid=a.zv_grid, texture_res=a.zv_texture_res,
                                                    radius_range=tuple(a.zv_radius),
                                                    distance_range=tuple(a.zv_distance))), not a.no_progress


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # One console script for both generators: the stress set is a fixed recipe of the same renderer (its classes come
    # from configs/stress_set.yaml), so it is a sub-command rather than a second entry point; every other first
    # argument is a flag of the plain generator, whose command line stays what it always was.
    if argv[:1] == ["stress-set"]:
        from tttlrm_ns.synth.stress_set import main as stress_set_main

        return stress_set_main(argv[1:])
    cfg, progress = parse_args(argv)
    try:
        s = generate(cfg, progress=progress)
    except (RendererUnavailable, A.AssetError, ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{cfg.kind}: {s.written} written, {s.skipped} already done; {s.images} images in {s.seconds:.1f} s "
          f"({s.images_per_hour:,.0f} images/hour) -> {cfg.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``tttlrm-synth stress-set``: the held-out stress set, or a training mix of the same capture styles
(configs/stress_set.yaml).

  tttlrm-synth stress-set                     # stress set -> data/stress_set (git-ignored), seeds 9001+
  tttlrm-synth stress-set --train --seed-base 1000 --per-class 60 --out data/synthetic/train_traj --workers 2

Stress set: one folder per class (``walkthrough``, ``orbit``, ``forward``, ``closeup``, ``wide_fov``,
``narrow_fov``, ``portrait``, ``object_white``, ``object_black``, ``object_cluttered``) holding that class's items,
plus ``stress_set.json`` (classes, seeds, settings, input view counts, item folders). Training mix (``--train``):
the room classes of the yaml's ``train`` section with seeds ``seed_base + offset``, random field of view and a share
of portrait items, rendered in rounds of ``--chunk`` items per class so that a run stopped early is still balanced.
Deterministic and resumable (finished items are skipped): rerunning the same command completes or re-checks a set.
Why and how these classes are used: docs/stress_set.md. Without the console script:
``python -m tttlrm_ns.synth.stress_set``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from tttlrm_ns.synth import assets as A
from tttlrm_ns.synth.generate import GenerateConfig, ObjectsConfig, ScenesConfig, generate, item_name
from tttlrm_ns.synth.gl import RendererUnavailable
from tttlrm_ns.synth.room import RoomConfig

# The defaults (the class recipe in configs/, the output under data/) are the repository's: the package is installed
# editable from a checkout (scripts/setup.sh). Elsewhere pass --config and --out.
REPO = Path(__file__).resolve().parents[2]


def class_config(name: str, spec: dict, top: dict, out: Path, seed: int, num: int, workers: int,
                 frames: int | None = None, res: tuple[int, int] | None = None,
                 portrait_probability: float | None = None) -> GenerateConfig:
    """GenerateConfig of one class: ``spec`` is the class entry of the yaml, ``top`` the whole yaml."""
    kind = spec["kind"]
    if kind == "scenes":
        h, w = res or tuple(top["rooms"]["res"])
        pp = portrait_probability if portrait_probability is not None else (1.0 if spec.get("portrait") else 0.0)
        room = RoomConfig(camera_mode=spec["camera"], fov_range=tuple(spec["fov"]))
        return GenerateConfig(kind="scenes", out=out / name, num=num, height=h, width=w, seed=seed, workers=workers,
                              assets="procedural",
                              scenes=ScenesConfig(frames=frames or top["rooms"]["frames"], room=room,
                                                  portrait_probability=pp))
    if kind == "objects":
        h, w = res or tuple(top["objects"]["res"])
        oc = ObjectsConfig(views=top["objects"]["views"], background=spec["background"],
                           distance_range=tuple(spec["distance"]) if "distance" in spec else None,
                           fov_range=tuple(spec["fov"]) if "fov" in spec else None)
        return GenerateConfig(kind="objects", out=out / name, num=num, height=h, width=w, seed=seed, workers=workers,
                              assets="procedural", objects=oc)
    raise ValueError(f"class {name}: kind must be scenes or objects, got {kind!r}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="tttlrm-synth stress-set", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=REPO / "configs/stress_set.yaml",
                   help="class recipe (default: configs/stress_set.yaml of the repository)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default data/stress_set in the repository; --train needs one)")
    p.add_argument("--train", action="store_true", help="a training mix instead of the held-out set")
    p.add_argument("--seed-base", type=int, default=1000, help="--train: class seeds are seed_base + offset")
    p.add_argument("--per-class", type=int, default=None,
                   help="items per class (default: scenes_per_class of the yaml; --train: 60)")
    p.add_argument("--frames", type=int, default=None, help="--train: frames per scene (default: the yaml's)")
    p.add_argument("--classes", default=None, help="comma-separated subset of the classes")
    p.add_argument("--chunk", type=int, default=5, help="--train: items per class per round")
    p.add_argument("--workers", type=int, default=1, help="render processes (2 on an otherwise idle 2-core machine)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if not a.config.is_file():
        p.error(f"--config {a.config} does not exist (the recipe is configs/stress_set.yaml of the repository)")
    top = yaml.safe_load(a.config.read_text())
    if a.train and a.out is None:
        p.error("--train needs --out (training data does not belong in the repository)")
    if a.train and a.seed_base >= 9000:
        p.error("--seed-base must stay below 9000: seeds 9001+ are the held-out stress set's")
    out = a.out or REPO / "data/stress_set"
    out.mkdir(parents=True, exist_ok=True)
    if out.resolve().is_relative_to(REPO.resolve()):
        (out / ".gitignore").write_text("# generated by tttlrm-synth stress-set\n*\n")  # never committed
    jobs = []  # (class name, GenerateConfig) in the order they are rendered
    if a.train:
        tr = top["train"]
        names = list(tr["classes"]) if a.classes is None else a.classes.split(",")
        n = 60 if a.per_class is None else a.per_class
        settings = {}
        for name in names:
            spec = {"kind": "scenes", "camera": tr["classes"][name], "fov": tr["fov"]}
            seed = a.seed_base + int(tr["seed_offsets"][name])
            settings[name] = {**spec, "seed": seed, "portrait_probability": tr["portrait_probability"]}
        for start in range(0, n, a.chunk):  # rounds: every class advances together
            for name in names:
                cfg = class_config(name, {"kind": "scenes", "camera": tr["classes"][name], "fov": tr["fov"]}, top,
                                   out, settings[name]["seed"], min(a.chunk, n - start), a.workers,
                                   frames=a.frames or tr["frames"], res=tuple(tr["res"]),
                                   portrait_probability=tr["portrait_probability"])
                cfg.start = start
                jobs.append((name, cfg))
    else:
        names = list(top["classes"]) if a.classes is None else a.classes.split(",")
        n = top["scenes_per_class"] if a.per_class is None else a.per_class
        settings = {name: top["classes"][name] for name in names}
        for name in names:
            jobs.append((name, class_config(name, settings[name], top, out, settings[name]["seed"], n, a.workers)))
    written = skipped = images = 0
    try:
        for name, cfg in jobs:
            s = generate(cfg, progress=not a.no_progress)
            written, skipped, images = written + s.written, skipped + s.skipped, images + s.images
            print(f"{name}: items {cfg.start}..{cfg.start + cfg.num - 1} done ({s.written} written, "
                  f"{s.skipped} already there, {s.images} images, {s.seconds:.0f} s)", flush=True)
    except (RendererUnavailable, A.AssetError, ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    manifest = {"set": "train_mix" if a.train else "stress_set", "config": str(a.config), "per_class": n,
                "input_views": top.get("input_views"), "classes": {}}
    for name in names:
        kind = "scenes" if a.train else settings[name]["kind"]
        items = sorted(str(d.relative_to(out)) for d in (out / name).glob(f"{item_name(kind, 0)[:-5]}*")
                       if (d / "opencv_cameras.json").is_file())
        manifest["classes"][name] = {**settings[name], "items": items}
    (out / ("train_mix.json" if a.train else "stress_set.json")).write_text(json.dumps(manifest, indent=1))
    counts = {k: len(v["items"]) for k, v in manifest["classes"].items()}
    print(f"{out}: {sum(counts.values())} items ({written} written now, {skipped} already there, {images} images "
          f"rendered now); per class {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training samples: scene discovery, paper view sampling, deterministic per-rank loading.

Every sample is a pure function of a :class:`SampleKey` ``(step, slot, n_in, n_tgt)``: the scene, the frame window,
the input and target views all come from ``numpy.random.default_rng([seed, step, slot, attempt])``. Hence

* the set of scenes of optimiser step ``s`` is slots ``0 .. batch_size - 1`` whatever the number of ranks: rank
  ``r`` of ``dp`` data-parallel groups takes slots ``(m * dp + r) * micro + j`` in micro step ``m``;
* the data position in a checkpoint is just the step number, and a resumed run sees exactly the same samples;
* sequence-parallel ranks of one group draw the same sample and load only their share of its views.

View sampling ("window"; ``docs/reference_semantics.md`` §1.5): frame distance
``U{window_min .. min(window_max, F-1)}``, window start uniform, ``frames_per_window`` frames loaded = both ends +
distinct random frames strictly inside, in random order. Inputs: the first ``N_in`` of that list, or ``N_in`` evenly
spaced sorted frames when ``N_in`` is below a quarter of the list (a clean form of the official stride rule).
Targets: ``N_tgt`` drawn without replacement from all loaded frames, inputs included (overlap, as the official
sampler). "ar": the ``2 N_in`` temporally first loaded frames, ``N_in`` of them as sorted inputs; targets from those
(all loaded frames if fewer than ``2 N_in``). "random" (object renders, no temporal order): inputs and targets drawn
independently from all frames.
"""

from __future__ import annotations

import glob
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, NamedTuple, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from tttlrm_ns.data.normalize import NormalizeConfig, normalize_views, scale_to_depth
from tttlrm_ns.data.scene import SCENE_FILE, ResizeConfig, SceneDataError, load_scene, load_views, plan_resize

from .config import DataConfig


class BadSampleError(RuntimeError):
    """A training sample could not be built; the message names the scene (and frame)."""


class SampleKey(NamedTuple):
    step: int
    slot: int
    """Index of the sample within the global batch of ``step``."""
    n_in: int
    n_tgt: int


def discover_scenes(patterns: Sequence[str]) -> list[Path]:
    """Scene folders from folders, ``opencv_cameras.json`` files, JSON lists of those, or glob patterns (sorted)."""
    found: list[Path] = []
    for pat in patterns:
        matches = sorted(glob.glob(str(pat))) if any(c in str(pat) for c in "*?[") else [str(pat)]
        if not matches:
            raise SceneDataError(f"data.scenes pattern {pat!r} matches nothing")
        for m in matches:
            p = Path(m)
            if p.is_dir():
                if not (p / SCENE_FILE).is_file():
                    raise SceneDataError(f"data.scenes entry {p} is a folder without {SCENE_FILE}")
                found.append(p)
            elif p.is_file() and p.name == SCENE_FILE:
                found.append(p.parent)
            elif p.is_file() and p.suffix == ".json":
                listed = json.loads(p.read_text())
                if not isinstance(listed, list):
                    raise SceneDataError(f"{p}: a data-set file must be a JSON list of scene paths")
                found.extend(discover_scenes([str((p.parent / q) if not Path(q).is_absolute() else q) for q in listed]))
            else:
                raise SceneDataError(f"data.scenes entry {p} does not exist")
    if not found:
        raise SceneDataError("no training scenes: set data.scenes to scene folders, JSON scene lists or globs")
    return found


def step_view_counts(cfg: DataConfig, seed: int, step: int) -> tuple[int, int]:
    """(N_in, N_tgt) of optimiser step ``step`` (mixed length: one draw per step, shared by all its samples)."""
    rng = np.random.default_rng([seed, step, 0x7669657773])
    n_in = int(cfg.num_input_views[int(rng.integers(len(cfg.num_input_views)))])
    return n_in, cfg.num_target_views or n_in


def draw_views(num_frames: int, n_in: int, n_tgt: int, cfg: DataConfig,
               rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Input and target frame indices of one sample (see the module docstring)."""
    need = max(n_in, 2)
    if num_frames < max(need, n_tgt):
        raise SceneDataError(f"scene has {num_frames} frames, the sampler needs at least {max(need, n_tgt)}")
    if cfg.sampling == "random":
        inputs = rng.permutation(num_frames)[:n_in].tolist()
        return inputs, rng.permutation(num_frames)[:n_tgt].tolist()
    hi = min(cfg.window_max, num_frames - 1)
    lo = min(cfg.window_min, hi)
    dist = int(rng.integers(lo, hi + 1))
    start = int(rng.integers(0, num_frames - dist))
    end = start + dist
    k = min(cfg.frames_per_window, dist + 1)
    inner = (start + 1 + rng.permutation(dist - 1)[: k - 2]).tolist()
    loaded = [start, end] + inner
    if len(loaded) < max(need, n_tgt):
        raise SceneDataError(f"a window of {dist + 1} frames holds fewer than the {max(need, n_tgt)} views needed; "
                             "raise data.window_min")
    if cfg.sampling == "ar":
        first = sorted(loaded)[: 2 * n_in]  # all loaded frames when fewer than 2 N_in (64 views of 124)
        inputs = sorted(first[i] for i in rng.permutation(len(first))[:n_in])
        targets = [first[i] for i in rng.permutation(len(first))[:n_tgt]]
    else:
        if 4 * n_in < len(loaded):
            srt = sorted(loaded)
            inputs = [srt[round(i * (len(srt) - 1) / max(n_in - 1, 1))] for i in range(n_in)]
        else:
            inputs = loaded[:n_in]
        targets = [loaded[i] for i in rng.permutation(len(loaded))[:n_tgt]]
    return inputs, targets


def shard(views: Sequence[int], sp_rank: int, sp_size: int, interleave: bool) -> list[int]:
    """This rank's share of a view list: contiguous blocks, or ``v_r, v_{r+s}, ...`` (AR scan: the official
    sequence-parallel layout).

    The global view order seen by the model is the concatenation of the shards in rank order.
    """
    n = len(views)
    if n % sp_size:
        raise ValueError(f"{n} views cannot be split over {sp_size} sequence-parallel ranks")
    if interleave:
        return list(views[sp_rank::sp_size])
    k = n // sp_size
    return list(views[sp_rank * k : (sp_rank + 1) * k])


def global_order(views: Sequence[int], sp_size: int, interleave: bool) -> list[int]:
    """The view order of the whole sequence under sequence parallelism (concatenated shards)."""
    return [v for r in range(sp_size) for v in shard(views, r, sp_size, interleave)]


def _load_depth(scene_dir: Path, frames: list[dict], idx: Sequence[int], key: str, plan) -> Tensor:
    """Depth maps [V, H, W] (0 = unknown) resized with nearest neighbour along the image plan."""
    out = []
    for i in idx:
        rel = frames[i].get(key)
        if rel is None:
            raise SceneDataError(f"{scene_dir / SCENE_FILE}: frame {i} has no {key!r} (needed by data.load_depth)")
        try:
            d = torch.from_numpy(np.load(scene_dir / rel).astype(np.float32))
        except (OSError, ValueError) as e:
            raise SceneDataError(f"{scene_dir / SCENE_FILE}: frame {i}: cannot read depth {rel} ({e})") from None
        if d.dim() == 3:
            d = d[..., 0]
        if tuple(d.shape) != (plan.src_h, plan.src_w):
            raise SceneDataError(f"{scene_dir / SCENE_FILE}: frame {i}: depth {rel} is {tuple(d.shape)}, the image "
                                 f"is {(plan.src_h, plan.src_w)}")
        d = torch.nn.functional.interpolate(d[None, None], size=(plan.scaled_h, plan.scaled_w), mode="nearest")[0, 0]
        out.append(d[plan.y0 : plan.y0 + plan.out_h, plan.x0 : plan.x0 + plan.out_w])
    return torch.stack(out)


class TrainDataset(torch.utils.data.Dataset):
    """Map-style data set indexed by :class:`SampleKey`; returns this sequence-parallel rank's share of a sample.

    Item fields (``V``/``T`` = local input/target views): ``images`` [V, 3, H, W], ``c2w`` [V, 4, 4] (normalised,
    float32), ``fxfycxcy`` [V, 4], ``target_images`` [T, 3, s*H, s*W] (s = ``data.target_scale``), ``target_c2w``
    [T, 4, 4], ``target_fxfycxcy`` [T, 4] (of the target images), optionally ``depth`` [V, H, W] (z-depth in the
    normalised frame, 0 = unknown) and ``target_depth`` [T, s*H, s*W] (the same for the targets); ``scene``
    (name), ``key`` and ``skipped`` (messages of bad samples replaced by
    this one).
    """

    def __init__(self, cfg: DataConfig, seed: int, patch_size: int, sp_rank: int = 0, sp_size: int = 1,
                 scenes: Optional[list[Path]] = None):
        self.cfg = cfg
        self.seed = seed
        self.sp_rank, self.sp_size = sp_rank, sp_size
        self.scenes = scenes if scenes is not None else discover_scenes(cfg.scenes)
        self.resize = ResizeConfig(height=cfg.height, width=cfg.width, mode=cfg.resize_mode, orientation="fixed",
                                   patch_size=patch_size, background=tuple(cfg.background))
        self.resize_tgt = replace(self.resize, height=cfg.height * cfg.target_scale,
                                  width=cfg.width * cfg.target_scale)
        self.norm = NormalizeConfig(method=cfg.normalize, stats=cfg.normalize_stats)

    def __len__(self) -> int:  # samples are addressed by key, not by position
        return len(self.scenes)

    def _build(self, key: SampleKey, attempt: int) -> dict:
        rng = np.random.default_rng([self.seed, key.step, key.slot, attempt])
        scene_dir = self.scenes[int(rng.integers(len(self.scenes)))]
        try:
            scene = load_scene(scene_dir, check_images=False)
            inputs, targets = draw_views(len(scene), key.n_in, key.n_tgt, self.cfg, rng)
            interleave = self.cfg.sampling == "ar"
            inputs = global_order(inputs, self.sp_size, interleave)
            # Normalise with every view's camera (cheap: poses only), load only this rank's images.
            c2w_in, c2w_tgt, tf = normalize_views(scene.c2w[inputs], scene.c2w[targets], self.norm)
            loc_in = shard(range(len(inputs)), self.sp_rank, self.sp_size, False)
            loc_tgt = shard(range(len(targets)), self.sp_rank, self.sp_size, False)
            frames = json.loads(scene.scene_file.read_text())["frames"] if self.cfg.load_depth else None
            depth = None
            if self.cfg.load_depth:
                plan = plan_resize(scene.width, scene.height, self.resize)
                if self.cfg.normalize_scale == "median_depth":
                    # The median over *all* input views (not this rank's shard), so every rank gets one frame.
                    depth = _load_depth(scene.scene_file.parent, frames, inputs, self.cfg.depth_key, plan)
                    known = depth[depth > 0]
                    if known.numel() == 0:
                        raise SceneDataError(f"{scene_dir}: the input views' depth maps are all 0 (unknown)")
                    jitter = math.exp(rng.uniform(-self.cfg.median_jitter, self.cfg.median_jitter))
                    tf = scale_to_depth(tf, float(known.median()) * jitter)
                    c2w_in, c2w_tgt = tf.apply(scene.c2w[inputs].double()), tf.apply(scene.c2w[targets].double())
                    depth = depth[loc_in]
                else:
                    depth = _load_depth(scene.scene_file.parent, frames, [inputs[i] for i in loc_in],
                                        self.cfg.depth_key, plan)
            views_in = load_views(scene, [inputs[i] for i in loc_in], self.resize)
            views_tgt = load_views(scene, [targets[i] for i in loc_tgt], self.resize_tgt)
            item = {
                "images": views_in.images,
                "c2w": c2w_in[loc_in].float(),
                "fxfycxcy": views_in.fxfycxcy.float(),
                "target_images": views_tgt.images,
                "target_c2w": c2w_tgt[loc_tgt].float(),
                "target_fxfycxcy": views_tgt.fxfycxcy.float(),
            }
            if depth is not None:
                # z-depth in the normalised frame (a similarity: depths scale by tf.scale), like the predicted means
                item["depth"] = depth * float(tf.scale)
            if self.cfg.load_target_depth:
                frames = frames or json.loads(scene.scene_file.read_text())["frames"]
                plan_t = plan_resize(scene.width, scene.height, self.resize_tgt)
                item["target_depth"] = _load_depth(scene.scene_file.parent, frames, views_tgt.indices,
                                                   self.cfg.depth_key, plan_t) * float(tf.scale)
        except (SceneDataError, OSError, ValueError, KeyError, RuntimeError) as e:
            raise BadSampleError(f"bad training sample from scene {scene_dir} (step {key.step}, slot {key.slot}): "
                                 f"{type(e).__name__}: {e}") from e
        for name in ("images", "target_images"):
            if not torch.isfinite(item[name]).all():
                raise BadSampleError(f"bad training sample from scene {scene_dir}: non-finite pixel values")
        item["scene"] = scene.scene_name
        return item

    def __getitem__(self, key: SampleKey) -> dict:
        key = SampleKey(*key)
        skipped: list[str] = []
        attempt = 0
        while True:
            try:
                item = self._build(key, attempt)
                break
            except BadSampleError as e:
                if not self.cfg.skip_bad_samples:
                    raise
                skipped.append(str(e))
                attempt += 1  # a fresh, deterministic draw (another scene / window)
                if attempt >= max(1, self.cfg.max_bad_samples):
                    raise BadSampleError(f"{attempt} consecutive bad samples for step {key.step} slot {key.slot}; "
                                         f"last: {e}") from e
        item["key"] = tuple(key)
        item["skipped"] = skipped
        return item


def collate(items: list[dict]) -> dict:
    """Stack tensors along a new batch dim; keep names, keys and skip messages as lists."""
    out: dict = {}
    for k in items[0]:
        vals = [it[k] for it in items]
        out[k] = torch.stack(vals) if isinstance(vals[0], Tensor) else vals
    out["skipped"] = [m for it in items for m in it["skipped"]]
    return out


@dataclass
class RankSlots:
    """Which global batch slots a rank loads in each micro step."""

    dp_rank: int
    dp_size: int
    micro_batch: int
    accum: int

    def micro_slots(self, m: int) -> list[int]:
        base = (m * self.dp_size + self.dp_rank) * self.micro_batch
        return list(range(base, base + self.micro_batch))


class StepBatchSampler(torch.utils.data.Sampler):
    """Yields the micro-batches (lists of :class:`SampleKey`) of steps ``start_step .. max_steps - 1`` in order."""

    def __init__(self, cfg: DataConfig, seed: int, slots: RankSlots, start_step: int, max_steps: int):
        self.cfg, self.seed, self.slots = cfg, seed, slots
        self.start_step, self.max_steps = start_step, max_steps

    def __iter__(self) -> Iterator[list[SampleKey]]:
        for step in range(self.start_step, self.max_steps):
            n_in, n_tgt = step_view_counts(self.cfg, self.seed, step)
            for m in range(self.slots.accum):
                yield [SampleKey(step, s, n_in, n_tgt) for s in self.slots.micro_slots(m)]

    def __len__(self) -> int:
        return max(0, self.max_steps - self.start_step) * self.slots.accum


def make_loader(dataset: TrainDataset, sampler: StepBatchSampler, num_workers: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=collate,
        persistent_workers=False, prefetch_factor=2 if num_workers > 0 else None,
    )


def tokens_per_sample(n_in: int, height: int, width: int, patch: int) -> int:
    return n_in * math.prod((height // patch, width // patch))


__all__ = [
    "BadSampleError", "RankSlots", "SampleKey", "StepBatchSampler", "TrainDataset", "collate", "discover_scenes",
    "draw_views", "global_order", "make_loader", "shard", "step_view_counts", "tokens_per_sample",
]

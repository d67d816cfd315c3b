"""Resumable training checkpoints: atomic writes, keep-last-k, exact continuation, export.

A checkpoint ``checkpoints/step_{step:09d}.pt`` holds the model and optimiser state dicts, the scheduler and grad
scaler states, the RNG states of every rank (python, numpy, torch CPU, CUDA), the data position (the next step:
samples are a pure function of the step, see :mod:`tttlrm_ns.train.data`), counters and the resolved config.

Atomicity: :func:`tttlrm_ns.checkpoint_io.atomic_torch_save` (temporary file in the same folder, fsync,
``os.replace``, fsync of the folder). An exception or a kill during ``torch.save`` leaves at most a stray ``.tmp``
file, never a truncated ``step_*.pt``; older checkpoints are removed only after the new one is in place. Loading
picks the newest file that loads, so even a damaged file (e.g. a disk error) falls back to the previous one.

No pickle code runs on load: files are read with :func:`tttlrm_ns.checkpoint_io.load_checkpoint`
(``torch.load(weights_only=True)``), whose unpickler only builds tensors and plain containers. Everything in a
checkpoint is such a value; the numpy RNG state is stored as a tensor (:func:`rng_state`). Checkpoints written before
that change hold numpy's state tuple with a numpy array, which that loader's numpy allowlist admits, so they still
resume.

The exported ``.safetensors`` records what the weights were trained for (:func:`trained_for`, the ``trained.*``
metadata of :mod:`tttlrm_ns.model.checkpoint`), which ``ns-train`` checks against the method, and every training
stage behind them (:func:`history_metadata`): a model fine-tuned from another file carries that file's stages
followed by its own, so ``train_step_total`` counts all optimiser steps, not only the last run's ``train_step``.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from tttlrm_ns.checkpoint_io import atomic_torch_save, load_checkpoint

CKPT_RE = re.compile(r"^step_(\d{9})\.pt$")


def rng_state() -> dict[str, Any]:
    """RNG states of this process as tensors / ints / tuples only (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    npst = state["numpy"]
    if isinstance(npst, dict):
        npst = (npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                npst["cached_gaussian"])
    np.random.set_state(npst)  # a legacy tuple (kind, uint32 keys, pos, has_gauss, cached) as written before
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of the checkpoints in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), folder / p.name) for p in folder.iterdir() if (m := CKPT_RE.match(p.name))]
    return sorted(found)


def save_checkpoint(folder: Path, step: int, payload: dict[str, Any], keep_last: int) -> Path:
    """Write ``step_{step}.pt`` atomically, then delete all but the newest ``keep_last`` checkpoints."""
    path = atomic_torch_save(payload, Path(folder) / f"step_{step:09d}.pt")
    if keep_last > 0:
        for _, old in list_checkpoints(folder)[:-keep_last]:
            old.unlink(missing_ok=True)
    return path


def load_latest(folder: Path, log=print) -> Optional[tuple[Path, dict[str, Any]]]:
    """The newest checkpoint that loads (damaged ones are reported and skipped), or None."""
    for step, path in reversed(list_checkpoints(folder)):
        try:
            payload = load_checkpoint(path)
        except Exception as e:  # truncated / corrupt file: fall back to the previous one
            log(f"checkpoint {path} cannot be loaded ({type(e).__name__}: {e}); trying an older one")
            continue
        if not isinstance(payload, dict) or payload.get("step") != step:
            log(f"checkpoint {path} is not a training checkpoint of step {step}; trying an older one")
            continue
        return path, payload
    return None


def trained_for(config: Any):
    """What a training run's weights are for (:class:`tttlrm_ns.model.checkpoint.TrainedFor`).

    ``config``: a ``TrainConfig`` or its plain dict (as stored in checkpoints). Kind: ``object`` when views are
    drawn at random from all frames (``data.sampling: random``, object renders on a sphere), else ``scene``.
    """
    from tttlrm_ns.model import TttlrmConfig
    from tttlrm_ns.model.checkpoint import TrainedFor, background_name, matching_preset

    if not isinstance(config, dict):
        from tttlrm_ns.train.config import config_to_dict

        config = config_to_dict(config)
    data, model = config["data"], TttlrmConfig.from_dict(config["model"])
    return TrainedFor(
        kind="object" if data.get("sampling") == "random" else "scene",
        scan=model.scan,
        normalization=data.get("normalize", "mean_cam"),
        resolution=f"{int(data['height'])}x{int(data['width'])}",
        background=background_name(data.get("background", (1.0, 1.0, 1.0))),
        preset=matching_preset(model),
        scale=data.get("normalize_scale", "extent"),
    )


HISTORY_KEY = "train_history"
"""Metadata key: JSON list of the training stages behind the weights, oldest first; each
``{"steps", "resolution", "init_from"}`` (``init_from``: the file name the stage started from, null: random)."""


def history_of(path: Optional[str]) -> list[dict[str, Any]]:
    """The training stages recorded in the weights file ``path`` (``[]`` for none, random weights or files without
    metadata, e.g. an official ``.pt``). Files written before :data:`HISTORY_KEY` existed give one stage with their
    ``train_step`` and ``"earlier": "not recorded"``, so a count that starts there says so."""
    if not path or not str(path).endswith(".safetensors"):
        return []
    from tttlrm_ns.model.checkpoint import read_metadata

    meta = read_metadata(path)  # Gaussian and triplane files alike (both carry the backbone config)
    if HISTORY_KEY in meta:
        return list(json.loads(meta[HISTORY_KEY]))
    if "train_step" in meta:
        return [{"steps": int(meta["train_step"]), "resolution": meta.get("trained.resolution"),
                 "init_from": None, "earlier": "not recorded"}]
    return []


def history_metadata(prior: list[dict[str, Any]], step: int, config: Any) -> dict[str, str]:
    """``train_step`` (this run), ``train_history`` (``prior`` + this run) and ``train_step_total`` metadata.

    ``config``: the run's ``TrainConfig`` or its plain dict (its data size and ``checkpoint.init_from``)."""
    if not isinstance(config, dict):
        from tttlrm_ns.train.config import config_to_dict

        config = config_to_dict(config)
    init = (config.get("checkpoint") or {}).get("init_from")
    stage = {"steps": int(step), "resolution": f"{int(config['data']['height'])}x{int(config['data']['width'])}",
             "init_from": Path(init).name if init else None}
    stages = [*prior, stage]
    return {"train_step": str(int(step)), HISTORY_KEY: json.dumps(stages),
            "train_step_total": str(sum(int(s["steps"]) for s in stages))}


def payload_history(payload: dict[str, Any], log=print) -> list[dict[str, Any]]:
    """The stages before a checkpoint's run: stored in the checkpoint since the run started (``init_history``);
    for checkpoints written before that, read now from the run's ``checkpoint.init_from`` file (said in the log,
    since that file may have changed since the run started)."""
    if "init_history" in payload:
        return list(json.loads(payload["init_history"]))
    init = (payload["config"].get("checkpoint") or {}).get("init_from")
    if init and Path(init).exists():
        log(f"checkpoint has no init_history (written before it was stored); reading the earlier stages from {init} "
            "as it is now")
        return history_of(init)
    return []


def export_model(
    model: torch.nn.Module, path: Path, extra: Optional[dict[str, str]] = None, config: Any = None
) -> Path:
    """Write the model in its own safetensors + config format (what ``ns-train tttlrm`` loads); with the training
    ``config`` (``TrainConfig`` or dict) the file records what the weights were trained for."""
    from tttlrm_ns.model.checkpoint import save_model

    return save_model(model, path, extra_metadata=extra,
                      trained_for=trained_for(config) if config is not None else None)


def export_checkpoint(checkpoint: Path, out: Path) -> Path:
    """Export a training checkpoint file to ``out`` (``.safetensors`` with the model config in its metadata)."""
    from tttlrm_ns.model import TttlrmConfig, TttlrmModel

    payload = load_checkpoint(checkpoint)
    cfg = TttlrmConfig.from_dict(payload["config"]["model"])
    model = TttlrmModel(cfg)
    model.load_state_dict(payload["model"], strict=True)
    meta = history_metadata(payload_history(payload), int(payload["step"]), payload["config"])
    return export_model(model, out, meta, config=payload["config"])


__all__ = [
    "HISTORY_KEY", "export_checkpoint", "export_model", "history_metadata", "history_of", "list_checkpoints",
    "load_latest", "payload_history", "rng_state", "save_checkpoint",
    "set_rng_state", "trained_for",
]


def main(argv=None) -> int:
    """``python -m tttlrm_ns.train.checkpoint CHECKPOINT OUT.safetensors``: export a training checkpoint."""
    import argparse

    ap = argparse.ArgumentParser(description="Export a tttlrm-train checkpoint to the model's safetensors format "
                                             "(what `ns-train tttlrm` and tttlrm_ns.model.checkpoint.load_model read).")
    ap.add_argument("checkpoint", type=Path, help="checkpoints/step_*.pt, or a run folder (newest loadable one)")
    ap.add_argument("out", type=Path, help="output .safetensors file")
    args = ap.parse_args(argv)
    src = args.checkpoint
    if src.is_dir():
        found = load_latest(src / "checkpoints" if (src / "checkpoints").is_dir() else src)
        if found is None:
            ap.error(f"no loadable checkpoint in {src}")
        src = found[0]
    print(export_checkpoint(src, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

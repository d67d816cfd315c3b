"""Which weights a tttLRM method loads, and whether they were trained for it (nothing is loaded here).

Per method a default file (:data:`DEFAULT_WEIGHTS`, never substituted), the ``trained.*`` metadata of a
``.safetensors`` file checked against the run (kind, scan, normalisation, background), the architecture of an
official ``.pt`` (which records neither it nor its scan), and the run's overrides of the backbone configuration.
The messages name the ``ns-train`` methods and ``--pipeline.*`` flags: this is the nerfstudio method's choice of
weights (:class:`tttlrm_ns.ns.pipeline.TttlrmPipeline`); the inference path itself (:mod:`tttlrm_ns.infer`) takes a
file and a configuration.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from tttlrm_ns import ASSETS, BUNDLED_CHECKPOINT
from tttlrm_ns.infer import PredictionError
from tttlrm_ns.model import TttlrmConfig, presets

WEIGHTS_DIR = ASSETS / "weights"
"""Folder of the bundled weights (``tttlrm_ns/assets/weights``)."""

DEFAULT_WEIGHTS: dict[tuple[str, str], str] = {
    ("scene", "full"): "tttlrm_scene.safetensors",
    ("scene", "ar"): "tttlrm_scene_ar.safetensors",
    ("object", "full"): "tttlrm_object.safetensors",
}
"""Default weights per (``method_kind``, scan) when ``--pipeline.model.checkpoint`` is not given: one file in
:data:`WEIGHTS_DIR`. When it is absent the method stops with a message naming the file and the flag; nothing takes its
place, neither weights trained for another method nor the superseded demo weights (:data:`BUNDLED_CHECKPOINT`), which
load only when passed by path: a run silently using other weights would report numbers of a model nobody chose."""

OFFICIAL_PRESET_BY_NAME = {"dl3dv_full.pt": "official_full", "dl3dv_ar.pt": "official_ar"}
"""The released ``.pt`` files have the same tensors for both scans, so the scan can only come from the file name
(these two) or ``--pipeline.model.model-preset``."""

_PRESET_TRAINED = {  # what the official presets' weights were trained for: (kind, scan)
    "official_full": ("scene", "full"),
    "official_ar": ("scene", "ar"),
    "object_level": ("object", "full"),
}
_METHOD_FOR = {("scene", "full"): "tttlrm", ("scene", "ar"): "tttlrm-ar", ("object", "full"): "tttlrm-object"}
_SCAN_WORDS = {"full": "full scan", "ar": "autoregressive scan", "stream": "streaming scan"}


@dataclass
class Weights:
    """What :func:`resolve_weights` chose."""

    path: Path
    config: TttlrmConfig
    """The backbone configuration with this run's overrides."""
    trained_scale: Optional[str]
    """The file's ``trained.scale`` (None: not recorded)."""


def expected_scan(pc) -> str:
    """The scan the run of pipeline config ``pc`` uses: ``--pipeline.model.scan`` (set by ``tttlrm-ar``) or full."""
    return pc.model.scan or "full"


def default_weights(pc, weights_dir: Path = WEIGHTS_DIR) -> Path:
    """The bundled weights of the method of ``pc`` (:data:`DEFAULT_WEIGHTS` in ``weights_dir``); an error naming the
    file and the flag when that file is missing (no other weights are tried)."""
    key = (pc.method_kind, expected_scan(pc))
    name = DEFAULT_WEIGHTS.get(key)
    if name is not None and (weights_dir / name).is_file():
        return weights_dir / name
    method = _METHOD_FOR.get(key, "this method")
    where = f": {weights_dir / name} is missing" if name is not None else ""
    demo = weights_dir / BUNDLED_CHECKPOINT.name
    # The superseded demo model fits the scene full-scan methods, so say how to choose it rather than leave the
    # user to find it; it is an explicit choice, never the default.
    demo_hint = (f" The superseded demo weights are not used in its place either; to run them, pass "
                 f"--pipeline.model.checkpoint {demo}." if key == ("scene", "full") and demo.is_file() else "")
    raise PredictionError(
        f"{method} ({key[0]}s, {_SCAN_WORDS.get(key[1], key[1])}) has no bundled weights{where}, and weights "
        "trained for another method are not substituted. Pass --pipeline.model.checkpoint PATH with weights "
        "trained for it: a .safetensors file written by `tttlrm-train` (see the training section of "
        "docs/usage.md and configs/) or an official tttLRM .pt checkpoint (with --pipeline.model.model-preset "
        f"{'object_level' if key[0] == 'object' else 'official_ar' if key[1] == 'ar' else 'official_full'})."
        + demo_hint
    )


def official_preset(pc, path: Path, log: Callable[[str], None]) -> str:
    """Architecture preset of an official ``.pt``: ``--pipeline.model.model-preset`` or the released file name."""
    m = pc.model
    by_name = OFFICIAL_PRESET_BY_NAME.get(path.name)
    if m.model_preset is not None:
        if by_name is not None and by_name != m.model_preset and pc.check_weights:
            raise PredictionError(
                f"{path.name} is the released {by_name} checkpoint but --pipeline.model.model-preset is "
                f"{m.model_preset}; use --pipeline.model.model-preset {by_name} (or "
                "--pipeline.check-weights False if the file was renamed)"
            )
        return m.model_preset
    if by_name is None:
        raise PredictionError(
            f"{path} is a .pt checkpoint, which does not record its architecture or scan (the released full and "
            "autoregressive models have identical tensors). Say which it is: --pipeline.model.model-preset "
            "official_full (dl3dv_full.pt, ns-train tttlrm), official_ar (dl3dv_ar.pt, ns-train tttlrm-ar) or "
            "object_level (ns-train tttlrm-object)."
        )
    log(f"tttLRM: {path.name} read as the released {by_name} model (from its file name)")
    return by_name


def check_trained_for(pc, path: Path, kind: Optional[str], scan: Optional[str], normalization: Optional[str],
                      background: Optional[str]) -> None:
    """Stop when what the weights were trained for disagrees with the run of ``pc`` (None: unknown, not checked)."""
    if not pc.check_weights:
        return
    m = pc.model
    run_scan = expected_scan(pc)
    run_norm = pc.normalization if pc.normalization != "auto" else ("mean_cam" if run_scan == "full" else "first_cam")
    problems = []
    if kind is not None and kind != pc.method_kind:
        method = _METHOD_FOR.get((kind, scan or "full"), "tttlrm-object" if kind == "object" else "tttlrm")
        problems.append(f"it was trained for {kind}s, this method reconstructs {pc.method_kind}s: use ns-train "
                        f"{method}")
    elif scan is not None and scan != run_scan:
        method = _METHOD_FOR.get((kind or pc.method_kind, scan))
        preset = {"ar": "official_ar", "full": "official_full"}.get(scan)
        how = f"use ns-train {method}" if method else f"use --pipeline.model.scan {scan}"
        if path.suffix == ".pt" and preset is not None:
            how += f" (with --pipeline.model.model-preset {preset})"
        problems.append(f"it was trained for the {_SCAN_WORDS.get(scan, scan)}, this run uses the "
                        f"{_SCAN_WORDS.get(run_scan, run_scan)}: {how}")
    elif normalization is not None and normalization != run_norm:
        problems.append(f"it was trained with {normalization} camera normalisation, this run uses {run_norm}: "
                        f"use --pipeline.normalization {normalization}")
    if background is not None and m.background_color != "random" and background != m.background_color:
        flag = background if background in ("white", "black") else "random"
        problems.append(f"it was trained on a {background} background, this run renders on "
                        f"{m.background_color}: use --pipeline.model.background-color {flag}")
    if problems:
        raise PredictionError(
            f"the weights {path} do not fit this method: " + "; ".join(problems)
            + ". (--pipeline.check-weights False runs them anyway.)"
        )


def resolve_weights(pc, device: str, log: Callable[[str], None], weights_dir: Path = WEIGHTS_DIR) -> Weights:
    """The weights file of the run of pipeline config ``pc`` and the backbone configuration with the run's
    overrides (nothing is loaded; the file's header is read). Checks what the weights were trained for against the
    method (:func:`check_trained_for`) and logs the file used."""
    m = pc.model
    if m.checkpoint is None:
        path, source = default_weights(pc, weights_dir), "bundled default"
    else:
        path, source = Path(m.checkpoint), "--pipeline.model.checkpoint"
        if not path.is_file():
            raise PredictionError(f"--pipeline.model.checkpoint {path} does not exist")
    trained_scale = None
    if path.suffix == ".safetensors":
        from tttlrm_ns.model.checkpoint import CheckpointError, read_config, read_metadata, read_trained_for

        try:
            cfg = read_config(path)
            trained, missing = read_trained_for(path)
        except CheckpointError as e:
            raise PredictionError(str(e)) from None
        if trained is None:
            log(
                f"[yellow]tttLRM: {path} has no {', '.join('trained.' + k for k in missing)} metadata (written "
                "before tttlrm_ns recorded it): cannot check that the weights were trained for this method's "
                f"kind ({pc.method_kind}), scan ({expected_scan(pc)}), camera normalisation and "
                f"background ({m.background_color}). Re-export them with "
                "`python -m tttlrm_ns.train.checkpoint` to record it."
            )
            detail = f"no training record; config scan {cfg.scan}"
        else:
            check_trained_for(pc, path, trained.kind, trained.scan, trained.normalization, trained.background)
            trained_scale = trained.scale
            step = read_metadata(path).get("train_step")
            detail = (f"trained for {trained.kind}s, {trained.scan} scan, {trained.normalization}, "
                      f"{trained.resolution}, {trained.background} background, preset {trained.preset}"
                      + (f", step {step}" if step else ""))
    else:
        preset = official_preset(pc, path, log)
        cfg = presets.get(preset)
        kind, scan = _PRESET_TRAINED.get(preset, (None, None))
        check_trained_for(pc, path, kind, scan, None, None)
        detail = f"official checkpoint read as {preset}"
    log(f"tttLRM: weights {path} ({source}; {detail})")
    overrides: dict = {"compile": m.compile}
    if m.scan is not None:
        overrides["scan"] = m.scan
    if m.ar_chunk_views is not None:
        overrides["ar_chunk_views"] = m.ar_chunk_views
    if m.selective_update is not None:
        overrides["elastic_lambda"] = m.selective_lambda if m.selective_update else 0.0
    overrides["autocast_bf16"] = {"on": True, "off": False, "auto": torch.device(device).type == "cuda"}[m.bf16]
    return Weights(path, cfg.replace(**overrides), trained_scale)


__all__ = ["WEIGHTS_DIR", "DEFAULT_WEIGHTS", "OFFICIAL_PRESET_BY_NAME", "Weights", "expected_scan",
           "default_weights", "official_preset", "check_trained_for", "resolve_weights"]

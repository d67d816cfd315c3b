#!/usr/bin/env bash
# The learning-curve figures of docs/model_card.md from the result files kept in docs/curves/ (made by
# `python -m tttlrm_ns.train.holdout --out`, experiments/eval_triplane.py and tttlrm-eval; file names: model, data set,
# total optimiser steps of the weights). Prints the tables the model card quotes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"; [ -x "$PY" ] || PY=python
C=docs/curves
pts() { for f in "$C"/$1_*.json; do n="${f##*_}"; n="${n%.json}"; echo "$((10#$n))=$f"; done; }
"$PY" -m tttlrm_ns.eval.learning_curve \
  --series "held-out procedural objects (seed 202, 12), 64^2 inputs, 512^2 renders" $(pts object_s202x8) \
  --series "same, fine-tuned at 128^2 inputs (renders 512^2)" $(pts object128_s202x4) \
  --series "gso_toy, evaluation only (8 views, 64^2 inputs, 512^2)" $(pts object_gso) \
  --series "gso_toy, 128^2 fine-tune" $(pts object128_gso) \
  --target 22 --target-only gso_toy --target-label "issue target on gso_toy (22 dB)" \
  --title "Gaussian object model: PSNR vs training steps (all stages)" --out docs/img/object_learning_curve.png
"$PY" -m tttlrm_ns.eval.learning_curve \
  --series "held-out procedural objects (seed 202, 4 views, 64^2)" $(pts triplane_s202) \
  --series "gso_toy, evaluation only (4 views, 512^2)" $(pts triplane_gso) \
  --target 20 --target-only gso_toy --target-label "issue target on gso_toy (20 dB)" \
  --title "triplane object model: PSNR vs triplane training steps" --out docs/img/triplane_learning_curve.png

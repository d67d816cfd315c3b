#!/usr/bin/env bash
# Feed-forward reconstruction of a scene with nerfstudio's commands: ns-train tttlrm -> ns-export gaussian-splat ->
# ns-eval -> ns-viewer. Runs on CPU in a few minutes for the bundled sample scene.
#
#   scripts/run_sample.sh [--checkpoint PATH | --random-weights] [--data DIR] [--views N] [--long-side PX]
#                         [--refine-steps K] [--out DIR] [--no-viewer]
#
# --checkpoint     tttLRM weights (.safetensors from tttlrm-train, or the official .pt); default: the bundled scene
#                  model tttlrm_ns/assets/weights/tttlrm_scene.safetensors (ns-train stops if it is missing).
# --random-weights smoke test of the whole tool chain with a tiny random-weight backbone: everything runs, but the
#                  reconstruction and its metrics are meaningless.
# Results: <out>/sample/{splat.ply, metrics.json}, <out>/runs/*/tttlrm/sample/config.yml; the viewer URL is printed at the end (Ctrl+C quits).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${BIN:-$REPO/.venv/bin}"
[ -x "$BIN/ns-train" ] || BIN="$(dirname "$(command -v ns-train)")"
DATA="$REPO/tttlrm_ns/assets/sample_scene"
OUT="$REPO/outputs/sample_run"
CKPT=""
RANDOM_WEIGHTS=0
VIEWS=8
LONG_SIDE=256
REFINE=0
VIEWER=1
while [ $# -gt 0 ]; do
  case "$1" in
    --checkpoint) CKPT="$2"; shift 2 ;;
    --random-weights) RANDOM_WEIGHTS=1; shift ;;
    --data) DATA="$2"; shift 2 ;;
    --views) VIEWS="$2"; shift 2 ;;
    --long-side) LONG_SIDE="$2"; shift 2 ;;
    --refine-steps) REFINE="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --no-viewer) VIEWER=0; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

mkdir -p "$OUT"
if [ "$RANDOM_WEIGHTS" = 1 ]; then
  CKPT="$OUT/random_tiny.safetensors"
  "$BIN/python" - "$CKPT" <<'EOF'
import sys, torch
from tttlrm_ns.model import TttlrmModel, presets
from tttlrm_ns.model.checkpoint import save_model
torch.manual_seed(0)
save_model(TttlrmModel(presets.tiny(sh_degree=1)), sys.argv[1])
EOF
  echo "WARNING: random backbone weights (tool-chain smoke test): the reconstruction is meaningless." >&2
fi
CKPT_ARGS=()
[ -n "$CKPT" ] && CKPT_ARGS=(--pipeline.model.checkpoint "$CKPT")
# an official .pt records no architecture: this script runs the full-scan scene model (ns-train tttlrm)
case "$CKPT" in *.pt) CKPT_ARGS+=(--pipeline.model.model-preset official_full) ;; esac

RUN="$OUT/sample"
"$BIN/ns-train" tttlrm --data "$DATA" --output-dir "$OUT/runs" --timestamp sample --vis tensorboard \
  "${CKPT_ARGS[@]}" --pipeline.views.num-views "$VIEWS" --pipeline.input-long-side "$LONG_SIDE" \
  --pipeline.model.refine.steps "$REFINE"
CONFIG="$(ls -d "$OUT"/runs/*/tttlrm/sample/config.yml | head -n 1)"
mkdir -p "$RUN"

"$BIN/ns-export" gaussian-splat --load-config "$CONFIG" --output-dir "$RUN"
"$BIN/ns-eval" --load-config "$CONFIG" --output-path "$RUN/metrics.json"
"$BIN/python" - "$RUN/metrics.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
print("held-out views: PSNR %.2f dB  SSIM %.4f  LPIPS %.4f" % (r["psnr"], r["ssim"], r["lpips"]))
EOF
echo "Gaussians: $RUN/splat.ply   metrics: $RUN/metrics.json   config: $CONFIG"

if [ "$VIEWER" = 1 ]; then
  "$BIN/ns-viewer" --load-config "$CONFIG"
fi

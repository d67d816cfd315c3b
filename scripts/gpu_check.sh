#!/usr/bin/env bash
# Everything that needs a GPU, in one command (< 8 min on one H100/H200-class GPU), written to one report file.
#
#   scripts/gpu_check.sh                 # on a CUDA machine
#   scripts/gpu_check.sh --cpu-smoke     # the same steps with tiny sizes on CPU (no CUDA calls): checks the script
#   scripts/gpu_check.sh --report PATH   # report path (default: $OUT/gpu_check_report.md if $OUT is set, else
#                                        # outputs/gpu_check/gpu_check_report.md)
#
# Steps (each under its own time limit; a failed step is recorded and the next one runs):
#   1. environment: GPU, driver, torch / gsplat versions
#   2. pytest -m gpu                     (the CUDA tests, e.g. CPU rasterizer vs gsplat)
#   3. bench_rasterizer.py --cuda-check  (CPU backend vs gsplat CUDA: outputs, every gradient incl. viewmats)
#   4. ns-train tttlrm on the bundled sample scene through gsplat, with refinement, then ns-export + ns-eval
#   5. tttlrm-train: a few steps with bf16 autocast + torch.compile + NCCL (torchrun, 1 process) on procedural
#      scenes, through gsplat
#   6. time the official preset (random weights, bf16) on 32 views at 536x960 against the paper's 7.2 s (A100)
# --cpu-smoke: step 2 runs the same selection (skipped without CUDA), 3 compares with the torch reference
# (--ref-check --quick), 4 uses the C++ CPU rasterizer at long side 128 with 3 refinement steps, 5 uses gloo, bf16
# without compile, 6 the tiny preset on 2 views of 32x64. Exit status: 0 if every step passed.
#
# Needs the project's environment (scripts/setup.sh: torch, gsplat, nerfstudio, tyro, lpips weights, ...) on the
# GPU machine; BIN=DIR selects its bin folder (default .venv/bin, else the python3 on PATH). gsplat compiles its
# CUDA kernels on first use (nvcc; a minute or two, inside step 2).
set -uo pipefail

# The whole script is one function, parsed before it runs: editing this file during a run cannot change that run.
main() {

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${BIN:-$REPO/.venv/bin}"
[ -x "$BIN/python" ] || BIN="$(dirname "$(command -v python3 || command -v python)")"
PY="$BIN/python"; [ -x "$PY" ] || PY="$BIN/python3"
MODE=gpu
REPORT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu-smoke) MODE=cpu; shift ;;
    --report) REPORT="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$REPORT" ]; then
  if [ -n "${OUT:-}" ]; then REPORT="$OUT/gpu_check_report.md"; else REPORT="$REPO/outputs/gpu_check/gpu_check_report.md"; fi
fi
mkdir -p "$(dirname "$REPORT")"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
cd "$REPO"

if [ "$MODE" = gpu ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: torch sees no CUDA device here; run on a GPU machine, or use --cpu-smoke" >&2
  exit 2
fi

T_START=$(date +%s)
FAILED=()
{
  echo "# GPU check ($MODE mode)"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M:%S UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), host $(hostname)"
  echo
} > "$REPORT"

# step NAME LIMIT_SECONDS CMD...: run CMD with a time limit, log to $WORK/NAME.log, record status + log tail.
step() {
  local name="$1" limit="$2"; shift 2
  local t0 t1 rc
  echo ">>> $name (limit ${limit}s)" >&2
  t0=$(date +%s.%N)
  timeout --signal=INT --kill-after=20 "$limit" "$@" > "$WORK/$name.log" 2>&1
  rc=$?
  t1=$(date +%s.%N)
  local secs; secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  local status=PASS
  if [ "$rc" -ne 0 ]; then
    status="FAIL (exit $rc$([ "$rc" -eq 124 ] && echo ', time limit'))"
    FAILED+=("$name")
  fi
  echo ">>> $name: $status in ${secs}s" >&2
  {
    echo "## $name: $status, ${secs} s"
    echo
    echo '```'
    echo "\$ $*"
    tail -n 40 "$WORK/$name.log"
    echo '```'
    echo
  } >> "$REPORT"
  return 0
}

# --- sizes per mode -------------------------------------------------------------------------------------------
SCENE="$REPO/tttlrm_ns/assets/sample_scene"
if [ "$MODE" = gpu ]; then
  RASTER_CHECK=(scripts/bench_rasterizer.py --cuda-check)
  NS_BACKEND=gsplat; NS_VIEWS=8; NS_LONG=256; NS_REFINE=300
  TRAIN_LAUNCH=("$BIN/torchrun" --standalone --nproc-per-node 1 -m tttlrm_ns.train)
  TRAIN_FLAGS=(--parallel.backend nccl --model.autocast-bf16 --model.compile --render.backend gsplat
               --optim.max-steps 6 --data.height 64 --data.width 96 --data.num-input-views 4
               --data.num-target-views 4)
  TIME_ARGS=(--preset official_full --views 32 --height 536 --width 960 --bf16 --reps 3 --warmup 1 --device cuda)
  LIMITS=(300 120 150 120 180 60)  # pytest, raster check, ns-train, export+eval, tttlrm-train, environment;
                                   # the timing gets what is left of 470 s (at least 60 s)
else
  RASTER_CHECK=(scripts/bench_rasterizer.py --ref-check --quick)
  NS_BACKEND=cpu; NS_VIEWS=4; NS_LONG=128; NS_REFINE=3
  TRAIN_LAUNCH=("$BIN/torchrun" --standalone --nproc-per-node 1 -m tttlrm_ns.train)
  TRAIN_FLAGS=(--parallel.backend gloo --model.autocast-bf16 --render.backend cpu
               --optim.max-steps 2 --data.height 16 --data.width 16 --data.num-input-views 4
               --data.num-target-views 2)
  TIME_ARGS=(--preset tiny --views 2 --height 32 --width 64 --reps 1 --warmup 1 --device cpu)
  LIMITS=(600 600 600 400 600 300)  # a shared 2-core CPU: generous, the point is that every step runs
fi

# 1. environment
step environment "${LIMITS[5]}" bash -c "nvidia-smi 2>/dev/null || echo 'nvidia-smi: not available'; \"$PY\" -c '
import torch, gsplat, nerfstudio
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"available\", torch.cuda.is_available())
print(\"gsplat\", gsplat.__version__, \"nerfstudio\", nerfstudio.__version__ if hasattr(nerfstudio, \"__version__\") else \"?\")
if torch.cuda.is_available():
    print(\"device\", torch.cuda.get_device_name(0), \"capability\", torch.cuda.get_device_capability(0))
'"

# 2. the CUDA tests (without CUDA they are collected and skipped)
step pytest_gpu "${LIMITS[0]}" "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_render_cpu.py

# 3. CPU rasterizer vs gsplat CUDA (or the torch reference)
step rasterizer_agreement "${LIMITS[1]}" "$PY" "${RASTER_CHECK[@]}"

# 4. nerfstudio: feed-forward prediction with the bundled weights, refinement and export on the sample scene
NS_OUT="$WORK/ns"
step ns_train "${LIMITS[2]}" "$BIN/ns-train" tttlrm --data "$SCENE" --output-dir "$NS_OUT" --timestamp check \
  --vis tensorboard --pipeline.views.num-views "$NS_VIEWS" --pipeline.input-long-side "$NS_LONG" \
  --pipeline.model.refine.steps "$NS_REFINE" --pipeline.model.rasterize-backend "$NS_BACKEND"
NS_CONFIG="$(ls -d "$NS_OUT"/*/tttlrm/check/config.yml 2>/dev/null | head -n 1)"
step ns_export_eval "${LIMITS[3]}" bash -c "set -e; [ -n '$NS_CONFIG' ] || { echo 'no config.yml: ns-train failed'; exit 1; }
  '$BIN/ns-export' gaussian-splat --load-config '$NS_CONFIG' --output-dir '$WORK/export'
  ls -l '$WORK/export/splat.ply'
  '$BIN/ns-eval' --load-config '$NS_CONFIG' --output-path '$WORK/eval.json'
  '$PY' -c \"import json; r = json.load(open('$WORK/eval.json'))['results']; print('held-out views: PSNR %.2f dB  SSIM %.4f  LPIPS %.4f' % (r['psnr'], r['ssim'], r['lpips']))\""

# 5. the pretraining trainer: bf16 + compile + NCCL through torchrun (one process)
step tttlrm_train "${LIMITS[4]}" bash -c "set -e
  '$PY' -c \"
from pathlib import Path
from tttlrm_ns.train.procedural import make_scene
for i in range(2):
    make_scene(Path('$WORK/scenes') / f'scene{i}', num_frames=24, height=64, width=96, seed=i)
\"
  $(printf '%q ' "${TRAIN_LAUNCH[@]}") --config configs/tiny_cpu.yaml --output-dir '$WORK/train' \
    --data.scenes '$WORK/scenes/scene0' '$WORK/scenes/scene1' --data.num-workers 0 --optim.batch-size 1 \
    --data.window-min 8 --data.window-max 16 --data.frames-per-window 8 \
    --optim.warmup-steps 1 --logging.every 1 --logging.no-progress --checkpoint.every 1000 \
    $(printf '%q ' "${TRAIN_FLAGS[@]}")
  tail -n 3 '$WORK/train/metrics.jsonl'
  cat '$WORK/train/summary.json'"

# 6. the official preset's forward time vs the paper (7.2 s for 32 views at 536x960 on an A100)
ELAPSED=$(( $(date +%s) - T_START ))
TIME_LIMIT=$(( 470 - ELAPSED )); [ "$TIME_LIMIT" -lt 60 ] && TIME_LIMIT=60
[ "$MODE" = cpu ] && TIME_LIMIT=600
step official_forward_time "$TIME_LIMIT" "$PY" scripts/time_forward.py "${TIME_ARGS[@]}" --paper-seconds 7.2 \
  --out "$WORK/forward_time.json"

{
  echo "## Summary"
  echo
  if [ -f "$WORK/forward_time.json" ]; then
    "$PY" -c "
import json; r = json.load(open('$WORK/forward_time.json'))
print(f\"forward, {r['preset']} ({r['parameters'] / 1e6:.1f} M parameters, random weights), {r['views']} views at \"
      f\"{r['height']}x{r['width']}, bf16 {r['bf16']}, {r['device']}: {r['seconds_median']:.2f} s (median); \"
      f\"paper 7.2 s on an A100: ratio {r['ratio_to_paper']:.2f}\"
      + (f\", peak GPU memory {r['peak_memory_gib']:.1f} GiB\" if r['peak_memory_gib'] else ''))
print('(our default decodes the virtual views from the input tokens: half the official sequence length)')"
    echo
  fi
  echo "total $(( $(date +%s) - T_START )) s; failed steps: ${FAILED[*]:-none}"
} >> "$REPORT"
echo "report: $REPORT" >&2
cat "$REPORT" | tail -n 6 >&2
rm -rf "$WORK"
[ "${#FAILED[@]}" -eq 0 ]
}

main "$@"

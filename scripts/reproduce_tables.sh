#!/usr/bin/env bash
# Regenerate docs/results.md (tables, quality-vs-time plots, image grid, scaling study) from scratch on this machine.
#
#   scripts/reproduce_tables.sh [--quick] [--checkpoint PATH] [--object-checkpoint PATH] [--race-runs FILE]
#                               [--scaling-from FILE.json] [--out FILE.md]
#
# Runs tttlrm-eval on the bundled sample scene (tttlrm, 8 views, long side 256), ../shared/data/mydesk (tttlrm, its
# precomputed 32 input views, 144x256 inputs) and ../shared/data/gso_toy (tttlrm-object, 8 views, the method's input
# size: 64x64 on CPU, the bundled object model's training resolution),
# each with the white / mean-colour / nearest-view baselines and splatfacto-cpu on the same input views (1500 steps
# and the same wall-clock time), refinement curve K = 0 3 10 30 100 300; then the refinement race
# (scripts/bench_refine.py: tttlrm + refinement vs splatfacto-cpu over 5 CPU-minutes, input and all train views,
# mydesk and the sample scene); then scripts/bench_scaling.py; then writes the page with
# `python -m tttlrm_ns.eval.report`. The ../shared scenes are evaluation data only.
#
# --quick             smoke run (minutes): K = 0 3, splatfacto-cpu 30 steps, 8 held-out frames per scene (not the
#                     protocol's every-8th set), a 15 s race on the sample scene, scaling up to 8 views; writes
#                     outputs/reproduce_quick/results.md unless --out is given, so smoke numbers never replace
#                     docs/results.md by accident.
# --checkpoint        weights of the scene model (default: the bundled checkpoint)
# --object-checkpoint weights of the object model for gso_toy (default: the bundled object model)
# --race-runs FILE    take the race from FILE (JSONL of scripts/bench_refine.py run, e.g. made on another core
#                     with the same commands) instead of running it
# --scaling-from FILE take the scaling study from FILE (JSON of scripts/bench_scaling.py, e.g. the committed
#                     docs/bench_scaling.json) instead of running it: its timings need an idle machine, the
#                     quality tables do not
# A full run takes about two hours on 2 CPU cores (the race alone ~50 min); run it on an otherwise idle machine
# (timings are recorded with the load average; the race counts CPU seconds of one thread). Exit status 1 if any
# scene failed (the page still lists it).
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${BIN:-$REPO/.venv/bin}"
[ -x "$BIN/python" ] || BIN="$(dirname "$(command -v python)")"
SHARED="${SHARED:-$REPO/../shared/data}"
QUICK=0
CKPT=""
OBJ_CKPT=""
OUT_MD=""
RACE_RUNS=""
SCALING_FROM=""
ORIG_ARGS="$*"  # recorded on the page: which parts were re-run and which were taken from files
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; shift ;;
    --checkpoint) CKPT="$2"; shift 2 ;;
    --object-checkpoint) OBJ_CKPT="$2"; shift 2 ;;
    --out) OUT_MD="$2"; shift 2 ;;
    --race-runs) RACE_RUNS="$2"; shift 2 ;;
    --scaling-from) SCALING_FROM="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set /{/^set /!p}' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [ "$QUICK" = 1 ]; then
  OUT_MD="${OUT_MD:-$REPO/outputs/reproduce_quick/results.md}"
  COMMON=(--curve-steps 0 3 --splatfacto.steps 30 --splatfacto.max-steps 300 --max-test-views 8)
  SCALING=(--quick)
else
  OUT_MD="${OUT_MD:-$REPO/docs/results.md}"
  COMMON=(--curve-steps 0 3 10 30 100 300 --splatfacto.steps 1500)
  SCALING=()
fi
OUT_DIR="$(dirname "$OUT_MD")"
WORK="$OUT_DIR/.eval_runs"
[ "$QUICK" = 1 ] || WORK="$REPO/outputs/reproduce_full"
mkdir -p "$OUT_DIR/img" "$WORK"
rm -rf "$WORK"/{sample,mydesk,gso_toy}
CKPT_ARGS=()
[ -n "$CKPT" ] && CKPT_ARGS=(--checkpoint "$CKPT")
OBJ_ARGS=()  # the object method's own default (the bundled object model), never the scene checkpoint
[ -n "$OBJ_CKPT" ] && OBJ_ARGS=(--checkpoint "$OBJ_CKPT")

status=0
run_eval() {  # name, then tttlrm-eval arguments
  local name="$1"; shift
  echo "=== tttlrm-eval: $name ==="
  "$BIN/python" -m tttlrm_ns.eval.cli "$@" "${COMMON[@]}" --output-dir "$WORK/$name" || status=1
}
run_eval sample "$REPO/tttlrm_ns/assets/sample_scene" --method tttlrm --num-views 8 --input-long-side 256 \
  "${CKPT_ARGS[@]}"
RESULTS=("$WORK/sample/results.json")
if [ -d "$SHARED/mydesk" ]; then
  run_eval mydesk "$SHARED/mydesk" --method tttlrm --num-views 32 --input-height 144 --input-width 256 \
    "${CKPT_ARGS[@]}"
  RESULTS+=("$WORK/mydesk/results.json")
else
  echo "skipping mydesk: $SHARED/mydesk not found" >&2
fi
if [ -d "$SHARED/gso_toy" ]; then
  # input size: the method's default, i.e. the bundled object model's training resolution (64x64 on CPU)
  run_eval gso_toy "$SHARED/gso_toy" --method tttlrm-object --num-views 8 "${OBJ_ARGS[@]}"
  RESULTS+=("$WORK/gso_toy/results.json")
else
  echo "skipping gso_toy: $SHARED/gso_toy not found" >&2
fi

echo "=== refinement race ==="
# held-out PSNR against CPU time, tttlrm + refinement vs splatfacto-cpu (scripts/bench_refine.py; one line per run)
RACE_SET=()
[ -n "$CKPT" ] && RACE_SET=(--set "pipeline.model.checkpoint=$CKPT")  # the same scene weights as above
RACE_JSONL="$OUT_DIR/refine_race.jsonl"
[ "$QUICK" = 1 ] || RACE_JSONL="$REPO/docs/refine_race.jsonl"
race() {  # scene name, data folder, views, budget, extra bench arguments
  local name="$1" data="$2" views="$3" budget="$4"; shift 4
  OMP_NUM_THREADS=1 "$BIN/python" "$REPO/scripts/bench_refine.py" run --method tttlrm --data "$data" \
    --views "$views" --budget "$budget" --out "$RACE_JSONL" --label "$name-tttlrm-$views" "${RACE_SET[@]}" "$@" \
    || status=1
  OMP_NUM_THREADS=1 "$BIN/python" "$REPO/scripts/bench_refine.py" run --method splatfacto --data "$data" \
    --views "$views" --budget "$budget" --out "$RACE_JSONL" --label "$name-splatfacto-$views" "$@" || status=1
}
take_from_file() {  # flag, given file, destination, consequence if missing: use a file instead of re-running a part
  local flag="$1" src="$2" dest="$3" missing="$4"
  if [ ! -s "$src" ]; then
    echo "$flag $src: no such file (or empty)$missing" >&2
    status=1
  else
    echo "$flag: using $src (not re-run)"
    [ "$(realpath "$src")" = "$(realpath -m "$dest")" ] || cp "$src" "$dest"
  fi
}
if [ -n "$RACE_RUNS" ]; then
  take_from_file --race-runs "$RACE_RUNS" "$RACE_JSONL" "; the page will have no race section"
elif [ "$QUICK" = 1 ]; then
  rm -f "$RACE_JSONL"
  race sample "$REPO/tttlrm_ns/assets/sample_scene" input 15
else
  rm -f "$RACE_JSONL"
  for views in input train; do
    [ -d "$SHARED/mydesk" ] && race mydesk "$SHARED/mydesk" "$views" 300 --eval-stride 8
    race sample "$REPO/tttlrm_ns/assets/sample_scene" "$views" 300
  done
fi

echo "=== scaling study ==="
SCALING_JSON="$OUT_DIR/bench_scaling.json"
[ "$QUICK" = 1 ] || SCALING_JSON="$REPO/docs/bench_scaling.json"
if [ -n "$SCALING_FROM" ]; then
  take_from_file --scaling-from "$SCALING_FROM" "$SCALING_JSON" "" # its plot img/results_scaling.png is kept
else
  "$BIN/python" "$REPO/scripts/bench_scaling.py" "${SCALING[@]}" --out "$SCALING_JSON" \
    --img "$OUT_DIR/img/results_scaling.png" || status=1
fi

EXISTING=()
for r in "${RESULTS[@]}"; do [ -f "$r" ] && EXISTING+=("$r"); done
RACE_ARGS=()
[ -s "$RACE_JSONL" ] && RACE_ARGS=(--race "$RACE_JSONL")
"$BIN/python" -m tttlrm_ns.eval.report --results "${EXISTING[@]}" --scaling "$SCALING_JSON" "${RACE_ARGS[@]}" \
  --out "$OUT_MD" \
  --command "scripts/reproduce_tables.sh${ORIG_ARGS:+ $ORIG_ARGS}" || status=1
echo "wrote $OUT_MD (exit status $status)"
exit $status

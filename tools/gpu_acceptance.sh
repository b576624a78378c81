#!/usr/bin/env bash
# GPU acceptance on a CUDA machine, in two calls of at most 9 minutes each:
#
#   bash tools/gpu_acceptance.sh --install KIT --steps tests [OUT]   # call 1: install, pytest -m cuda
#   bash tools/gpu_acceptance.sh --install KIT --steps bench [OUT]   # call 2: the benches
#
# or all of it in one call (a device window too short for two starts, or a machine
# that goes back 30 s after a call):
#   bash tools/gpu_acceptance.sh --install KIT --within 570 [OUT]
#
#   install  `tools/install.sh --from KIT` (a kit from `tools/install.sh --kit`; keeps
#            the machine's CUDA torch); seconds when this kit is already installed
#            there (call 2 on a machine still warm from call 1);
#   tests    pytest -m cuda (tests/test_cuda.py: batched = naive, bf16 ~ fp32, inductor,
#            device paths = host paths, no host sync growing with the people);
#   bench    bmp bench of the published config at random init, bf16, batched vs naive,
#            1 / 10 / 40 people; the batch curve (BMP.predict_batch at batch sizes 1, 2,
#            4, 8, 16, 10 people, 2 iterations); then the first again with
#            --compile inductor (last: compiling is the slowest).
# After every call: OUT/acceptance.json and OUT/acceptance.md (everything run so
# far, both calls merged) and OUT/acceptance.tar.gz (those, the logs and the
# reports). Default OUT: outputs/gpu_acceptance, a git-ignored folder that
# survives between calls on the device machine.
#
# --kit/--install KIT: the kit's test data (KIT/shared) becomes BMP_SHARED.
# --within S: the whole call, report included, ends within S seconds (a device
# tool's limit per command; default 540 with --steps tests or bench, none for
# all): each step's budget shrinks to what is left, and a step with under
# MIN_STEP seconds left is not run (NOT RUN in the report).
# --results DIR: after every step, acceptance.md, acceptance.json and
# acceptance.tar.gz are copied into DIR, so a call stopped from outside keeps
# everything up to its last finished step.
# --device cpu: a rehearsal of the same steps without CUDA: the cuda tests run on
# the CPU (BMP_CUDA_TESTS_DEVICE=cpu; their CUDA sync checks skip), a dry run of
# the tests and of their report.
# Every step runs even if an earlier one failed; the exit status is non-zero
# when any did. BMP_VENV picks the environment (default ./.venv); BENCH_ARGS
# adds arguments to every bench run (e.g. "--max-images 2 --repeat 3");
# BATCH_SIZES the curve's sizes; BUDGET_SCALE multiplies every budget (slow
# rehearsal machines). PyAV is optional here: without it the video tests skip.
#
# Time budget: each step runs under `timeout` with its own limit (BUDGETS below,
# cut to what --within leaves, plus GRACE to stop it); a step that overruns is
# stopped with SIGINT, reported as TIMED OUT, and the next one starts. Call 1:
# install at most 300 s, the cuda tests the rest (at most 360); call 2: 90 +
# 120 s, then compiling the rest (at most 400): it is the least predictable
# (every new pose batch shape recompiles). In one call (--steps all) with --within,
# the cuda tests leave bench_bf16 and bench_batch their whole budgets. A step
# stopped at its budget still leaves what it finished: pytest writes its junit
# file on SIGINT, and bmp bench rewrites its --json report after every input.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KIT=""
INSTALL=0
STEPS=all
DEVICE=cuda
WITHIN=""
RESULTS=""
while [[ ${1:-} == --* ]]; do
  case "$1" in
    --install) KIT="${2:?--install needs a kit folder}"; INSTALL=1; shift 2 ;;
    --kit) KIT="${2:?--kit needs a kit folder}"; shift 2 ;;
    --steps) STEPS="${2:?--steps needs tests, bench or all}"; shift 2 ;;
    --device) DEVICE="${2:?--device needs cuda or cpu}"; shift 2 ;;
    --within) WITHIN="${2:?--within needs seconds}"; shift 2 ;;
    --results) RESULTS="${2:?--results needs a folder}"; shift 2 ;;
    *) echo "gpu_acceptance: unknown option $1" >&2; exit 2 ;;
  esac
done
case "$STEPS" in tests | bench | all) ;; *) echo "gpu_acceptance: --steps takes tests, bench or all" >&2; exit 2 ;; esac
case "$DEVICE" in cuda | cpu) ;; *) echo "gpu_acceptance: --device takes cuda or cpu" >&2; exit 2 ;; esac
[[ -z $WITHIN || $WITHIN =~ ^[0-9]+$ ]] \
  || { echo "gpu_acceptance: --within takes whole seconds, not '$WITHIN'" >&2; exit 2; }
[[ -z $RESULTS || $RESULTS == /* ]] || RESULTS="$PWD/$RESULTS"
OUT="${1:-$ROOT/outputs/gpu_acceptance}"
VENV="${BMP_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
read -ra EXTRA <<<"${BENCH_ARGS:-}"
cd "$ROOT" || exit 1
if [[ -n $KIT ]]; then
  [[ -f $KIT/kit.json ]] || { echo "gpu_acceptance: $KIT is not a kit (no kit.json)" >&2; exit 2; }
  KIT="$(cd "$KIT" && pwd)"
  [[ -d $KIT/shared ]] && export BMP_SHARED="$KIT/shared"
fi

# Each step's most seconds; the call's --within (default 540 s for each of the two
# calls) shares out what is left, so a quick install leaves the cuda tests more.
declare -A BUDGETS=([install]=300 [pytest_cuda]=360 [bench_bf16]=90 [bench_batch]=120 [bench_bf16_inductor]=400)
GRACE=10
# With --within: what the last report and archive keep back, and the least a step may get.
RESERVE=20
MIN_STEP=15
SCALE="${BUDGET_SCALE:-1}"
if [[ -z $WITHIN ]]; then
  WITHIN=0
  [[ $STEPS == all ]] || WITHIN=$((540 * SCALE))
fi
NOT_RUN=not-run  # a status file's word for a step that --within left no time (bmp.bench_report.NOT_RUN)
step() {  # step NAME [--leave S] COMMAND...: run it within its budget, leaving S s of --within
  # to the steps after it; log it to OUT/NAME.log, keep its status
  local name="$1" budget=$((BUDGETS[$1] * SCALE)) t0=$SECONDS leave=0
  shift
  [[ $1 == --leave ]] && { leave="$2"; shift 2; }
  rm -f "$OUT/status/$name"
  if ((WITHIN)); then
    local left=$((WITHIN - SECONDS - GRACE - RESERVE - leave))
    ((left < budget)) && budget=$left
    if ((budget < MIN_STEP)); then
      printf '\n[gpu acceptance] %s: not run, %s s of --within %s left\n' "$name" "$((WITHIN - SECONDS))" "$WITHIN" \
        | tee "$OUT/$name.log"
      echo "$NOT_RUN" >"$OUT/status/$name"
      report
      return 1
    fi
  fi
  printf '\n[gpu acceptance] %s (at most %ss): %s\n' "$name" "$budget" "$*"
  # SIGINT first: pytest then still writes its junit file, and a bench its report.
  timeout -s INT -k "$GRACE" "$budget" "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  if ((rc == 124 || rc == 137)); then
    printf '[gpu acceptance] %s: stopped at its budget of %ss\n' "$name" "$budget" | tee -a "$OUT/$name.log"
  fi
  printf '[gpu acceptance] %s: exit %s after %s s\n' "$name" "$rc" "$((SECONDS - t0))" | tee -a "$OUT/$name.log"
  echo "$rc" >"$OUT/status/$name"
  report
  return "$rc"
}
# Everything run so far, this call's steps and the other call's, merged into
# OUT/acceptance.{json,md} and packed with the logs into OUT/acceptance.tar.gz
# (copied to RESULTS); after every step, so that a call stopped from outside
# keeps what finished. Sets REPORT_FAILED when the merge or the archive fails.
REPORT_FAILED=0
REPORTS=0
report() {
  local file run status=() runs=() archive
  REPORT_FAILED=0
  REPORTS=$((REPORTS + 1))
  for file in "$OUT"/status/*; do
    [[ -f $file ]] && status+=(--status "$(basename "$file")=$(<"$file")")
  done
  # The benches that ran: a report missing after a run is its failure.
  for run in bf16=bench_bf16 bf16-batch=bench_batch bf16+inductor=bench_bf16_inductor; do
    file="$OUT/status/${run#*=}"
    [[ -f $file && $(<"$file") != "$NOT_RUN" ]] && runs+=("${run%%=*}=$OUT/${run#*=}.json")
  done
  "$PY" -m bmp.bench_report --out "$OUT" --pytest "$OUT/pytest_cuda.xml" "${status[@]}" "${runs[@]}" \
    >"$OUT/report.log" 2>&1 || REPORT_FAILED=1
  # Packed beside, then moved in: a folder that changes while tar reads it fails.
  archive="$(mktemp "${TMPDIR:-/tmp}/acceptance.XXXXXX")"
  tar -czf "$archive" -C "$OUT" --exclude acceptance.tar.gz . && mv "$archive" "$OUT/acceptance.tar.gz" \
    || REPORT_FAILED=1
  [[ -n $RESULTS ]] || return 0
  for file in acceptance.md acceptance.json acceptance.tar.gz; do
    [[ -f $OUT/$file ]] || continue
    cp "$OUT/$file" "$RESULTS/$file.part" && mv "$RESULTS/$file.part" "$RESULTS/$file" || REPORT_FAILED=1
  done
}
sees_device() {
  [[ $DEVICE == cpu ]] || "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null && return 0
  echo "gpu_acceptance: $PY sees no CUDA device (torch.cuda.is_available() is False)" >&2
  return 1
}

# Refused before anything is written, unless there is an install to report on.
((INSTALL)) || sees_device || exit 1
mkdir -p "$OUT/status"
if [[ -n $RESULTS ]]; then
  mkdir -p "$RESULTS"
  # The same folder would copy each file onto itself.
  [[ "$(cd "$RESULTS" && pwd -P)" == "$(cd "$OUT" && pwd -P)" ]] && RESULTS=""
fi
ready=1
if ((INSTALL)); then
  step install env BMP_VENV="$VENV" bash "$ROOT/tools/install.sh" --from "$KIT" --keep-torch || ready=0
  ((ready)) && { sees_device || { echo 1 >"$OUT/status/cuda_device"; ready=0; report; }; }
fi
if ((ready)) && ! "$PY" -c 'import av' 2>/dev/null; then
  echo "[gpu acceptance] PyAV is not installed: the video tests skip (BMP_WITHOUT_PYAV=1)"
  export BMP_WITHOUT_PYAV=1
fi
if ((ready)) && ! "$PY" -c 'import gradio, supervision, selenium' 2>/dev/null; then
  echo "[gpu acceptance] the optional extras are not installed: their tests skip (BMP_WITHOUT_EXTRAS=1)"
  export BMP_WITHOUT_EXTRAS=1
fi

[[ $DEVICE == cpu ]] && export BMP_CUDA_TESTS_DEVICE=cpu

config=configs/bmp_rtmdet_vitpose_sam2.py
bench=("$PY" -m bmp bench --config "$config" --random-init --compare
       --people 1,10,40 --precision bf16 --device "$DEVICE" "${EXTRA[@]}")
# The real images are skipped: random weights detect nobody on them.
batch=("$PY" -m bmp bench --config "$config" --random-init --batch-size "${BATCH_SIZES:-1,2,4,8,16}"
       --people 10 --max-images 0 --iters 2 --precision bf16 --device "$DEVICE" "${EXTRA[@]}")
if ((ready)) && [[ $STEPS != bench ]]; then
  # A step that fails leaves no report: never merge an earlier run's in its place.
  rm -f "$OUT"/pytest_cuda.xml
  # In one call with the benches, the tests leave the first two their whole budgets:
  # those hold issue 21's targets, and the compiling bench gets what is left after them.
  leave=0
  [[ $STEPS == all ]] && leave=$(((BUDGETS[bench_bf16] + BUDGETS[bench_batch]) * SCALE + 2 * GRACE))
  step pytest_cuda --leave "$leave" "$PY" -m pytest -m cuda -rA -q --junitxml "$OUT/pytest_cuda.xml"
fi
if ((ready)) && [[ $STEPS != tests ]]; then
  rm -f "$OUT"/bench_bf16.json "$OUT"/bench_batch.json "$OUT"/bench_bf16_inductor.json
  step bench_bf16 "${bench[@]}" --json "$OUT/bench_bf16.json"
  step bench_batch "${batch[@]}" --json "$OUT/bench_batch.json"
  step bench_bf16_inductor "${bench[@]}" --compile inductor --json "$OUT/bench_bf16_inductor.json"
fi

failed=0
for file in "$OUT"/status/*; do
  [[ -f $file ]] || continue
  [[ $(<"$file") == 0 ]] || failed=1
done
# Every step reports when it ends; a call that ran none (nothing ready) reports here.
((REPORTS)) || report
((REPORT_FAILED)) && failed=1
if [[ -f $OUT/acceptance.md ]] && ! ((REPORT_FAILED)); then cat "$OUT/acceptance.md"; else cat "$OUT/report.log"; fi
echo "[gpu acceptance] results: $OUT/acceptance.md, everything in $OUT/acceptance.tar.gz${RESULTS:+ (copied to $RESULTS)}"
exit "$failed"

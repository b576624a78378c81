#!/usr/bin/env bash
# GPU acceptance in one command, on a CUDA machine with the stack installed:
#   1. pytest -m cuda (tests/test_cuda.py: batched = naive, bf16 ~ fp32, inductor,
#      device paths = host paths, no host sync growing with the people);
#   2. bmp bench of the published config at random init, bf16, batched vs naive,
#      1 / 10 / 40 people;
#   3. the batch curve (issue 16): the same config, 10 people, 2 iterations, bf16,
#      BMP.predict_batch at batch sizes 1, 2, 4, 8, 16, each through the same 16
#      images (img/s, ratio to batch 1, where it flattens, whether batch 8
#      reaches 2x batch 1, peak CUDA memory);
#   4. step 2 with --compile inductor (last: compiling is the slowest step);
# then OUT/acceptance.json (everything merged) and OUT/acceptance.md (the tables).
#
#   bash tools/gpu_acceptance.sh [OUT]                    # default OUT: outputs/gpu_acceptance
#   bash tools/gpu_acceptance.sh --install WHEELHOUSE [OUT]
#       a bare machine: first `tools/install.sh --from WHEELHOUSE --keep-torch`
#       (keeps the machine's CUDA torch; build WHEELHOUSE elsewhere with
#       `tools/install.sh --wheelhouse DIR --python X.Y --keep-torch`)
#
# Every step runs even if an earlier one failed; the exit status is non-zero
# when any did. BMP_VENV picks the environment (default ./.venv); BENCH_ARGS
# adds arguments to every bench run (e.g. "--max-images 2 --repeat 3").
#
# Time budget: the script must finish within one 10-minute (600 s) call, so
# every step runs under `timeout` with its own limit (BUDGETS below; a step
# that overruns is stopped, reported as TIMED OUT and the next one starts):
# 130 + 90 + 140 + 160 s, plus 10 s of grace to stop each, leaves ~40 s for the
# CUDA check and the merge. --install comes on top of that.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEELHOUSE=""
if [[ ${1:-} == --install ]]; then
  WHEELHOUSE="${2:?--install needs a wheelhouse folder}"
  shift 2
fi
OUT="${1:-$ROOT/outputs/gpu_acceptance}"
VENV="${BMP_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
read -ra EXTRA <<<"${BENCH_ARGS:-}"
cd "$ROOT" || exit 1

if [[ -n $WHEELHOUSE ]]; then
  BMP_VENV="$VENV" bash "$ROOT/tools/install.sh" --from "$WHEELHOUSE" --keep-torch || exit 1
fi
if ! "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
  echo "gpu_acceptance: $PY sees no CUDA device (torch.cuda.is_available() is False)" >&2
  exit 1
fi
mkdir -p "$OUT"
# A step that fails leaves no report: never merge an earlier run's in its place.
rm -f "$OUT"/bench_bf16.json "$OUT"/bench_batch.json "$OUT"/bench_bf16_inductor.json "$OUT"/pytest_cuda.xml

# Seconds per step; their sum plus GRACE per step must stay well under 600.
declare -A BUDGETS=([pytest_cuda]=130 [bench_bf16]=90 [bench_batch]=140 [bench_bf16_inductor]=160)
GRACE=10
status=()
step() {  # step NAME COMMAND...: run it within its budget, log it to OUT/NAME.log, remember its status
  local name="$1"
  shift
  printf '\n[gpu acceptance] %s (at most %ss): %s\n' "$name" "${BUDGETS[$name]}" "$*"
  timeout -k "$GRACE" "${BUDGETS[$name]}" "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  if ((rc == 124 || rc == 137)); then
    printf '[gpu acceptance] %s: stopped at its budget of %ss\n' "$name" "${BUDGETS[$name]}" \
      | tee -a "$OUT/$name.log"
  fi
  status+=(--status "$name=$rc")
  return 0
}

config=configs/bmp_rtmdet_vitpose_sam2.py
bench=("$PY" -m bmp bench --config "$config" --random-init --compare
       --people 1,10,40 --precision bf16 --device cuda "${EXTRA[@]}")
# The real images are skipped: random weights detect nobody on them.
batch=("$PY" -m bmp bench --config "$config" --random-init --batch-size 1,2,4,8,16
       --people 10 --max-images 0 --iters 2 --precision bf16 --device cuda "${EXTRA[@]}")
step pytest_cuda "$PY" -m pytest -m cuda -rA -q --junitxml "$OUT/pytest_cuda.xml"
step bench_bf16 "${bench[@]}" --json "$OUT/bench_bf16.json"
step bench_batch "${batch[@]}" --json "$OUT/bench_batch.json"
step bench_bf16_inductor "${bench[@]}" --compile inductor --json "$OUT/bench_bf16_inductor.json"

"$PY" -m bmp.bench_report --out "$OUT" --pytest "$OUT/pytest_cuda.xml" "${status[@]}" \
  "bf16=$OUT/bench_bf16.json" "bf16-batch=$OUT/bench_batch.json" \
  "bf16+inductor=$OUT/bench_bf16_inductor.json" || exit 1
for item in "${status[@]}"; do
  [[ $item == *=0 || $item == --status ]] || exit 1
done

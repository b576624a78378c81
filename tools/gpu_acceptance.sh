#!/usr/bin/env bash
# GPU acceptance in one command, on a CUDA machine with the stack installed:
#   1. pytest -m cuda (tests/test_cuda.py: batched = naive, bf16 ~ fp32, inductor,
#      device paths = host paths, no host sync growing with the people);
#   2. bmp bench of the published config at random init, bf16, batched vs naive,
#      1 / 10 / 40 people;
#   3. the same with --compile inductor;
# then OUT/acceptance.json (everything merged) and OUT/acceptance.md (the table).
#
#   bash tools/gpu_acceptance.sh [OUT]                    # default OUT: outputs/gpu_acceptance
#   bash tools/gpu_acceptance.sh --install WHEELHOUSE [OUT]
#       a bare machine: first `tools/install.sh --from WHEELHOUSE --keep-torch`
#       (keeps the machine's CUDA torch; build WHEELHOUSE elsewhere with
#       `tools/install.sh --wheelhouse DIR --python X.Y --keep-torch`)
#
# Every step runs even if an earlier one failed; the exit status is non-zero
# when any did. BMP_VENV picks the environment (default ./.venv); BENCH_ARGS
# adds arguments to both bench runs (e.g. "--max-images 2 --repeat 3").
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
rm -f "$OUT"/bench_bf16.json "$OUT"/bench_bf16_inductor.json "$OUT"/pytest_cuda.xml

status=()
step() {  # step NAME COMMAND...: run it, log it to OUT/NAME.log, remember its status
  local name="$1"
  shift
  printf '\n[gpu acceptance] %s: %s\n' "$name" "$*"
  "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  status+=(--status "$name=$rc")
  return 0
}

bench=("$PY" -m bmp bench --config configs/bmp_rtmdet_vitpose_sam2.py --random-init --compare
       --people 1,10,40 --precision bf16 --device cuda "${EXTRA[@]}")
step pytest_cuda "$PY" -m pytest -m cuda -rA -q --junitxml "$OUT/pytest_cuda.xml"
step bench_bf16 "${bench[@]}" --json "$OUT/bench_bf16.json"
step bench_bf16_inductor "${bench[@]}" --compile inductor --json "$OUT/bench_bf16_inductor.json"

"$PY" -m bmp.bench_report --out "$OUT" --pytest "$OUT/pytest_cuda.xml" "${status[@]}" \
  "bf16=$OUT/bench_bf16.json" "bf16+inductor=$OUT/bench_bf16_inductor.json" || exit 1
for item in "${status[@]}"; do
  [[ $item == *=0 || $item == --status ]] || exit 1
done

#!/usr/bin/env bash
# A rehearsal of the GPU acceptance on a CPU machine (issue 21), as close to the
# air-gapped target as a machine with the registries gets:
#   1. the kit for the target list (tools/install.sh --kit; needs the network);
#   2. a stand-in target: a Python 3.12 venv (the target's python3 is itself a
#      venv) holding the target's torch 2.11.0 and torchvision 0.26.0 (PyPI's Linux
#      builds, which carry CUDA libraries and run on the CPU), numpy 2.5.2, the
#      newest setuptools (no pkg_resources, as on the image) and every other
#      distribution of the target list, at its version where the list gives one,
#      but the few a CPU machine cannot use (NOT_ON_A_CPU);
#   3. the acceptance in one call, as the device tool gets it: install from the
#      kit, pytest -m cuda (on the CPU), then the benches at a reduced scale, with
#      the network cut (unshare -n where it works; pip never gets an index anyway);
#   4. the smoke tests, in the installed environment, also without the network.
# It prints the kit's size and each step's wall time, and writes them to
# WORK/rehearsal.md. A failed kit or stand-in ends it there, with one line: every
# later step would only fail for the same reason (run 8's full disk did so for
# 15 minutes).
#
#   bash tools/rehearse_target.sh [WORK]         # default WORK: outputs/rehearsal
#   bash tools/rehearse_target.sh --stand-in-requirements   # what the stand-in installs
# Environment: TARGET_FILE (default tools/targets/h200-cuda13-py312.txt),
# PYTHON312 (default: python3.12 on the PATH or under pyenv), KEEP_TARGET=1 to
# reuse WORK/target from an earlier run, MAX_JOBS (default: every core).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_FILE="${TARGET_FILE:-$ROOT/tools/targets/h200-cuda13-py312.txt}"
# The stand-in holds the whole target list but what a CPU machine cannot use: the
# CUDA-only packages (torch brings the CUDA libraries it needs itself) and mpi4py,
# which needs an MPI library to build.
NOT_ON_A_CPU='^(nvidia-cu|nvidia-n[cv]|cuda-|cupy|jax-cuda|numba-cuda|mpi4py)'
stand_in_requirements() {
  grep -Ev '^[[:space:]]*(#|$)' "$TARGET_FILE" | grep -Ev "$NOT_ON_A_CPU"
}
if [[ ${1:-} == --stand-in-requirements ]]; then
  stand_in_requirements
  exit
fi
WORK="$(mkdir -p "${1:-$ROOT/outputs/rehearsal}" && cd "${1:-$ROOT/outputs/rehearsal}" && pwd)"
PY312="${PYTHON312:-}"
if [[ -z $PY312 ]]; then
  # pyenv's shims answer for versions that are not selected: try each candidate.
  for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12.*/bin/python3.12 "$(command -v python3.12)"; do
    if [[ -x $candidate ]] && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
      PY312="$candidate"
      break
    fi
  done
fi
[[ -n $PY312 ]] || { echo "rehearse_target: no Python 3.12 found (set PYTHON312)" >&2; exit 2; }
KIT="$WORK/kit" TARGET="$WORK/target" VENV="$WORK/venv" OUT="$WORK/acceptance"
TIMES="$WORK/times.tsv"
: >"$TIMES"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_FIND_LINKS=

timed() {  # timed NAME COMMAND...: run it, record its wall time, keep going on failure
  local name="$1" t0 rc
  shift
  printf '\n[rehearsal] %s: %s\n' "$name" "$*"
  t0=$(date +%s.%N)
  "$@" && rc=0 || rc=$?
  printf '%s\t%s\t%s\n' "$name" "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')" "$rc" \
    | tee -a "$TIMES"
  LAST_RC=$rc
  return 0
}
needed() {  # needed NAME COMMAND...: timed, but every later step builds on it, so a failure ends the rehearsal
  timed "$@"
  ((LAST_RC == 0)) && return 0
  report >/dev/null
  echo "rehearse_target: step $1 failed (exit $LAST_RC), and every later step needs it: stopped; see $WORK/rehearsal.md" >&2
  exit 1
}
offline() {  # no network for the command: a new network namespace (loopback only) where we may make one
  if unshare -n true 2>/dev/null; then
    unshare -n bash -c 'ip link set lo up 2>/dev/null || true; exec "$@"' offline "$@"
  else
    PIP_INDEX_URL=http://127.0.0.1:9/simple "$@"
  fi
}

report() {  # WORK/rehearsal.md from what has run so far, also printed
  {
    echo "# Rehearsal of the GPU acceptance on $(nproc) CPU cores ($(date -u +%F))"
    echo
    if [[ -f $KIT/MANIFEST.md ]]; then sed -n 3p "$KIT/MANIFEST.md"; else echo "kit: none"; fi
    echo
    if [[ -x $TARGET/bin/python ]]; then
      echo "stand-in: $("$TARGET/bin/python" -c 'import sys, torch, numpy; print(f"Python {sys.version.split()[0]}, torch {torch.__version__}, numpy {numpy.__version__}")' 2>/dev/null || echo incomplete)"
    else
      echo "stand-in: none"
    fi
    echo
    echo "| step | wall s | exit |"
    echo "|---|---:|---:|"
    awk -F'\t' '{printf "| %s | %s | %s |\n", $1, $2, $3}' "$TIMES"
    echo
    if [[ -n ${RESULTS:-} && -f $RESULTS/acceptance.md ]]; then cat "$RESULTS/acceptance.md"; fi
  } | tee "$WORK/rehearsal.md"
}

stand_in() {
  [[ ${KEEP_TARGET:-0} == 1 && -x $TARGET/bin/python ]] && return 0
  rm -rf "$TARGET"
  # timed runs this where errexit is off: each step says itself when it fails.
  "$PY312" -m venv "$TARGET" || return
  # Not only what the kit counts on: what it installs reads other target packages
  # too (mmpretrain turns on its multimodal models when transformers is there, which
  # broke the first GPU run under transformers 5; pytest loads the image's plugins).
  mapfile -t reqs < <(stand_in_requirements)
  "$TARGET/bin/python" -m pip install -q --progress-bar off --upgrade pip setuptools "${reqs[@]}"
}

needed kit bash "$ROOT/tools/install.sh" --kit "$KIT" --target "$TARGET_FILE"
needed stand_in_target stand_in
rm -rf "$VENV" "$OUT"
# The one call as README gives it, its budgets scaled from the target's 16
# cores to this machine's (mmcv alone takes ~2 min on 16 cores, 10+ on 2).
# The sdists are built afresh every time, as on a new target: no wheel cache.
export PIP_NO_CACHE_DIR=1
export BMP_VENV="$VENV" PYTHON="$TARGET/bin/python" BUDGET_SCALE="${BUDGET_SCALE:-$(((16 + $(nproc) - 1) / $(nproc)))}"
# --results stands for the device tool's $OUT; --within for the one call's, scaled.
RESULTS="$WORK/results" WITHIN=$((570 * BUDGET_SCALE))
rm -rf "$RESULTS"
timed one_call_install_tests_benches offline env BENCH_ARGS="--people 1 --repeat 1 --warmup 0 --max-images 1" \
  BATCH_SIZES=1,2 bash "$ROOT/tools/gpu_acceptance.sh" --device cpu --install "$KIT" --within "$WITHIN" \
  --results "$RESULTS" "$OUT"
timed smoke_tests offline env BMP_SHARED="$KIT/shared" BMP_WITHOUT_PYAV=1 "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
  tests/test_structures.py tests/test_masks.py tests/test_prompts.py tests/test_pose_nms.py \
  tests/test_loop_tiny.py tests/test_pose_models.py tests/test_no_mmcv_kernels.py tests/test_eval_metrics.py \
  tests/test_downloads.py tests/test_video_io.py

report
awk -F'\t' '$3 != 0 {bad = 1} END {exit bad}' "$TIMES"

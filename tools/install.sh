#!/usr/bin/env bash
# Install bmp and its whole stack into a virtual environment (default: ./.venv).
#
# Every step below encodes a measured constraint of ../shared/INSTALL_NOTES.md:
# the order matters because mmcv, xtcocotools, chumpy and sam2 build against the
# already-installed torch/numpy (--no-build-isolation), and an isolated build
# would pull a different torch.
#
#   bash tools/install.sh            # create/update .venv
#   BMP_VENV=/path/env bash tools/install.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BMP_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

# The machine's find-links folder holds a CPU-only torch that pip would prefer
# over the registry build; no torchvision matches it.
export PIP_FIND_LINKS=
export PIP_CONSTRAINT="$ROOT/constraints.txt"
export PIP_DISABLE_PIP_VERSION_CHECK=1

log() { printf '\n[bmp install] %s\n' "$*"; }

if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --progress-bar off)

have() { "$VENV/bin/python" -m pip show -q "$1" >/dev/null 2>&1; }

log "1/6 build tools and torch"
"${PIP[@]}" "setuptools<81" wheel ninja "torch===2.13.0" "torchvision==0.28.0"

log "2/6 numeric and COCO basics"
"${PIP[@]}" numpy opencv-python-headless pycocotools "mmengine==0.10.7" cython tqdm "av>=14"

log "3/6 mmcv 2.1.0 with ops (source build, ~10 min the first time; pip caches the wheel)"
if ! "$VENV/bin/python" -c "import mmcv, mmcv.ops" >/dev/null 2>&1; then
  MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" "${PIP[@]}" --no-build-isolation "mmcv==2.1.0"
fi

log "4/6 xtcocotools against numpy 2, chumpy"
if ! "$VENV/bin/python" -c "import xtcocotools.coco" >/dev/null 2>&1; then
  "${PIP[@]}" --no-build-isolation --no-binary xtcocotools "xtcocotools==1.14.3"
fi
have chumpy || "${PIP[@]}" --no-build-isolation "chumpy==0.70"

log "5/6 mmdet, mmpose, mmpretrain, ultralytics, sam2"
"${PIP[@]}" "mmdet==3.3.0" "mmpose==1.3.2" "mmpretrain==1.2.0" ultralytics
have sam2 || SAM2_BUILD_CUDA=0 "${PIP[@]}" --no-build-isolation "sam2==1.1.0"

log "6/6 bmp itself (editable) with test tools"
"${PIP[@]}" --no-build-isolation -e "$ROOT[dev]"

"$VENV/bin/python" -m pip check || log "pip check reported the above (known harmless: chumpy on Python >= 3.11)"
log "done: activate with 'source $VENV/bin/activate'"

#!/usr/bin/env bash
# Install bmp and its whole stack into a virtual environment (default: ./.venv).
#
# Every step below encodes a measured constraint of ../shared/INSTALL_NOTES.md:
# the order matters because mmcv, xtcocotools, chumpy and sam2 build against the
# already-installed torch/numpy (--no-build-isolation), and an isolated build
# would pull a different torch.
#
#   bash tools/install.sh                     # create/update .venv from the registry
#   BMP_VENV=/path/env bash tools/install.sh
#   bash tools/install.sh --keep-torch        # keep the torch/torchvision the machine has
#   bash tools/install.sh --wheelhouse DIR [--python 3.12] [--platform TAG]... [--keep-torch]
#                                             # download everything into DIR (needs the network)
#   bash tools/install.sh --from DIR [--keep-torch]
#                                             # install from DIR only, no network
#   bash tools/install.sh --kit DIR --target FILE
#                                             # only what the target FILE (pip-freeze style)
#                                             # lacks, plus the test data (tools/kit.py)
#
# --from a kit (DIR/kit.json) installs exactly its files, with no dependency
# resolution, next to the environment's own torch (--keep-torch is implied);
# run again on an environment that this kit installed (VENV/bmp-kit.stamp) it
# does nothing.
# When python3 is itself a venv (a managed image), --keep-torch makes .venv from
# its base interpreter and links the image venv's site-packages in with a .pth
# file: --system-site-packages alone would only see the base's packages.
#
# mmcv's ops are always compiled for the CPU only, also on GPU machines: no nvcc,
# no CUDA arch list, the same wheel everywhere. The loop needs no mmcv kernel on
# its inference path (bmp.models.detectors.torchvision_nms routes mmdet's NMS to
# torchvision), so nothing is lost on a GPU.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BMP_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
  cat <<'TXT'
Options:
  --wheelhouse DIR   download the stack's wheels, plus the sdists that are built on
                     the target (mmcv, xtcocotools, chumpy, sam2, iopath, antlr4), into DIR
  --python X.Y       with --wheelhouse: the target's Python (default: this machine's)
  --platform TAG     with --wheelhouse: a target wheel platform, repeatable
                     (default with --python: those tools/kit.py default-platforms prints)
  --from DIR         install from DIR only (pip --no-index --find-links DIR)
  --keep-torch       keep the torch/torchvision the environment already has (a new venv
                     then sees the system's site-packages); with --wheelhouse: leave them out
  --kit DIR          download only what --target lacks for the runtime, the cuda tests and
                     bmp bench, plus the shared test data, into DIR (manifest: DIR/kit.json)
  --target FILE      with --kit: the target's distributions, one 'name[==version]' a line
Environment:
  BMP_VENV           the virtual environment (default: ./.venv)
  PYTHON             the interpreter that creates it and downloads (default: python3)
  MAX_JOBS           parallel compile jobs for mmcv (default: every core)
  BMP_INSTALL_ONLY   space-separated requirements: download / install only these
                     (with their dependencies) instead of the stack; for tests
  BMP_SHARED         with --kit: the shared folder whose data/coco comes along (default ../shared)
TXT
}

MODE=install
DIR=""
TARGET_PY=""
PLATFORMS=()
KEEP_TORCH=0
TARGET_FILE=""
while (($#)); do
  case "$1" in
    --wheelhouse) MODE=wheelhouse; DIR="${2:?--wheelhouse needs a folder}"; shift 2 ;;
    --kit) MODE=kit; DIR="${2:?--kit needs a folder}"; shift 2 ;;
    --target) TARGET_FILE="${2:?--target needs a file}"; shift 2 ;;
    --from) MODE=from; DIR="${2:?--from needs a folder}"; shift 2 ;;
    --python) TARGET_PY="${2:?--python needs a version such as 3.12}"; shift 2 ;;
    --platform) PLATFORMS+=("${2:?--platform needs a wheel platform tag}"); shift 2 ;;
    --keep-torch) KEEP_TORCH=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) printf 'tools/install.sh: unknown option %s (see --help)\n' "$1" >&2; exit 2 ;;
  esac
done
if [[ $MODE != wheelhouse && $MODE != kit && ( -n $TARGET_PY || ${#PLATFORMS[@]} -gt 0 ) ]]; then
  echo "tools/install.sh: --python and --platform go with --wheelhouse or --kit" >&2
  exit 2
fi
if [[ $MODE == kit && -z $TARGET_FILE ]] || [[ $MODE != kit && -n $TARGET_FILE ]]; then
  echo "tools/install.sh: --kit and --target go together" >&2
  exit 2
fi

log() { printf '\n[bmp install] %s\n' "$*"; }

KIT=0
if [[ $MODE == from && -f $DIR/kit.json ]]; then
  KIT=1
  ((KEEP_TORCH)) || log "a kit carries no torch: keeping the environment's (--keep-torch)"
  KEEP_TORCH=1
fi

# The machine's find-links folder holds a CPU-only torch that pip would prefer
# over the registry build; no torchvision matches it.
export PIP_FIND_LINKS=
export PIP_CONSTRAINT="$ROOT/constraints.txt"
export PIP_DISABLE_PIP_VERSION_CHECK=1

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# The exact pins, less torch/torchvision: a kept torch (e.g. 2.11+cu130 on a
# managed GPU image) would otherwise be "upgraded" to the pinned 2.13.0.
if ((KEEP_TORCH)); then
  grep -Ev '^(torch|torchvision)[^A-Za-z0-9_.-]' "$ROOT/constraints.txt" >"$TMP/constraints.txt"
  export PIP_CONSTRAINT="$TMP/constraints.txt"
fi

# The stack, for the wheelhouse (the install steps below name the same pins).
TORCH_REQS=("torch===2.13.0" "torchvision==0.28.0")
# The sdists built on the target (C extensions against its torch/numpy, or
# sdist-only) and their own dependencies, which an sdist's metadata does not list,
# are tools/kit.py's BUILT_ON_TARGET: build_wheelhouse asks it.
# Wheels fetched without their dependencies, because those include torch or an
# sdist above; their other dependencies are read from the wheels' metadata.
NODEPS=("mmpose==1.3.2" ultralytics ultralytics-thop "hydra-core>=1.3.2,<1.4" "omegaconf>=2.2,<2.4")
# Everything else, resolved with dependencies as binary wheels only.
BINARY=("setuptools<81" wheel ninja numpy opencv-python-headless pycocotools "mmengine==0.10.7" cython
        tqdm "av>=14" "huggingface_hub>=0.23" "mmdet==3.3.0" "mmpretrain==1.2.0" "pytest>=7" "ruff>=0.5")

build_wheelhouse() {
  mkdir -p "$DIR"
  DIR="$(cd "$DIR" && pwd)"
  # pip and kit.py wheel-needs get the same tags: its markers follow their machine.
  local target=() tags=()
  if [[ -n $TARGET_PY || ${#PLATFORMS[@]} -gt 0 ]]; then
    if ((${#PLATFORMS[@]} == 0)); then
      local platforms
      platforms="$("$PYTHON" "$ROOT/tools/kit.py" default-platforms)" || exit 1
      mapfile -t PLATFORMS <<<"$platforms"
    fi
    for tag in "${PLATFORMS[@]}"; do tags+=(--platform "$tag"); done
    [[ -n $TARGET_PY ]] && target+=(--python-version "$TARGET_PY" --implementation cp)
    target+=("${tags[@]}")
  fi
  TARGET_PY="${TARGET_PY:-$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')}"
  local download=("$PYTHON" -m pip download --progress-bar off --dest "$DIR")
  log "wheelhouse $DIR for Python $TARGET_PY${PLATFORMS:+ on ${PLATFORMS[*]}}"
  if [[ -n ${BMP_INSTALL_ONLY:-} ]]; then
    read -ra only <<<"$BMP_INSTALL_ONLY"
    "${download[@]}" --only-binary :all: "${target[@]}" "${only[@]}"
    return
  fi

  local sdists sdist_needs
  sdists="$("$PYTHON" "$ROOT/tools/kit.py" built-on-target)" || exit 1
  sdist_needs="$("$PYTHON" "$ROOT/tools/kit.py" built-on-target --needs)" || exit 1
  mapfile -t sdists <<<"$sdists"
  mapfile -t sdist_needs <<<"$sdist_needs"

  log "1/3 sdists built on the target"
  "$PYTHON" "$ROOT/tools/kit.py" fetch-sdists "$DIR" || exit 1

  log "2/3 wheels whose dependencies include torch or an sdist"
  mkdir -p "$TMP/nodeps"
  "$PYTHON" -m pip download --progress-bar off --dest "$TMP/nodeps" --no-deps --only-binary :all: \
    "${target[@]}" "${NODEPS[@]}"
  cp "$TMP/nodeps"/*.whl "$DIR"/
  local names=(torch torchvision mmpose ultralytics ultralytics-thop hydra-core omegaconf "${sdists[@]}")
  local deps req
  deps="$("$PYTHON" "$ROOT/tools/kit.py" wheel-needs --python "$TARGET_PY.0" "${tags[@]}" \
    --skip "${names[*]}" "$TMP/nodeps"/*.whl)" || exit 1
  mapfile -t deps <<<"$deps"
  # hydra-core, which sam2 needs, came with step 2.
  for req in "${sdist_needs[@]}"; do
    [[ " ${names[*]} " == *" ${req%%[=<>!~]*} "* ]] || deps+=("$req")
  done

  log "3/3 binary wheels with their dependencies"
  local reqs=("${BINARY[@]}" "${deps[@]}")
  ((KEEP_TORCH)) || reqs+=("${TORCH_REQS[@]}")
  "${download[@]}" --only-binary :all: "${target[@]}" "${reqs[@]}"
  log "done: $(find "$DIR" -maxdepth 1 -type f | wc -l) files in $DIR; install there with: bash tools/install.sh --from DIR${TARGET_PY:+ (Python $TARGET_PY)}"
}

if [[ $MODE == wheelhouse ]]; then
  build_wheelhouse
  exit 0
fi
if [[ $MODE == kit ]]; then
  kit=("$PYTHON" "$ROOT/tools/kit.py" build --target "$TARGET_FILE" --out "$DIR")
  [[ -n $TARGET_PY ]] && kit+=(--python "$TARGET_PY")
  for tag in "${PLATFORMS[@]}"; do kit+=(--platform "$tag"); done
  exec "${kit[@]}"
fi

if [[ $MODE == from ]]; then
  [[ -d $DIR ]] || { echo "tools/install.sh: --from $DIR: no such folder" >&2; exit 2; }
  # Offline: every requirement, and every build's, comes from the folder.
  PIP_FIND_LINKS="$(cd "$DIR" && pwd)"
  export PIP_FIND_LINKS PIP_NO_INDEX=1
fi

make_venv() {
  if ((!KEEP_TORCH)); then
    "$PYTHON" -m venv "$VENV"
    return
  fi
  # A managed image's torch lives in the system site-packages, or in the venv
  # that its python3 itself is.
  local parent
  parent="$("$PYTHON" -c 'import sys, sysconfig
if sys.prefix != sys.base_prefix:
    print(*dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib")), sep="\n")')"
  if [[ -z $parent ]]; then
    "$PYTHON" -m venv --system-site-packages "$VENV"
    return
  fi
  # Without pip: a distribution's base interpreter may lack ensurepip
  # (Debian's python3-venv), and the image venv's own pip serves through the .pth.
  "$("$PYTHON" -c 'import sys; print(sys._base_executable)')" -m venv --without-pip --system-site-packages "$VENV"
  local site
  site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  printf '%s\n' "$parent" >"$site/_bmp_parent_venv.pth"
  log "$PYTHON is a venv: $VENV sees its packages through $site/_bmp_parent_venv.pth"
  "$VENV/bin/python" -m pip --version >/dev/null 2>&1 || "$VENV/bin/python" -m ensurepip -q || {
    echo "tools/install.sh: $VENV has no pip: neither $PYTHON's venv nor ensurepip provides one" >&2
    exit 1
  }
}

if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating virtual environment $VENV"
  make_venv
fi
PIP=("$VENV/bin/python" -m pip install --progress-bar off)

have() { "$VENV/bin/python" -m pip show -q "$1" >/dev/null 2>&1; }
# mmcv's setup.py compiles CUDA kernels when torch.cuda.is_available() or
# FORCE_CUDA=1 (also MLU/MPS/NPU/DIOPI by their own switches); nvcc on the
# PATH alone does not. Hiding the GPU and forcing the rest off gives the same
# CPU build on every machine.
mmcv_cpu_build() {
  CUDA_VISIBLE_DEVICES="" FORCE_CUDA=0 FORCE_MLU=0 FORCE_MPS=0 FORCE_NPU=0 MMCV_WITH_DIOPI=0 \
    MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" "$@"
}

STACK_IMPORTS='import bmp.cli, mmcv.ops, mmdet, mmpose, mmpretrain, sam2, pycocotools, xtcocotools.coco'
# Which kit, for which checkout, the environment was last installed from.
kit_stamp() { printf '%s %s\n' "$(sha256sum "$DIR/kit.json" | cut -d' ' -f1)" "$ROOT"; }

install_kit() {
  # The kit is a resolved closure (tools/kit.py): its files go in as they are,
  # with no dependency resolution, beside the environment's own packages.
  local plan kind file wheels=() sdists=() started=$SECONDS stamp="$VENV/bmp-kit.stamp"
  plan="$("$VENV/bin/python" "$ROOT/tools/kit.py" plan "$DIR")" || exit 1
  local only=0
  while read -r kind file; do
    case "$kind" in
      wheel) wheels+=("$file") ;;
      sdist) sdists+=("$file") ;;
      only) only=1 ;;
    esac
  done <<<"$plan"
  # A second call on the same machine (the GPU acceptance's call 2) must not
  # spend minutes rebuilding mmcv.
  if [[ -f $stamp && "$(<"$stamp")" == "$(kit_stamp)" ]] \
    && { ((only)) || "$VENV/bin/python" -c "$STACK_IMPORTS" 2>/dev/null; }; then
    log "already installed from this kit: $VENV ($stamp); nothing to do"
    return
  fi
  rm -f "$stamp"
  log "kit 1/3: ${#wheels[@]} wheels"
  ((${#wheels[@]} == 0)) || "${PIP[@]}" --no-deps "${wheels[@]}"
  if ((${#sdists[@]})); then
    # Minutes of the window would go before the first compile found this out.
    local include
    include="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
    [[ -f $include/Python.h ]] || {
      echo "tools/install.sh: no Python.h in $include: the kit's sdists (mmcv, xtcocotools) cannot be compiled" \
        "against this interpreter (install its development headers)" >&2
      exit 1
    }
  fi
  log "kit 2/3: ${#sdists[@]} sdists built here against the kept torch and numpy (MAX_JOBS=${MAX_JOBS:-$(nproc)})"
  for file in "${sdists[@]}"; do
    local t0=$SECONDS
    case "$(basename "$file")" in
      mmcv-*) mmcv_cpu_build "${PIP[@]}" --no-deps --no-build-isolation "$file" ;;
      sam2-*) SAM2_BUILD_CUDA=0 "${PIP[@]}" --no-deps --no-build-isolation "$file" ;;
      *) "${PIP[@]}" --no-deps --no-build-isolation "$file" ;;
    esac
    log "built $(basename "$file") in $((SECONDS - t0)) s"
  done
  if ((only)); then
    kit_stamp >"$stamp"
    log "done in $((SECONDS - started)) s: the kit $DIR (some requirements only) in $VENV"
    return
  fi
  log "kit 3/3: bmp itself (editable)"
  "${PIP[@]}" --no-deps --no-build-isolation -e "$ROOT"
  "$VENV/bin/python" -c "$STACK_IMPORTS" \
    || { echo "tools/install.sh: the kit installed, but the stack does not import (above)" >&2; exit 1; }
  kit_stamp >"$stamp"
  log "done in $((SECONDS - started)) s: the kit $DIR in $VENV (its data: BMP_SHARED=$(cd "$DIR" && pwd)/shared)"
}

if ((KEEP_TORCH)); then
  versions="$("$VENV/bin/python" -c 'import torch, torchvision; print(torch.__version__, torchvision.__version__)' 2>/dev/null)" || {
    echo "tools/install.sh: --keep-torch: $VENV/bin/python cannot import torch and torchvision" \
      "(a venv that --keep-torch creates sees the system's site-packages; this one may predate it)" >&2
    exit 1
  }
  read -r torch_version vision_version <<<"$versions"
  # pyproject's range: mmcv 2.1.0 compiles with -std=c++17, which torch >= 2.15 refuses.
  if ! "$VENV/bin/python" -c 'import sys, torch; v = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]); sys.exit(not (2, 1) <= v < (2, 15))'; then
    echo "tools/install.sh: --keep-torch: torch $torch_version is outside the supported >=2.1,<2.15" >&2
    exit 1
  fi
  # Pinned to what is there, so no later step replaces them.
  printf 'torch==%s\ntorchvision==%s\n' "$torch_version" "$vision_version" >>"$PIP_CONSTRAINT"
  log "keeping torch $torch_version, torchvision $vision_version"
fi

if ((KIT)); then
  install_kit
  exit 0
fi

if [[ -n ${BMP_INSTALL_ONLY:-} ]]; then
  read -ra only <<<"$BMP_INSTALL_ONLY"
  if ((${#only[@]})); then "${PIP[@]}" "${only[@]}"; fi  # blank: only the checks above
  log "done: ${only[*]} in $VENV"
  exit 0
fi

if ((KEEP_TORCH)); then
  log "1/7 build tools (torch kept)"
  "${PIP[@]}" "setuptools<81" wheel ninja
else
  log "1/7 build tools and torch"
  "${PIP[@]}" "setuptools<81" wheel ninja "${TORCH_REQS[@]}"
fi

log "2/7 numeric and COCO basics"
"${PIP[@]}" numpy opencv-python-headless pycocotools "mmengine==0.10.7" cython tqdm "av>=14" "huggingface_hub>=0.23"

log "3/7 mmcv 2.1.0 with CPU ops (source build, ~10 min the first time; pip caches the wheel)"
if ! "$VENV/bin/python" -c "import mmcv, mmcv.ops" >/dev/null 2>&1; then
  mmcv_cpu_build "${PIP[@]}" --no-build-isolation "mmcv==2.1.0"
fi

log "4/7 xtcocotools against numpy 2, chumpy"
if ! "$VENV/bin/python" -c "import xtcocotools.coco" >/dev/null 2>&1; then
  "${PIP[@]}" --no-build-isolation --no-binary xtcocotools "xtcocotools==1.14.3"
fi
have chumpy || "${PIP[@]}" --no-build-isolation "chumpy==0.70"

log "5/7 mmdet, mmpose, mmpretrain, ultralytics, sam2"
"${PIP[@]}" "mmdet==3.3.0" "mmpose==1.3.2" "mmpretrain==1.2.0" ultralytics
have sam2 || SAM2_BUILD_CUDA=0 "${PIP[@]}" --no-build-isolation "sam2==1.1.0"

log "6/7 bmp itself (editable) with test tools and the extras (demo: Gradio, supervision)"
"${PIP[@]}" --no-build-isolation -e "$ROOT[dev]"

# The report and demo tests drive a real headless browser (tests/browser.py).
log "7/7 Chromium and its driver for the browser tests"
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  log "have $(chromium --version 2>/dev/null | head -n1)"
elif command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null; }
else
  log "no chromium/chromedriver and no root apt-get: install them for the browser tests" \
    "(or set BMP_WITHOUT_EXTRAS=1 to skip those tests)"
fi

"$VENV/bin/python" -m pip check || log "pip check reported the above (known harmless: chumpy on Python >= 3.11)"
log "done: activate with 'source $VENV/bin/activate'"

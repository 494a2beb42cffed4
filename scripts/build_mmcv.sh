#!/usr/bin/env bash
# Build mmcv 2.1.0 with its compiled ops (mmdet 3.3.0 needs `mmcv._ext`; PyPI has only the source,
# and mmcv-lite lacks the ops) and install it with mmengine and mmdet into the given environment.
#
#   scripts/build_mmcv.sh PYTHON [WHEEL_CACHE]
#
# The wheel is built once per (torch version, python, CPU/CUDA ops) into WHEEL_CACHE (default
# ~/.cache/miqd/wheels), outside the checkout, so a fresh clone on the same machine reuses it.
# mmcv's setup.py asks for -std=c++17, but torch >= 2.14's headers need C++20: patched before build.
# Nothing already installed changes version: the install is constrained to the environment's
# current package versions, and pip fails loudly if that cannot be satisfied.
set -euo pipefail

MMCV_VERSION=2.1.0
MMENGINE_VERSION=0.10.7
MMDET_VERSION=3.3.0

PY=${1:?usage: build_mmcv.sh PYTHON [WHEEL_CACHE]}
CACHE=${2:-${HOME}/.cache/miqd/wheels}
PIP=("$PY" -m pip --disable-pip-version-check)

# the same test mmcv's setup.py uses to decide whether to compile the CUDA kernels
key=$("$PY" -c '
import os, sys, torch
ops = "cuda" if torch.cuda.is_available() or os.getenv("FORCE_CUDA", "0") == "1" else "cpu"
print(f"torch{torch.__version__}-cp{sys.version_info.major}{sys.version_info.minor}-{ops}")
')
dest="${CACHE}/mmcv-${MMCV_VERSION}-${key}"
wheel=$(ls "$dest"/mmcv-${MMCV_VERSION}-*.whl 2>/dev/null | head -n 1 || true)

if [[ -n "$wheel" ]]; then
    echo "build_mmcv: reusing cached wheel $wheel"
else
    work=$(mktemp -d "${TMPDIR:-/tmp}/miqd-mmcv.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    echo "build_mmcv: building mmcv ${MMCV_VERSION} with ops for ${key} in $work (10+ minutes)"
    # metadata preparation imports torch, so it runs against this environment, not an isolated one
    "${PIP[@]}" download --quiet --no-deps --no-binary :all: --no-build-isolation \
        -d "$work" "mmcv==${MMCV_VERSION}"
    tar -xzf "$work/mmcv-${MMCV_VERSION}.tar.gz" -C "$work"
    src="$work/mmcv-${MMCV_VERSION}"
    if ! grep -q -- '-std=c++17' "$src/setup.py"; then
        echo "build_mmcv: $src/setup.py has no -std=c++17 flag to patch; update scripts/build_mmcv.sh" >&2
        exit 1
    fi
    sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
    # -g0: no debug symbols (Python's own CFLAGS ask for -g), a faster build and a smaller wheel
    CFLAGS="${CFLAGS:-} -g0" CXXFLAGS="${CXXFLAGS:-} -g0" MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
        "${PIP[@]}" wheel --no-build-isolation --no-deps -w "$work/wheel" "$src"
    built=$(ls "$work"/wheel/mmcv-${MMCV_VERSION}-*.whl)
    mkdir -p "$dest"
    # copy then rename within the cache folder: a half-written wheel is never seen as cached
    cp "$built" "$dest/.partial.whl"
    mv "$dest/.partial.whl" "$dest/$(basename "$built")"
    wheel="$dest/$(basename "$built")"
    echo "build_mmcv: cached $wheel"
fi

constraints=$(mktemp "${TMPDIR:-/tmp}/miqd-constraints.XXXXXX")
trap 'rm -f "$constraints"; rm -rf "${work:-}"' EXIT
"${PIP[@]}" list --format=freeze --exclude-editable \
    | grep -v -i -E '^(mmcv|mmengine|mmdet)==' > "$constraints"
"${PIP[@]}" install --quiet -c "$constraints" --force-reinstall --no-deps "$wheel"
"${PIP[@]}" install --quiet -c "$constraints" "$wheel" \
    "mmengine==${MMENGINE_VERSION}" "mmdet==${MMDET_VERSION}"
"$PY" -c 'import mmcv, mmdet; from mmcv import _ext
print(f"build_mmcv: mmcv {mmcv.__version__} with ops, mmdet {mmdet.__version__} installed")'

#!/usr/bin/env bash
# Creates (or completes) the virtual environment .venv at the repo root.
#   setup-venv.sh light   what the demo needs: lookalike + the sample photos' packages, no torch
#   setup-venv.sh full    (default) everything, with PyTorch and the test tools
# One .venv for both: a light venv is completed by `full`; a full one already has all `light` needs.
# Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-full}
case "$MODE" in
  light|full) ;;
  *) echo "usage: setup-venv.sh [light|full]" >&2; exit 2 ;;
esac
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv" >&2
  "$PY" -m venv .venv
fi
pip() { .venv/bin/python -m pip "$@"; }
if [ "$MODE" = light ]; then
  # The demo's photos ship inside scikit-image and scikit-learn (the int8 extra).
  if ! .venv/bin/python -c "import lookalike, skimage, sklearn" 2>/dev/null; then
    pip install -q -e ".[int8]"
  fi
  exit 0
fi
# torch + torchvision first, as a matching pair: a bare `torch` requirement would
# pull whatever is newest, and torchvision must match torch exactly.
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  # The full .venv is about 6.4 GB (PyTorch's CUDA build is most of it): say so plainly
  # rather than let pip stop half-way with "No space left on device".
  need_kb=$((7 * 1024 * 1024))
  free_kb=$(df -Pk .venv | awk 'NR == 2 { print $4 }')
  if [ "${free_kb:-0}" -lt "$need_kb" ]; then
    echo "setup-venv.sh full: needs about 7 GB free for .venv (PyTorch alone is about 5.5 GB);" \
      "$((free_kb / 1024)) MB free on $(df -P .venv | awk 'NR == 2 { print $6 }')." \
      "Free some space, or run 'bash scripts/setup-venv.sh light' (the demo, no PyTorch)." >&2
    exit 1
  fi
  # No wheel cache: it would hold a second copy of those gigabytes.
  pip install -q --no-cache-dir "torch==${LOOKALIKE_TORCH:-2.14.1}" "torchvision==${LOOKALIKE_TORCHVISION:-0.29.1}"
fi
if ! .venv/bin/python -W ignore -c "import lookalike, pytest, fastapi, timm, efficientnet_lite_pytorch, pymilvus, milvus_lite, cv2" 2>/dev/null; then
  pip install -q -e ".[all,dev]"
fi
# Ray (index --engine ray): its tests start small clusters on this machine.
if ! .venv/bin/python -c "import ray.data, aiohttp_cors" 2>/dev/null; then
  pip install -q -e ".[ray]"
fi
# foolbox only for its 20 labelled ImageNet photos (test data); its own deps aren't needed.
if ! .venv/bin/python -c "import importlib.util as u; assert u.find_spec('foolbox')" 2>/dev/null; then
  pip install -q --no-deps foolbox
fi

#!/usr/bin/env bash
# Creates (or completes) the virtual environment .venv at the repo root.
# Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv" >&2
  "$PY" -m venv .venv
fi
pip() { .venv/bin/python -m pip "$@"; }
# torch + torchvision first, as a matching pair: a bare `torch` requirement would
# pull whatever is newest, and torchvision must match torch exactly.
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  pip install -q "torch==${LOOKALIKE_TORCH:-2.14.1}" "torchvision==${LOOKALIKE_TORCHVISION:-0.29.1}"
fi
if ! .venv/bin/python -c "import lookalike, pytest, fastapi, timm" 2>/dev/null; then
  pip install -q -e ".[all,dev]"
fi
# foolbox only for its 20 labelled ImageNet photos (test data); its own deps aren't needed.
if ! .venv/bin/python -c "import importlib.util as u; assert u.find_spec('foolbox')" 2>/dev/null; then
  pip install -q --no-deps foolbox
fi

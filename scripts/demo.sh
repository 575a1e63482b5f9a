#!/usr/bin/env bash
# The main job: set up .venv if needed, then index the sample photos with the default model,
# search them and write a contact sheet (all offline).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh light  # no PyTorch: the default model needs none
exec .venv/bin/python scripts/demo.py "$@"

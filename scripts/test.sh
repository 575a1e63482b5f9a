#!/usr/bin/env bash
# The test command: sets up .venv if needed, then lint, type-check and the full test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh full
# Headless Chromium for the browser end-to-end test (Debian packages; needs root or sudo).
bash scripts/install-browser.sh || echo "warning: could not install chromium; the browser test will be skipped" >&2
# Debian's wallpapers and Tux Paint's stamps for the quality tests (needs root or sudo);
# once they are in, the tests must find them (they fail rather than skip).
if bash scripts/install-test-photos.sh; then
  export LOOKALIKE_REQUIRE_TEST_PHOTOS=1
else
  echo "warning: could not install the test photos' packages; their quality tests will be skipped" >&2
fi
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy
# A fresh `pip install .` (no extras) in a temp dir: size, index + search offline, no torch.
# Needs the package registry; LOOKALIKE_SKIP_LIGHT_CHECK=1 skips it (e.g. while iterating).
if [ -z "${LOOKALIKE_SKIP_LIGHT_CHECK:-}" ]; then
  bash scripts/check-light-install.sh
fi
# Isolated user state: tests must never touch the user's real collection or cache.
export LOOKALIKE_DB="${TMPDIR:-/tmp}/lookalike-test-db-$$"
# The Milvus contract tests fail here (rather than skip) when pymilvus/milvus-lite are missing.
export LOOKALIKE_REQUIRE_MILVUS=1
.venv/bin/python -m pytest -q "$@"

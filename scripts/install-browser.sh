#!/usr/bin/env bash
# Installs what the end-to-end browser test (tests/test_web_browser.py) needs:
# Debian's chromium + chromium-driver (when /usr/bin/chromium is missing) and the
# Playwright Python package in .venv (which drives that chromium; Playwright's own
# browser download is never used). Non-interactive, quiet, idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-browser: need root or sudo for apt-get" >&2; exit 1; }
    SUDO="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt_install() { $SUDO apt-get install -y -q chromium chromium-driver >/dev/null; }
  # A fresh image may have no package lists yet: update once and retry.
  if ! apt_install 2>/dev/null; then
    $SUDO apt-get update -q >/dev/null
    apt_install
  fi
  echo "install-browser: $(/usr/bin/chromium --version 2>/dev/null)" >&2
fi

if [ -x .venv/bin/python ] && ! .venv/bin/python -c "import playwright" 2>/dev/null; then
  .venv/bin/python -m pip install -q "playwright>=1.40"
fi

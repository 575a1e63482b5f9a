#!/usr/bin/env bash
# Installs the photos of the quality tests (tests/test_quality_baseline.py): the desktop
# pictures of five Debian packages (benchmarks/wallpapers.py, for hard copies) and Tux
# Paint's stamps (benchmarks/stamp_photos.py, cut-out photos in classes): ~370 MB to
# download, ~430 MB installed, no dependencies. Non-interactive, quiet, idempotent.
set -euo pipefail
PACKAGES="plasma-workspace-wallpapers mate-backgrounds gnome-backgrounds ukui-wallpapers lomiri-wallpapers-20.04 tuxpaint-stamps-default"
missing=""
for p in $PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-test-photos: need root or sudo for apt-get" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
apt_install() { $SUDO apt-get install -y -q --no-install-recommends $missing >/dev/null; }
# A fresh image may have no package lists yet: update once and retry.
if ! apt_install 2>/dev/null; then
  $SUDO apt-get update -q >/dev/null
  apt_install
fi
echo "install-test-photos: installed$missing" >&2

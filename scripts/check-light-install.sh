#!/usr/bin/env bash
# The light install, as a new user gets it: a fresh venv in a temp dir with `pip install .`
# (no extras), its size (fails above LOOKALIKE_LIGHT_MAX_MB, default 400), then
# `lookalike index` + `search` on a few PNGs written here, offline, and no torch imported.
# pip's own settings apply as usual (a constraints/cap file only caps packages the light
# install does not pull: torch, torchvision).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
MAX_MB=${LOOKALIKE_LIGHT_MAX_MB:-400}
work=$(mktemp -d "${TMPDIR:-/tmp}/lookalike-light-XXXXXX")
trap 'rm -rf "$work"' EXIT
"$PY" -m venv "$work/venv"
vpy="$work/venv/bin/python"
# Built from a copy of the sources, so nothing is written into this checkout (build/, egg-info).
mkdir "$work/src"
cp -r pyproject.toml README.md src "$work/src/"
"$vpy" -m pip install -q --no-cache-dir "$work/src" 2> >(grep -v "^WARNING: Location" >&2)
size_mb=$(du -sm "$work/venv" | cut -f1)
echo "light install: $size_mb MB (limit $MAX_MB MB)"
if [ "$size_mb" -gt "$MAX_MB" ]; then
  echo "error: the light venv is $size_mb MB, over $MAX_MB MB" >&2
  "$vpy" -m pip list >&2
  exit 1
fi
if "$vpy" -c "import importlib.util as u, sys; sys.exit(0 if u.find_spec('torch') else 1)"; then
  echo "error: pip install . brought torch" >&2
  exit 1
fi
# Offline from here on: any download attempt fails instead of hanging.
export HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY=
export LOOKALIKE_CACHE="$work/cache" LOOKALIKE_DB="$work/db"
"$vpy" - "$work/photos" <<'PY'
import sys
from pathlib import Path

import numpy as np
from PIL import Image

out = Path(sys.argv[1])
out.mkdir()
rng = np.random.default_rng(0)
for i in range(6):
    # Smooth random colour fields: distinct images, each with a shifted near-copy.
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((320, 240), Image.Resampling.BICUBIC)
    image.save(out / f"photo{i}.png")
    if i == 0:
        image.crop((16, 12, 304, 228)).save(out.parent / "query.png")
PY
lk="$work/venv/bin/lookalike"
"$lk" index "$work/photos" --json >/dev/null
"$lk" search "$work/query.png" -k 3 --json >"$work/hits.json"
"$vpy" - "$work/hits.json" <<'PY'
import json
import sys

(answer,) = json.load(open(sys.argv[1]))  # one query
top = answer["results"][0]
# The query is a crop of photo0: it must come first, well ahead of the other images.
assert top["path"].endswith("photo0.png"), answer
assert top["score"] > answer["results"][1]["score"], answer
print(f"light install: index + search ok (top hit {top['path']}, score {top['score']})")
PY
"$vpy" -c "import sys; from PIL import Image; import lookalike.models as m
e = m.create_embedder('efficientnet-lite0'); e.embed_images([Image.new('RGB', (64, 64))])
assert 'torch' not in sys.modules, 'torch was imported'
print('light install: no torch imported')"

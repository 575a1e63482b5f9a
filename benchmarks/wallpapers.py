"""The desktop pictures of five Debian packages, one file per picture: hard_copies.py's
``wallpapers`` set.

Install them with `bash scripts/install-test-photos.sh`, or
``apt-get install plasma-workspace-wallpapers mate-backgrounds gnome-backgrounds
ukui-wallpapers lomiri-wallpapers-20.04`` (or ``apt-get download`` them and ``dpkg -x`` each
into one folder, then pass its ``usr/share`` as ``--wallpaper-root``). Pictures that are
variants of one another are kept once, by rules that involve no model: one size of each
picture (Plasma's largest; "Elephants" not also "Elephants_3840x2160"), GNOME's light
version without its dark one ("grid-l", not "grid-d"), and no picture whose 16x16 grey
thumbnail correlates above 0.95 with one kept before it (MATE's colour variants of one
design correlate at 0.99; the closest two distinct pictures at 0.90).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

WALLPAPER_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
VARIANT_CORRELATION = 0.95


def wallpaper_files(share: Path) -> list[Path]:
    """One file per picture: the largest size of each Plasma wallpaper (not its dark
    version); under backgrounds/, no other size of a picture kept and no GNOME dark
    version of a light one."""
    files = []
    for folder in sorted((share / "wallpapers").glob("*/contents/images")):
        sizes = [p for p in folder.iterdir() if p.suffix.lower() in WALLPAPER_SUFFIXES]
        if sizes:
            files.append(max(sizes, key=lambda p: _pixels(p.stem)))
    backgrounds = sorted(
        p for p in (share / "backgrounds").rglob("*") if p.suffix.lower() in WALLPAPER_SUFFIXES
    )
    stems = {p.stem for p in backgrounds}
    for path in backgrounds:
        base, _, size = path.stem.rpartition("_")
        if (base in stems and _pixels(size)) or (
            path.stem.endswith("-d") and path.stem[:-2] + "-l" in stems
        ):
            continue
        files.append(path)
    return files


def _pixels(stem: str) -> int:
    width, _, height = stem.partition("x")
    return int(width) * int(height) if width.isdigit() and height.isdigit() else 0


def wallpaper_photos(share: Path, side: int) -> dict[str, Image.Image]:
    photos: dict[str, Image.Image] = {}
    kept: list[np.ndarray] = []
    for path in wallpaper_files(share):
        image = Image.open(path).convert("RGB")
        image.thumbnail((side, side), Image.Resampling.LANCZOS)
        grey = np.asarray(ImageOps.grayscale(image).resize((16, 16)), dtype=np.float64).ravel()
        grey = (grey - grey.mean()) / max(float(grey.std()), 1e-9)
        if any(float(grey @ other) / len(grey) > VARIANT_CORRELATION for other in kept):
            continue
        kept.append(grey)
        name = path.parent.parent.parent.name if path.parent.name == "images" else path.stem
        photos[f"wallpaper-{name}"] = image
    if len(photos) < 20:
        raise SystemExit(
            f"{share}: {len(photos)} wallpapers found; install the packages named in "
            "benchmarks/wallpapers.py's docstring, or pass --wallpaper-root"
        )
    return photos

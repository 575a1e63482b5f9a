"""Trimming uniform borders before embedding (a copy-detection trick): measured on
validation data only.

A wide black border is one of the hard edits, and the near-duplicate set's one miss of the
default is a border. Trimming every image (gallery and queries alike) to the bounding box
of what differs from a corner's colour by more than ``tol`` would undo such a border. It
also crops every Fashion-MNIST garment to its own box, and photos with a plain background
to their subject, so it is measured on the validation sets of the choices before it
(validation_sets.py).

Variants: none (the default), trim (any uniform margin), trim>=5% (only when one margin is
at least 5% of its side). The default model and options otherwise.

Usage: python benchmarks/trim_borders.py
Prints one JSON object per variant.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops

sys.path.insert(0, str(Path(__file__).resolve().parent))

import validation_sets
from lookalike.images import load_image
from lookalike.models import DEFAULT_MODEL, ModelOptions, create_embedder

Transform = Callable[[Image.Image], Image.Image]


def trim(image: Image.Image, tol: int = 24, min_margin: float = 0.0) -> Image.Image:
    """The smallest box, over the four corners' colours, outside which every pixel is
    within ``tol`` of that colour; the image itself when the box is under a tenth of a
    side or every margin is under ``min_margin`` of its side."""
    image = image.convert("RGB")
    w, h = image.size
    best: tuple[int, tuple[int, int, int, int]] | None = None
    for corner in ((0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1)):
        background = Image.new("RGB", image.size, image.getpixel(corner))
        diff = ImageChops.difference(image, background).convert("L")
        box = diff.point(lambda v: 255 if v > tol else 0).getbbox()
        if box is not None:
            area = (box[2] - box[0]) * (box[3] - box[1])
            if best is None or area < best[0]:
                best = (area, box)
    if best is None:
        return image
    left, top, right, bottom = best[1]
    if right - left < w * 0.1 or bottom - top < h * 0.1:
        return image
    if max(left / w, top / h, (w - right) / w, (h - bottom) / h) < min_margin:
        return image
    return image.crop(best[1])


def main() -> int:
    model = create_embedder(DEFAULT_MODEL, ModelOptions())
    sets = validation_sets.load()
    variants: dict[str, Transform] = {
        "none": lambda image: image,
        "trim": trim,
        "trim>=5%": lambda image: trim(image, min_margin=0.05),
    }
    for name, transform in variants.items():

        def embed(paths: list[Path], transform: Transform = transform) -> np.ndarray:
            return np.concatenate(
                [
                    model.embed_prepared(
                        [model.prepare(transform(load_image(p))) for p in paths[i : i + 64]]
                    )
                    for i in range(0, len(paths), 64)
                ]
            )

        print(json.dumps({"variant": name, **sets.score(sets.embed(embed))}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

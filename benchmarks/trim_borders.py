"""Trimming uniform borders before embedding (a copy-detection trick): measured on
validation data only.

A wide black border is one of the hard edits, and the near-duplicate set's one miss of the
default is a border. Trimming every image (gallery and queries alike) to the bounding box
of what differs from a corner's colour by more than ``tol`` would undo such a border. It
also crops every Fashion-MNIST garment to its own box, and photos with a plain background
to their subject, so it is measured on the validation sets of the choices before it:

- Fashion-MNIST *train*, first 200 per class, leave-one-out P@10;
- the near-duplicate queries of the even-numbered originals, original at rank 1;
- hard_copies.py's validation set, MRR@5 and rank 1.

Variants: none (the default), trim (any uniform margin), trim>=5% (only when one margin is
at least 5% of its side). The default model and options otherwise.

Usage: python benchmarks/trim_borders.py
Prints one JSON object per variant.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hard_copies
from datasets import write_fashion_mnist
from lookalike.evaluation.dataset import read_dataset
from lookalike.evaluation.metrics import precision_at_k
from lookalike.images import load_image
from lookalike.models import DEFAULT_MODEL, ModelOptions, create_embedder
from near_duplicates import build as build_near_duplicates

CACHE = Path.home() / ".cache" / "lookalike" / "benchmark-data"
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

    def embed(paths: list[Path], transform: Transform) -> np.ndarray:
        chunks = [
            model.embed_prepared(
                [model.prepare(transform(load_image(p))) for p in paths[i : i + 64]]
            )
            for i in range(0, len(paths), 64)
        ]
        return np.concatenate(chunks)

    fm_dir = CACHE / "fashion-mnist-train-200"
    write_fashion_mnist(fm_dir, split="train", per_class=200)
    fm = read_dataset(fm_dir)
    nd = CACHE / "near-duplicates"
    if not (nd / "manifest.json").exists():
        build_near_duplicates(nd)
    gallery = read_dataset(nd / "gallery")
    queries = read_dataset(nd / "queries", classes=gallery.class_names)
    originals = sorted({gallery.class_names[i] for i in queries.labels})
    even = {name for i, name in enumerate(originals) if i % 2 == 0}
    queries = queries.subset(np.array([queries.class_names[i] in even for i in queries.labels]))
    hard_gallery, hard_queries = hard_copies.build("validation", Path(tempfile.mkdtemp()))
    hg = read_dataset(hard_gallery)
    hq = read_dataset(hard_queries, classes=hg.class_names)

    variants: dict[str, Transform] = {
        "none": lambda image: image,
        "trim": trim,
        "trim>=5%": lambda image: trim(image, min_margin=0.05),
    }
    for name, transform in variants.items():
        v = embed(fm.paths, transform)
        sims = v @ v.T
        np.fill_diagonal(sims, -np.inf)
        top = np.argsort(-sims, axis=1)[:, :10]
        p10 = float(precision_at_k(fm.labels, fm.labels[top]).mean())
        g, q = embed(gallery.paths, transform), embed(queries.paths, transform)
        r1 = float((gallery.labels[(q @ g.T).argmax(axis=1)] == queries.labels).mean())
        g, q = embed(hg.paths, transform), embed(hq.paths, transform)
        hit = hg.labels[np.argsort(-(q @ g.T), axis=1)[:, :5]] == hq.labels[:, None]
        reciprocal = np.where(hit.any(axis=1), 1.0 / (hit.argmax(axis=1) + 1), 0.0)
        row = {
            "variant": name,
            "fmnist_val_p10": round(p10, 4),
            "near_dup_val_r1": round(r1, 4),
            "hard_val_mrr5": round(float(reciprocal.mean()), 4),
            "hard_val_r1": round(float(hit[:, 0].mean()), 4),
        }
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

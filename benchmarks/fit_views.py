"""More training views for `lookalike fit`: do shifted and zoomed copies help the adapter?

`fit` trains on frozen vectors. Each step draws one view of each image: the image itself
or, by default, its mirror. This embeds more views of Fashion-MNIST *train* in memory,
from the dataset's own arrays, and fits with the default options on each set of views:

- ``shiftN``: the image shifted by up to 3 pixels each way (of 28), the rest black;
- ``zoomN``: a square crop of 85-100% of the side, jittered, resized back to 28;
- ``mirror``: flipped left-right, as `fit` does.

It prints fit's held-out P@10 (the figure to choose on) and P@10 on the 10,000 test images
(leave-one-out, as adaptation.py scores them). The vectors are cached under ``--work``.

Usage: python benchmarks/fit_views.py [--model efficientnet-lite0-int8@gem-2stage]
           [--views mirror,shift1,shift2,zoom1] [--setups "mirror;mirror+shift1+shift2"]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from adaptation import leave_one_out
from datasets import load_fashion_mnist
from lookalike.fitting import FitOptions, LabelledVectors, fit_vectors
from lookalike.models import create_embedder
from lookalike.paths import cache_dir
from model_spec import model_spec

SHIFT = 3  # pixels, each way
ZOOM = (0.85, 1.0)  # the crop's side, as a fraction of the image's


def shifted(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    dx, dy = (int(v) for v in rng.integers(-SHIFT, SHIFT + 1, size=2))
    out = np.zeros_like(a)
    h, w = a.shape
    src = (slice(max(0, -dy), h - max(0, dy)), slice(max(0, -dx), w - max(0, dx)))
    dst = (slice(max(0, dy), h - max(0, -dy)), slice(max(0, dx), w - max(0, -dx)))
    out[dst] = a[src]
    return out


def zoomed(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    side = a.shape[0]
    crop = round(side * rng.uniform(*ZOOM))
    top, left = (int(v) for v in rng.integers(0, side - crop + 1, size=2))
    small = Image.fromarray(a[top : top + crop, left : left + crop])
    return np.asarray(small.resize((side, side), Image.Resampling.BILINEAR))


def view(images: np.ndarray, kind: str, seed: int) -> Iterator[Image.Image]:
    rng = np.random.default_rng(seed)
    for a in images:
        if kind == "mirror":
            a = a[:, ::-1]
        elif kind.startswith("shift"):
            a = shifted(a, rng)
        elif kind.startswith("zoom"):
            a = zoomed(a, rng)
        yield Image.fromarray(np.ascontiguousarray(a)).convert("RGB")


def embed(embedder: Any, images: np.ndarray, kind: str, seed: int, path: Path) -> np.ndarray:
    if path.exists():
        return np.asarray(np.load(path))
    started = time.perf_counter()
    out, batch = [], []
    for image in view(images, kind, seed):
        batch.append(embedder.prepare(image))
        if len(batch) == 64:
            out.append(embedder.embed_prepared(batch))
            batch = []
    if batch:
        out.append(embedder.embed_prepared(batch))
    vectors = np.concatenate(out)
    np.save(path, vectors)
    seconds = round(time.perf_counter() - started, 1)
    print(json.dumps({"embedded": path.stem, "images": len(vectors), "seconds": seconds}))
    return vectors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--model", default="efficientnet-lite0-int8@gem-2stage")
    parser.add_argument("--views", default="mirror,shift1,shift2,zoom1")
    parser.add_argument(
        "--setups", default="mirror;mirror+shift1+shift2;mirror+shift1+shift2+zoom1"
    )
    parser.add_argument("--work", type=Path, default=cache_dir() / "benchmark-data" / "fit-views")
    args = parser.parse_args(argv)
    name, options = model_spec(args.model)
    embedder = create_embedder(name, options)
    work = args.work / args.model.replace("@", "_").replace("/", "_")
    work.mkdir(parents=True, exist_ok=True)
    train_x, train_y = load_fashion_mnist("train")
    test_x, test_y = load_fashion_mnist("test")
    kinds = ["orig", *args.views.split(",")]
    views = {
        kind: embed(embedder, train_x, kind, seed, work / f"train-{kind}.npy")
        for seed, kind in enumerate(kinds)
    }
    test = embed(embedder, test_x, "orig", 0, work / "test-orig.npy")
    labels, test_labels = train_y.astype(np.int64), test_y.astype(np.int64)
    print(
        json.dumps({"model": args.model, "adapter": None, "test": leave_one_out(test, test_labels)})
    )
    classes = [str(c) for c in range(10)]
    for setup in args.setups.split(";"):
        extra = [v for v in setup.split("+") if v]
        data = LabelledVectors(
            views["orig"],
            labels,
            classes,
            embedder.info.identity(),
            views=[views[v] for v in extra],
        )
        row: dict[str, Any] = {"model": args.model, "views": ["orig", *extra]}
        print(json.dumps(row | fit_and_score(data, test, test_labels)), flush=True)
    return 0


def fit_and_score(data: LabelledVectors, test: np.ndarray, test_labels: np.ndarray) -> dict:
    """Fit with the default options; fit's held-out P@10 and the test set's, leave-one-out."""
    started = time.perf_counter()
    adapter, report = fit_vectors(data, FitOptions())
    return {
        "held_out_before": report.val_precision_before,
        "held_out_after": report.val_precision_after,
        "fit_seconds": round(time.perf_counter() - started),
        "test": leave_one_out(adapter.apply(test), test_labels),
    }


if __name__ == "__main__":
    sys.exit(main())

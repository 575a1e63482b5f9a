"""Choose the retrieval preprocessing geometry by measurement, on validation data only.

Variants (all lite0, same network, same (x-127)/128 in the graph; only the Python-side
geometry differs): the ImageNet eval crop (recipe 2), the whole image squashed to the
square, mild crops of each side, and keep-aspect padding (letterboxed with grey 127, which
the graph normalises to ~0).

Validation data, apart from every reported figure:
- Fashion-MNIST *train*, first 200 per class (2,000), leave-one-out precision@10;
- the near-duplicate set's queries of every other original (sorted by name, even
  positions), against the whole gallery: the original at rank 1.

Usage: python benchmarks/choose_recipe.py [--work DIR]
Prints one JSON object per variant.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from datasets import write_fashion_mnist
from lookalike.evaluation.dataset import read_dataset
from lookalike.evaluation.metrics import precision_at_k
from lookalike.images import load_image
from lookalike.models import ModelOptions, create_embedder
from lookalike.models.preprocess import Preprocess
from near_duplicates import build as build_near_duplicates

SIZE = 224
Geometry = Callable[[Image.Image], np.ndarray]


def letterbox(image: Image.Image) -> np.ndarray:
    """Keep the aspect ratio: the long side to SIZE, the rest padded with grey 127."""
    image = image.convert("RGB")
    scale = SIZE / max(image.size)
    w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    canvas = Image.new("RGB", (SIZE, SIZE), (127, 127, 127))
    canvas.paste(image.resize((w, h), Image.Resampling.BICUBIC), ((SIZE - w) // 2, (SIZE - h) // 2))
    return np.asarray(canvas, dtype=np.uint8)


def variants() -> dict[str, Geometry]:
    out: dict[str, Geometry] = {
        "crop-224/256 (recipe 2)": Preprocess.tf_efficientnet(SIZE, recipe=2).pixels,
    }
    for fraction in (1.0, 0.95, 0.9):
        pre = Preprocess(
            size=SIZE,
            crop_fraction=fraction,
            mean=(127.0,) * 3,
            std=(128.0,) * 3,
            scale=1.0,
        )
        out[f"whole x{fraction} squashed"] = pre.pixels
    out["keep-aspect letterbox"] = letterbox
    return out


def embed(model: object, geometry: Geometry, paths: list[Path]) -> np.ndarray:
    vectors = [
        model.embed_prepared([geometry(load_image(p)) for p in paths[i : i + 64]])  # type: ignore[attr-defined]
        for i in range(0, len(paths), 64)
    ]
    return np.concatenate(vectors)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/lookalike-choose"))
    args = parser.parse_args(argv)
    fm_dir = args.work / "fashion-mnist-train-200"
    write_fashion_mnist(fm_dir, split="train", per_class=200)
    nd_dir = args.work / "near-duplicates"
    if not (nd_dir / "manifest.json").exists():
        build_near_duplicates(nd_dir)
    fm = read_dataset(fm_dir)
    gallery = read_dataset(nd_dir / "gallery")
    queries = read_dataset(nd_dir / "queries", classes=gallery.class_names)
    originals = sorted({gallery.class_names[i] for i in queries.labels})
    validation = {name for i, name in enumerate(originals) if i % 2 == 0}
    keep = np.array([queries.class_names[i] in validation for i in queries.labels])
    queries = queries.subset(keep)

    model = create_embedder("efficientnet-lite0", ModelOptions())
    for name, geometry in variants().items():
        v = embed(model, geometry, fm.paths)
        sims = v @ v.T
        np.fill_diagonal(sims, -np.inf)
        top = np.argsort(-sims, axis=1)[:, :10]
        p10 = float(precision_at_k(fm.labels, fm.labels[top]).mean())
        g, q = embed(model, geometry, gallery.paths), embed(model, geometry, queries.paths)
        r1 = float((gallery.labels[(q @ g.T).argmax(axis=1)] == queries.labels).mean())
        print(
            json.dumps(
                {
                    "variant": name,
                    "fmnist_val_p10": round(p10, 4),
                    "near_dup_val_r1": round(r1, 4),
                    "queries": len(queries),
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

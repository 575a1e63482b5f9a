"""Unsupervised feature variants on cached embeddings: ensembles, flips, GeM, PCA-whitening.

Every variant is scored the same way as benchmarks/rerank_quality.py (same sets, same
metrics, exact search; optionally with query expansion on top):

- ``lite0`` / ``lite1`` / ``lite2``: one network at its native size (224/240/260);
- ``lite0+lite1`` ...: the concatenation of each network's unit vector, scaled so the
  combined cosine is the mean of the parts' (what models/combined.py computes);
- ``lite0-flip``: mean of the vectors of the image and its mirror image;
- ``lite0-gem``: generalised-mean pooling (the graph's p = 3) instead of average pooling
  (``gem2stage``: the gem-2stage pooling);
  tags combine: ``lite0-int8-gem-r4`` (int8 model, GeM, preprocessing recipe 4); with any
  tag, a pooling or recipe left out is the old default's (avg, recipe 3), so ``lite0-gem``
  means what it did; a bare ``lite0`` is this version's default (GeM, recipe 4);
- ``...|pcaw-D``: PCA-whitening to D dimensions learned on the set's own gallery (no
  labels), ``|pcaw-D-0.5``: eigenvalues raised to -0.25 instead of -0.5 (half whitening).

Vectors come from ``lookalike eval``'s cache (benchmarks/quality.py fills it); mirrored
vectors are computed here once and kept under --cache as .npy.

Usage:
    python benchmarks/ensemble_quality.py --sets fashion-mnist-val,near-duplicates-val \
        --variants "lite0;lite0+lite1;lite0|pcaw-256" [--qe]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lookalike.evaluation.dataset import LabelledImages, read_dataset
from lookalike.evaluation.runner import embed_labelled
from lookalike.images import load_image
from lookalike.models import ModelOptions, create_embedder
from lookalike.models.pooling import STAGE_WEIGHT
from lookalike.paths import cache_dir
from lookalike.vectors import l2_normalize
from quality import prepare
from rerank_quality import _half, run

MODELS = {
    "lite0": "efficientnet-lite0",
    "lite1": "efficientnet-lite1",
    "lite2": "efficientnet-lite2",
}


class Vectors:
    """The vectors of one labelled folder for each feature source, computed once."""

    def __init__(self, images: LabelledImages, cache: Path) -> None:
        self.images = images
        self.cache = cache

    def source(self, name: str) -> np.ndarray:
        if name in MODELS:
            return embed_labelled(self.images, MODELS[name]).vectors
        base, *tags = name.split("-")
        if base in MODELS and tags and set(tags) <= {"gem", "gem2stage", "avg", "int8", "r3", "r4"}:
            # e.g. lite0-int8-gem-r4: the int8 model, GeM pooling, preprocessing recipe 4
            model = MODELS[base] + ("-int8" if "int8" in tags else "")
            pool = "gem-2stage" if "gem2stage" in tags else "gem" if "gem" in tags else "avg"
            recipe = 4 if "r4" in tags else 3
            options = ModelOptions(pool=pool, recipe=recipe)
            return embed_labelled(self.images, model, options).vectors
        if name == "lite0-flip":
            plain = self.source("lite0")
            return l2_normalize(plain + self._mirrored("efficientnet-lite0"))
        raise SystemExit(f"unknown feature source {name!r}")

    def _mirrored(self, model: str) -> np.ndarray:
        key = hashlib.sha1(f"{self.images.root}|{len(self.images.paths)}|{model}".encode())
        path = self.cache / f"mirror-{key.hexdigest()[:12]}.npy"
        if path.exists():
            return np.load(path)
        embedder = create_embedder(model, ModelOptions())
        out = []
        for start in range(0, len(self.images.paths), 64):
            chunk = self.images.paths[start : start + 64]
            batch: list[Image.Image] = [
                ImageOps.mirror(load_image(p, min_side=embedder.draft_size)) for p in chunk
            ]
            out.append(embedder.embed_images(batch))
        vectors = np.vstack(out).astype(np.float32)
        self.cache.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors)
        return vectors


def combine(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenated unit vectors / sqrt(n): cosine = the mean of the parts' cosines."""
    return np.ascontiguousarray(np.hstack(parts) / np.sqrt(len(parts)), dtype=np.float32)


def pca_whitening(gallery: np.ndarray, dims: int, power: float = 0.5) -> tuple:
    """(mean, projection) learned on the gallery alone: x -> (x - mean) @ projection."""
    mean = gallery.mean(axis=0)
    centred = (gallery - mean).astype(np.float64)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    dims = min(dims, len(s) - 1)
    eig = (s[:dims] ** 2) / max(len(gallery) - 1, 1)
    projection = vt[:dims].T / np.power(eig + 1e-6 * eig[0], power)
    return mean, projection


def apply(variant: str, sets: dict[str, Vectors]) -> dict[str, np.ndarray]:
    """The variant's vectors for "gallery" and, when there are separate queries, "queries"."""
    features, _, post = variant.partition("|")
    out = {role: combine([v.source(f) for f in features.split("+")]) for role, v in sets.items()}
    if post.startswith("pcaw-"):
        bits = post.split("-")
        power = 0.5 * float(bits[2]) if len(bits) > 2 else 0.5
        mean, projection = pca_whitening(out["gallery"], int(bits[1]), power)
        out = {r: l2_normalize((v - mean) @ projection) for r, v in out.items()}
    elif post.startswith("stagew-"):
        # a gem-2stage vector (head first, the stage part at weight STAGE_WEIGHT) reweighted
        head = 1280
        scale = float(post.split("-")[1]) / STAGE_WEIGHT
        out = {
            r: l2_normalize(np.hstack([v[:, :head], scale * v[:, head:]])) for r, v in out.items()
        }
    elif post:
        raise SystemExit(f"unknown post-processing {post!r}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default="fashion-mnist-val,near-duplicates-val")
    parser.add_argument("--variants", default="lite0;lite0+lite1;lite0+lite1+lite2")
    parser.add_argument("--qe", action="store_true", help="also score each with --rerank qe")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/lookalike-ensemble"))
    args = parser.parse_args(argv)
    from lookalike.reranking import Rerank

    work = args.work or cache_dir() / "benchmark-data"
    for name in args.sets.split(","):
        dataset = "near-duplicates" if name.startswith("near-duplicates") else name
        gallery_dir, query_dir = prepare(dataset, work)
        gallery = read_dataset(gallery_dir)
        sets = {"gallery": Vectors(gallery, args.cache)}
        keep = None
        if query_dir is not None:
            queries = read_dataset(query_dir, classes=gallery.class_names)
            sets["queries"] = Vectors(queries, args.cache)
            everything = np.ones(len(queries), dtype=bool)
            keep = everything if name == dataset else _half(queries, name.endswith("-test"))
        for variant in args.variants.split(";"):
            started = time.perf_counter()
            vectors = apply(variant, sets)
            q = None if keep is None else vectors["queries"][keep]
            q_labels = gallery.labels if keep is None else sets["queries"].images.labels[keep]
            for rerank in [None, Rerank("qe")] if args.qe else [None]:
                result = run(vectors["gallery"], gallery.labels, q, q_labels, rerank)
                print(
                    json.dumps(
                        {
                            "set": name,
                            "variant": variant,
                            "rerank": "qe" if rerank else "none",
                            "dim": int(vectors["gallery"].shape[1]),
                            **result,
                            "seconds": round(time.perf_counter() - started, 1),
                        }
                    ),
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The three validation sets that retrieval choices are made on, loaded and scored alike
(trim_borders.py, power_norm.py; choose_recipe.py and feature_variants.py use the same
sets with code of their own):

- Fashion-MNIST *train*, first 200 per class (2,000), leave-one-out P@10;
- the near-duplicate queries of the even-numbered originals against the whole gallery,
  original at rank 1;
- hard_copies.py's validation set (120 heavy edits of foolbox's photos, 30-image gallery),
  MRR@5 and rank 1;
- stamp_photos.py's ``photos-val`` (94 cut-out photos in ten classes), leave-one-out P@5.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hard_copies
from datasets import write_fashion_mnist
from lookalike.evaluation.dataset import LabelledImages, read_dataset
from lookalike.evaluation.metrics import precision_at_k
from near_duplicates import build as build_near_duplicates
from stamp_photos import write_stamp_photos

CACHE = Path.home() / ".cache" / "lookalike" / "benchmark-data"
Embed = Callable[[list[Path]], np.ndarray]  # files -> (n, d) unit vectors


@dataclass
class ValidationSets:
    fashion_mnist: LabelledImages
    near_dup_gallery: LabelledImages
    near_dup_queries: LabelledImages
    hard_gallery: LabelledImages
    hard_queries: LabelledImages
    photos: LabelledImages

    def embed(self, embed: Embed) -> dict[str, np.ndarray]:
        """Vectors of every set's files, by the names score() reads."""
        return {name: embed(list(getattr(self, name).paths)) for name in self.__dataclass_fields__}

    def score(self, vectors: dict[str, np.ndarray]) -> dict[str, float]:
        p10 = _leave_one_out_precision(self.fashion_mnist, vectors["fashion_mnist"], 10)
        p5 = _leave_one_out_precision(self.photos, vectors["photos"], 5)
        g, q = self.near_dup_gallery, self.near_dup_queries
        best = (vectors["near_dup_queries"] @ vectors["near_dup_gallery"].T).argmax(axis=1)
        r1 = float((g.labels[best] == q.labels).mean())
        g, q = self.hard_gallery, self.hard_queries
        order = np.argsort(-(vectors["hard_queries"] @ vectors["hard_gallery"].T), axis=1)
        hit = g.labels[order[:, :5]] == q.labels[:, None]
        reciprocal = np.where(hit.any(axis=1), 1.0 / (hit.argmax(axis=1) + 1), 0.0)
        return {
            "fmnist_val_p10": round(p10, 4),
            "near_dup_val_r1": round(r1, 4),
            "hard_val_mrr5": round(float(reciprocal.mean()), 4),
            "hard_val_r1": round(float(hit[:, 0].mean()), 4),
            "photos_val_p5": round(p5, 4),
        }


def _leave_one_out_precision(images: LabelledImages, vectors: np.ndarray, k: int) -> float:
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argsort(-sims, axis=1)[:, :k]
    return float(precision_at_k(images.labels, images.labels[top]).mean())


def load() -> ValidationSets:
    fm_dir = CACHE / "fashion-mnist-train-200"
    write_fashion_mnist(fm_dir, split="train", per_class=200)
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
    photos_dir = CACHE / "photos-val"
    write_stamp_photos("photos-val", photos_dir)
    return ValidationSets(
        read_dataset(fm_dir),
        gallery,
        queries,
        hg,
        read_dataset(hard_queries, classes=hg.class_names),
        read_dataset(photos_dir),
    )

"""Average and GeM pooling of the same network, fused: is one vector at or above the reports
on every set?

GeM (the default's pooling) wins Fashion-MNIST and copies, average pooling wins the
class-level photo sets (BENCHMARKS.md "Cut-out photos in classes"). This scores, on the
same files and in the same run as the reports' pipeline, each source's vectors and fusions
of two sources:

- ``A``: one source's unit vectors;
- ``A+B@w``: both unit vectors concatenated, scaled so the cosine is (1 - w) cos_A + w cos_B
  (twice the dimensions);
- ``A~B@w``: (1 - w) A + w B of the two unit vectors, normalised (the same dimensions;
  w = 0.5 when left out).

Sources are ``name=model spec`` (model_spec.py's ``model@pool/recipe``); the reports' pipeline
(``reports``) is always there. Sets, as in the other benchmarks (``-val`` ones to choose):
photos-val / photos (leave-one-out, P@5), fashion-mnist-val / fashion-mnist (leave-one-out,
P@10), near-duplicates-val / -test (the queries of the even / odd originals, original at
rank 1), hard-copies-val / -test and wallpapers-val / -test (hard_copies.py's sets:
original at rank 1, MRR@5).

Usage:
    python benchmarks/pool_fusion.py --sets photos-val,fashion-mnist-val \
        --sources "gem=efficientnet-lite0-int8,avg=efficientnet-lite0-int8@avg/r4" \
        --variants "gem;avg;gem+avg@0.5;gem~avg"
Prints one JSON object per set and variant.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reports_pipeline
from hard_copies import SET_NAMES
from hard_copies import build as build_hard_copies
from lookalike.evaluation.dataset import LabelledImages, read_dataset
from lookalike.evaluation.metrics import average_precision_at_k, precision_at_k
from lookalike.evaluation.paired import compare
from lookalike.evaluation.runner import embed_labelled, nearest
from lookalike.paths import cache_dir
from lookalike.vectors import l2_normalize
from model_spec import model_spec
from quality import prepare
from rerank_quality import _half

LEAVE_ONE_OUT_K = {"photos": 5, "photos-val": 5, "fashion-mnist": 10, "fashion-mnist-val": 10}
COPY_SETS = ("near-duplicates", "near-duplicates-val", "near-duplicates-test", *SET_NAMES)
COPY_K = 5


def folders(name: str, work: Path) -> tuple[LabelledImages, LabelledImages | None, np.ndarray]:
    """(gallery, queries or None for leave-one-out, which queries count)."""
    if name in LEAVE_ONE_OUT_K:
        gallery_dir, _ = prepare(name, work)
        gallery = read_dataset(gallery_dir)
        return gallery, None, np.ones(len(gallery), dtype=bool)
    if name.startswith("near-duplicates"):
        gallery_dir, query_dir = prepare("near-duplicates", work)
        assert query_dir is not None
        gallery = read_dataset(gallery_dir)
        queries = read_dataset(query_dir, classes=gallery.class_names)
        if name == "near-duplicates":
            return gallery, queries, np.ones(len(queries), dtype=bool)
        return gallery, queries, _half(queries, name.endswith("-test"))
    root = work / f"pool-fusion-{name}"
    if not (root / "gallery").exists():
        build_hard_copies(SET_NAMES[name], root)
    gallery = read_dataset(root / "gallery")
    queries = read_dataset(root / "queries", classes=gallery.class_names)
    return gallery, queries, np.ones(len(queries), dtype=bool)


def reports_vectors(paths: list[str], cache: Path) -> np.ndarray:
    """The reports' pipeline's unit vectors of these files, kept as .npy by their list (the
    files of these sets are written once and not changed)."""
    key = hashlib.sha256("\n".join(paths).encode()).hexdigest()[:16]
    stored = cache / f"{key}.npy"
    if stored.exists():
        return np.load(stored)
    vectors = l2_normalize(reports_pipeline.embed(paths))
    cache.mkdir(parents=True, exist_ok=True)
    np.save(stored, vectors)
    return vectors


def fuse(variant: str, vectors: dict[str, np.ndarray]) -> np.ndarray:
    if "~" in variant:
        a, rest = variant.split("~")
        b, _, weight = rest.partition("@")
        w = float(weight or 0.5)
        return l2_normalize((1.0 - w) * vectors[a] + w * vectors[b])
    if "+" in variant:
        a, rest = variant.split("+")
        b, _, weight = rest.partition("@")
        w = float(weight or 0.5)
        return np.hstack([np.sqrt(1.0 - w) * vectors[a], np.sqrt(w) * vectors[b]])
    return vectors[variant]


def score(
    name: str,
    gallery: np.ndarray,
    g_labels: np.ndarray,
    queries: np.ndarray | None,
    q_labels: np.ndarray,
) -> tuple[dict[str, float], np.ndarray]:
    """``lookalike eval``'s exact search and metrics: the measures the other benchmarks
    print, and each query's P@k (leave-one-out) or reciprocal rank of its original within 5
    (AP@5 with one relevant image)."""
    gallery = np.ascontiguousarray(gallery, dtype=np.float32)
    if queries is None:
        k = LEAVE_ONE_OUT_K[name]
        found, _ = nearest(gallery, gallery, k, exclude_self=True)
        precision = precision_at_k(g_labels, g_labels[found])
        return {f"precision_at_{k}": round(float(precision.mean()), 4)}, precision
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    labels = g_labels[nearest(gallery, queries, COPY_K, exclude_self=False)[0]]
    reciprocal = average_precision_at_k(q_labels, labels, np.ones(len(q_labels)))
    return {
        "at_rank_1": round(float((labels[:, 0] == q_labels).mean()), 4),
        "mrr_at_5": round(float(reciprocal.mean()), 4),
    }, reciprocal


def run_set(name: str, work: Path, sources: dict[str, str], variants: list[str]) -> None:
    """Embed one set with every source (and the reports), print a row per variant."""
    gallery, queries, keep = folders(name, work)
    started = time.perf_counter()
    vectors: dict[str, dict[str, np.ndarray]] = {"gallery": {}, "queries": {}}
    roles = {"gallery": gallery} if queries is None else {"gallery": gallery, "queries": queries}
    for role, images in roles.items():
        paths = [str(p) for p in images.paths]
        vectors[role]["reports"] = reports_vectors(paths, work / "pool-fusion-reports")
        for source, spec in sources.items():
            model, options = model_spec(spec)
            # lookalike eval's own cache: a second run embeds nothing
            vectors[role][source] = l2_normalize(embed_labelled(images, model, options).vectors)
    seconds = round(time.perf_counter() - started, 1)
    q_labels = gallery.labels if queries is None else queries.labels[keep]

    def scored(variant: str) -> tuple[int, dict[str, float], np.ndarray]:
        g = fuse(variant, vectors["gallery"])
        q = None if queries is None else fuse(variant, vectors["queries"])[keep]
        return g.shape[1], *score(name, g, gallery.labels, q, q_labels)

    _, _, reports_per_query = scored("reports")
    for variant in variants:
        dim, measures, per_query = scored(variant)
        row = {"set": name, "variant": variant, "dim": dim, "queries": len(q_labels)}
        row |= measures
        if variant != "reports":  # each query paired with the reports' on it
            row["against_reports"] = compare(per_query, reports_per_query).to_json()
        print(json.dumps({**row, "embed_s": seconds}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sets", default="photos-val,fashion-mnist-val,hard-copies-val")
    parser.add_argument(
        "--sources", default="gem=efficientnet-lite0-int8,avg=efficientnet-lite0-int8@avg/r4"
    )
    parser.add_argument("--variants", default="reports;gem;avg;gem+avg@0.5;gem~avg")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args(argv)
    work = args.work or cache_dir() / "benchmark-data"
    sources = dict(s.split("=", 1) for s in args.sources.split(","))
    for name in args.sets.split(","):
        if name not in LEAVE_ONE_OUT_K and name not in COPY_SETS:
            raise SystemExit(f"unknown set {name!r}")
        run_set(name, work, sources, args.variants.split(";"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

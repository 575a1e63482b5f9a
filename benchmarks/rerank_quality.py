"""Re-ranking at search time (lookalike.reranking) on cached embeddings: quality per setup.

Each setup goes through the same ``rerank_search`` that ``lookalike search --rerank`` uses,
with exact search over the set's vectors as the neighbour callback.

Sets (the vectors come from ``lookalike eval``'s cache; benchmarks/quality.py fills it):
- fashion-mnist-val: Fashion-MNIST *train*, first 200 per class (validation), leave-one-out;
- near-duplicates-val / near-duplicates-test: the near-duplicate queries of the even / odd
  originals (sorted by name, as benchmarks/choose_recipe.py splits them) against the whole
  gallery (near-duplicates: all 444 queries);
- fashion-mnist: the 10,000 test images, leave-one-out (reported, never used to choose).

Usage:
    python benchmarks/rerank_quality.py --sets fashion-mnist-val,near-duplicates-val --grid
    python benchmarks/rerank_quality.py --sets fashion-mnist,near-duplicates-test \
        --setups "none;qe;dba+qe:n=3"

Prints one JSON object per (set, setup): P@10 and mAP@10 (Fashion-MNIST), recall@1 and
MRR@10 (near duplicates), and the re-ranking's seconds per query.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lookalike.evaluation.dataset import LabelledImages, read_dataset
from lookalike.evaluation.metrics import average_precision_at_k, precision_at_k
from lookalike.evaluation.runner import embed_labelled
from lookalike.index.base import SearchHits
from lookalike.index.exact import topk_blockwise
from lookalike.paths import cache_dir
from lookalike.reranking import Rerank, parse_rerank, rerank_search
from quality import prepare

K = 10
GRID = [
    "none",
    *[f"qe:n={n},alpha={a}" for n in (1, 2, 3, 5, 10) for a in (1, 3)],
    *[f"dba:n={n},alpha={a}" for n in (2, 3, 5) for a in (1, 3)],
    *[f"dba+qe:n={n},alpha={a}" for n in (2, 3, 5) for a in (1, 3)],
    *[f"kr:k1={k1},k2={k2},lam={lam}" for k1 in (10, 20) for k2 in (1, 3, 6) for lam in (0.3, 0.6)],
]


def load(
    name: str, work: Path, model: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """(gallery vectors, gallery labels, query vectors or None for leave-one-out, query labels)."""
    dataset = "near-duplicates" if name.startswith("near-duplicates") else name
    gallery_dir, query_dir = prepare(dataset, work)
    gallery = embed_labelled(read_dataset(gallery_dir), model)
    if query_dir is None:
        return gallery.vectors, gallery.images.labels, None, gallery.images.labels
    queries = embed_labelled(read_dataset(query_dir, classes=gallery.images.class_names), model)
    keep = (
        np.ones(len(queries.images), dtype=bool)
        if name == "near-duplicates"
        else _half(queries.images, odd=name.endswith("-test"))
    )
    return (
        gallery.vectors,
        gallery.images.labels,
        queries.vectors[keep],
        queries.images.labels[keep],
    )


def _half(queries: LabelledImages, odd: bool) -> np.ndarray:
    """Queries of every other original (choose_recipe.py's validation split when even)."""
    originals = sorted({queries.class_names[i] for i in queries.labels})
    chosen = {name for i, name in enumerate(originals) if i % 2 == int(odd)}
    return np.array([queries.class_names[i] in chosen for i in queries.labels])


def run(
    gallery: np.ndarray,
    g_labels: np.ndarray,
    queries: np.ndarray | None,
    q_labels: np.ndarray,
    setup: Rerank | None,
) -> dict[str, float]:
    ids = np.arange(len(gallery), dtype=np.int64)
    q = gallery if queries is None else queries
    exclude = ids if queries is None else None

    def neighbours(v: np.ndarray, k: int) -> SearchHits:
        return topk_blockwise(gallery, ids, v, k)

    def vectors_of(wanted: np.ndarray) -> np.ndarray:
        return gallery[wanted]

    started = time.perf_counter()
    found = np.empty((len(q), K), dtype=np.int64)
    for s in range(0, len(q), 1024):
        hits = rerank_search(
            q[s : s + 1024],
            K,
            neighbours,
            vectors_of,
            setup or Rerank(method="none"),
            None if exclude is None else exclude[s : s + 1024],
        )
        found[s : s + 1024] = hits.ids
    seconds = time.perf_counter() - started
    labels = g_labels[found]
    out = {"seconds_per_query": round(seconds / len(q), 5), "queries": len(q)}
    if queries is None:
        n_rel = np.bincount(g_labels)[q_labels] - 1
        out["precision_at_10"] = round(float(precision_at_k(q_labels, labels).mean()), 4)
        out["map_at_10"] = round(
            float(np.nanmean(average_precision_at_k(q_labels, labels, n_rel))), 4
        )
    else:
        rel = labels == q_labels[:, None]
        out["recall_at_1"] = round(float(rel[:, 0].mean()), 4)
        first = np.where(rel.any(axis=1), rel.argmax(axis=1) + 1, np.inf)
        out["mrr_at_10"] = round(float((1.0 / first).mean()), 4)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default="fashion-mnist-val,near-duplicates-val")
    parser.add_argument("--setups", default="none;qe", help="setups separated by ;")
    parser.add_argument("--grid", action="store_true", help="the validation grid of setups")
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args(argv)
    work = args.work or cache_dir() / "benchmark-data"
    setups = GRID if args.grid else args.setups.split(";")
    for name in args.sets.split(","):
        data = load(name, work, args.model)
        for text in setups:
            result = run(*data, parse_rerank(text))
            print(json.dumps({"set": name, "rerank": text, **result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

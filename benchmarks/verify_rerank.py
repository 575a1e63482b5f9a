"""``--rerank verify`` (geometric verification of the shortlist): quality and cost per setup.

Goes through ``Collection.search`` with the default model, as ``lookalike search IMAGE
--rerank ...`` does, on:
- hard-copies-val / hard-copies-test: hard_copies.py's heavy edits (corner crop, edge
  strip, 60-degree rotation, grey crop, wide border, squash) of foolbox's photos plus
  distractors (validation) or of the quality-baseline test's photos (test); MRR@5 of the
  original and recall@1, with the reports' pipeline (no re-ranking) in the same run;
- wallpapers-val / wallpapers-test / wallpapers: the same edits of Debian's wallpapers
  (hard_copies.py's halves of them, or all 79), scored the same way;
- near-duplicates-val / near-duplicates-test: near_duplicates.py's queries of the even /
  odd originals (rerank_quality.py's split) against the whole gallery; recall@1, MRR@10;
- fashion-mnist-val: Fashion-MNIST train, first 200 per class, leave-one-out (search by
  id, so verification runs on the stored files): P@10, to see that it leaves class-level
  retrieval alone.

Usage: python benchmarks/verify_rerank.py [--sets a,b] [--setups "none;verify;verify:inliers=20"]
Prints one JSON object per (set, setup), with the search's seconds per query.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hard_copies
import reports_pipeline
from lookalike.collection import Collection
from lookalike.evaluation.dataset import read_dataset
from lookalike.paths import cache_dir
from lookalike.reranking import parse_rerank
from quality import prepare
from rerank_quality import _half

SETS = ("hard-copies-val", "near-duplicates-val", "fashion-mnist-val")


def _label(path: str | Path) -> str:
    return Path(path).parent.name


def _ranks(results: list[Any], truth: list[str], k: int) -> np.ndarray:
    """Rank (1-based) of the first hit with the query's label within the top k; 0: none."""
    out = np.zeros(len(truth), dtype=int)
    for i, (result, label) in enumerate(zip(results, truth, strict=True)):
        for hit in result.results[:k]:
            if _label(hit.path) == label:
                out[i] = hit.rank
                break
    return out


def _copies_row(ranks: np.ndarray, k: int) -> dict[str, float]:
    reciprocal = np.where(ranks > 0, 1.0 / np.maximum(ranks, 1), 0.0)
    return {
        f"mrr_at_{k}": round(float(reciprocal.mean()), 4),
        "recall_at_1": round(float((ranks == 1).mean()), 4),
    }


def _queries(name: str, work: Path) -> tuple[Path, list[Path] | None, int]:
    """(gallery folder, query files or None for leave-one-out, k)."""
    if name in hard_copies.SET_NAMES:
        root = Path(tempfile.mkdtemp(prefix="lookalike-verify-"))
        gallery, queries = hard_copies.build(hard_copies.SET_NAMES[name], root)
        return gallery, sorted(queries.rglob("*.jpg")), hard_copies.K
    if name.startswith("near-duplicates"):
        gallery, query_dir = prepare("near-duplicates", work)
        assert query_dir is not None
        labelled = read_dataset(query_dir)
        keep = _half(labelled, odd=name.endswith("test"))
        return gallery, [p for p, kept in zip(labelled.paths, keep, strict=True) if kept], 10
    gallery, _ = prepare(name, work)
    return gallery, None, 10


def _setup_row(
    col: Collection, name: str, text: str, queries: list[Path] | None, k: int
) -> dict[str, Any]:
    setup = parse_rerank(text)
    started = time.perf_counter()
    if queries is None:  # leave-one-out: every stored image is a query
        results = list(col.search_all(k=k, rerank=setup))
        truth = [_label(r.query) for r in results]
    else:
        results = col.search(queries, k=k, rerank=setup)
        truth = [_label(q) for q in queries]
    seconds = (time.perf_counter() - started) / len(results)
    row: dict[str, Any] = {"set": name, "setup": text, "model": col.model_name}
    row["queries"] = len(results)
    if queries is None:
        relevant = [
            np.mean([_label(h.path) == t for h in r.results])
            for r, t in zip(results, truth, strict=True)
        ]
        row["precision_at_10"] = round(float(np.mean(relevant)), 4)
    else:
        row |= _copies_row(_ranks(results, truth, k), k)
    return row | {"seconds_per_query": round(seconds, 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--setups", default="none;verify")
    parser.add_argument("--no-reports", action="store_true")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args(argv)
    work = args.work or cache_dir() / "benchmark-data"
    for name in args.sets.split(","):
        gallery, queries, k = _queries(name, work)
        with (
            tempfile.TemporaryDirectory(prefix="lookalike-verify-db-") as db,
            Collection.open(db, create=True) as col,
        ):
            col.index([gallery])
            for text in args.setups.split(";"):
                print(json.dumps(_setup_row(col, name, text, queries, k)), flush=True)
        if queries is not None and name in hard_copies.SET_NAMES and not args.no_reports:
            out = reports_pipeline.evaluate(gallery, queries[0].parents[1], k)
            row = {"set": name, "setup": reports_pipeline.NAME, "queries": out["queries"]}
            row |= {f"mrr_at_{k}": round(out["map_at_k"], 4)}
            row["recall_at_1"] = round(float(np.mean(out["top1_correct"])), 4)
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

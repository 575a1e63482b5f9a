"""Exact (brute-force) search over a possibly memory-mapped matrix, in bounded memory.

The matrix is scanned in blocks, so a memory-mapped file of millions of vectors is searched
without loading it whole; per query only the running top-k is kept.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lookalike.index.base import MISSING_ID, SearchHits, VectorIndex
from lookalike.vectors import FloatArray, IdArray

BLOCK_ROWS = 65536


def topk_blockwise(
    matrix: FloatArray,
    row_ids: IdArray,
    queries: FloatArray,
    k: int,
    block_rows: int = BLOCK_ROWS,
) -> SearchHits:
    """Top-k rows of ``matrix`` by inner product with each query.

    ``row_ids[i]`` is the id of matrix row i, or -1 for a dead row (never returned).
    """
    n_queries = queries.shape[0]
    k = max(int(k), 0)
    hits = SearchHits.empty(n_queries, k)
    if k == 0 or n_queries == 0 or matrix.shape[0] == 0:
        return hits
    best_scores, best_ids = hits.scores, hits.ids
    q = np.ascontiguousarray(queries, dtype=np.float32)
    for start in range(0, matrix.shape[0], block_rows):
        block = np.asarray(matrix[start : start + block_rows], dtype=np.float32)
        ids = row_ids[start : start + block.shape[0]]
        scores = q @ block.T  # (q, b)
        scores[:, ids == MISSING_ID] = -np.inf
        # Merge this block's candidates with the running best, keep k.
        take = min(k, scores.shape[1])
        part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        cand_scores = np.concatenate([best_scores, np.take_along_axis(scores, part, 1)], 1)
        cand_ids = np.concatenate([best_ids, ids[part]], 1)
        order = np.argsort(-cand_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(cand_scores, order, 1)
        best_ids = np.take_along_axis(cand_ids, order, 1)
    best_ids[~np.isfinite(best_scores)] = MISSING_ID
    return SearchHits(scores=best_scores.astype(np.float32), ids=best_ids.astype(np.int64))


class ExactIndex(VectorIndex):
    """Brute-force index held in memory; the oracle other index kinds are checked against."""

    kind = "exact"

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._ids = np.zeros(0, dtype=np.int64)
        self._vectors = np.zeros((0, dim), dtype=np.float32)

    def add(self, ids: IdArray, vectors: FloatArray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        self._ids = np.concatenate([self._ids, ids])
        self._vectors = np.concatenate([self._vectors, vectors])

    def remove(self, ids: IdArray) -> None:
        keep = ~np.isin(self._ids, np.asarray(ids, dtype=np.int64))
        self._ids, self._vectors = self._ids[keep], self._vectors[keep]

    def search(self, queries: FloatArray, k: int) -> SearchHits:
        return topk_blockwise(self._vectors, self._ids, queries, k)

    def __len__(self) -> int:
        return int(self._ids.shape[0])

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "count": len(self), "recall_at_10": 1.0}

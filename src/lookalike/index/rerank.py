"""Exact re-ranking of an approximate shortlist.

An approximate index proposes R candidates per query; their stored float32 vectors are
read (from the memory-mapped vector file) and scored exactly, and the best k are kept.
So the returned scores are always exact cosine similarities; only *which* candidates
were considered is approximate.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lookalike.index.base import MISSING_ID, SearchHits
from lookalike.vectors import FloatArray, IdArray

VectorsOf = Callable[[IdArray], FloatArray]  # sorted unique ids -> their vectors, in order

GATHER_FLOATS = 1 << 23  # at most ~32 MB of gathered vectors at a time


def exact_scores(queries: FloatArray, candidates: IdArray, vectors_of: VectorsOf) -> FloatArray:
    """scores[i, j] = <queries[i], vector of candidates[i, j]>, -inf where the id is -1."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    n_q, width = candidates.shape
    out = np.full((n_q, width), -np.inf, dtype=np.float32)
    if n_q == 0 or width == 0:
        return out
    step = max(1, GATHER_FLOATS // max(1, width * q.shape[1]))
    for start in range(0, n_q, step):
        cand = candidates[start : start + step]
        valid = cand != MISSING_ID
        if not valid.any():
            continue
        # One read per distinct id, in id order (ids grow with file position, so this
        # walks the vector file forwards).
        uniq, inverse = np.unique(cand[valid], return_inverse=True)
        vecs = vectors_of(uniq)
        rows = np.nonzero(valid)[0] + start
        block = out[start : start + step]
        block[valid] = np.einsum("ij,ij->i", q[rows], vecs[inverse])
    return out


def rerank(queries: FloatArray, candidates: IdArray, vectors_of: VectorsOf, k: int) -> SearchHits:
    """The k best of each query's candidates by exact score, best first; pads with -1."""
    n_q = candidates.shape[0]
    k = max(int(k), 0)
    hits = SearchHits.empty(n_q, k)
    if k == 0 or n_q == 0:
        return hits
    scores = exact_scores(queries, candidates, vectors_of)
    take = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :take]
    top_scores = np.take_along_axis(scores, order, 1)
    top_ids = np.take_along_axis(candidates, order, 1)
    top_ids[~np.isfinite(top_scores)] = MISSING_ID
    hits.scores[:, :take] = top_scores
    hits.ids[:, :take] = top_ids
    return hits

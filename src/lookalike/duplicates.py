"""Near-duplicate groups from a k-NN graph: link pairs with similarity >= threshold and take
connected components. Memory grows with the number of links, never with N x N."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from lookalike.index.base import MISSING_ID, SearchHits
from lookalike.vectors import IdArray

# In float32 the dot product of a unit vector with itself is 1 +- ~6e-7 (below 1 for about
# 40% of vectors), so without slack `--threshold 1` would miss byte-identical files.
SCORE_SLACK = 1e-5


class _DisjointSets:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        parent = self.parent.setdefault(x, x)
        while parent != x:
            grand = self.parent.setdefault(parent, parent)
            self.parent[x] = grand  # path halving
            x, parent = parent, grand
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def duplicate_groups(
    batches: Iterable[tuple[IdArray, SearchHits]], threshold: float
) -> list[tuple[list[int], float]]:
    """Groups (sorted ids, weakest link score) from (query ids, their k-NN hits) batches."""
    sets = _DisjointSets()
    weakest: dict[int, float] = {}
    edges: list[tuple[int, int, float]] = []
    for query_ids, hits in batches:
        keep = (hits.scores >= threshold - SCORE_SLACK) & (hits.ids != MISSING_ID)
        keep &= hits.ids != query_ids[:, None]
        rows, cols = np.nonzero(keep)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            a, b = int(query_ids[r]), int(hits.ids[r, c])
            sets.union(a, b)
            edges.append((a, b, float(hits.scores[r, c])))
    for a, _b, score in edges:
        root = sets.find(a)
        weakest[root] = min(weakest.get(root, 1.0), score)
    members: dict[int, list[int]] = {}
    for node in sets.parent:
        members.setdefault(sets.find(node), []).append(node)
    groups = [(sorted(ids), weakest[root]) for root, ids in members.items() if len(ids) > 1]
    groups.sort(key=lambda g: (-len(g[0]), g[0][0]))
    return groups


def neighbour_batches(
    ids: IdArray,
    vectors_of: Callable[[IdArray], np.ndarray],
    search: Callable[[np.ndarray, int], SearchHits],
    k: int,
    batch: int = 1024,
) -> Iterable[tuple[IdArray, SearchHits]]:
    """k-NN of every id, a batch at a time (bounded memory)."""
    for start in range(0, len(ids), batch):
        chunk = ids[start : start + batch]
        yield chunk, search(vectors_of(chunk), k)

"""Near-duplicate groups from a k-NN graph. Links are pairs with similarity >= threshold;
groups are made by leader clustering, not connected components, so they never chain through
weak links: every member is within the threshold of its group's representative. Memory grows
with the number of links, never with N x N."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from lookalike.index.base import MISSING_ID, SearchHits
from lookalike.vectors import IdArray

# In float32 the dot product of a unit vector with itself is 1 +- ~6e-7 (below 1 for about
# 40% of vectors), so without slack `--threshold 1` would miss byte-identical files.
SCORE_SLACK = 1e-5

Links = dict[tuple[int, int], float]  # (smaller id, larger id) -> similarity


@dataclass(frozen=True)
class Cluster:
    """A group: its representative first in ``members``, the others by score to it."""

    members: list[int]
    scores: list[float]  # each member's link score to the representative (1.0 for itself)

    @property
    def representative(self) -> int:
        return self.members[0]


def similar_links(batches: Iterable[tuple[IdArray, SearchHits]], threshold: float) -> Links:
    """Undirected links with score >= threshold from (query ids, their k-NN hits) batches.
    A pair found from both ends keeps the higher score (approximate indexes may differ)."""
    links: Links = {}
    for query_ids, hits in batches:
        keep = (hits.scores >= threshold - SCORE_SLACK) & (hits.ids != MISSING_ID)
        keep &= hits.ids != query_ids[:, None]
        rows, cols = np.nonzero(keep)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            a, b = int(query_ids[r]), int(hits.ids[r, c])
            key = (a, b) if a < b else (b, a)
            score = float(hits.scores[r, c])
            if score > links.get(key, -np.inf):
                links[key] = score
    return links


def leader_clusters(
    links: Links,
    candidates: Links | None = None,
    verify: Callable[[int, int], bool] | None = None,
) -> list[Cluster]:
    """Leader clustering over the link graph, largest groups first.

    The image with the most links (then the highest summed score, then the lowest id) leads
    the first group and takes every unassigned image it links to; repeat with what is left.
    An image whose links all go to images already taken joins no group through them, which
    is the point: a chain A-B-C with A-C below threshold is never one group.

    ``candidates``: weaker pairs that join only if ``verify(leader, member)`` says so. They
    are checked lazily, only from a leader to an image still free, so pairs between two
    images already grouped are never checked (most pairs, in a set with many copies).
    Leaders are ordered by their links, then their candidates."""
    candidates = candidates or {}
    neighbours: dict[int, dict[int, tuple[bool, float]]] = {}
    for pairs, firm in ((links, True), (candidates, False)):
        for (a, b), score in pairs.items():
            neighbours.setdefault(a, {})[b] = (firm, score)
            neighbours.setdefault(b, {})[a] = (firm, score)

    def strength(n: int) -> tuple[int, int, float]:
        nb = neighbours[n].values()
        return sum(f for f, _ in nb), sum(not f for f, _ in nb), sum(s for _, s in nb)

    strengths = {n: strength(n) for n in neighbours}
    order = sorted(neighbours, key=lambda n: (*(-x for x in strengths[n]), n))
    assigned: set[int] = set()
    clusters: list[Cluster] = []
    for leader in order:
        if leader in assigned:
            continue
        free = [
            (s, m)
            for m, (firm, s) in neighbours[leader].items()
            if m not in assigned and (firm or (verify is not None and verify(leader, m)))
        ]
        if not free:
            continue
        free.sort(key=lambda t: (-t[0], t[1]))
        assigned.add(leader)
        assigned.update(m for _, m in free)
        clusters.append(Cluster([leader, *(m for _, m in free)], [1.0, *(s for s, _ in free)]))
    clusters.sort(key=lambda c: (-len(c.members), min(c.members)))
    return clusters


def duplicate_groups(
    batches: Iterable[tuple[IdArray, SearchHits]], threshold: float
) -> list[Cluster]:
    """Groups (leader clusters) from (query ids, their k-NN hits) batches."""
    return leader_clusters(similar_links(batches, threshold))


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


# Second stage (lookalike.verify): pairs of the k-NN graph scoring below the threshold but at
# least CANDIDATE_FLOOR are checked with local features. On the planted set 95% of 30-degree
# rotations score >= 0.4 to their original and rank within its 20 nearest (BENCHMARKS.md).
CANDIDATE_FLOOR = 0.4
CANDIDATE_K = 20
# Verification says "the same picture", not how close: a stricter threshold than the default
# asks for closer copies than it can tell apart, so above this the score alone decides.
VERIFY_UP_TO = 0.95


def split_links(links: Links, threshold: float) -> tuple[Links, Links]:
    """(links >= threshold, the weaker candidates)."""
    strong = {pair: s for pair, s in links.items() if s >= threshold - SCORE_SLACK}
    return strong, {pair: s for pair, s in links.items() if pair not in strong}


def once_per_pair(check: Callable[[int, int], bool]) -> Callable[[int, int], bool]:
    """``check`` asked once per unordered pair, smaller id first; the verdict is kept.

    Leader clustering asks about a pair again from its other end when the first check
    failed (neither image was taken); in a library of mostly unique photos that is nearly
    every candidate pair, so without this verification did twice the work."""
    verdicts: dict[tuple[int, int], bool] = {}

    def checked(a: int, b: int) -> bool:
        key = (a, b) if a < b else (b, a)
        if key not in verdicts:
            verdicts[key] = check(*key)
        return verdicts[key]

    return checked

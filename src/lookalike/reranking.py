"""Re-ranking at search time: query expansion, database-side augmentation, k-reciprocal.

Every method re-orders a shortlist: the ``shortlist`` nearest neighbours of each query
(from a neighbour callback, i.e. the collection's index). Only the order changes; a hit's
score stays the cosine similarity between the query and that image.

- ``qe``: alpha-query expansion (Radenovic et al., "Fine-tuning CNN image retrieval with
  no human annotation"): q' = normalise(q + sum over the top ``n`` of s_i^alpha x_i), and
  the shortlist is ordered by q'.x.
- ``dba``: database-side augmentation, restricted to the shortlist: each candidate is
  replaced by normalise(sum over its own top ``n`` in the shortlist, itself included, of
  s^alpha x) and ordered by q.x'. (The paper augments the whole database offline; here it
  is local, so a collection needs no second vector file.)
- ``dba+qe``: both; q' is expanded with the augmented candidates.
- ``kr``: k-reciprocal re-ranking (Zhong et al., CVPR 2017) over {query} + shortlist:
  Jaccard distance of the k-reciprocal neighbour encodings, blended with the original
  distance by ``lam``.
- ``verify``: geometric verification (the SIFT + RANSAC check of `duplicates`,
  lookalike.verify) of each candidate against the query image: candidates that pass come
  first, each group in cosine order. For copies and crops of an image, which a global
  vector ranks low; it needs the images themselves (verified_search.py) and costs local
  features per candidate, so it is the slowest method by far.

Pure functions over vectors; the only outside calls are the callbacks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lookalike.errors import RerankError
from lookalike.index.base import MISSING_ID, SearchHits
from lookalike.vectors import FloatArray, IdArray

Neighbours = Callable[[FloatArray, int], SearchHits]  # (queries, k) -> top-k, exact scores
VectorsOf = Callable[[IdArray], FloatArray]  # sorted unique ids -> their vectors, in order
# (query row, its candidates' ids) -> which of them pass geometric verification (bool)
Verified = Callable[[int, IdArray], np.ndarray]

METHODS = ("none", "qe", "dba", "dba+qe", "kr", "verify")
MAX_SHORTLIST = 1000  # kr builds a (shortlist+1)^2 matrix per query
# kr needs room for k1 reciprocal neighbours; qe gains nothing from more than 20 (validation).
DEFAULT_SHORTLIST = {"none": 10, "qe": 20, "dba": 20, "dba+qe": 20, "kr": 50, "verify": 30}
SETTINGS = ("shortlist", "n", "alpha", "k1", "k2", "lam", "inliers", "share", "contrast")
FLOAT_SETTINGS = ("alpha", "lam", "share", "contrast")


@dataclass(frozen=True)
class Rerank:
    """One re-ranking setup. Defaults were chosen on validation splits (BENCHMARKS.md)."""

    method: str = "qe"
    shortlist: int = 0  # candidates re-ordered per query (at least k); 0: the method's default
    n: int = 3  # qe/dba: neighbours averaged in
    alpha: float = 2.0  # qe/dba: weight = similarity ** alpha
    k1: int = 20  # kr: reciprocal neighbourhood size
    k2: int = 6  # kr: neighbours averaged into each encoding
    lam: float = 0.6  # kr: weight of the original distance
    inliers: int = 10  # verify: RANSAC inliers a candidate needs to pass
    # verify: the share of its ratio-test matches those inliers must be. `duplicates` needs
    # 0.6 to turn away the other eye of a stereo pair; 0.5 lets more rotated copies through
    # and no more wrong images on either validation set (BENCHMARKS.md, "Weaker keypoints").
    share: float = 0.5
    # verify: SIFT's contrast threshold. Below OpenCV's 0.04 (which `duplicates` keeps), so
    # smooth designs and flat crops still get keypoints; images with plenty keep their
    # 1,000 strongest either way. 0.005 won on both validation sets of hard copies
    # (BENCHMARKS.md, "Weaker keypoints"); lower let noise fill the 1,000.
    contrast: float = 0.005

    @property
    def width(self) -> int:
        """Candidates re-ordered per query, before k raises it."""
        return self.shortlist or DEFAULT_SHORTLIST[self.method]

    def describe(self) -> str:
        """As parse_rerank reads it: the method, then the settings that differ from the
        defaults ("qe", "verify:inliers=20")."""
        defaults = Rerank(self.method)
        changed = [
            f"{name}={getattr(self, name)}"
            for name in SETTINGS
            if getattr(self, name) != getattr(defaults, name)
        ]
        return self.method + (":" + ",".join(changed) if changed else "")

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise RerankError(
                f"unknown re-ranking {self.method!r}; use one of: {', '.join(METHODS)}"
            )
        if self.shortlist < 0:
            raise RerankError(f"re-ranking shortlist must be at least 1, got {self.shortlist}")
        for name in ("n", "k1", "k2", "inliers"):
            if getattr(self, name) < 1:
                raise RerankError(
                    f"re-ranking {name} must be at least 1, got {getattr(self, name)}"
                )
        if self.shortlist > MAX_SHORTLIST:
            raise RerankError(
                f"re-ranking shortlist must be at most {MAX_SHORTLIST}, got {self.shortlist}"
            )
        for name in ("share", "contrast"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise RerankError(
                    f"re-ranking {name} must be within (0, 1], got {getattr(self, name)}"
                )
        if not 0.0 <= self.lam <= 1.0:
            raise RerankError(f"re-ranking lam must be within [0, 1], got {self.lam}")


def parse_rerank(text: str | None) -> Rerank | None:
    """ "qe", "dba+qe:n=3,alpha=2", "kr:k1=10" or "none" -> a Rerank (None for none)."""
    if text is None or text.strip() in ("", "none"):
        return None
    method, _, rest = text.strip().partition(":")
    settings: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key not in SETTINGS:
            raise RerankError(
                f"re-ranking option {item!r} not understood; use NAME=VALUE with NAME one of "
                + ", ".join(SETTINGS)
            )
        try:
            settings[key] = float(value) if key in FLOAT_SETTINGS else int(value)
        except ValueError:
            raise RerankError(f"re-ranking option {key}: {value!r} is not a number") from None
    return Rerank(method=method, **settings)


# ===== the search hook ====================================================================
def rerank_search(
    queries: FloatArray,
    k: int,
    neighbours: Neighbours,
    vectors_of: VectorsOf,
    setup: Rerank,
    exclude_ids: IdArray | None = None,
    verified: Verified | None = None,
) -> SearchHits:
    """Top-k of each query after re-ranking its shortlist; scores stay cosine(query, hit).

    ``exclude_ids[i]``: an id left out of query i's shortlist (the query itself), so it
    neither appears nor takes part in the expansion; -1 for none. ``verified``: the
    geometric check that ``verify`` needs (verified_search.py builds it).
    """
    if setup.method == "verify" and verified is None:
        raise RerankError(
            "verify re-ranking needs the query images themselves (search by image or by id)"
        )
    q = np.ascontiguousarray(queries, dtype=np.float32)
    width = max(setup.width, k)
    raw = neighbours(q, width + (0 if exclude_ids is None else 1))
    ids, scores = _drop_excluded(raw, exclude_ids, width)
    if setup.method == "none":
        return _top(ids, scores, scores, k)
    if setup.method == "verify":
        assert verified is not None
        return _top(ids, scores, verified_first(ids, scores, verified), k)
    vecs = _gather(ids, vectors_of, q.shape[1])
    order_by = np.full(ids.shape, -np.inf, dtype=np.float32)
    for i in range(len(q)):
        # A full shortlist (the usual case) is used in place: a masked copy of its
        # vectors would cost as much as the re-ranking of a 50-candidate list.
        mask = ids[i] != MISSING_ID
        count = int(mask.sum())
        valid = slice(None) if count == len(mask) else mask
        if count > 1:
            order_by[i, valid] = _rescore(q[i], vecs[i, valid], scores[i, valid], setup)
        else:
            order_by[i, valid] = scores[i, valid]
    return _top(ids, scores, order_by, k)


def _rescore(q: np.ndarray, x: np.ndarray, s: np.ndarray, setup: Rerank) -> np.ndarray:
    """Higher-is-better values that order one query's candidates."""
    if setup.method == "qe":
        return np.asarray(x @ expand_query(q, x, s, setup.n, setup.alpha))
    if setup.method == "dba":
        return np.asarray(augment(x, setup.n, setup.alpha) @ q)
    if setup.method == "dba+qe":
        xa = augment(x, setup.n, setup.alpha)
        return np.asarray(xa @ expand_query(q, xa, xa @ q, setup.n, setup.alpha))
    return -k_reciprocal_distances(q, x, setup.k1, setup.k2, setup.lam)


# ===== the methods, on one query's candidates =============================================
def verified_first(ids: IdArray, scores: FloatArray, verified: Verified) -> np.ndarray:
    """Order values: a verified candidate gets +2 (a cosine is at most 1), so every one
    comes before every other, and each group keeps its cosine order."""
    order_by = scores.astype(np.float32, copy=True)
    for row in range(len(ids)):
        valid = ids[row] != MISSING_ID
        if valid.any():
            passed = np.asarray(verified(row, ids[row, valid]), dtype=bool)
            order_by[row, np.flatnonzero(valid)[passed]] += 2.0
    return order_by


def expand_query(q: np.ndarray, x: np.ndarray, s: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """alpha-QE: normalise(q + sum of the n most similar x_i weighted by max(s_i, 0)^alpha)."""
    top = np.argsort(-s, kind="stable")[:n]
    weights = np.maximum(s[top], 0.0) ** alpha
    return _unit(q + weights @ x[top])


def augment(x: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """DBA over a set: row j -> normalise(sum over its n most similar rows (itself
    included) of max(s, 0)^alpha times that row)."""
    sims = x @ x.T
    n = min(n, len(x))
    top = np.argsort(-sims, axis=1, kind="stable")[:, :n]
    weights = np.maximum(np.take_along_axis(sims, top, 1), 0.0) ** alpha
    out = np.einsum("jn,jnd->jd", weights, x[top])
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def k_reciprocal_distances(
    q: np.ndarray, x: np.ndarray, k1: int, k2: int, lam: float
) -> np.ndarray:
    """(m,) re-ranked distances of candidates x to q (Zhong et al. 2017, over {q} + x).

    The paper's steps, as boolean matrices: R(i, k) = the points among i's k+1 nearest
    that have i among their own k+1 nearest; R(i, k1) grows by each member's R(c, k1/2)
    that shares more than 2/3 of itself with it; exp(-d) weights on that set, averaged over
    the k2 nearest rows, give each point's encoding; the Jaccard distance of encodings is
    blended with the original distance.
    """
    # float32 and one rank-position matrix: the same distances to ~1e-7, at half the time
    # of the float64 version (the 51 x 51 Gram matrix is most of what is left). One Gram
    # matrix of query and candidates together: a query equal to a candidate then gets
    # bit-equal rows, and their ties break by position as in the paper's code.
    points = np.vstack([q[None, :], x]).astype(np.float32, copy=False)
    m = len(points)
    dist = points @ points.T
    dist *= -2.0
    dist += 2.0
    np.maximum(dist, 0.0, out=dist)
    dist /= np.maximum(dist.max(axis=1, keepdims=True), 1e-12)  # as the paper's code
    pos = _rank_positions(dist)
    near = _reciprocal(pos, min(k1, m - 1))
    half = _reciprocal(pos, min(int(np.around(k1 / 2)), m - 1)).astype(np.float32)
    shared = near.astype(np.float32) @ half.T  # |R(i,k1) & R(c,k1/2)|
    grows = near & (shared > 2.0 / 3.0 * half.sum(axis=1)[None, :])
    members = near | ((grows.astype(np.float32) @ half) > 0)
    enc = np.where(members, np.exp(-dist), np.float32(0.0))
    enc /= enc.sum(axis=1, keepdims=True)
    if k2 > 1:
        nearest = (pos < min(k2, m)).astype(np.float32)  # each row's k2 nearest, itself too
        enc = (nearest @ enc) / np.float32(min(k2, m))
    overlap = np.minimum(enc[0][None, :], enc[1:]).sum(axis=1)
    jaccard = 1.0 - overlap / np.maximum(2.0 - overlap, 1e-12)
    return np.asarray(jaccard * (1.0 - lam) + dist[0, 1:] * lam, dtype=np.float64)


def _rank_positions(dist: np.ndarray) -> np.ndarray:
    """(m, m): [i, j] = where j comes in row i's ascending order, ties by column (0: i
    itself). Non-negative float32s order as their bit patterns, so each value's bits with
    its column below them make keys that are all distinct: a plain sort of those is the
    stable argsort, at a third of its time."""
    m = dist.shape[1]
    shift = max(1, (m - 1).bit_length())
    keys = (dist.view(np.int32) & 0x7FFFFFFF).astype(np.int64)  # & : -0.0 as 0.0
    keys <<= shift
    keys |= np.arange(m)
    rank = np.sort(keys, axis=1) & ((1 << shift) - 1)
    pos = np.empty_like(rank)
    np.put_along_axis(pos, rank, np.arange(m)[None, :], axis=1)
    return pos


def _reciprocal(pos: np.ndarray, k: int) -> np.ndarray:
    """(m, m) bool: [i, j] when each is among the other's k+1 nearest (itself included)."""
    forward = pos <= k
    return np.asarray(forward & forward.T)


# ===== helpers ============================================================================
def _unit(v: np.ndarray) -> np.ndarray:
    return np.asarray(v / max(float(np.linalg.norm(v)), 1e-12))


def _drop_excluded(
    raw: SearchHits, exclude_ids: IdArray | None, width: int
) -> tuple[IdArray, FloatArray]:
    ids, scores = raw.ids.copy(), raw.scores.astype(np.float32, copy=True)
    if exclude_ids is not None:
        drop = ids == np.asarray(exclude_ids, dtype=np.int64)[:, None]
        drop &= ids != MISSING_ID
        scores[drop] = -np.inf
        ids[drop] = MISSING_ID
        # Stable: the excluded slot moves last, the others keep their order.
        order = np.argsort(ids == MISSING_ID, axis=1, kind="stable")
        ids, scores = np.take_along_axis(ids, order, 1), np.take_along_axis(scores, order, 1)
    return ids[:, :width], scores[:, :width]


def _gather(ids: IdArray, vectors_of: VectorsOf, dim: int) -> np.ndarray:
    """(q, width, d) candidate vectors; zeros where the id is -1."""
    valid = ids != MISSING_ID
    if valid.all():  # the usual case: one copy, straight into place
        uniq, inverse = np.unique(ids, return_inverse=True)
        return np.take(vectors_of(uniq), inverse.reshape(-1), axis=0).reshape(*ids.shape, dim)
    out = np.zeros((*ids.shape, dim), dtype=np.float32)
    if valid.any():
        uniq, inverse = np.unique(ids[valid], return_inverse=True)
        out[valid] = vectors_of(uniq)[inverse]
    return out


def _top(ids: IdArray, scores: FloatArray, order_by: np.ndarray, k: int) -> SearchHits:
    """The k best ids by ``order_by`` (ties: shortlist order), carrying their cosine scores."""
    hits = SearchHits.empty(ids.shape[0], k)
    take = min(k, ids.shape[1])
    if take == 0:
        return hits
    order = np.argsort(-order_by, axis=1, kind="stable")[:, :take]
    top_ids = np.take_along_axis(ids, order, 1)
    top_scores = np.take_along_axis(scores, order, 1)
    top_scores[top_ids == MISSING_ID] = -np.inf
    hits.ids[:, :take] = top_ids
    hits.scores[:, :take] = top_scores
    return hits

"""Re-ranking at search time: hand-computed cases where each method changes the order."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lookalike.errors import RerankError
from lookalike.index.base import SearchHits
from lookalike.index.exact import topk_blockwise
from lookalike.reranking import (
    Rerank,
    augment,
    expand_query,
    k_reciprocal_distances,
    parse_rerank,
    rerank_search,
    verified_first,
)


def unit(deg: float) -> list[float]:
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def searcher(db: np.ndarray) -> Any:
    ids = np.arange(len(db), dtype=np.int64)

    def neighbours(q: np.ndarray, k: int) -> SearchHits:
        return topk_blockwise(db, ids, q, k)

    def vectors_of(wanted: np.ndarray) -> np.ndarray:
        return db[wanted]

    return neighbours, vectors_of


# Query at 0 degrees; a at 30, b at -35, c at 45 (cosine order a, b, c).
Q = np.array([unit(0)], dtype=np.float32)
DB = np.array([unit(30), unit(-35), unit(45)], dtype=np.float32)


def test_query_expansion_by_hand() -> None:
    # n=1, alpha=1: q' = q + cos30 * a = (1 + cos^2 30, cos30 sin30) = (1.75, 0.4330),
    # at atan(0.4330 / 1.75) = 13.90 degrees: c is 31.1 degrees away, b 48.9 -> a, c, b.
    s = DB @ Q[0]
    expanded = expand_query(Q[0], DB, s, n=1, alpha=1.0)
    assert math.degrees(math.atan2(expanded[1], expanded[0])) == pytest.approx(13.898, abs=1e-3)
    neighbours, vectors_of = searcher(DB)
    plain = neighbours(Q, 3)
    assert plain.ids[0].tolist() == [0, 1, 2]
    hits = rerank_search(Q, 3, neighbours, vectors_of, Rerank("qe", shortlist=3, n=1, alpha=1))
    assert hits.ids[0].tolist() == [0, 2, 1]
    # Scores stay the cosine between the query and each hit, not the expanded query's.
    expected = [math.cos(math.radians(d)) for d in (30, 45, -35)]
    assert hits.scores[0].tolist() == pytest.approx(expected, abs=1e-6)


def test_alpha_zero_weights_equal_and_negative_similarity_ignored() -> None:
    x = np.array([unit(90), unit(180)], dtype=np.float64)  # similarities 0 and -1 to q
    out = expand_query(np.array(unit(0)), x, x @ np.array(unit(0)), n=2, alpha=3.0)
    assert out.tolist() == pytest.approx(unit(0))  # 0^3 and max(-1, 0)^3 add nothing


def test_database_augmentation_by_hand() -> None:
    # a at 30 has its nearest, c, at 70; b at -35 has d at -40. n=2, alpha=0 (plain mean of
    # a point and its nearest): a' = c' = 50 degrees, b' = d' = -37.5. Plain order to the
    # query at 0: a (30), b (35); augmented: b and d (37.5) before a and c (50).
    x = np.array([unit(30), unit(-35), unit(70), unit(-40)], dtype=np.float64)
    xa = augment(x, n=2, alpha=0.0)
    angles = np.degrees(np.arctan2(xa[:, 1], xa[:, 0]))
    assert angles.tolist() == pytest.approx([50.0, -37.5, 50.0, -37.5], abs=1e-6)
    db = x.astype(np.float32)
    neighbours, vectors_of = searcher(db)
    assert neighbours(Q, 2).ids[0].tolist() == [0, 1]
    hits = rerank_search(Q, 2, neighbours, vectors_of, Rerank("dba", shortlist=4, n=2, alpha=0))
    assert hits.ids[0].tolist() == [1, 3]  # the two at -37.5 first, in shortlist order


def test_k_reciprocal_demotes_a_one_sided_neighbour() -> None:
    # Angles on a circle, query at 0. -6 is the query's nearest, but its own 2 nearest are
    # the tight group -10, -11 (4 and 5 degrees away; the query is 6): with k1=2, -6 is not
    # a reciprocal neighbour of the query, 8 is (8's 2 nearest: 10 and the query).
    # R(q) = {q, 8}; R(8) = {8, 10, q}; R(10) = {10, 8}; R(-6) = {-6} (-10's nearest are
    # -11, -12). No set grows (R(8, 1) = {8, 10} shares 1 < 2/3 * 2 with R(q)). So with
    # lam=0 and k2=1 the query's encoding overlaps 8's and 10's and not -6's: Jaccard
    # distance 1 for -6, below 1 for 8 and 10, which move ahead of it.
    angles = [-6, 8, 10, -10, -11, -12]
    x = np.array([unit(a) for a in angles], dtype=np.float64)
    plain = np.argsort(-(x @ np.array(unit(0))), kind="stable")
    assert plain[:2].tolist() == [0, 1]  # -6 is the nearest
    d = k_reciprocal_distances(np.array(unit(0)), x, k1=2, k2=1, lam=0.0)
    assert d[0] == pytest.approx(1.0)
    assert d[1] < 1.0 and d[2] < 1.0
    assert sorted(np.argsort(d, kind="stable")[:2].tolist()) == [1, 2]


def test_k_reciprocal_with_lam_one_is_the_plain_order() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[0] + 0.1 * rng.normal(size=8)
    q /= np.linalg.norm(q)
    d = k_reciprocal_distances(q, x, k1=5, k2=3, lam=1.0)
    assert np.argsort(d, kind="stable").tolist() == np.argsort(-(x @ q), kind="stable").tolist()


def _k_reciprocal_by_sets(
    q: np.ndarray, x: np.ndarray, k1: int, k2: int, lam: float
) -> list[float]:
    """Zhong et al.'s steps written out with Python sets, in float64 (the reference)."""
    points = np.vstack([q, x]).astype(np.float64)
    m = len(points)
    dist = np.maximum(2.0 - 2.0 * points @ points.T, 0.0)
    dist /= dist.max(axis=1, keepdims=True)
    order = [list(np.argsort(dist[i], kind="stable")) for i in range(m)]

    def recip(i: int, k: int) -> set[int]:
        return {j for j in order[i][: k + 1] if i in order[j][: k + 1]}

    enc = np.zeros((m, m))
    for i in range(m):
        near = recip(i, min(k1, m - 1))
        members = set(near)
        for c in near:
            half = recip(c, min(int(np.around(k1 / 2)), m - 1))
            if len(half & near) > 2 / 3 * len(half):
                members |= half
        for j in members:
            enc[i, j] = math.exp(-dist[i, j])
        enc[i] /= enc[i].sum()
    if k2 > 1:
        enc = np.array([enc[order[i][:k2]].mean(axis=0) for i in range(m)])
    out = []
    for c in range(1, m):
        overlap = np.minimum(enc[0], enc[c]).sum()
        out.append(float((1 - overlap / (2 - overlap)) * (1 - lam) + dist[0, c] * lam))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_k_reciprocal_equals_the_papers_steps_written_with_sets(seed: int) -> None:
    # The matrix version (float32) against the set-by-set one, ties from exact copies too.
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 32))
    x = centres[rng.integers(0, 3, 40)] + rng.normal(size=(40, 32)) * 0.8
    x[1:3] = x[5]  # exact duplicates
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[0] + 0.3 * rng.normal(size=32)
    q /= np.linalg.norm(q)
    k1, k2 = (20, 6) if seed % 2 else (8, 3)
    got = k_reciprocal_distances(q, x.astype(np.float32), k1=k1, k2=k2, lam=0.6)
    want = _k_reciprocal_by_sets(q, x, k1, k2, 0.6)
    assert got == pytest.approx(want, abs=1e-5)


def test_excluded_id_takes_no_part() -> None:
    # The query is itself indexed (id 0, at 0 degrees): excluded, it neither appears nor
    # expands the query (else q' would stay at 0 and the order would not change).
    db = np.array([unit(0), unit(30), unit(-35), unit(45)], dtype=np.float32)
    neighbours, vectors_of = searcher(db)
    setup = Rerank("qe", shortlist=3, n=1, alpha=1)
    hits = rerank_search(db[:1], 3, neighbours, vectors_of, setup, np.array([0]))
    assert hits.ids[0].tolist() == [1, 3, 2]


def test_short_collection_pads_with_missing() -> None:
    neighbours, vectors_of = searcher(DB[:1])
    hits = rerank_search(Q, 3, neighbours, vectors_of, Rerank("kr"))
    assert hits.ids[0].tolist() == [0, -1, -1]
    assert hits.scores[0, 0] == pytest.approx(math.cos(math.radians(30)), abs=1e-6)
    assert np.isinf(hits.scores[0, 1:]).all()


@pytest.mark.parametrize("method", ["qe", "dba", "dba+qe", "kr"])
def test_every_method_keeps_the_shortlist_and_cosine_scores(method: str) -> None:
    rng = np.random.default_rng(1)
    db = rng.normal(size=(200, 16)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    q = db[:5] + 0.05 * rng.normal(size=(5, 16)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    neighbours, vectors_of = searcher(db)
    hits = rerank_search(q, 10, neighbours, vectors_of, Rerank(method, shortlist=30))
    shortlist = neighbours(q, 30).ids
    for row in range(5):
        assert set(hits.ids[row]) <= set(shortlist[row])
        assert hits.scores[row] == pytest.approx(db[hits.ids[row]] @ q[row], abs=1e-5)


def test_verify_puts_the_checked_candidates_first_in_cosine_order() -> None:
    # Cosine order a (30), b (-35), c (45); the check passes c and b: -> b, c, a.
    neighbours, vectors_of = searcher(DB)
    asked: list[tuple[int, list[int]]] = []

    def verified(row: int, candidates: np.ndarray) -> np.ndarray:
        asked.append((row, candidates.tolist()))
        return np.isin(candidates, [1, 2])

    hits = rerank_search(Q, 3, neighbours, vectors_of, Rerank("verify"), verified=verified)
    assert hits.ids[0].tolist() == [1, 2, 0]
    expected = [math.cos(math.radians(d)) for d in (-35, 45, 30)]
    assert hits.scores[0].tolist() == pytest.approx(expected, abs=1e-6)
    assert asked == [(0, [0, 1, 2])]  # the whole shortlist, once


def test_verify_skips_missing_slots_and_excluded_ids() -> None:
    ids = np.array([[4, -1, 7]], dtype=np.int64)
    scores = np.array([[0.9, -np.inf, 0.5]], dtype=np.float32)
    seen: list[list[int]] = []

    def verified(row: int, candidates: np.ndarray) -> np.ndarray:
        seen.append(candidates.tolist())
        return candidates == 7

    order_by = verified_first(ids, scores, verified)
    assert seen == [[4, 7]]
    assert order_by[0].tolist() == pytest.approx([0.9, -np.inf, 2.5])
    neighbours, vectors_of = searcher(DB)
    hits = rerank_search(
        Q, 2, neighbours, vectors_of, Rerank("verify"), np.array([0]), lambda r, c: c == 2
    )
    assert hits.ids[0].tolist() == [2, 1]  # the query's own id (0) takes no part


def test_verify_without_the_query_images_is_refused() -> None:
    neighbours, vectors_of = searcher(DB)
    with pytest.raises(RerankError, match="needs the query images"):
        rerank_search(Q, 3, neighbours, vectors_of, Rerank("verify"))


def test_parse_rerank() -> None:
    assert parse_rerank(None) is None
    assert parse_rerank("none") is None
    assert parse_rerank("qe") == Rerank("qe")
    assert parse_rerank("dba+qe:n=3,alpha=1.5") == Rerank("dba+qe", n=3, alpha=1.5)
    assert parse_rerank("kr:k1=10,lam=0.5") == Rerank("kr", k1=10, lam=0.5)
    assert parse_rerank("verify:inliers=20,shortlist=50") == Rerank(
        "verify", inliers=20, shortlist=50
    )
    assert Rerank("verify").width == 30
    assert parse_rerank("verify:contrast=0.04") == Rerank("verify", contrast=0.04)
    assert Rerank("verify", contrast=0.04).describe() == "verify:contrast=0.04"
    assert parse_rerank("verify:share=0.6,contrast=0.04") == Rerank(
        "verify", share=0.6, contrast=0.04
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("magic", "unknown re-ranking 'magic'"),
        ("qe:n=x", "n: 'x' is not a number"),
        ("qe:depth=3", "option 'depth=3' not understood"),
        ("qe:n=0", "n must be at least 1"),
        ("kr:lam=2", "lam must be within [0, 1]"),
        ("verify:inliers=0", "inliers must be at least 1"),
        ("verify:contrast=0", "contrast must be within (0, 1]"),
        ("verify:share=1.5", "share must be within (0, 1]"),
        ("verify:contrast=low", "contrast: 'low' is not a number"),
    ],
)
def test_parse_rerank_refuses_bad_settings(text: str, message: str) -> None:
    with pytest.raises(RerankError, match=re.escape(message)):
        parse_rerank(text)


def test_verified_search_checks_files_and_passes_over_the_missing(tmp_path: Path) -> None:
    """The image side of verify: a crop maps onto its photo; a file gone since indexing
    (or an id without a path) is simply not verified, and the search goes on."""
    pytest.importorskip("cv2")
    import skimage.data
    from PIL import Image

    from lookalike.verified_search import make_verified

    photo = Image.fromarray(skimage.data.astronaut())
    photo.save(tmp_path / "astronaut.jpg")
    Image.fromarray(skimage.data.coffee()).save(tmp_path / "coffee.jpg")
    stored = {0: tmp_path / "astronaut.jpg", 1: tmp_path / "gone.jpg", 3: tmp_path / "coffee.jpg"}
    asked: list[list[int]] = []

    def paths_of(ids: list[int]) -> dict[int, str]:
        asked.append(ids)
        return {i: str(stored[i]) for i in ids if i in stored}

    crop = photo.crop((0, 0, 200, 260))  # in memory, as a web upload is
    check = make_verified(Rerank("verify"), [crop], paths_of)
    assert check(0, np.array([0, 1, 2, 3])).tolist() == [True, False, False, False]
    assert check(0, np.array([3, 0])).tolist() == [False, True]
    assert asked == [[0, 1, 2, 3]]  # paths once known are not asked for again


@pytest.mark.parametrize("m", [1, 2, 51, 300])
def test_rank_positions_are_the_stable_argsorts_ties_and_negative_zero_included(m: int) -> None:
    """k-reciprocal's ranking trick (bits of each distance, its column below them) must
    give what a stable argsort gives, ties broken by column, -0.0 tied with 0.0."""
    from lookalike.reranking import _rank_positions

    rng = np.random.default_rng(m)
    dist = rng.integers(0, 4, size=(m, m)).astype(np.float32) / 3  # many exact ties
    dist[rng.random((m, m)) < 0.2] = -0.0
    dist[:, : m // 2] += rng.random((m, m // 2)).astype(np.float32) * 1e-30  # subnormals
    expected = np.argsort(np.argsort(dist, axis=1, kind="stable"), axis=1, kind="stable")
    np.testing.assert_array_equal(_rank_positions(dist), expected)

"""Recall measurement (tie-aware) and the parameter search that meets the recall target."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from lookalike.index.base import SearchHits
from lookalike.index.rerank import rerank
from lookalike.index.synthetic import ClusteredGenerator, clustered_vectors, default_spec
from lookalike.index.tuning import (
    MARGIN,
    holdout_size,
    ivfpq_cost,
    ivfpq_probes,
    recall_at_k,
    tune,
    tune_shortlist,
)

INF = np.inf


def test_recall_counts_hits_whose_exact_score_reaches_the_kth_best() -> None:
    truth = np.array([[0.9, 0.8, 0.7], [0.9, 0.8, 0.7]], dtype=np.float32)
    found = np.array([[0.9, 0.8, 0.7], [0.9, 0.6, 0.5]], dtype=np.float32)
    assert recall_at_k(found, truth, k=3) == pytest.approx(4 / 6)


def test_recall_accepts_any_of_several_equally_good_answers() -> None:
    # Three duplicates score 0.9; returning any two of them is a perfect top-2.
    truth = np.array([[0.9, 0.9]], dtype=np.float32)
    assert recall_at_k(np.array([[0.9, 0.9]], dtype=np.float32), truth, k=2) == 1.0
    assert recall_at_k(np.array([[0.9, 0.89]], dtype=np.float32), truth, k=2) == 0.5


def test_recall_with_fewer_vectors_than_k_divides_by_what_exists() -> None:
    truth = np.array([[0.5, 0.4, -INF, -INF]], dtype=np.float32)
    assert recall_at_k(np.array([[0.5, 0.4, -INF, -INF]], dtype=np.float32), truth, 4) == 1.0
    assert recall_at_k(np.array([[0.5, -INF, -INF, -INF]], dtype=np.float32), truth, 4) == 0.5
    empty = np.full((2, 3), -INF, dtype=np.float32)
    assert recall_at_k(empty, empty, 3) == 1.0


def _fake_searcher(recall_of: dict[int, float]) -> Any:
    """Returns hits whose recall against an all-ones truth is recall_of[config "p"]."""
    calls: list[tuple[int, int]] = []

    def search(queries: np.ndarray, params: dict[str, Any], k: int) -> SearchHits:
        calls.append((params["p"], len(queries)))
        good = round(recall_of[params["p"]] * k)
        scores = np.zeros((len(queries), k), dtype=np.float32)
        scores[:, :good] = 1.0
        return SearchHits(scores=scores, ids=np.zeros((len(queries), k), dtype=np.int64))

    search.calls = calls  # type: ignore[attr-defined]
    return search


def test_tune_takes_the_cheapest_config_that_clears_target_plus_margin() -> None:
    queries = np.zeros((40, 4), dtype=np.float32)
    truth = np.ones((40, 10), dtype=np.float32)
    configs = [{"p": i} for i in range(5)]
    search = _fake_searcher({0: 0.5, 1: 0.8, 2: 0.9, 3: 1.0, 4: 1.0})
    tuned = tune(configs, search, queries, truth, target=0.9)
    assert 0.9 < 0.9 + MARGIN <= 1.0
    assert tuned.params == {"p": 3} and tuned.met
    # Tuned on the first half; the reported recall comes from the second half.
    assert search.calls == [(0, 20), (1, 20), (2, 20), (3, 20), (3, 20)]
    assert tuned.queries == 20 and tuned.recall == 1.0


def test_tune_falls_back_to_the_target_then_to_the_best_and_says_so() -> None:
    queries = np.zeros((10, 4), dtype=np.float32)
    truth = np.ones((10, 10), dtype=np.float32)
    configs = [{"p": i} for i in range(3)]
    at_target = tune(configs, _fake_searcher({0: 0.6, 1: 0.9, 2: 0.9}), queries, truth, 0.9)
    assert at_target.params == {"p": 1} and at_target.met
    short = tune(configs, _fake_searcher({0: 0.6, 1: 0.8, 2: 0.7}), queries, truth, 0.9)
    assert short.params == {"p": 1} and not short.met
    assert short.to_json()["recall_target_met"] is False


def _fake_candidates(good_at: dict[int, int], k: int = 10) -> Any:
    """Candidates whose first good_at[nprobe] positions hold the k true answers (score 1)."""
    calls: list[tuple[int, int]] = []

    def candidates(queries: np.ndarray, probe: dict[str, Any], width: int) -> np.ndarray:
        calls.append((probe["nprobe"], width))
        scores = np.zeros((len(queries), width), dtype=np.float32)
        depth = good_at[probe["nprobe"]]
        if depth <= width:  # the k answers spread evenly over the first `depth` slots
            scores[:, np.linspace(0, depth - 1, k).astype(int)] = 1.0
        return scores

    candidates.calls = calls  # type: ignore[attr-defined]
    return candidates


def test_tune_shortlist_finds_the_cheapest_probe_and_shortlist_pair() -> None:
    queries = np.zeros((20, 4), dtype=np.float32)
    truth = np.ones((20, 10), dtype=np.float32)
    probes = [{"nprobe": p} for p in (1, 2, 4, 8)]
    # More probes put the true answers nearer the front of the candidate list.
    candidates = _fake_candidates({1: 10_000, 2: 300, 4: 40, 8: 20})
    cost = lambda c: c["nprobe"] * 100 + c["shortlist"]  # noqa: E731
    tuned = tune_shortlist(probes, candidates, cost, queries, truth, shortlists=(10, 20, 40, 320))
    # (2, 320) costs 520, (4, 40) costs 440, (8, 20) costs 820: the middle one wins.
    assert tuned.params == {"nprobe": 4, "shortlist": 40} and tuned.met
    # Probing 8 lists could not beat 440 (its cheapest pair costs 810): never searched.
    assert [p for p, _ in candidates.calls] == [1, 2, 4, 4]
    assert candidates.calls[-1] == (4, 40)  # the evaluation half, at the chosen width


def test_tune_shortlist_reports_a_missed_target() -> None:
    queries = np.zeros((20, 4), dtype=np.float32)
    truth = np.ones((20, 10), dtype=np.float32)
    tuned = tune_shortlist(
        [{"nprobe": 1}],
        _fake_candidates({1: 10_000}),
        lambda c: c["shortlist"],
        queries,
        truth,
        shortlists=(10, 20),
    )
    assert not tuned.met and tuned.recall < 0.95


def test_ivfpq_cost_grows_with_probes_and_shortlist() -> None:
    cost = ivfpq_cost(n=1_000_000, dim=1280, nlist=2048, m=64)
    assert cost({"nprobe": 2, "shortlist": 10}) > cost({"nprobe": 1, "shortlist": 10})
    assert cost({"nprobe": 1, "shortlist": 20}) > cost({"nprobe": 1, "shortlist": 10})
    assert [p["nprobe"] for p in ivfpq_probes(4)] == [1, 2, 4]


def test_holdout_is_a_tenth_within_bounds() -> None:
    assert holdout_size(1000) == 100
    assert holdout_size(50_000) == 1000 and holdout_size(5_000_000) == 1000
    assert holdout_size(100) == 0


def test_rerank_orders_a_shortlist_by_exact_score_and_pads() -> None:
    vectors = clustered_vectors(50, 16, seed=4)
    queries = vectors[:3]
    candidates = np.array([[5, 0, 9, -1], [1, 2, -1, -1], [-1, -1, -1, -1]], dtype=np.int64)
    hits = rerank(queries, candidates, lambda ids: vectors[ids], k=3)
    assert hits.ids[0, 0] == 0 and hits.ids[1, 0] == 1  # each query is its own best
    assert hits.ids[1, 2] == -1 and np.all(hits.ids[2] == -1)
    expected = sorted((float(queries[0] @ vectors[i]) for i in (5, 0, 9)), reverse=True)
    np.testing.assert_allclose(hits.scores[0], expected, rtol=1e-6)


def test_synthetic_vectors_are_unit_clustered_and_reproducible() -> None:
    spec = default_spec(5000, 64, seed=2)
    a = ClusteredGenerator(spec).sample(5000)
    b = ClusteredGenerator(spec).sample(5000)
    assert a.dtype == np.float32 and a.flags.c_contiguous and a.shape == (5000, 64)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    sims = a[:200] @ a.T
    nearest = np.sort(sims, axis=1)[:, -2]  # best neighbour other than itself
    assert sims.mean() > 0.1  # ReLU features: random pairs are positively correlated
    assert nearest.mean() > sims.mean() + 0.3  # clusters: neighbours stand out

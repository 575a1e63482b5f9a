"""Retrieval metrics against cases worked out by hand, and against a plain-loop reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lookalike.evaluation.metrics import (
    average_precision_at_k,
    confusion_matrix,
    knn_vote,
    precision_at_k,
    precision_curve,
    recall_at_k,
    score_neighbours,
    top_confusions,
)


def test_worked_example() -> None:
    # Query of class 0; neighbours (nearest first) 0 1 0 0 1; 3 other images of class 0.
    q, n, rel = [0], [[0, 1, 0, 0, 1]], [3]
    assert precision_at_k(q, n)[0] == pytest.approx(3 / 5)
    assert recall_at_k(q, n, rel)[0] == pytest.approx(1.0)
    # AP@5 = (1/min(5,3)) * (P@1 + P@3 + P@4) = (1 + 2/3 + 3/4) / 3
    assert average_precision_at_k(q, n, rel)[0] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    assert precision_curve(q, n).tolist() == pytest.approx([1, 1 / 2, 2 / 3, 3 / 4, 3 / 5])


def test_k_larger_than_the_class() -> None:
    # Class of 2 images in leave-one-out: one relevant image, k = 5.
    q, rel = [7], [1]
    found_second = [[3, 7, 3, 3, 3]]
    assert precision_at_k(q, found_second)[0] == pytest.approx(1 / 5)  # can't exceed 1/5
    assert recall_at_k(q, found_second, rel)[0] == 1.0
    assert average_precision_at_k(q, found_second, rel)[0] == pytest.approx(1 / 2)
    # Perfect ranking scores AP 1 although precision@5 is 1/5: AP divides by min(k, 1).
    assert average_precision_at_k(q, [[7, 3, 3, 3, 3]], rel)[0] == 1.0
    # Three relevant, k = 2, both found: AP divides by min(2, 3) = 2.
    assert average_precision_at_k([1], [[1, 1]], [3])[0] == 1.0
    assert recall_at_k([1], [[1, 1]], [3])[0] == pytest.approx(2 / 3)


def test_missing_neighbours_are_not_relevant() -> None:
    # Only 2 images could be returned for k = 4: the empty slots (-1) count as misses.
    q, n, rel = [2], [[2, 2, -1, -1]], [2]
    assert precision_at_k(q, n)[0] == pytest.approx(0.5)
    assert recall_at_k(q, n, rel)[0] == 1.0
    assert average_precision_at_k(q, n, rel)[0] == 1.0
    # A query labelled -1 is never matched by missing slots: labels must be real classes.
    assert precision_at_k([0], [[-1, -1]])[0] == 0.0


def test_class_of_one_image() -> None:
    # Leave-one-out over classes a (3 images) and b (1 image): b's query has nothing to find.
    names = ["a", "b"]
    labels = np.array([0, 0, 0, 1])
    neighbours = np.array([[0, 0], [0, 1], [1, 0], [0, 0]])
    scores = np.array([[0.9, 0.8], [0.9, 0.5], [0.6, 0.5], [0.7, 0.6]])
    n_relevant = np.array([2, 2, 2, 0])
    result = score_neighbours(labels, neighbours, scores, n_relevant, names)

    assert math.isnan(result.recall[3]) and math.isnan(result.average_precision[3])
    assert result.precision[3] == 0.0
    assert result.predicted[3] == 0  # voted a: counted as a miss in accuracy
    b = result.per_class()["b"]
    assert b == {
        "queries": 1,
        "precision_at_k": 0.0,
        "map_at_k": None,
        "recall_at_k": None,
        "knn_accuracy": 0.0,
    }
    overall = result.overall()
    # Precision and accuracy average all 4 queries; recall and mAP only the 3 of class a.
    assert overall["precision_at_k"] == pytest.approx((1 + 0.5 + 0.5 + 0) / 4)
    assert overall["knn_accuracy"] == pytest.approx(2 / 4)  # query 2: tie 1-1, b has 0.6
    assert overall["recall_at_k"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    # AP: q0 = 1; q1 = (1/2)(1) = .5; q2 = (1/2)(1/2) = .25
    assert overall["map_at_k"] == pytest.approx((1 + 0.5 + 0.25) / 3)


def test_every_query_without_relevant_items_gives_none() -> None:
    result = score_neighbours([0, 1], [[1], [0]], [[0.5], [0.5]], [0, 0], ["a", "b"])
    assert result.overall()["recall_at_k"] is None
    assert result.overall()["map_at_k"] is None
    assert result.overall()["precision_at_k"] == 0.0


def test_knn_vote_majority_and_ties() -> None:
    labels = np.array(
        [
            [4, 2, 4, -1, -1],  # plain majority, although 2 has the best single score
            [3, 1, 1, 3, 5],  # 3 and 1 tie on count; 1 has the higher summed score
            [1, 2, 2, 1, -1],  # tie on count and on summed score: the nearest (1) wins
            [2, 1, 1, 2, -1],  # the same with the classes swapped
            [6, -1, -1, -1, -1],  # missing slots do not vote
            [-1, -1, -1, -1, -1],  # nothing to vote on
        ]
    )
    scores = np.array(
        [
            [0.9, 0.95, 0.1, 0, 0],
            [0.5, 0.75, 0.75, 0.25, 0.9],
            [0.5, 0.5, 0.25, 0.25, 0],
            [0.5, 0.5, 0.25, 0.25, 0],
            [0.3, 0, 0, 0, 0],
            [0, 0, 0, 0, 0],
        ],
        dtype=np.float32,
    )
    assert knn_vote(labels, scores).tolist() == [4, 1, 1, 2, 6, -1]


def test_confusion_and_top_confusions() -> None:
    true = [0, 0, 0, 1, 1, 2]
    predicted = [0, 1, 1, 1, 0, -1]  # -1 (no neighbours) is not counted
    matrix = confusion_matrix(true, predicted, 3)
    assert matrix.tolist() == [[1, 2, 0], [1, 1, 0], [0, 0, 0]]
    top = top_confusions(matrix, ["cat", "dog", "fox"])
    assert [(c["true"], c["predicted"], c["count"]) for c in top] == [
        ("cat", "dog", 2),
        ("dog", "cat", 1),
    ]
    assert top[0]["share"] == pytest.approx(2 / 3)


def _reference(query: int, neighbours: list[int], relevant: int) -> tuple[float, float, float]:
    """The textbook definitions, one query at a time, with plain loops."""
    k = len(neighbours)
    hits = 0
    ap_sum = 0.0
    for i, label in enumerate(neighbours, 1):
        if label == query:
            hits += 1
            ap_sum += hits / i
    recall = hits / relevant if relevant else float("nan")
    ap = ap_sum / min(k, relevant) if relevant else float("nan")
    return hits / k, recall, ap


def test_vectorised_metrics_match_plain_loops() -> None:
    rng = np.random.default_rng(3)
    q, k, classes = 300, 12, 5
    labels = rng.integers(0, classes, q)
    neighbours = rng.integers(-1, classes, (q, k))
    relevant = rng.integers(0, 20, q)
    # Keep the cases consistent: never more hits than relevant images.
    hits = (neighbours == labels[:, None]).sum(axis=1)
    relevant = np.maximum(relevant, hits)
    p, r, ap = (
        precision_at_k(labels, neighbours),
        recall_at_k(labels, neighbours, relevant),
        average_precision_at_k(labels, neighbours, relevant),
    )
    for i in range(q):
        want = _reference(int(labels[i]), neighbours[i].tolist(), int(relevant[i]))
        np.testing.assert_allclose([p[i], r[i], ap[i]], want, equal_nan=True)


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError):
        precision_at_k([0, 1], [[0, 1]])
    with pytest.raises(ValueError):
        recall_at_k([0], [[0]], [1, 2])
    with pytest.raises(ValueError):
        precision_at_k([0], np.zeros((1, 0), dtype=int))

"""Retrieval-quality metrics on neighbour label arrays. Pure NumPy, no I/O.

Every function works on the same inputs:

- ``query_labels``: (q,) int class of each query (>= 0);
- ``neighbour_labels``: (q, k) int class of each query's neighbours, nearest first;
  -1 marks a missing neighbour (fewer than k images to return), never relevant;
- ``neighbour_scores``: (q, k) cosine similarity of those neighbours (higher = nearer);
- ``n_relevant``: (q,) how many images of the query's class the search could have
  returned: class size - 1 in leave-one-out (the query itself is excluded), the class size
  in the gallery with a separate query set.

Definitions (k is the number of neighbours, rel_i = 1 when neighbour i shares the class):

- precision@k = (1/k) * sum_{i<=k} rel_i. Missing neighbours count as not relevant, so a
  class smaller than k cannot reach 1 — the convention of the reports this follows.
- recall@k = sum_{i<=k} rel_i / n_relevant.
- AP@k = (1/min(k, n_relevant)) * sum_{i<=k} P@i * rel_i; mAP@k is its mean over queries.
  Dividing by min(k, n_relevant) lets a perfect ranking score 1 even when the class has
  fewer than k other members.
- k-NN accuracy: the predicted class is the majority vote of the k neighbour labels; a tie
  goes to the class with the highest summed similarity, then to the class met first
  (the nearest). Accuracy is the fraction of queries predicted right.

Queries with nothing relevant to find (a class of one image in leave-one-out, or a query
class absent from the gallery) have undefined recall and AP: those are NaN per query and
left out of the recall and mAP averages (a class whose every query is like that reports
None). Such a query still counts in precision (as 0, nothing can match) and in k-NN
accuracy (as a miss, its class cannot be voted).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

MISSING_LABEL = -1
_VOTE_CELLS = 4_000_000  # knn_vote works on (queries, k, k) blocks of at most this many cells


def relevance(
    query_labels: npt.ArrayLike, neighbour_labels: npt.ArrayLike
) -> npt.NDArray[np.bool_]:
    """(q, k) True where a neighbour has the query's class."""
    q = np.asarray(query_labels, dtype=np.int64)
    n = np.asarray(neighbour_labels, dtype=np.int64)
    if n.ndim != 2 or q.shape != (n.shape[0],):
        raise ValueError(f"labels of shape {q.shape} do not match neighbours of shape {n.shape}")
    if n.shape[1] == 0:
        raise ValueError("k must be at least 1")
    return (n == q[:, None]) & (n != MISSING_LABEL)


def precision_at_k(query_labels: npt.ArrayLike, neighbour_labels: npt.ArrayLike) -> np.ndarray:
    """(q,) fraction of each query's k neighbours that share its class."""
    rel = relevance(query_labels, neighbour_labels)
    return rel.sum(axis=1) / rel.shape[1]


def precision_curve(query_labels: npt.ArrayLike, neighbour_labels: npt.ArrayLike) -> np.ndarray:
    """(k,) mean precision@i over all queries for i = 1..k (for precision-against-k plots)."""
    rel = relevance(query_labels, neighbour_labels)
    hits = np.cumsum(rel, axis=1) / np.arange(1, rel.shape[1] + 1)
    return hits.mean(axis=0) if len(rel) else np.full(rel.shape[1], np.nan)


def _relevant_counts(n_relevant: npt.ArrayLike, n_queries: int) -> np.ndarray:
    counts = np.asarray(n_relevant, dtype=np.int64)
    if counts.shape != (n_queries,):
        raise ValueError(f"n_relevant has shape {counts.shape}, expected ({n_queries},)")
    if (counts < 0).any():
        raise ValueError("n_relevant must be >= 0")
    return counts


def recall_at_k(
    query_labels: npt.ArrayLike, neighbour_labels: npt.ArrayLike, n_relevant: npt.ArrayLike
) -> np.ndarray:
    """(q,) share of the query's relevant images found in its k neighbours; NaN if none exist."""
    rel = relevance(query_labels, neighbour_labels)
    counts = _relevant_counts(n_relevant, rel.shape[0])
    found = rel.sum(axis=1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(counts > 0, found / np.maximum(counts, 1), np.nan)


def average_precision_at_k(
    query_labels: npt.ArrayLike, neighbour_labels: npt.ArrayLike, n_relevant: npt.ArrayLike
) -> np.ndarray:
    """(q,) AP@k of each query (see the module docstring); NaN when nothing is relevant."""
    rel = relevance(query_labels, neighbour_labels)
    counts = _relevant_counts(n_relevant, rel.shape[0])
    k = rel.shape[1]
    precision_at_i = np.cumsum(rel, axis=1) / np.arange(1, k + 1)
    summed = (precision_at_i * rel).sum(axis=1)
    denominator = np.minimum(counts, k)
    return np.where(counts > 0, summed / np.maximum(denominator, 1), np.nan)


def knn_vote(neighbour_labels: npt.ArrayLike, neighbour_scores: npt.ArrayLike) -> np.ndarray:
    """(q,) majority class of each row of neighbour labels; -1 when a row has no neighbours.

    Ties in the count go to the highest summed similarity, then to the nearest class.
    """
    labels = np.asarray(neighbour_labels, dtype=np.int64)
    scores = np.asarray(neighbour_scores, dtype=np.float64)
    if labels.shape != scores.shape or labels.ndim != 2:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} must be equal (q, k)")
    out = np.full(labels.shape[0], MISSING_LABEL, dtype=np.int64)
    k = labels.shape[1]
    if k == 0:
        return out
    # Every position j stands for its label: count and summed score of that label in the
    # row. All positions of one label share these, so the winner's first position (the
    # nearest occurrence) is picked by taking the smallest j among the best.
    chunk = max(1, _VOTE_CELLS // (k * k))
    for start in range(0, labels.shape[0], chunk):
        lab = labels[start : start + chunk]
        sc = np.where(lab == MISSING_LABEL, 0.0, scores[start : start + chunk])
        same = (lab[:, :, None] == lab[:, None, :]) & (lab[:, None, :] != MISSING_LABEL)
        counts = same.sum(axis=2)
        sums = (same * sc[:, None, :]).sum(axis=2)
        counts[lab == MISSING_LABEL] = -1  # a missing slot never wins
        best_count = counts.max(axis=1, keepdims=True)
        sums = np.where(counts == best_count, sums, -np.inf)
        best_sum = sums.max(axis=1, keepdims=True)
        # argmax returns the first (nearest) position among the exact ties.
        winner = np.argmax((counts == best_count) & (sums == best_sum), axis=1)
        chosen = np.take_along_axis(lab, winner[:, None], axis=1)[:, 0]
        out[start : start + len(lab)] = np.where(best_count[:, 0] > 0, chosen, MISSING_LABEL)
    return out


def confusion_matrix(
    true_labels: npt.ArrayLike, predicted: npt.ArrayLike, n_classes: int
) -> npt.NDArray[np.int64]:
    """(C, C) counts: row = true class, column = predicted class. Predictions of -1 are
    not counted (a query with no neighbours at all)."""
    t = np.asarray(true_labels, dtype=np.int64)
    p = np.asarray(predicted, dtype=np.int64)
    keep = p != MISSING_LABEL
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (t[keep], p[keep]), 1)
    return matrix


def top_confusions(
    matrix: npt.ArrayLike, class_names: list[str], limit: int = 10
) -> list[dict[str, Any]]:
    """The off-diagonal cells with most queries: which classes are taken for which."""
    m = np.asarray(matrix, dtype=np.int64).copy()
    np.fill_diagonal(m, 0)
    flat = np.argsort(-m, axis=None, kind="stable")[:limit]
    out = []
    for index in flat:
        true, pred = np.unravel_index(index, m.shape)
        if m[true, pred] == 0:
            break
        row_total = int(np.asarray(matrix)[true].sum())
        out.append(
            {
                "true": class_names[true],
                "predicted": class_names[pred],
                "count": int(m[true, pred]),
                "share": round(float(m[true, pred] / row_total), 6) if row_total else 0.0,
            }
        )
    return out


def _mean(values: np.ndarray) -> float | None:
    """Mean of the defined (non-NaN) values; None when there are none."""
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if len(defined) else None


@dataclass
class RetrievalScores:
    """All metrics of one evaluation: per query, overall, and per class."""

    class_names: list[str]
    query_labels: np.ndarray
    precision: np.ndarray  # (q,) precision@k
    recall: np.ndarray  # (q,) recall@k, NaN where undefined
    average_precision: np.ndarray  # (q,) AP@k, NaN where undefined
    predicted: np.ndarray  # (q,) k-NN vote
    curve: np.ndarray  # (k,) mean precision@i, i = 1..k
    confusion: np.ndarray = field(repr=False)  # (C, C)

    @property
    def correct(self) -> np.ndarray:
        return self.predicted == self.query_labels

    def overall(self) -> dict[str, float | None]:
        return {
            "precision_at_k": _mean(self.precision),
            "map_at_k": _mean(self.average_precision),
            "recall_at_k": _mean(self.recall),
            "knn_accuracy": _mean(self.correct.astype(np.float64)),
        }

    def per_class(self) -> dict[str, dict[str, Any]]:
        """Metrics averaged over each class's queries (classes with no query are left out)."""
        out: dict[str, dict[str, Any]] = {}
        correct = self.correct.astype(np.float64)
        for label, name in enumerate(self.class_names):
            mine = self.query_labels == label
            if not mine.any():
                continue
            out[name] = {
                "queries": int(mine.sum()),
                "precision_at_k": _mean(self.precision[mine]),
                "map_at_k": _mean(self.average_precision[mine]),
                "recall_at_k": _mean(self.recall[mine]),
                "knn_accuracy": _mean(correct[mine]),
            }
        return out


def score_neighbours(
    query_labels: npt.ArrayLike,
    neighbour_labels: npt.ArrayLike,
    neighbour_scores: npt.ArrayLike,
    n_relevant: npt.ArrayLike,
    class_names: list[str],
) -> RetrievalScores:
    """Every metric for one set of neighbour lists."""
    q = np.asarray(query_labels, dtype=np.int64)
    n = np.asarray(neighbour_labels, dtype=np.int64)
    if len(q) and (q.min() < 0 or q.max() >= len(class_names)):
        raise ValueError("query labels must index class_names")
    predicted = knn_vote(n, neighbour_scores)
    return RetrievalScores(
        class_names=list(class_names),
        query_labels=q,
        precision=precision_at_k(q, n),
        recall=recall_at_k(q, n, n_relevant),
        average_precision=average_precision_at_k(q, n, n_relevant),
        predicted=predicted,
        curve=precision_curve(q, n),
        confusion=confusion_matrix(q, predicted, len(class_names)),
    )


def json_number(value: float | None) -> float | None:
    """A metric ready for JSON: NaN becomes None (JSON has no NaN), floats rounded to 6."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(float(value), 6)

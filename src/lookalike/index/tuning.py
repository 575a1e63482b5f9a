"""Measuring and tuning recall against exact search.

Recall@k here is tie-aware: a returned hit counts as correct when its exact score is at
least the k-th best exact score, so among equally similar vectors (duplicates!) any
choice is right. The denominator is min(k, vectors searched).

Tuning follows autofaiss' recipe with an honest twist: a held-out sample of the
collection's own vectors is kept out of the index while it is tuned. One half picks the
cheapest search parameters whose recall reaches the target (plus a small margin); the
other half, unseen by that choice, measures the recall that is reported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lookalike.index.base import SearchHits
from lookalike.vectors import FloatArray

TARGET_RECALL = 0.95
MARGIN = 0.015  # tune to target + margin: the reported half is a fresh sample
K = 10
TIE_TOL = 1e-5

Searcher = Callable[[FloatArray, dict[str, Any], int], SearchHits]  # hits with exact scores


def recall_at_k(found_scores: FloatArray, truth_scores: FloatArray, k: int = K) -> float:
    """Tie-aware recall@k from *exact* scores of the returned and the true top-k hits."""
    truth = np.asarray(truth_scores, dtype=np.float32)[:, :k]
    found = np.asarray(found_scores, dtype=np.float32)[:, :k]
    valid_truth = np.isfinite(truth)
    denom = valid_truth.sum(axis=1)
    if denom.sum() == 0:
        return 1.0
    kth = np.where(valid_truth, truth, np.inf).min(axis=1)
    good = np.isfinite(found) & (found >= kth[:, None] - TIE_TOL)
    return float(np.minimum(good.sum(axis=1), denom).sum() / denom.sum())


def holdout_size(n: int) -> int:
    """Vectors kept out of the index while tuning: 10% of n, between 100 and 1000."""
    return int(np.clip(n // 10, 100, 1000)) if n >= 200 else 0


@dataclass(frozen=True)
class Tuned:
    params: dict[str, Any]
    recall: float  # on the evaluation half, not used to choose
    tune_recall: float  # on the tuning half
    queries: int  # evaluation queries
    target: float
    met: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "recall_at_10": round(self.recall, 4),
            "recall_tune_half": round(self.tune_recall, 4),
            "recall_queries": self.queries,
            "recall_target": self.target,
            "recall_target_met": self.met,
        }


def tune(
    configs: Sequence[dict[str, Any]],
    searcher: Searcher,
    queries: FloatArray,
    truth_scores: FloatArray,
    target: float = TARGET_RECALL,
    k: int = K,
) -> Tuned:
    """Pick the first of ``configs`` (ordered cheapest first) reaching target + margin.

    ``queries``/``truth_scores`` are split in halves: tune on the first, report on the second.
    If no config reaches target + margin, the cheapest reaching the target is taken, else
    the one with the best recall.
    """
    if not configs:
        raise ValueError("internal: no configurations to tune")
    half = len(queries) // 2
    q_tune, t_tune = queries[:half], truth_scores[:half]
    q_eval, t_eval = queries[half:], truth_scores[half:]
    chosen: dict[str, Any] | None = None
    first_at_target: tuple[dict[str, Any], float] | None = None
    best: tuple[dict[str, Any], float] = (configs[-1], -1.0)
    chosen_recall = 0.0
    for cfg in configs:
        r = recall_at_k(searcher(q_tune, cfg, k).scores, t_tune, k)
        if r >= target + MARGIN:
            chosen, chosen_recall = cfg, r
            break
        if r >= target and first_at_target is None:
            first_at_target = (cfg, r)
        if r > best[1]:
            best = (cfg, r)
    if chosen is None:
        chosen, chosen_recall = first_at_target or best
    recall = recall_at_k(searcher(q_eval, chosen, k).scores, t_eval, k)
    return Tuned(
        params=dict(chosen),
        recall=recall,
        tune_recall=chosen_recall,
        queries=len(q_eval),
        target=target,
        met=recall >= target,
    )


HNSW_EF = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


def hnsw_configs(shortlist: int) -> list[dict[str, Any]]:
    return [{"ef_search": ef, "shortlist": shortlist} for ef in HNSW_EF if ef >= shortlist]


def hnsw_probes(min_ef: int) -> list[dict[str, Any]]:
    """efSearch values for tune_shortlist; each must cover the longest shortlist."""
    return [{"ef_search": ef} for ef in HNSW_EF if ef >= min_ef]


def hnsw_cost(dim: int, m: int) -> Callable[[dict[str, Any]], float]:
    """Graph search visits ~ef nodes and scores ~2M neighbours of each (1 byte a dim);
    re-ranking reads and multiplies ``shortlist`` float vectors (4 bytes a dim)."""
    return lambda c: c["ef_search"] * 2 * m * dim + c["shortlist"] * 4 * dim


IVF_NPROBE = (1, 2, 4, 8, 16, 32, 64, 128, 256)
SHORTLIST = (10, 20, 30, 40, 60, 80, 120, 160, 240, 320, 480, 640)
PLATEAU = 0.002  # stop searching wider once recall at the longest shortlist stalls

Candidates = Callable[[FloatArray, dict[str, Any], int], FloatArray]
"""(queries, probe params, width) -> exact scores of that many candidates, in the
index's own (approximate) order."""


def ivfpq_cost(n: int, dim: int, nlist: int, m: int) -> Callable[[dict[str, Any]], float]:
    """Estimated cost of an (nprobe, shortlist) pair.

    Codes scanned * bytes per code (PQ table look-ups) + shortlist * dim (re-ranking reads
    and multiplies each candidate's float vector); both are ~1 ns a unit on a laptop
    core, so they are simply added.
    """
    per_list = n / max(1, nlist)
    return lambda c: c["nprobe"] * per_list * m + c["shortlist"] * dim


def tune_shortlist(
    probes: Sequence[dict[str, Any]],
    candidates: Candidates,
    cost: Callable[[dict[str, Any]], float],
    queries: FloatArray,
    truth_scores: FloatArray,
    target: float = TARGET_RECALL,
    k: int = K,
    shortlists: Sequence[int] = SHORTLIST,
) -> Tuned:
    """Like ``tune`` for indexes whose candidates are re-ranked exactly (ivfpq, hnsw-sq8).

    One search per probe setting (cheapest first) with the longest shortlist; every
    shorter shortlist is a prefix of it, so its recall comes for free. The cheapest
    (probe, shortlist) pair by ``cost`` that reaches target + margin wins; more probes
    are tried only while they could still be cheaper and recall still grows.
    """
    half = len(queries) // 2
    q_tune, t_tune = queries[:half], truth_scores[:half]
    width = max(shortlists)
    results: list[tuple[dict[str, Any], float]] = []
    previous, stalls = -1.0, 0
    for probe in probes:
        floor = cost({**probe, "shortlist": min(shortlists)})
        qualified = [cost(c) for c, r in results if r >= target + MARGIN]
        if qualified and min(qualified) <= floor:
            break  # nothing with more probes can be cheaper
        scores = candidates(q_tune, probe, width)
        for r in shortlists:
            best = -np.sort(-scores[:, :r], axis=1)[:, :k]
            results.append(({**probe, "shortlist": r}, recall_at_k(best, t_tune, k)))
        stalls = stalls + 1 if results[-1][1] < previous + PLATEAU else 0
        if stalls == 2:
            break  # searching wider twice in a row did not help: it will not
        previous = max(previous, results[-1][1])
    ordered = sorted(results, key=lambda cr: cost(cr[0]))
    chosen = next((cr for cr in ordered if cr[1] >= target + MARGIN), None)
    chosen = chosen or next((cr for cr in ordered if cr[1] >= target), None)
    chosen = chosen or max(results, key=lambda cr: cr[1])
    params, tune_recall = chosen
    probe = {key: v for key, v in params.items() if key != "shortlist"}
    scores = candidates(queries[half:], probe, params["shortlist"])
    best = -np.sort(-scores, axis=1)[:, :k]
    recall = recall_at_k(best, truth_scores[half:], k)
    return Tuned(
        params=dict(params),
        recall=recall,
        tune_recall=tune_recall,
        queries=len(queries) - half,
        target=target,
        met=recall >= target,
    )


def ivfpq_probes(nlist: int) -> list[dict[str, Any]]:
    return [{"nprobe": p} for p in IVF_NPROBE if p <= nlist]

"""Two pipelines scored on the same queries: is one of them really worse? Pure NumPy.

Each pipeline gives one number per query (its P@k, the reciprocal rank of the original, or
1/0 for "first hit right"). With a few dozen queries, a difference of one or two queries is
well within chance, so a comparison reports more than the two means:

- ``mean``: the mean per-query difference (ours - theirs);
- ``ci95``: a paired bootstrap 95% interval of that mean (10,000 resamples of the queries,
  fewer past 20,000 queries; seeded, so the same inputs give the same interval);
- ``better`` / ``worse``: the queries where ours is above / below theirs;
- ``sign_test_p``: the exact two-sided sign test on those queries (ties left out), which
  stays valid when only a handful of queries differ and the bootstrap cannot tell.

``clearly_worse`` is the check the quality tests and benchmarks apply: ours loses more
queries than it wins *and* the sign test says that split is unlikely to be chance
(``clearly_better`` the other way round). ``compare_keyed`` pairs scores by query name, for
two evaluations that may not have read the same files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

RESAMPLES = 10_000
# Resampled query indices drawn per block (and in all), so that `lookalike eval` on 100k
# images stays within memory and a few seconds: past 20k queries, fewer resamples.
BLOCK_DRAWS = 2_000_000
MAX_DRAWS = 200_000_000
SIGNIFICANCE = 0.05


@dataclass(frozen=True)
class PairedComparison:
    mean: float
    ci95: tuple[float, float]
    better: int
    worse: int
    sign_test_p: float

    @property
    def clearly_worse(self) -> bool:
        return self.worse > self.better and self.sign_test_p < SIGNIFICANCE

    @property
    def clearly_better(self) -> bool:
        return self.better > self.worse and self.sign_test_p < SIGNIFICANCE

    @property
    def verdict(self) -> str:
        if self.clearly_better:
            return "clearly better"
        return "clearly worse" if self.clearly_worse else "no clear difference"

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ci95"] = list(self.ci95)
        out["verdict"] = self.verdict
        return out


def sign_test_p(better: int, worse: int) -> float:
    """Two-sided exact sign test: the chance of a split at least this uneven between
    ``better`` and ``worse`` queries if each were a coin toss (1.0 when none differ)."""
    n = better + worse
    if n == 0:
        return 1.0
    # log C(n, i) for i = 0..min, built up term by term: whole-number binomials of 100k
    # queries would take seconds; this takes microseconds and agrees to ~1e-12.
    steps = np.arange(min(better, worse), dtype=np.float64)
    logs = np.concatenate([[0.0], np.cumsum(np.log(n - steps) - np.log(steps + 1.0))])
    tail = math.exp(float(np.logaddexp.reduce(logs)) - n * math.log(2.0))
    return min(1.0, 2.0 * tail)


def _bootstrap_means(diff: np.ndarray, seed: int) -> np.ndarray:
    """Means of resamples of ``diff`` (with replacement), drawn in blocks of rows: the same
    draws, in the same order, as one (resamples, n) array."""
    n = len(diff)
    resamples = int(min(RESAMPLES, max(1_000, MAX_DRAWS // n)))
    rows = max(1, BLOCK_DRAWS // n)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, rows):
        count = min(rows, resamples - start)
        means[start : start + count] = diff[rng.integers(0, n, (count, n))].mean(axis=1)
    return means


def compare(ours: npt.ArrayLike, theirs: npt.ArrayLike, seed: int = 0) -> PairedComparison:
    """Per-query scores of two pipelines on the same queries, in the same order."""
    a, b = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"need two equal, non-empty 1-d arrays, got {a.shape} and {b.shape}")
    diff = a - b
    low, high = np.percentile(_bootstrap_means(diff, seed), [2.5, 97.5])
    better, worse = int((diff > 0).sum()), int((diff < 0).sum())
    return PairedComparison(
        mean=round(float(diff.mean()), 4),
        ci95=(round(float(low), 4), round(float(high), 4)),
        better=better,
        worse=worse,
        sign_test_p=float(f"{sign_test_p(better, worse):.3g}"),
    )


def compare_keyed(
    ours: Mapping[str, float], theirs: Mapping[str, float], seed: int = 0
) -> PairedComparison | None:
    """Scores keyed by query: the queries both scored, NaN (nothing to find) left out;
    None when there are none."""
    shared = [q for q in ours if q in theirs and not (math.isnan(ours[q]) or math.isnan(theirs[q]))]
    if not shared:
        return None
    return compare([ours[q] for q in shared], [theirs[q] for q in shared], seed)

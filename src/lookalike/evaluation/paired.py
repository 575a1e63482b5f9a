"""Two pipelines scored on the same queries: is one of them really worse? Pure NumPy.

Each pipeline gives one number per query (its P@k, the reciprocal rank of the original, or
1/0 for "first hit right"). With a few dozen queries, a difference of one or two queries is
well within chance, so a comparison reports more than the two means:

- ``mean``: the mean per-query difference (ours - theirs);
- ``ci95``: a paired bootstrap 95% interval of that mean (10,000 resamples of the queries,
  seeded, so the same inputs give the same interval);
- ``better`` / ``worse``: the queries where ours is above / below theirs;
- ``sign_test_p``: the exact two-sided sign test on those queries (ties left out), which
  stays valid when only a handful of queries differ and the bootstrap cannot tell.

``clearly_worse`` is the check the quality tests and benchmarks apply: ours loses more
queries than it wins *and* the sign test says that split is unlikely to be chance.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

RESAMPLES = 10_000
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

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ci95"] = list(self.ci95)
        return out


def sign_test_p(better: int, worse: int) -> float:
    """Two-sided exact sign test: the chance of a split at least this uneven between
    ``better`` and ``worse`` queries if each were a coin toss (1.0 when none differ)."""
    n = better + worse
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(better, worse) + 1)) / 2**n
    return min(1.0, 2.0 * tail)


def compare(ours: npt.ArrayLike, theirs: npt.ArrayLike, seed: int = 0) -> PairedComparison:
    """Per-query scores of two pipelines on the same queries, in the same order."""
    a, b = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"need two equal, non-empty 1-d arrays, got {a.shape} and {b.shape}")
    diff = a - b
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (RESAMPLES, len(diff)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    better, worse = int((diff > 0).sum()), int((diff < 0).sum())
    return PairedComparison(
        mean=round(float(diff.mean()), 4),
        ci95=(round(float(low), 4), round(float(high), 4)),
        better=better,
        worse=worse,
        sign_test_p=float(f"{sign_test_p(better, worse):.3g}"),
    )

"""lookalike.evaluation.paired: two pipelines on the same queries, hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lookalike.evaluation.paired import compare, compare_keyed, sign_test_p


def test_sign_test_by_hand() -> None:
    assert sign_test_p(0, 0) == 1.0
    assert sign_test_p(3, 3) == 1.0  # P(X <= 3 | n=6) = 42/64 > 1/2, capped
    assert sign_test_p(0, 5) == pytest.approx(2 / 32)  # both tails of 1/32
    assert sign_test_p(6, 0) == pytest.approx(2 / 64)
    assert sign_test_p(1, 7) == pytest.approx(2 * (1 + 8) / 256)
    assert sign_test_p(8, 13) == sign_test_p(13, 8)


def test_sign_test_equals_whole_number_binomials() -> None:
    def exact(better: int, worse: int) -> float:
        n = better + worse
        tail = sum(math.comb(n, i) for i in range(min(better, worse) + 1)) / 2**n
        return min(1.0, 2 * tail) if n else 1.0

    for better, worse in [(b, w) for b in range(0, 40, 3) for w in range(0, 40, 4)] + [
        (2282, 1686),
        (80, 30),
    ]:
        assert sign_test_p(better, worse) == pytest.approx(exact(better, worse), rel=1e-9)


def test_a_pipeline_losing_a_handful_of_queries_is_not_clearly_worse() -> None:
    # The 60 hard copies' case: four queries lower, none higher, the rest tied.
    theirs = np.ones(60)
    ours = theirs.copy()
    ours[[3, 17, 30, 44]] = 0.5
    result = compare(ours, theirs)
    assert (result.better, result.worse) == (0, 4)
    assert result.mean == pytest.approx(-2 / 60, abs=1e-4)
    assert result.sign_test_p == pytest.approx(2 / 16)
    assert not result.clearly_worse


def test_a_pipeline_losing_many_queries_is_clearly_worse() -> None:
    rng = np.random.default_rng(1)
    theirs = rng.random(200)
    ours = theirs - 0.1 * (rng.random(200) < 0.3)  # 30% of the queries lower
    result = compare(ours, theirs)
    assert result.worse > 40 and result.better == 0
    assert result.clearly_worse
    assert result.ci95[1] < 0 < -result.ci95[0]
    # Better and clearly better is never "clearly worse".
    assert not compare(theirs, ours).clearly_worse


def test_the_interval_is_seeded_and_holds_the_mean() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.random(50), rng.random(50)
    first, again = compare(a, b), compare(a, b)
    assert first == again
    assert first.ci95[0] <= first.mean <= first.ci95[1]
    assert first.to_json()["ci95"] == list(first.ci95)


def test_mismatched_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="equal, non-empty"):
        compare([1.0, 0.0], [1.0])
    with pytest.raises(ValueError, match="equal, non-empty"):
        compare([], [])


def test_keyed_scores_pair_the_shared_queries_and_leave_out_nan() -> None:
    ours = {"a": 1.0, "b": 0.5, "c": float("nan"), "d": 0.2}
    theirs = {"b": 1.0, "a": 0.0, "c": 1.0, "e": 1.0}
    result = compare_keyed(ours, theirs)
    assert result is not None
    assert (result.better, result.worse) == (1, 1)  # a higher, b lower; c and d, e left out
    assert result.mean == pytest.approx((1.0 - 0.5) / 2)
    assert result.verdict == "no clear difference"
    assert compare_keyed({"a": 1.0}, {"b": 1.0}) is None
    assert compare_keyed({"a": float("nan")}, {"a": 1.0}) is None


def test_verdicts() -> None:
    theirs = np.zeros(40)
    assert compare(theirs + 1.0, theirs).verdict == "clearly better"
    assert compare(theirs, theirs + 1.0).verdict == "clearly worse"
    assert compare(theirs, theirs).to_json()["verdict"] == "no clear difference"


def test_the_bootstrap_draws_in_blocks_what_one_array_would_hold() -> None:
    # Blocks keep memory bounded for big evaluations and change no interval: the same
    # draws in the same order as one (10,000, n) array of resampled indices.
    from lookalike.evaluation import paired

    diff = np.random.default_rng(3).random(1_500) - 0.5
    whole = diff[np.random.default_rng(0).integers(0, 1_500, (10_000, 1_500))].mean(axis=1)
    assert np.array_equal(paired._bootstrap_means(diff, 0), whole)
    # Past MAX_DRAWS / n queries fewer resamples are drawn (here 2,000 for 100k queries).
    assert len(paired._bootstrap_means(np.zeros(100_000), 0)) == 2_000

"""Deciding the index kind: the --memory-budget option, memory estimates and `auto`."""

from __future__ import annotations

from pathlib import Path

import pytest

from lookalike.errors import IndexBuildError, LookalikeError
from lookalike.index.budget import (
    EXACT_MAX,
    choose_kind,
    estimate_bytes,
    ivf_nlist,
    parse_memory_budget,
    pq_m,
)
from lookalike.index.manager import IndexManager
from lookalike.store import Store

GIB = 1 << 30


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4G", 4 * GIB),
        ("4g", 4 * GIB),
        ("4GB", 4 * GIB),
        ("4GiB", 4 * GIB),
        (" 512M ", 512 << 20),
        ("1.5G", int(1.5 * GIB)),
        ("800k", 800 << 10),
        ("2T", 2 << 40),
        ("1000000", 1_000_000),
        ("123B", 123),
        (4096, 4096),
    ],
)
def test_memory_budgets_parse_to_bytes(text: str | int, expected: int) -> None:
    assert parse_memory_budget(text) == expected


@pytest.mark.parametrize("text", ["", "G", "four gigs", "4X", "-1G", "4 G B", "0", "0.0001", "1e9"])
def test_bad_memory_budgets_are_refused_with_a_clear_message(text: str) -> None:
    with pytest.raises(IndexBuildError) as info:
        parse_memory_budget(text)
    assert isinstance(info.value, LookalikeError)
    message = str(info.value)
    assert repr(text) in message and "\n" not in message


def test_estimates_order_the_kinds_by_memory() -> None:
    n, dim = 1_000_000, 1280
    hnsw, sq8, ivfpq = (estimate_bytes(k, n, dim) for k in ("hnsw", "hnsw-sq8", "ivfpq"))
    assert estimate_bytes("exact", n, dim) == 0  # streams the vector file
    assert hnsw > 4 * dim * n  # float32 copies of every vector
    assert dim * n < sq8 < 1.6 * 1024 * n  # one byte a dimension, plus the graph
    assert ivfpq < 200 * n
    with pytest.raises(IndexBuildError, match="unknown index kind"):
        estimate_bytes("annoy", n, dim)


def test_auto_chooses_by_size_then_by_budget() -> None:
    dim = 1280
    assert choose_kind(0, dim, GIB) == "exact"
    assert choose_kind(EXACT_MAX - 1, dim, GIB) == "exact"
    n = 1_000_000
    assert choose_kind(n, dim, 64 * GIB) == "hnsw"
    assert choose_kind(n, dim, 4 * GIB) == "hnsw-sq8"  # float32 graph needs ~5.3G
    assert choose_kind(n, dim, GIB) == "ivfpq"
    with pytest.raises(IndexBuildError, match="too small") as info:
        choose_kind(n, dim, 10 << 20)
    assert "--memory-budget" in str(info.value)


def test_auto_does_not_flip_back_and_forth_around_a_threshold() -> None:
    dim = 512
    shrunk = int(EXACT_MAX * 0.8)
    assert choose_kind(shrunk, dim, 4 * GIB) == "exact"
    assert choose_kind(shrunk, dim, 4 * GIB, current="hnsw") == "hnsw"
    assert choose_kind(EXACT_MAX // 3, dim, 4 * GIB, current="hnsw") == "exact"
    # An index that still fits is kept even if a bigger budget would allow another kind.
    assert choose_kind(2 * EXACT_MAX, dim, 64 * GIB, current="ivfpq") == "ivfpq"
    # One that no longer fits is replaced.
    n = 1_000_000
    assert choose_kind(n, dim, estimate_bytes("ivfpq", n, dim), current="hnsw") == "ivfpq"


def test_ivf_and_pq_sizes_follow_the_collection() -> None:
    assert ivf_nlist(1_000_000) == 1024  # capped: k-means cost at 1M x 1280
    assert ivf_nlist(100_000) == 512
    assert ivf_nlist(3000) == 64
    for n in (1000, 3000, 100_000, 1_000_000):
        assert n // ivf_nlist(n) >= 39  # enough training points per list
    assert pq_m(1280) == 64 and 1280 % pq_m(1280) == 0
    assert pq_m(48) == 3 and pq_m(128) == 8 and pq_m(7) == 1


def test_an_unknown_kind_is_refused(tmp_path: Path) -> None:
    store = Store.create(tmp_path, {"model": {"model": "t", "dim": 4}})
    with pytest.raises(IndexBuildError, match="unknown index kind 'annoy'"):
        IndexManager(store, kind="annoy")
    with pytest.raises(IndexBuildError, match="not a size"):
        IndexManager(store, memory_budget="lots")

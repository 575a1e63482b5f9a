"""`auto` keeps its promise: when tuning misses the recall target it falls back to exact
search (if the vector file fits the memory budget) and says so; an asked-for kind is kept
and `info` says the target was missed. The exact/approximate boundary is inclusive."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lookalike.cli.info_cmd import _index_line
from lookalike.index.budget import EXACT_MAX, choose_kind, estimate_bytes
from lookalike.index.exact import topk_blockwise
from lookalike.index.manager import IndexManager
from lookalike.index.synthetic import clustered_vectors
from lookalike.store import NewImage, Store

DIM = 48
N = 3000
# No index reaches recall 1.01: a target every tuning run misses, with the real tuner.
UNREACHABLE = 1.01


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setattr("lookalike.index.budget.EXACT_MAX", 2000)  # auto goes approximate
    store = Store.create(tmp_path, {"model": {"model": "synthetic", "dim": DIM}})
    vectors = clustered_vectors(N, DIM, seed=5)
    images = [NewImage(f"/v/{i}.jpg", 1, 1, f"h{i}") for i in range(N)]
    store.add_images(images, vectors)
    return store


def test_boundary_is_inclusive() -> None:
    assert choose_kind(EXACT_MAX, 1280, 64 << 30) == "exact"  # "exact up to 50,000"
    assert choose_kind(EXACT_MAX + 1, 1280, 64 << 30) != "exact"


def test_auto_falls_back_to_exact_when_tuning_misses(store: Store) -> None:
    report = IndexManager(store, target_recall=UNREACHABLE).sync()
    assert report["kind"] == "exact" and "fell back to exact" in report["note"]
    meta = json.loads((store.root / "index.json").read_text())
    assert meta["kind"] == "exact" and meta["recall"]["recall_target_met"] is True
    assert meta["fallback"]["kind"] == "hnsw"
    assert meta["fallback"]["recall_target_met"] is False
    assert not list(store.root.glob("index-*"))  # the missed index is not kept

    # Reopened, it stays exact (no rebuild each sync) and searches exactly.
    manager = IndexManager(store, target_recall=UNREACHABLE)
    again = manager.sync()
    assert again["kind"] == "exact" and again["rebuilt"] is False
    queries = store.matrix()[:5]
    truth = topk_blockwise(store.matrix(), store.row_ids(), queries, 10)
    np.testing.assert_array_equal(manager.search(queries, 10).ids, truth.ids)
    info = manager.describe()
    assert info["recall_target_met"] is True and info["fallback"]["kind"] == "hnsw"
    assert "fell back to exact" in _index_line(info)


def test_asked_for_kind_is_kept_and_the_miss_is_shown(store: Store) -> None:
    report = IndexManager(store, kind="hnsw", target_recall=UNREACHABLE).sync()
    assert report["kind"] == "hnsw" and "kept (as asked)" in report["note"]
    info = IndexManager(store, kind="hnsw", target_recall=UNREACHABLE).describe()
    assert info["recall_target_met"] is False
    assert "MISSED" in _index_line(info)


def test_no_fallback_when_exact_does_not_fit_the_budget(store: Store) -> None:
    budget = estimate_bytes("ivfpq", N, DIM)  # PQ codes fit; the float32 vectors do not
    assert budget < N * DIM * 4
    manager = IndexManager(store, memory_budget=budget, target_recall=UNREACHABLE)
    report = manager.sync()
    assert report["kind"] == "ivfpq" and "does not fit the memory budget" in report["note"]
    assert manager.describe()["recall_target_met"] is False


def test_a_met_target_is_shown(store: Store) -> None:
    manager = IndexManager(store)
    assert manager.sync()["kind"] == "hnsw"
    info = manager.describe()
    assert info["recall_target_met"] is True and "target 0.95 met" in _index_line(info)

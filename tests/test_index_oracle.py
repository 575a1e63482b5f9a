"""Every index kind against exact search as the oracle, through IndexManager on a real Store.

Data: seeded clustered synthetic vectors (lookalike.index.synthetic), small enough to
build each index in well under a second. Queries are fresh draws from the same
distribution, not stored vectors, so no query finds itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lookalike.errors import IndexBuildError
from lookalike.index.base import MISSING_ID, SearchHits
from lookalike.index.budget import estimate_bytes
from lookalike.index.exact import topk_blockwise
from lookalike.index.manager import IndexManager
from lookalike.index.synthetic import ClusteredGenerator, default_spec
from lookalike.index.tuning import recall_at_k
from lookalike.store import NewImage, Store

DIM = 48
N = 3000
KINDS = ["exact", "hnsw", "hnsw-sq8", "ivfpq"]
APPROX = ["hnsw", "hnsw-sq8", "ivfpq"]


class Data:
    """A clustered stream: stored vectors and held-apart queries from one distribution."""

    def __init__(self, seed: int = 0) -> None:
        self.gen = ClusteredGenerator(default_spec(N, DIM, seed))
        self._next_chunk = 0

    def vectors(self, n: int) -> np.ndarray:
        self._next_chunk += 1
        return self.gen.chunk(self._next_chunk, n)

    def queries(self, n: int = 200) -> np.ndarray:
        return self.gen.chunk(10_000, n)


def new_store(root: Path) -> Store:
    return Store.create(root, {"model": {"model": "synthetic", "dim": DIM}})


def add(store: Store, vectors: np.ndarray, tag: str) -> np.ndarray:
    images = [NewImage(f"/{tag}/{i}.jpg", 1, 1, f"{tag}-{i}") for i in range(len(vectors))]
    return np.array(store.add_images(images, vectors), dtype=np.int64)


def remove(store: Store, ids: np.ndarray) -> None:
    store.apply_changes(removals=[int(i) for i in ids])


def oracle(store: Store, queries: np.ndarray, k: int) -> SearchHits:
    return topk_blockwise(store.matrix(), store.row_ids(), queries, k)


def vector_of(store: Store) -> dict[int, np.ndarray]:
    matrix, row_ids = store.matrix(), store.row_ids()
    return {int(i): matrix[r] for r, i in enumerate(row_ids) if i != MISSING_ID}


def check_hits(store: Store, queries: np.ndarray, hits: SearchHits, k: int) -> None:
    """Well-formed results: k columns, sorted, no repeats, live ids, exact scores."""
    assert hits.ids.shape == hits.scores.shape == (len(queries), k)
    live = vector_of(store)
    for q, ids, scores in zip(queries, hits.ids, hits.scores, strict=True):
        found = ids[ids != MISSING_ID]
        assert len(set(found.tolist())) == len(found)
        assert set(found.tolist()) <= set(live)
        assert np.all(np.diff(scores[np.isfinite(scores)]) <= 1e-6)  # best first
        assert np.all(ids[len(found) :] == MISSING_ID)  # padding only at the end
        assert np.all(np.isneginf(scores[len(found) :]))
        exact = np.array([q @ live[int(i)] for i in found], dtype=np.float32)
        np.testing.assert_allclose(scores[: len(found)], exact, atol=1e-5)


@pytest.fixture
def data() -> Data:
    return Data(seed=3)


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_reaches_the_recall_target_against_exact_search(
    tmp_path: Path, data: Data, kind: str
) -> None:
    store = new_store(tmp_path)
    add(store, data.vectors(N), "a")
    manager = IndexManager(store, kind=kind, seed=1)
    report = manager.sync()
    assert report["kind"] == kind and report["rebuilt"] and report["count"] == N

    queries = data.queries()
    hits = manager.search(queries, 10)
    check_hits(store, queries, hits, 10)
    recall = recall_at_k(hits.scores, oracle(store, queries, 10).scores)
    assert recall >= 0.95

    info = manager.describe()
    assert info["kind"] == kind and info["count"] == N
    assert info["recall_at_10"] >= 0.95  # measured at build on held-out vectors
    if kind != "exact":
        assert info["recall_queries"] >= 50 and info["recall_target_met"] is True
        assert 0 < info["bytes_per_vector"] < 4 * DIM * 4  # no more than a few copies


@pytest.mark.parametrize("kind", KINDS)
def test_k_larger_than_the_collection_returns_everything_then_padding(
    tmp_path: Path, data: Data, kind: str
) -> None:
    store = new_store(tmp_path)
    ids = add(store, data.vectors(1200), "a")
    remove(store, ids[:100])
    manager = IndexManager(store, kind=kind)
    manager.sync()
    queries = data.queries(3)
    hits = manager.search(queries, 1500)
    check_hits(store, queries, hits, 1500)
    for row in hits.ids:
        assert sorted(row[:1100].tolist()) == sorted(ids[100:].tolist())
        assert np.all(row[1100:] == MISSING_ID)


@pytest.mark.parametrize("kind", KINDS)
def test_a_tiny_collection_uses_exact_search_whatever_the_kind(
    tmp_path: Path, data: Data, kind: str
) -> None:
    store = new_store(tmp_path)
    ids = add(store, data.vectors(5), "a")
    manager = IndexManager(store, kind=kind)
    manager.sync()
    queries = data.queries(2)
    hits = manager.search(queries, 10)
    check_hits(store, queries, hits, 10)
    assert np.array_equal(hits.ids, oracle(store, queries, 10).ids)
    assert sorted(hits.ids[0, :5].tolist()) == sorted(ids.tolist())
    info = manager.describe()
    assert info["kind"] == "exact" and info["requested_kind"] == kind
    if kind != "exact":
        assert "exact search until" in info["note"]


@pytest.mark.parametrize("kind", [*KINDS, "auto"])
def test_an_empty_collection_searches_to_padding(tmp_path: Path, kind: str) -> None:
    store = new_store(tmp_path)
    manager = IndexManager(store, kind=kind)
    report = manager.sync()
    assert report["count"] == 0
    hits = manager.search(np.ones((2, DIM), dtype=np.float32) / np.sqrt(DIM), 4)
    assert np.all(hits.ids == MISSING_ID) and np.all(np.isneginf(hits.scores))
    assert manager.describe()["count"] == 0
    assert manager.search(np.zeros((0, DIM), dtype=np.float32), 3).ids.shape == (0, 3)
    assert manager.search(np.ones((1, DIM), dtype=np.float32), 0).ids.shape == (1, 0)


@pytest.mark.parametrize("kind", APPROX)
def test_add_and_remove_sequences_stay_correct_without_rebuilding(
    tmp_path: Path, data: Data, kind: str
) -> None:
    rng = np.random.default_rng(7)
    store = new_store(tmp_path)
    live = add(store, data.vectors(N), "start")
    manager = IndexManager(store, kind=kind, seed=2)
    manager.sync()
    removed: list[int] = []
    queries = data.queries(150)
    steps = [("add", 150), ("remove", 120), ("update", 40), ("add", 60), ("remove", 200)]
    for step, (op, count) in enumerate(steps):
        if op == "add":
            live = np.concatenate([live, add(store, data.vectors(count), f"s{step}")])
        elif op == "remove":
            gone = rng.choice(live, count, replace=False)
            remove(store, gone)
            removed += gone.tolist()
            live = np.setdiff1d(live, gone)
        else:  # an edited file: its old id goes, a new id comes with a new vector
            old = rng.choice(live, count, replace=False)
            remove(store, old)
            removed += old.tolist()
            live = np.concatenate([np.setdiff1d(live, old), add(store, data.vectors(count), "u")])
        report = manager.sync()
        assert report["rebuilt"] is False, report
        assert report["count"] == len(live) == store.count()
        hits = manager.search(queries, 50)
        assert not np.isin(hits.ids, removed).any()
        check_hits(store, queries, hits, 50)
        truth = oracle(store, queries, 10)
        assert recall_at_k(hits.scores[:, :10], truth.scores) >= 0.95
        assert_vectors_of_is_the_store(manager, store, rng.choice(live, 60, replace=False))
    # Every live vector can still be found: each stored vector finds itself first.
    probe = rng.choice(live, 100, replace=False)
    mine = manager.search(store.vectors_for(probe.tolist()), 1)
    assert np.mean(mine.ids[:, 0] == probe) >= 0.98
    info = manager.describe()
    assert info["added_since_build"] == 150 + 40 + 60
    assert info["removed_since_build"] == 120 + 40 + 200


@pytest.mark.parametrize("kind", APPROX)
def test_the_index_persists_and_reloads_without_rebuilding(
    tmp_path: Path, data: Data, kind: str
) -> None:
    store = new_store(tmp_path)
    add(store, data.vectors(N), "a")
    first = IndexManager(store, kind=kind)
    first.sync()
    queries = data.queries(50)
    before = first.search(queries, 10)
    generation = sorted(p.name for p in tmp_path.glob("index-*"))
    assert len(generation) == 1 and (tmp_path / "index.json").exists()

    reopened = Store.open(tmp_path)
    second = IndexManager(reopened, kind=kind)
    after = second.search(queries, 10)  # loads the saved index (memory-mapped)
    np.testing.assert_array_equal(after.ids, before.ids)
    np.testing.assert_allclose(after.scores, before.scores, atol=1e-6)
    assert sorted(p.name for p in tmp_path.glob("index-*")) == generation
    assert second.describe() == first.describe()
    report = second.sync()  # nothing changed: nothing to do
    assert report["rebuilt"] is False and report["added"] == report["removed"] == 0
    assert_vectors_of_is_the_store(second, reopened, np.array(sorted(vector_of(reopened)))[::37])


def assert_vectors_of_is_the_store(manager: IndexManager, store: Store, ids: np.ndarray) -> None:
    """What re-ranking reads: the stored vectors of live ids, bit for bit."""
    ids = np.sort(np.asarray(ids, dtype=np.int64))
    np.testing.assert_array_equal(manager.vectors_of(ids), store.vectors_for(ids.tolist()))


def test_a_stale_index_is_brought_up_to_date_before_searching(tmp_path: Path, data: Data) -> None:
    store = new_store(tmp_path)
    ids = add(store, data.vectors(N), "a")
    IndexManager(store, kind="hnsw").sync()
    remove(store, ids[:10])  # changed by someone who did not sync
    fresh = add(store, data.vectors(5), "b")
    hits = IndexManager(Store.open(tmp_path), kind="hnsw").search(
        store.vectors_for(fresh.tolist()), 1
    )
    assert np.array_equal(hits.ids[:, 0], fresh)
    assert not np.isin(hits.ids, ids[:10]).any()


@pytest.mark.parametrize("kind", KINDS)
def test_a_long_lived_reader_sees_another_processs_sync(
    tmp_path: Path, data: Data, kind: str
) -> None:
    """The web server's case: one manager keeps serving while another process indexes."""
    store = new_store(tmp_path)
    ids = add(store, data.vectors(N), "a")
    IndexManager(store, kind=kind).sync()
    reader = IndexManager(Store.open(tmp_path), kind=kind)
    queries = data.queries(5)
    reader.search(queries, 10)

    writer = Store.open(tmp_path)  # as `lookalike index` in another process
    fresh = add(writer, data.vectors(5), "b")
    # Mid-index: rows appended, no sync yet. The reader answers from what it knew.
    hits = reader.search(writer.vectors_for(fresh.tolist()), 1)
    assert not np.isin(hits.ids, fresh).any()
    remove(writer, ids[:10])
    IndexManager(writer, kind=kind).sync()

    hits = reader.search(writer.vectors_for(fresh.tolist()), 1)
    assert np.array_equal(hits.ids[:, 0], fresh)
    check_hits(writer, queries, reader.search(queries, 10), 10)
    assert not np.isin(reader.search(queries, 50).ids, ids[:10]).any()


@pytest.mark.parametrize("kind", APPROX)
def test_more_effort_finds_at_least_as_much(tmp_path: Path, data: Data, kind: str) -> None:
    store = new_store(tmp_path)
    add(store, data.vectors(N), "a")
    manager = IndexManager(store, kind=kind)
    manager.sync()
    queries = data.queries(300)
    truth = oracle(store, queries, 10).scores
    recalls = []
    for effort in (0.25, 1.0, 8.0):
        hits = manager.search(queries, 10, effort=effort)
        check_hits(store, queries, hits, 10)
        recalls.append(recall_at_k(hits.scores, truth))
    assert recalls[0] < recalls[1] <= recalls[2]
    assert recalls[2] >= 0.99
    with pytest.raises(IndexBuildError, match="effort"):
        manager.search(queries, 10, effort=0)


def test_a_changed_file_is_found_under_its_new_id_only(tmp_path: Path, data: Data) -> None:
    store = new_store(tmp_path)
    old_vectors = data.vectors(N)
    ids = add(store, old_vectors, "a")
    manager = IndexManager(store, kind="hnsw-sq8")
    manager.sync()
    # Re-adding a stored path (the file changed) gives it a new id and a new vector.
    replacement = data.vectors(1)
    (new_id,) = store.add_images([NewImage("/a/0.jpg", 2, 2, "new-hash")], replacement)
    report = manager.sync()
    assert report["added"] == report["removed"] == 1
    hits = manager.search(np.concatenate([replacement, old_vectors[:1]]), 10)
    assert hits.ids[0, 0] == new_id
    assert hits.scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert ids[0] not in hits.ids


@pytest.mark.parametrize("kind", ["hnsw-sq8", "ivfpq"])
def test_store_compaction_keeps_the_index_valid(tmp_path: Path, data: Data, kind: str) -> None:
    store = new_store(tmp_path)
    ids = add(store, data.vectors(N), "a")
    manager = IndexManager(store, kind=kind)
    manager.sync()
    remove(store, ids[::10])
    assert store.compact() == len(ids[::10])  # rows renumbered, ids kept
    report = manager.sync()
    assert report["rebuilt"] is False and report["removed"] == len(ids[::10])
    queries = data.queries(100)
    hits = manager.search(queries, 10)
    check_hits(store, queries, hits, 10)
    assert recall_at_k(hits.scores, oracle(store, queries, 10).scores) >= 0.95


def test_hnsw_is_rebuilt_once_many_entries_are_deleted(tmp_path: Path, data: Data) -> None:
    store = new_store(tmp_path)
    ids = add(store, data.vectors(N), "a")
    manager = IndexManager(store, kind="hnsw")
    manager.sync()
    remove(store, ids[:100])
    assert manager.sync()["rebuilt"] is False
    remove(store, ids[100:800])
    report = manager.sync()
    assert report["rebuilt"] is True and "compaction" in report["reason"]
    assert manager.describe()["removed_since_build"] == 0


def test_the_index_is_retuned_when_the_collection_doubles(tmp_path: Path, data: Data) -> None:
    store = new_store(tmp_path)
    add(store, data.vectors(1500), "a")
    manager = IndexManager(store, kind="ivfpq")
    assert manager.sync()["nlist"] == 32
    add(store, data.vectors(1600), "b")
    report = manager.sync()
    assert report["rebuilt"] is True and "since the index was tuned" in report["reason"]
    assert report["nlist"] == 64 and manager.describe()["built_count"] == 3100


def test_changing_the_kind_rebuilds_and_drops_the_old_files(tmp_path: Path, data: Data) -> None:
    store = new_store(tmp_path)
    add(store, data.vectors(N), "a")
    IndexManager(store, kind="hnsw").sync()
    old = {p.name for p in tmp_path.glob("index-*")}
    report = IndexManager(store, kind="ivfpq").sync()
    assert report["rebuilt"] is True and "from hnsw to ivfpq" in report["reason"]
    assert not old & {p.name for p in tmp_path.glob("index-*")}
    report = IndexManager(store, kind="exact").sync()
    assert report["kind"] == "exact" and not list(tmp_path.glob("index-*"))


def test_leftovers_of_a_crashed_sync_are_harmless(tmp_path: Path, data: Data) -> None:
    store = new_store(tmp_path)
    add(store, data.vectors(N), "a")
    manager = IndexManager(store, kind="hnsw")
    manager.sync()
    stray = tmp_path / "index-1"  # a generation written but never made current
    stray.mkdir()
    (stray / "index.faiss").write_bytes(b"partial")
    add(store, data.vectors(10), "b")
    manager.sync()
    assert not stray.exists()

    (tmp_path / "index.json").write_text("{ torn")  # unreadable: rebuilt from the store
    report = IndexManager(store, kind="hnsw").sync()
    assert report["rebuilt"] is True and report["count"] == N + 10


def test_auto_picks_exact_for_small_collections_and_hnsw_above(
    tmp_path: Path, data: Data, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = new_store(tmp_path)
    add(store, data.vectors(N), "a")
    assert IndexManager(store).sync()["kind"] == "exact"  # well below 50k
    monkeypatch.setattr("lookalike.index.budget.EXACT_MAX", 2000)
    assert IndexManager(store, memory_budget="1G").sync()["kind"] == "hnsw"
    # A budget that holds 8-bit codes but not float32 ones, then one for PQ codes only.
    sq8, ivfpq = estimate_bytes("hnsw-sq8", N, DIM), estimate_bytes("ivfpq", N, DIM)
    assert ivfpq < sq8 < estimate_bytes("hnsw", N, DIM)
    assert IndexManager(store, memory_budget=sq8).sync()["kind"] == "hnsw-sq8"
    assert IndexManager(store, memory_budget=ivfpq).sync()["kind"] == "ivfpq"
    with pytest.raises(IndexBuildError, match="too small"):
        IndexManager(store, memory_budget=ivfpq // 2).sync()


@pytest.mark.parametrize("sq8", [False, True])
def test_the_float_graph_hands_back_its_vectors_as_added_and_sq8_does_not(sq8: bool) -> None:
    """held_vectors (what re-ranking reads on a float HNSW graph): bit for bit the vectors
    added, for live ids only, an id removed and added again as its new vector; None for
    8-bit codes, or when any id asked for is not held."""
    from lookalike.index.hnsw import HNSWIndex

    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((300, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = HNSWIndex(16, sq8=sq8)
    index.add(np.arange(300, dtype=np.int64) * 7, vectors)
    asked = np.array([0, 70, 2093], dtype=np.int64)
    if sq8:
        assert index.held_vectors(asked) is None
        return
    np.testing.assert_array_equal(index.held_vectors(asked), vectors[[0, 10, 299]])
    index.remove(np.array([70], dtype=np.int64))
    assert index.held_vectors(asked) is None  # 70 is gone
    assert index.held_vectors(np.array([5], dtype=np.int64)) is None  # never added
    again = -vectors[10]
    index.add(np.array([70], dtype=np.int64), again[None, :])
    np.testing.assert_array_equal(
        index.held_vectors(asked), np.stack([vectors[0], again, vectors[299]])
    )

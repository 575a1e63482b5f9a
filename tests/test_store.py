"""The collection on disk: a self-describing manifest, refusing to mix models, crash-safe
vector appends, the writer lock."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import COUNTING_MODEL, TEST_MODEL, EmbedLog
from lookalike.collection import Collection
from lookalike.errors import CollectionError, ModelMismatchError
from lookalike.models import ModelOptions
from lookalike.store import FORMAT_VERSION, MANIFEST, NewImage, Store
from lookalike.vectors import l2_normalize

DIM = 8


def _unit(n: int, seed: int = 0) -> np.ndarray:
    return l2_normalize(np.random.default_rng(seed).standard_normal((n, DIM)))


def _store(root: Path) -> Store:
    return Store.create(root, {"model": {"model": "test", "dim": DIM}})


def _image(path: str, digest: str = "") -> NewImage:
    return NewImage(path=path, size=1, mtime_ns=1, hash=digest or f"hash-{path}")


# ----- the manifest ------------------------------------------------------------------------


def test_manifest_describes_the_collection(db: Path, photos: dict[str, Path]) -> None:
    with Collection.open(db, model=TEST_MODEL, create=True) as col:
        col.index([photos["astronaut"].parent])
        info = col.embedder.info
    manifest = json.loads((db / MANIFEST).read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    model = manifest["model"]
    assert model["model"] == TEST_MODEL
    assert model["dim"] == info.dim == 16 * 16 * 3
    assert model["input_size"] == info.input_size
    assert model["preprocessing"] == dict(info.preprocessing)
    assert model["weights"] == info.weights_id  # raw-pixels has no weights: "none"
    # Reopened with no model named, the collection knows its own model.
    with Collection.open(db) as col:
        assert col.model_name == TEST_MODEL
        assert col.count() == len(photos)


def test_indexing_with_another_model_is_refused(
    db: Path, photos: dict[str, Path], counting_model: EmbedLog
) -> None:
    with Collection.open(db, model=TEST_MODEL, create=True) as col:
        col.index([photos["astronaut"]])
    with pytest.raises(ModelMismatchError) as info:
        Collection.open(db, model=COUNTING_MODEL, create=True)
    message = str(info.value)
    assert TEST_MODEL in message and COUNTING_MODEL in message
    assert f"--model {TEST_MODEL}" in message and "--db" in message  # says what to do
    assert "\n" not in message
    assert counting_model.count == 0
    with Collection.open(db) as col:
        assert col.count() == 1


def test_same_name_but_other_preprocessing_is_refused(db: Path, photos: dict[str, Path]) -> None:
    with Collection.open(db, model=TEST_MODEL, create=True) as col:
        col.index([photos["astronaut"]])
    manifest = json.loads((db / MANIFEST).read_text())
    manifest["model"]["preprocessing"]["resize"] = [32, 32]
    (db / MANIFEST).write_text(json.dumps(manifest))
    with (
        Collection.open(db) as col,
        pytest.raises(ModelMismatchError, match="preprocessing"),
    ):
        col.index([photos["chelsea"]])
    with Collection.open(db) as col:
        assert col.count() == 1


def test_a_collection_remembers_its_model_options(
    db: Path, photos: dict[str, Path], counting_model: EmbedLog
) -> None:
    """Reopened without options, a "gem" collection keeps using "gem" (not the default)."""
    gem = ModelOptions(pool="gem")
    with Collection.open(db, model=COUNTING_MODEL, model_options=gem, create=True) as col:
        col.index([photos["astronaut"], photos["chelsea"]])
    with Collection.open(db) as col:
        assert col.embedder.info.preprocessing["pool"] == "gem"
        (result,) = col.search([photos["coffee"]], k=1)
        assert len(result.results) == 1
        assert col.index([photos["coffee"]]).added == 1
    # Asking for other options explicitly is still refused.
    with (
        Collection.open(db, model_options=ModelOptions(pool="avg")) as col,
        pytest.raises(ModelMismatchError, match="preprocessing"),
    ):
        col.index([photos["rocket"]])


def test_unknown_format_version_is_refused(db: Path, photos: dict[str, Path]) -> None:
    with Collection.open(db, model=TEST_MODEL, create=True) as col:
        col.index([photos["astronaut"]])
    manifest = json.loads((db / MANIFEST).read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (db / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CollectionError, match="format"):
        Collection.open(db)


def test_opening_a_missing_collection_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(CollectionError, match="lookalike index"):
        Collection.open(tmp_path / "nothing-here")
    assert not (tmp_path / "nothing-here").exists()


def test_damaged_manifest_is_a_collection_error(db: Path) -> None:
    db.mkdir()
    (db / MANIFEST).write_text("{not json")
    with pytest.raises(CollectionError, match="manifest"):
        Collection.open(db)


# ----- vectors and records -----------------------------------------------------------------


def test_add_images_round_trip(tmp_path: Path) -> None:
    store = _store(tmp_path / "c")
    vectors = _unit(5)
    ids = store.add_images([_image(f"/p/{i}.jpg") for i in range(5)], vectors)
    assert store.count() == 5 and store.vector_rows() == 5
    assert np.array_equal(store.vectors_for(ids), vectors)
    assert [r.path for r in store.records()] == [f"/p/{i}.jpg" for i in range(5)]
    # Replacing a path (a changed file) gives a new id and a new row; the old row is dead.
    new_vec = _unit(1, seed=9)
    (new_id,) = store.add_images([_image("/p/2.jpg", "changed")], new_vec)
    assert new_id not in ids and store.find(ids[2]) is None
    assert store.count() == 5 and store.dead_rows() == 1
    assert np.array_equal(store.vectors_for([new_id]), new_vec)
    assert list(store.row_ids()) == [ids[0], ids[1], -1, ids[3], ids[4], new_id]
    store.close()


def test_a_truncated_vector_file_is_a_clear_error(tmp_path: Path) -> None:
    store = _store(tmp_path / "c")
    ids = store.add_images([_image(f"/p/{i}.jpg") for i in range(5)], _unit(5))
    with open(store.vectors_path, "r+b") as fh:  # damaged behind lookalike's back
        fh.truncate(2 * DIM * 4)
    assert np.array_equal(store.vectors_for(ids[:2]), store.matrix()[:2])
    with pytest.raises(CollectionError, match="damaged"):
        store.vectors_for(ids)
    store.close()


def test_vectors_without_a_commit_are_never_used(tmp_path: Path) -> None:
    """A crash after the vector append but before the SQLite commit leaves dead rows only."""
    store = _store(tmp_path / "c")
    ids = store.add_images([_image("/p/a.jpg"), _image("/p/b.jpg")], _unit(2))
    store._append_vectors(_unit(3, seed=5))  # the "crashed" batch
    with open(store.vectors_path, "ab") as fh:
        fh.write(b"\x01\x02\x03")  # and a torn partial row
    store.close()

    store = Store.open(tmp_path / "c")
    assert store.count() == 2 and store.vector_rows() == 5
    assert list(store.row_ids()) == [*ids, -1, -1, -1]
    later = _unit(1, seed=7)
    (cid,) = store.add_images([_image("/p/c.jpg")], later)
    assert store.get(cid).row == 5  # after the dead rows, over the torn bytes
    assert store.vectors_path.stat().st_size == 6 * DIM * 4
    before = store.vectors_for([*ids, cid])
    assert store.compact() == 3
    assert store.vector_rows() == 3 and store.dead_rows() == 0
    assert np.array_equal(store.vectors_for([*ids, cid]), before)
    assert sorted(p.name for p in store.root.glob("vectors*.f32")) == [store.vectors_path.name]
    store.close()


def test_apply_changes(tmp_path: Path) -> None:
    store = _store(tmp_path / "c")
    a, b, c = store.add_images([_image(f"/p/{n}.jpg") for n in "abc"], _unit(3))
    store.apply_changes(
        moves=[(a, "/q/a.jpg", 2, 3)],
        touches=[(b, 7, 8)],
        removals=[c],
        skips=[("/p/bad.jpg", 1, 2, "damaged")],
    )
    assert store.get(a).path == "/q/a.jpg" and store.get(a).row == 0
    assert (store.get(b).size, store.get(b).mtime_ns) == (7, 8)
    assert store.find(c) is None and store.count() == 2
    assert store.skipped() == [{"path": "/p/bad.jpg", "reason": "damaged"}]
    store.apply_changes(unskips=["/p/bad.jpg"])
    assert store.skipped() == []
    store.close()


def test_records_under_respects_folder_boundaries_and_odd_names(tmp_path: Path) -> None:
    store = _store(tmp_path / "c")
    paths = ["/x/a/1.jpg", "/x/a/sub/2.jpg", "/x/ab/3.jpg", "/x/a[1]/4.jpg", "/x/a*/5.jpg", "/x/a"]
    store.add_images([_image(p) for p in paths], _unit(len(paths)))
    assert set(store.records_under("/x/a")) == {"/x/a/1.jpg", "/x/a/sub/2.jpg", "/x/a"}
    assert set(store.records_under("/x/a[1]")) == {"/x/a[1]/4.jpg"}
    assert set(store.records_under("/x/a*")) == {"/x/a*/5.jpg"}
    assert set(store.records_under("/x/ab/3.jpg")) == {"/x/ab/3.jpg"}
    store.close()


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    first = _store(tmp_path / "c")
    second = Store.open(tmp_path / "c")
    first.lock()
    with pytest.raises(CollectionError, match="another lookalike process"):
        second.lock()
    first.unlock()
    second.lock()  # free again
    second.close()
    first.close()


def test_wrong_vector_shape_is_refused(tmp_path: Path) -> None:
    store = _store(tmp_path / "c")
    with pytest.raises(CollectionError, match="dim"):
        store.add_images([_image("/p/a.jpg")], np.ones((1, DIM + 1), np.float32))
    assert store.count() == 0 and store.vector_rows() == 0
    store.close()

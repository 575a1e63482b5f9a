"""Damaged or contended collections (issue 14, the collection-state half): each case is
made from a fresh collection, then every command must answer in one line naming the file
and the fix (exit 1), never a traceback; and after the repair step every image's own
content finds itself at rank 1 with score 1.0, so nothing is silently wrong."""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from conftest import TEST_MODEL
from lookalike.store import MANIFEST, META, Store, take_lock

Cli = Callable[..., Result]
CliJson = Callable[..., Any]
SMALL_MODEL = "pixels-8"  # 8x8 RGB = 192-d, against raw-pixels' 768-d


@pytest.fixture
def small_model() -> Iterator[str]:
    """A second fake model with another dimension, registered through the real registry."""
    import numpy as np
    from PIL import Image

    from lookalike.models import registry
    from lookalike.models.base import ModelInfo
    from lookalike.models.pixels import RawPixelsEmbedder

    class Pixels8(RawPixelsEmbedder):
        def __init__(self) -> None:
            super().__init__()
            self.info = ModelInfo(
                name=SMALL_MODEL, dim=192, input_size=8, preprocessing={"resize": [8, 8]}
            )

        def prepare(self, image: Image.Image) -> Any:
            small = image.convert("RGB").resize((8, 8), Image.Resampling.BOX)
            arr = np.asarray(small, dtype=np.float32).reshape(-1) / 255.0
            return arr - arr.mean()

    registry.list_models()
    registry.register(
        registry.ModelEntry(
            name=SMALL_MODEL,
            dim=192,
            input_size=8,
            description="test: 8x8 pixels",
            factory=lambda _options: Pixels8(),
            weights_available=lambda: True,
        )
    )
    yield SMALL_MODEL
    registry._REGISTRY.pop(SMALL_MODEL, None)


def one_line(result: Result, *needles: str, code: int = 1) -> str:
    """The command failed with exit `code`, one line on stderr holding every needle,
    and nothing (no partial JSON) on stdout."""
    assert result.exit_code == code, (result.exit_code, result.output, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert result.stdout == ""
    return lines[0]


def copies_of(photos: dict[str, Path], folder: Path) -> dict[Path, Path]:
    """Byte copies of the photos elsewhere: original -> copy (queries that are not
    themselves indexed, so search doesn't leave them out of their own results)."""
    folder.mkdir(exist_ok=True)
    out = {}
    for path in photos.values():
        copy = folder / path.name
        shutil.copyfile(path, copy)
        out[path] = copy
    return out


def assert_each_finds_itself(
    cli_json: CliJson, db: Path, photos: dict[str, Path], tmp_path: Path
) -> None:
    copies = copies_of(photos, tmp_path / "queries")
    results = cli_json("search", *copies.values(), "--db", db, "-k", "1")
    by_query = {r["query"]: r["results"] for r in results}
    for original, copy in copies.items():
        hits = by_query[str(copy.absolute())]
        assert hits, copy
        assert hits[0]["path"] == str(original.absolute()), (copy, hits)
        assert hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    info = cli_json("info", "--db", db)
    assert info["count"] == len(photos)


def vector_files(db: Path) -> list[Path]:
    return sorted(db.glob("vectors*.f32"))


# ----- 1: two first-time runs with different models -------------------------------------


def test_create_waits_for_no_one_and_writes_nothing_while_another_writes(
    cli: Cli, cli_json: CliJson, db: Path, photos: dict[str, Path], tmp_path: Path
) -> None:
    db.mkdir()
    held = take_lock(db)  # another process is creating / writing this collection
    try:
        result = cli("index", photos["coins"].parent, "--db", db, "--model", TEST_MODEL)
        one_line(result, str(db), "another lookalike process is writing")
        assert not (db / MANIFEST).exists()
        assert not vector_files(db)
    finally:
        held.close()
    cli_json("index", photos["coins"].parent, "--db", db, "--model", TEST_MODEL)
    assert_each_finds_itself(cli_json, db, photos, tmp_path)


def test_racing_first_runs_with_different_models_never_disagree(
    cli_json: CliJson, small_model: str, photos: dict[str, Path], tmp_path: Path
) -> None:
    from lookalike.collection import Collection
    from lookalike.errors import CollectionError

    for attempt in range(6):
        db = tmp_path / f"db{attempt}"
        barrier = threading.Barrier(2)
        outcomes: dict[str, str] = {}

        def run(
            model: str,
            db: Path = db,
            barrier: threading.Barrier = barrier,
            outcomes: dict[str, str] = outcomes,
        ) -> None:
            barrier.wait()
            try:
                with Collection.open(db, model=model, create=True) as col:
                    col.index([photos["coins"].parent])
                outcomes[model] = "ok"
            except CollectionError as exc:  # ModelMismatchError included
                outcomes[model] = str(exc)

        threads = [threading.Thread(target=run, args=(m,)) for m in (TEST_MODEL, small_model)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [m for m, o in outcomes.items() if o == "ok"]
        assert len(winners) == 1, outcomes
        manifest = json.loads((db / MANIFEST).read_text())
        assert manifest["model"]["model"] == winners[0]
        (vectors,) = vector_files(db)
        assert vectors.stat().st_size == len(photos) * 4 * manifest["model"]["dim"]
        assert_each_finds_itself(cli_json, db, photos, tmp_path)


# ----- 2: a truncated vector file -------------------------------------------------------


@pytest.mark.parametrize("keep", [0.5, 0.0])
def test_truncated_vector_file_is_refused_then_repaired_by_index(
    cli: Cli,
    cli_json: CliJson,
    db: Path,
    photos: dict[str, Path],
    tmp_path: Path,
    keep: float,
) -> None:
    folder = photos["coins"].parent
    cli_json("index", folder, "--db", db, "--model", TEST_MODEL)
    (vectors,) = vector_files(db)
    row = 4 * 768
    # A bad copy: whole rows lost, and half a row torn at the end.
    os.truncate(vectors, int(len(photos) * keep) * row + row // 2)
    fix = f"lookalike index PATH --db {db}"
    for args in (
        ("info",),
        ("info", "--json"),
        ("search", photos["coins"]),
        ("search", "--all", "--json"),
        ("duplicates", "--json"),
    ):
        one_line(cli(*args, "--db", db), str(vectors), "truncated", fix)

    result = cli("index", folder, "--db", db, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    lost = len(photos) - int(len(photos) * keep)
    assert report["repaired"] == lost
    assert report["added"] == lost and report["total"] == len(photos)
    assert "repaired" in result.stderr
    assert_each_finds_itself(cli_json, db, photos, tmp_path)
    # Every image has its own row: none shares one with another.
    with sqlite3.connect(db / META) as con:
        rows = [r[0] for r in con.execute("SELECT row FROM images")]
    assert len(set(rows)) == len(rows) == len(photos)


def test_repair_drops_images_whose_files_are_gone(
    cli: Cli, cli_json: CliJson, db: Path, photos: dict[str, Path], tmp_path: Path
) -> None:
    folder = photos["coins"].parent
    cli_json("index", folder, "--db", db, "--model", TEST_MODEL)
    (vectors,) = vector_files(db)
    os.truncate(vectors, 0)
    gone = photos.pop("coins")
    gone.unlink()
    report = cli_json("index", folder, "--db", db)
    assert report["total"] == len(photos)
    assert_each_finds_itself(cli_json, db, photos, tmp_path)


# ----- 3: manifest deleted --------------------------------------------------------------


def test_deleted_manifest_is_restored_and_another_model_refused(
    cli: Cli,
    cli_json: CliJson,
    db: Path,
    photos: dict[str, Path],
    tmp_path: Path,
    small_model: str,
) -> None:
    folder = photos["coins"].parent
    cli_json("index", folder, "--db", db, "--model", small_model)
    (vectors,) = vector_files(db)
    before = vectors.read_bytes()
    (db / MANIFEST).unlink()
    result = cli("index", folder, "--db", db, "--model", TEST_MODEL)
    one_line(result, str(db), small_model, TEST_MODEL, "--db")
    assert json.loads((db / MANIFEST).read_text())["model"]["model"] == small_model
    assert vector_files(db) == [vectors] and vectors.read_bytes() == before
    report = cli_json("index", folder, "--db", db)
    assert report["unchanged"] == len(photos)
    assert_each_finds_itself(cli_json, db, photos, tmp_path)


def test_manifest_replaced_by_another_models_is_refused(
    cli: Cli, cli_json: CliJson, db: Path, photos: dict[str, Path], small_model: str
) -> None:
    cli_json("index", photos["coins"].parent, "--db", db, "--model", small_model)
    manifest = json.loads((db / MANIFEST).read_text())
    manifest["model"] = {**manifest["model"], "model": TEST_MODEL, "dim": 768}
    (db / MANIFEST).write_text(json.dumps(manifest))
    for args in (("info",), ("search", photos["coins"]), ("index", photos["coins"].parent)):
        one_line(cli(*args, "--db", db), str(db / MANIFEST), "delete", "meta.sqlite")


def test_no_manifest_and_no_recorded_copy_is_refused(
    cli: Cli, cli_json: CliJson, db: Path, photos: dict[str, Path]
) -> None:
    """A collection made before the copy in meta.sqlite existed: nothing to restore from."""
    folder = photos["coins"].parent
    cli_json("index", folder, "--db", db, "--model", TEST_MODEL)
    with sqlite3.connect(db / META) as con:
        con.execute("DELETE FROM kv WHERE key='manifest'")
    (db / MANIFEST).unlink()
    before = {p.name: p.stat().st_size for p in vector_files(db)}
    result = cli("index", folder, "--db", db, "--model", TEST_MODEL)
    one_line(result, str(db), MANIFEST, "new --db")
    assert not (db / MANIFEST).exists()
    assert {p.name: p.stat().st_size for p in vector_files(db)} == before


def test_older_collection_gets_its_model_recorded_on_the_next_write(
    cli_json: CliJson, db: Path, photos: dict[str, Path]
) -> None:
    folder = photos["coins"].parent
    cli_json("index", folder, "--db", db, "--model", TEST_MODEL)
    with sqlite3.connect(db / META) as con:
        con.execute("DELETE FROM kv WHERE key='manifest'")
    cli_json("index", folder, "--db", db)
    assert Store.recorded_manifest(db)["model"]["model"] == TEST_MODEL  # type: ignore[index]


# ----- 6: damaged metadata, manifest, index; read-only copies ---------------------------


@pytest.mark.parametrize("damage", ["not-a-database", "malformed"])
def test_damaged_meta_sqlite_is_one_line(
    cli: Cli, cli_json: CliJson, db: Path, photos: dict[str, Path], damage: str
) -> None:
    cli_json("index", photos["coins"].parent, "--db", db, "--model", TEST_MODEL)
    meta = db / META
    data = bytearray(meta.read_bytes())
    if damage == "not-a-database":
        meta.write_bytes(b"this is not a database\n" * 100)
    else:  # keep the header, scribble over the pages
        data[100:] = b"\xff" * (len(data) - 100)
        meta.write_bytes(bytes(data))
    for args in (("info",), ("search", photos["coins"]), ("index", photos["coins"].parent)):
        one_line(cli(*args, "--db", db), "meta.sqlite", "backup")


def test_manifest_without_model_is_one_line(
    cli: Cli, cli_json: CliJson, db: Path, photos: dict[str, Path], tmp_path: Path
) -> None:
    folder = photos["coins"].parent
    cli_json("index", folder, "--db", db, "--model", TEST_MODEL)
    manifest = json.loads((db / MANIFEST).read_text())
    del manifest["model"]
    (db / MANIFEST).write_text(json.dumps(manifest))
    for args in (("info",), ("search", photos["coins"]), ("index", folder)):
        one_line(cli(*args, "--db", db), str(db / MANIFEST), "'model'", "delete it")
    (db / MANIFEST).unlink()  # the fix the message gives
    cli_json("index", folder, "--db", db)
    assert_each_finds_itself(cli_json, db, photos, tmp_path)


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    }


@pytest.mark.parametrize("stale_index", [False, True])
def test_read_only_copy_can_be_searched_without_writing(
    cli: Cli,
    cli_json: CliJson,
    db: Path,
    photos: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    stale_index: bool,
) -> None:
    folder = photos["coins"].parent
    cli_json("index", folder, "--db", db, "--model", TEST_MODEL)
    if stale_index:
        (db / "index.json").unlink()
    copies = copies_of(photos, tmp_path / "queries")
    # Tests run as root, who may write anywhere: the folder is made to look read-only
    # and the check is that nothing in it changes.
    real_access = os.access
    resolved = db.resolve()

    def access(path: Any, mode: int, **kw: Any) -> bool:
        if mode & os.W_OK and resolved in (Path(path).resolve(), Path(path).resolve().parent):
            return False
        return real_access(path, mode, **kw)

    monkeypatch.setattr(os, "access", access)
    before = _snapshot(db)
    assert cli_json("info", "--db", db)["count"] == len(photos)
    result = cli("search", *copies.values(), "--db", db, "-k", "1", "--json")
    assert result.exit_code == 0, result.output
    for original, hits in zip(copies, json.loads(result.stdout), strict=True):
        assert hits["results"][0]["path"] == str(original)
        assert hits["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    if stale_index:
        assert "read-only" in result.stderr
    assert cli_json("duplicates", "--db", db) is not None
    one_line(cli("index", folder, "--db", db), str(db), "read-only")
    assert _snapshot(db) == before


def test_truncated_index_faiss_is_rebuilt_from_the_vectors(tmp_path: Path) -> None:
    """An approximate index needs 1,000+ images, so this one is made of vectors."""
    import numpy as np

    from lookalike.index.manager import IndexManager
    from lookalike.store import NewImage
    from lookalike.vectors import l2_normalize

    n, dim = 1200, 32
    vectors = l2_normalize(np.random.default_rng(0).standard_normal((n, dim)))
    store = Store.create(tmp_path / "db", {"model": {"model": "synthetic", "dim": dim}})
    images = [NewImage(f"/p/{i}.jpg", 1, 1, f"h{i}") for i in range(n)]
    ids = np.array(store.add_images(images, vectors), dtype=np.int64)
    assert IndexManager(store, kind="hnsw").sync()["kind"] == "hnsw"
    (faiss_file,) = store.root.glob("index-*/index.faiss")
    os.truncate(faiss_file, faiss_file.stat().st_size // 3)

    # Searching: the damaged file is noticed, bypassed (exact search; searching never
    # builds an index), and said so in one line.
    searcher = IndexManager(store, kind="hnsw")
    hits = searcher.search(vectors[:50], 1)
    assert searcher.note is not None and "\n" not in searcher.note
    assert str(faiss_file.parent) in searcher.note and "rebuilt" in searcher.note
    assert (hits.ids[:, 0] == ids[:50]).all()
    assert np.allclose(hits.scores[:, 0], 1.0, atol=1e-5)

    # Indexing (an incremental update) rebuilds a damaged index instead of failing.
    (faiss_file,) = store.root.glob("index-*/index.faiss")
    os.truncate(faiss_file, 10)
    store.add_images([NewImage("/p/new.jpg", 1, 1, "new")], vectors[:1])
    report = IndexManager(store, kind="hnsw").sync()
    assert report["kind"] == "hnsw" and "damaged" in report["reason"]
    hits = IndexManager(store, kind="hnsw").search(vectors, 1)
    assert (hits.ids[1:, 0] == ids[1:]).all()
    assert np.allclose(hits.scores[:, 0], 1.0, atol=1e-5)
    store.close()


# ----- Low: stale files, interrupted create, disk full ----------------------------------


def test_old_vector_file_left_by_a_crash_after_compaction_is_removed(
    cli_json: CliJson, db: Path, photos: dict[str, Path], tmp_path: Path
) -> None:
    folder = photos["coins"].parent
    cli_json("index", folder, "--db", db, "--model", TEST_MODEL)
    (current,) = vector_files(db)
    stale = db / "vectors-1.f32"  # the file a compaction switched away from
    shutil.copyfile(current, stale)
    cli_json("index", folder, "--db", db)
    assert vector_files(db) == [current]
    assert_each_finds_itself(cli_json, db, photos, tmp_path)


def test_interrupted_create_is_started_over(
    cli: Cli, cli_json: CliJson, db: Path, photos: dict[str, Path], tmp_path: Path
) -> None:
    db.mkdir()
    (db / (MANIFEST + ".tmp")).write_text('{"format_version": 1, "mod')  # torn write
    one_line(cli("info", "--db", db), str(db), "lookalike index PATH")
    cli_json("index", photos["coins"].parent, "--db", db, "--model", TEST_MODEL)
    assert not (db / (MANIFEST + ".tmp")).exists()
    assert_each_finds_itself(cli_json, db, photos, tmp_path)


def test_disk_full_names_the_file_and_gives_a_hint(
    cli: Cli,
    cli_json: CliJson,
    db: Path,
    photos: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import lookalike.store as store_module

    folder = photos["coins"].parent
    first = {"coins": photos["coins"]}
    cli_json("index", first["coins"], "--db", db, "--model", TEST_MODEL)

    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as mp:
        mp.setattr(store_module.os, "fsync", full)
        result = cli("index", folder, "--db", db)
    (vectors,) = vector_files(db)
    one_line(result, str(vectors), "No space left", "free some space")
    cli_json("index", folder, "--db", db)
    assert_each_finds_itself(cli_json, db, photos, tmp_path)


def test_database_full_is_one_line_naming_meta_sqlite(
    cli: Cli, cli_json: CliJson, db: Path, photos: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = photos["coins"].parent
    cli_json("index", photos["coins"], "--db", db, "--model", TEST_MODEL)

    def full(*_args: Any, **_kw: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    with monkeypatch.context() as mp:
        mp.setattr(Store, "add_images", full)
        result = cli("index", folder, "--db", db)
    one_line(result, "meta.sqlite", "disk is full", "free disk space")
    assert cli_json("index", folder, "--db", db)["total"] == len(photos)

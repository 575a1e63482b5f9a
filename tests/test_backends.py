"""The storage contract, one suite for every backend: the folder, Milvus Lite embedded,
and Milvus Lite as its own server process (the network path a Milvus cluster uses).

Incremental counts, moves, kill -9 resume, model refusal, the exact-search oracle,
`--under` filters and bad files, each checked the same way on each backend.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from conftest import COUNTING_MODEL, TEST_MODEL, EmbedLog, lookalike_command
from lookalike.collection import Collection
from lookalike.errors import CollectionError, ModelMismatchError
from lookalike.store import NewImage
from lookalike.vectors import l2_normalize
from milvus_helpers import drop_collections, lite_server, require_milvus

BACKENDS = ["folder", "milvus-lite", "milvus-server"]


@pytest.fixture(scope="session")
def milvus_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_milvus()
    with lite_server(tmp_path_factory.mktemp("milvus-server")) as address:
        yield address


@pytest.fixture(params=BACKENDS)
def backend_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A --db value (not created yet) for each backend."""
    kind = request.param
    if kind == "folder":
        yield str(tmp_path / "db")
        return
    require_milvus()
    if kind == "milvus-lite":
        yield f"milvus-lite://{tmp_path / 'lite.db'}"
        return
    address = request.getfixturevalue("milvus_address")
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield f"milvus://{address}/{name}"
    drop_collections(address, [name, name + "__meta", name + "__skipped"])


def _open(db: str, **kw: Any) -> Collection:
    return Collection.open(db, **{"model": TEST_MODEL, "create": True, **kw})


def _image(path: Path, seed: int, size: tuple[int, int] = (48, 40)) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture
def album(tmp_path: Path) -> Path:
    """Two albums of distinct random images, one corrupt file among them."""
    root = tmp_path / "pics"
    for i in range(5):
        _image(root / "a_b" / f"{i}.png", i)
        _image(root / "axb" / f"{i}.png", 100 + i)
    (root / "a_b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


def test_incremental_counts(backend_db: str, album: Path) -> None:
    with _open(backend_db) as col:
        first = col.index([album])
        assert (first.added, first.total, len(first.skipped)) == (10, 10, 1)
        again = col.index([album])
        assert (again.added, again.unchanged, again.removed) == (0, 10, 0)
        _image(album / "axb" / "0.png", 999)  # new content at the same path
        (album / "axb" / "1.png").unlink()
        _image(album / "axb" / "new.png", 555)
        changed = col.index([album])
        assert (changed.added, changed.updated, changed.removed, changed.unchanged) == (1, 1, 1, 8)
        assert changed.total == col.count() == 10
        paths = sorted(r.path for r in col.store.iter_records())
        assert len(paths) == len(set(paths)) == 10
        # The replaced file's vector is its new content's.
        rec = col.store.by_path(str(album / "axb" / "0.png"))
        fresh = col.embed_images([Image.open(album / "axb" / "0.png").convert("RGB")])[0]
        np.testing.assert_allclose(col.store.vectors_for([rec.id])[0], fresh, atol=1e-5)


def test_moves_keep_vectors(backend_db: str, album: Path, counting_model: EmbedLog) -> None:
    with _open(backend_db, model=COUNTING_MODEL) as col:
        col.index([album])
        before = {
            Path(r.path).name + r.path.split("/")[-2]: (r.id, col.store.vectors_for([r.id])[0])
            for r in col.store.iter_records()
        }
        counting_model.clear()
        (album / "a_b" / "0.png").rename(album / "a_b" / "zero.png")
        shutil.move(str(album / "axb"), str(album / "moved"))
        report = col.index([album])
        assert (report.moved, report.added, report.removed) == (6, 0, 0)
        assert counting_model.count == 0  # nothing embedded again
        moved = col.store.by_path(str(album / "moved" / "3.png"))
        old_id, old_vector = before["3.pngaxb"]
        assert moved.id == old_id
        np.testing.assert_array_equal(col.store.vectors_for([moved.id])[0], old_vector)
        assert col.store.by_path(str(album / "axb" / "3.png")) is None


def test_copies_reuse_the_stored_vector(
    backend_db: str, album: Path, counting_model: EmbedLog
) -> None:
    with _open(backend_db, model=COUNTING_MODEL) as col:
        col.index([album])
        counting_model.clear()
        shutil.copy(album / "a_b" / "2.png", album / "a_b" / "copy.png")
        report = col.index([album])
        assert (report.added, counting_model.count) == (1, 0)
        a = col.store.by_path(str(album / "a_b" / "2.png"))
        b = col.store.by_path(str(album / "a_b" / "copy.png"))
        np.testing.assert_array_equal(*col.store.vectors_for([a.id, b.id]))


def test_model_refusal(backend_db: str, album: Path, counting_model: EmbedLog) -> None:
    with _open(backend_db) as col:
        col.index([album])
    with pytest.raises(ModelMismatchError, match="raw-pixels"):
        Collection.open(backend_db, model=COUNTING_MODEL)
    # The identity is stored with the vectors and read back on open.
    with Collection.open(backend_db) as col:
        info = col.info()
        assert info["model"] == TEST_MODEL and info["dim"] == 768
        assert info["model_identity"] == col.embedder.info.identity()
        assert info["format_version"] == 1


def test_missing_collection_is_one_clear_error(backend_db: str) -> None:
    with pytest.raises(CollectionError, match="no collection here yet"):
        Collection.open(backend_db)


def test_bad_files_reported(backend_db: str, album: Path) -> None:
    broken = str(album / "a_b" / "broken.png")
    with _open(backend_db) as col:
        report = col.index([album])
        assert [s.path for s in report.skipped] == [broken]
        assert "not an image" in report.skipped[0].reason
        assert col.info()["skipped"] == [{"path": broken, "reason": report.skipped[0].reason}]
        # Still reported next run, without being read again; fixed, it is indexed.
        assert [s.path for s in col.index([album]).skipped] == [broken]
        _image(Path(broken), 7)
        fixed = col.index([album])
        assert (fixed.added, fixed.skipped) == (1, [])
        assert col.info()["skipped"] == []


def test_exact_search_oracle(backend_db: str) -> None:
    """Recall@10 against brute force over the same vectors; scores are cosines."""
    rng = np.random.default_rng(0)
    centres = l2_normalize(rng.standard_normal((20, 768)))
    vectors = l2_normalize(
        centres[rng.integers(0, 20, 3000)] + 0.35 * rng.standard_normal((3000, 768))
    ).astype(np.float32)
    images = [NewImage(f"/synthetic/{i % 4}/{i}.png", 1, 1, f"h{i}") for i in range(3000)]
    with _open(backend_db) as col:
        ids = []
        for start in range(0, 3000, 500):
            ids += col.store.add_images(images[start : start + 500], vectors[start : start + 500])
        col.backend.lock()
        col.backend.finish_index_run()
        col.backend.unlock()
        queries = l2_normalize(
            vectors[rng.integers(0, 3000, 50)] + 0.1 * rng.standard_normal((50, 768))
        ).astype(np.float32)
        hits = col.backend.search(queries, 10)
        truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
        id_arr = np.array(ids)
        found = zip(hits.ids, truth, strict=True)
        recall = np.mean([len(set(h) & set(id_arr[t])) / 10 for h, t in found])
        assert recall >= 0.95, recall
        position = {image_id: i for i, image_id in enumerate(ids)}
        for q, row_ids, row_scores in zip(queries, hits.ids, hits.scores, strict=True):
            exact = vectors[[position[int(i)] for i in row_ids]] @ q
            np.testing.assert_allclose(row_scores, exact, atol=1e-4)
            assert np.all(np.diff(row_scores) <= 1e-6)  # best first
        # A filter: only images under /synthetic/2, still the exact top-10 among them.
        under = col.backend.search(queries[:5], 10, under="/synthetic/2")
        in_two = np.array([i % 4 == 2 for i in range(3000)])
        for q, row_ids in zip(queries[:5], under.ids, strict=True):
            assert all(images[position[int(i)]].path.startswith("/synthetic/2/") for i in row_ids)
            best = np.argsort(-np.where(in_two, vectors @ q, -np.inf))[:10]
            assert len(set(row_ids.tolist()) & set(id_arr[best].tolist())) >= 9


def test_search_under_folder(backend_db: str, album: Path, cli_json: Callable[..., Any]) -> None:
    with _open(backend_db) as col:
        col.index([album])
        query = album / "axb" / "2.png"
        (result,) = col.search([query], k=20, under=album / "a_b")
        # "a_b" is a LIKE pattern that also matches "axb": only the real folder counts.
        assert {Path(h.path).parent.name for h in result.results} == {"a_b"}
        assert len(result.results) == 5
        (everything,) = col.search([query], k=20)
        assert len(everything.results) == 9  # itself left out
        listing = list(col.search_all(k=3, under=album / "axb"))
        assert len(listing) == 5
        assert all(Path(h.path).parent.name == "axb" for r in listing for h in r.results)
    out = cli_json("search", str(query), "--db", backend_db, "--under", str(album / "a_b"))
    assert {Path(h["path"]).parent.name for h in out[0]["results"]} == {"a_b"}


def test_cli_every_command(backend_db: str, album: Path, cli_json: Callable[..., Any]) -> None:
    shutil.copy(album / "a_b" / "1.png", album / "axb" / "dup.png")
    report = cli_json("index", str(album), "--db", backend_db, "--model", TEST_MODEL)
    assert (report["added"], report["total"]) == (11, 11)
    info = cli_json("info", "--db", backend_db)
    assert info["count"] == 11 and info["index"]["kind"]
    found = cli_json("search", str(album / "a_b" / "1.png"), "--db", backend_db, "-k", "1")
    assert found[0]["results"][0]["path"] == str(album / "axb" / "dup.png")
    assert found[0]["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    listing = cli_json("search", "--all", "-k", "2", "--db", backend_db)
    assert len(listing) == 11 and all(len(r["results"]) == 2 for r in listing)
    groups = cli_json("duplicates", "--db", backend_db)
    assert [sorted(Path(p).name for p in g["paths"]) for g in groups] == [["1.png", "dup.png"]]


def _kill_mid_index(db: str, root: Path, env: dict[str, str]) -> None:
    """`lookalike index` that SIGKILLs itself (or is killed) in the middle of a batch."""
    command = [*lookalike_command(), "index", str(root), "--db", db, "--model", TEST_MODEL]
    proc = subprocess.run(
        [*command, "--batch-size", "4"], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == -9, proc.stderr


def test_kill_9_then_resume(backend_db: str, tmp_path: Path) -> None:
    root = tmp_path / "many"
    paths = [_image(root / f"d{i % 3}" / f"{i:03d}.png", i, (24, 20)) for i in range(60)]
    env = {**os.environ, "LOOKALIKE_COMMIT_EVERY": "4"}
    if backend_db.startswith("milvus"):
        # Killed after the 5th batch's rows are written, before that batch is committed.
        env["LOOKALIKE_TEST_KILL_AFTER_INSERTS"] = "5"
        _kill_mid_index(backend_db, root, env)
    else:
        from test_crash_resume import _kill_after_first_commit

        assert _kill_after_first_commit(root, Path(backend_db)) > 0
    with Collection.open(backend_db) as col:
        at_kill = col.count()
        assert 0 < at_kill < 60 and at_kill % 4 == 0  # whole batches only
    env.pop("LOOKALIKE_TEST_KILL_AFTER_INSERTS", None)
    done = subprocess.run(
        [*lookalike_command(), "index", str(root), "--db", backend_db, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["unchanged"], report["added"], report["total"]) == (at_kill, 60 - at_kill, 60)
    with Collection.open(backend_db) as col:
        records = list(col.store.iter_records())
        assert sorted(r.path for r in records) == sorted(str(p) for p in paths)
        vectors = col.store.vectors_for([r.id for r in records])
        for record, vector in zip(records, vectors, strict=True):
            image = Image.open(record.path).convert("RGB")
            np.testing.assert_allclose(vector, col.embed_images([image])[0], atol=1e-5)


@pytest.mark.parametrize("arrived", [2, 4])
def test_milvus_half_written_batch_is_undone_or_finished(tmp_path: Path, arrived: int) -> None:
    """A batch's journal names its rows: the next writer finishes the batch when all of them
    arrived and deletes them when only some did (a crash in the middle of the insert)."""
    require_milvus()
    db = f"milvus-lite://{tmp_path / 'lite.db'}"
    vectors = l2_normalize(np.random.default_rng(1).standard_normal((6, 768))).astype(np.float32)
    with _open(db) as col:
        backend: Any = col.backend
        backend.add_images([NewImage("/x/old.png", 1, 1, "h-old")], vectors[:1])
        old = backend.by_path("/x/old.png")
        images = [NewImage(f"/x/{i}.png", 1, 1, f"h{i}") for i in range(3)]
        images.append(NewImage("/x/old.png", 2, 2, "h-new"))  # replaces the old one
        first = backend._state()["next_id"]
        journal = backend._begin(
            "add", {"delete": [old.id], "unskip": []}, rows=4, next_id=first + 4
        )
        rows = [
            {
                "id": first + i,
                "path": im.path,
                "size": 1,
                "mtime_ns": 1,
                "hash": im.hash,
                "width": -1,
                "height": -1,
                "batch": journal["batch"],
                "vector": vectors[1 + i].tolist(),
            }
            for i, im in enumerate(images)
        ]
        backend.client.insert(backend.images, rows[:arrived])  # ... and the process died
        backend.lock()  # the next writer recovers
        paths = sorted(r.path for r in backend.iter_records())
        if arrived == 4:
            assert paths == ["/x/0.png", "/x/1.png", "/x/2.png", "/x/old.png"]
            assert backend.by_path("/x/old.png").hash == "h-new"
        else:
            assert paths == ["/x/old.png"] and backend.by_path("/x/old.png").id == old.id
        assert backend._state()["journal"] is None
        backend.unlock()


def test_rest_api_under_and_browse(backend_db: str, album: Path) -> None:
    from fastapi.testclient import TestClient

    from lookalike.web.app import create_app

    with _open(backend_db) as col:
        col.index([album])
        query_id = col.store.by_path(str(album / "axb" / "2.png")).id
    with TestClient(create_app(backend_db)) as client:
        folder = str(album / "a_b")
        got = client.get("/api/search", params={"id": query_id, "k": 20, "under": folder})
        assert got.status_code == 200, got.text
        results = got.json()[0]["results"]
        assert len(results) == 5 and all(Path(r["path"]).parent.name == "a_b" for r in results)
        everything = client.get("/api/search", params={"id": query_id, "k": 20}).json()
        assert len(everything[0]["results"]) == 9
        upload = (album / "axb" / "3.png").read_bytes()
        posted = client.post(
            "/api/search",
            files={"file": ("q.png", upload, "image/png")},
            data={"k": "3", "under": folder},
        )
        assert posted.status_code == 200, posted.text
        assert all(Path(r["path"]).parent.name == "a_b" for r in posted.json()[0]["results"])
        page = client.get("/api/images", params={"offset": 2, "limit": 4}).json()
        assert page["total"] == 10 and len(page["images"]) == 4
        info = client.get("/api/info").json()
        assert info["count"] == 10 and info["backend"] in ("folder", "milvus-lite", "milvus")


def test_image_read_error_has_path_and_reason(tmp_path: Path) -> None:
    from lookalike.errors import ImageReadError
    from lookalike.images import load_image

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    with pytest.raises(ImageReadError) as info:
        load_image(bad)
    assert info.value.path == str(bad)
    assert info.value.reason == "not an image (format not recognised)"
    assert str(info.value) == f"{bad}: not an image (format not recognised)"


def test_eval_keeps_its_embeddings_in_the_db(
    backend_db: str, album: Path, cli_json: Callable[..., Any]
) -> None:
    first = cli_json("eval", album, "--db", backend_db, "--model", TEST_MODEL, "-k", "2")
    assert first["queries"] == 10 and 0.0 <= first["precision_at_k"] <= 1.0
    with Collection.open(backend_db) as col:
        assert col.count() == 10
    again = cli_json("eval", album, "--db", backend_db, "--model", TEST_MODEL, "-k", "2")
    assert again["precision_at_k"] == first["precision_at_k"]


def test_rest_duplicates_run_on_their_own_connection(backend_db: str, album: Path) -> None:
    from fastapi.testclient import TestClient

    from lookalike.web.app import create_app

    shutil.copy(album / "a_b" / "1.png", album / "axb" / "dup.png")
    with _open(backend_db) as col:
        col.index([album])
    with TestClient(create_app(backend_db)) as client:
        for _ in range(2):  # the job's collection is opened and closed each time
            groups = client.get("/api/duplicates").json()
            assert [sorted(Path(p).name for p in g["paths"]) for g in groups] == [
                ["1.png", "dup.png"]
            ]
        assert client.get("/api/info").json()["count"] == 11  # the server's own still works


@pytest.mark.parametrize(
    ("db", "message"),
    [
        ("milvus://nohost/x", "expected milvus://HOST:PORT/NAME"),
        ("milvus://localhost:19530/bad-name", "collection name 'bad-name'"),
        ("milvus-lite:///no/such/folder/x.db", "folder /no/such/folder not found"),
    ],
)
def test_bad_milvus_locations_are_one_line(cli: Callable[..., Any], db: str, message: str) -> None:
    result = cli("info", "--db", db)
    assert result.exit_code == 1
    assert message in result.stderr and result.stderr.count("\n") == 1


def test_milvus_lite_file_in_use_is_one_line(
    tmp_path: Path, run_lookalike: Callable[..., Any]
) -> None:
    require_milvus()
    db = f"milvus-lite://{tmp_path / 'busy.db'}"
    with _open(db):
        done = run_lookalike("info", "--db", db)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "is another process using this file?" in done.stderr

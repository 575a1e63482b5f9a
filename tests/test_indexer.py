"""Incremental indexing: only new or changed files are embedded; moves, copies and deletions
are recognised; bad files are skipped loudly; other folders and missing roots are left alone.

The counting model (raw pixels, registered through the real registry) logs a signature of
every image it is asked to embed, so "not re-embedded" is checked, not assumed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import COUNTING_MODEL, EmbedLog, image_signature
from lookalike.collection import Collection
from lookalike.images import load_image
from lookalike.indexer import IndexReport
from lookalike.models.pixels import RawPixelsEmbedder


def _index(db: Path, *paths: str | os.PathLike[str]) -> IndexReport:
    with Collection.open(db, model=COUNTING_MODEL, create=True) as col:
        return col.index(list(paths), batch_size=4)


def _counts(report: IndexReport) -> dict[str, int]:
    return {
        k: getattr(report, k)
        for k in ("added", "updated", "moved", "removed", "unchanged", "total")
    }


def _vector_of(db: Path, path: Path) -> tuple[int, np.ndarray]:
    with Collection.open(db) as col:
        record = col.store.by_path(str(path))
        assert record is not None, path
        return record.id, col.store.vectors_for([record.id])[0].copy()


def _signature(path: Path) -> str:
    """What the counting model logs when it embeds this file (decoded as the indexer does)."""
    return image_signature(load_image(path, min_side=RawPixelsEmbedder().draft_size))


def _stored_paths(db: Path) -> set[str]:
    with Collection.open(db) as col:
        return {r.path for r in col.store.iter_records()}


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.fixture
def indexed(db: Path, photos: dict[str, Path], counting_model: EmbedLog) -> dict[str, Path]:
    report = _index(db, photos["astronaut"].parent)
    n = len(photos)
    assert _counts(report) == dict(added=n, updated=0, moved=0, removed=0, unchanged=0, total=n)
    assert report.skipped == []
    assert counting_model.count == n
    assert sorted(counting_model.signatures) == sorted(_signature(p) for p in photos.values())
    counting_model.clear()
    return photos


def test_second_run_embeds_nothing(
    db: Path, indexed: dict[str, Path], counting_model: EmbedLog
) -> None:
    report = _index(db, indexed["astronaut"].parent)
    n = len(indexed)
    assert _counts(report) == dict(added=0, updated=0, moved=0, removed=0, unchanged=n, total=n)
    assert counting_model.count == 0


def test_touched_file_is_not_re_embedded(
    db: Path, indexed: dict[str, Path], counting_model: EmbedLog
) -> None:
    path = indexed["coffee"]
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    report = _index(db, path.parent)
    assert report.unchanged == len(indexed) and report.updated == 0
    assert counting_model.count == 0


def test_added_file(
    db: Path, indexed: dict[str, Path], counting_model: EmbedLog, tmp_path: Path
) -> None:
    new = indexed["astronaut"].parent / "new" / "crop.png"
    new.parent.mkdir()
    with Image.open(indexed["astronaut"]) as im:
        im.crop((0, 0, 200, 150)).save(new)
    report = _index(db, new.parent.parent)
    assert report.added == 1 and report.unchanged == len(indexed)
    assert report.total == len(indexed) + 1
    assert counting_model.signatures == [_signature(new)]


def test_modified_file(db: Path, indexed: dict[str, Path], counting_model: EmbedLog) -> None:
    path = indexed["chelsea"]
    old_id, old_vector = _vector_of(db, path)
    with Image.open(indexed["rocket"]) as im:
        im.rotate(90, expand=True).save(path)  # new content under the same name
    report = _index(db, path.parent)
    assert _counts(report) == dict(
        added=0, updated=1, moved=0, removed=0, unchanged=len(indexed) - 1, total=len(indexed)
    )
    assert counting_model.signatures == [_signature(path)]
    new_id, new_vector = _vector_of(db, path)
    assert new_id != old_id  # search indexes see "old id gone, new id added"
    assert float(new_vector @ old_vector) < 0.9


def test_deleted_file(db: Path, indexed: dict[str, Path], counting_model: EmbedLog) -> None:
    indexed["coins"].unlink()
    report = _index(db, indexed["coins"].parent)
    assert report.removed == 1 and report.total == len(indexed) - 1
    assert report.unchanged == len(indexed) - 1
    assert str(indexed["coins"]) not in _stored_paths(db)
    assert counting_model.count == 0


def test_dead_vector_rows_are_reclaimed(
    db: Path, indexed: dict[str, Path], counting_model: EmbedLog
) -> None:
    """Deleting most files leaves dead rows; the run compacts the vector file, and every
    image that stays keeps its vector and is still found."""
    keep = ["astronaut", "coffee", "rocket"]
    kept = {name: _vector_of(db, indexed[name]) for name in keep}
    for name, path in indexed.items():
        if name not in keep:
            path.unlink()
    report = _index(db, indexed["astronaut"].parent)
    assert report.removed == len(indexed) - len(keep) and report.total == len(keep)
    assert report.index["vector_rows_reclaimed"] == len(indexed) - len(keep)
    with Collection.open(db) as col:
        assert col.store.vector_rows() == len(keep) and col.store.dead_rows() == 0
        assert sorted(p.name for p in db.glob("vectors*.f32")) == [col.store.vectors_path.name]
        for name, (image_id, vector) in kept.items():
            assert np.array_equal(col.store.vectors_for([image_id])[0], vector)
            hits = col.search_vectors(vector[None], k=1)[0]
            assert hits[0].path == str(indexed[name]) and hits[0].score > 0.999
    assert counting_model.count == 0


@pytest.mark.parametrize("where", ["same-folder", "sub-folder"])
def test_moved_file_keeps_its_vector(
    db: Path, indexed: dict[str, Path], counting_model: EmbedLog, where: str
) -> None:
    old = indexed["rocket"]
    old_id, old_vector = _vector_of(db, old)
    new = old.with_name("renamed.jpg") if where == "same-folder" else old.parent / "s" / "r.jpg"
    new.parent.mkdir(exist_ok=True)
    old.rename(new)
    report = _index(db, old.parent)
    assert _counts(report) == dict(
        added=0, updated=0, moved=1, removed=0, unchanged=len(indexed) - 1, total=len(indexed)
    )
    assert counting_model.count == 0  # the embedder never saw it
    new_id, new_vector = _vector_of(db, new)
    assert new_id == old_id and np.array_equal(new_vector, old_vector)
    assert str(old) not in _stored_paths(db)


def test_copied_file_reuses_the_vector(
    db: Path, indexed: dict[str, Path], counting_model: EmbedLog
) -> None:
    source = indexed["hubble"]
    copy = source.parent / "copies" / "hubble-copy.jpg"
    copy.parent.mkdir()
    shutil.copy(source, copy)
    report = _index(db, source.parent)
    assert report.added == 1 and report.moved == 0 and report.total == len(indexed) + 1
    assert counting_model.count == 0
    source_id, source_vector = _vector_of(db, source)
    copy_id, copy_vector = _vector_of(db, copy)
    assert copy_id != source_id and np.array_equal(copy_vector, source_vector)


def test_two_identical_files_both_moved(
    db: Path, indexed: dict[str, Path], counting_model: EmbedLog
) -> None:
    root = indexed["coins"].parent
    twin = root / "coins-twin.jpg"
    shutil.copy(indexed["coins"], twin)
    assert _index(db, root).added == 1
    ids = {_vector_of(db, p)[0] for p in (indexed["coins"], twin)}
    archive = root / "archive"
    archive.mkdir()
    indexed["coins"].rename(archive / "a.jpg")
    twin.rename(archive / "b.jpg")
    report = _index(db, root)
    assert (report.moved, report.added, report.removed) == (2, 0, 0)
    assert {_vector_of(db, archive / n)[0] for n in ("a.jpg", "b.jpg")} == ids  # same ids
    assert counting_model.count == 0


def test_rename_and_edit_in_one_run(
    db: Path, indexed: dict[str, Path], counting_model: EmbedLog
) -> None:
    indexed["camera"].rename(indexed["camera"].with_name("camera-moved.jpg"))
    indexed["flower"].unlink()
    with Image.open(indexed["china"]) as im:
        im.transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(indexed["china"])
    report = _index(db, indexed["camera"].parent)
    assert (report.moved, report.removed, report.updated) == (1, 1, 1)
    assert report.total == len(indexed) - 1
    assert counting_model.signatures == [_signature(indexed["china"])]


def test_other_folders_are_left_alone(
    db: Path, indexed: dict[str, Path], counting_model: EmbedLog, tmp_path: Path
) -> None:
    folder_b = tmp_path / "b"
    folder_b.mkdir()
    with Image.open(indexed["coffee"]) as im:
        im.resize((100, 66)).save(folder_b / "small.png")
    report = _index(db, folder_b)
    assert report.added == 1 and report.removed == 0
    assert report.total == len(indexed) + 1
    stored = _stored_paths(db)
    assert {str(p) for p in indexed.values()} <= stored


def test_missing_root_removes_nothing(
    db: Path, indexed: dict[str, Path], counting_model: EmbedLog, tmp_path: Path
) -> None:
    root = indexed["astronaut"].parent
    root.rename(tmp_path / "unplugged")  # a drive that is not mounted right now
    report = _index(db, root)
    assert report.removed == 0 and report.total == len(indexed)
    assert [(s.path, s.reason) for s in report.skipped] == [(str(root), "no such file or folder")]
    assert _stored_paths(db) == {str(p) for p in indexed.values()}


def test_same_folder_spelled_differently_is_the_same_folder(
    db: Path, indexed: dict[str, Path], counting_model: EmbedLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = indexed["astronaut"].parent
    monkeypatch.chdir(root.parent)
    for spelling in (f"{root.name}/../{root.name}", f"./{root.name}/", root.name):
        report = _index(db, spelling)
        assert report.unchanged == len(indexed) and report.added == 0, spelling
    assert counting_model.count == 0
    assert _stored_paths(db) == {str(p) for p in indexed.values()}


def test_bad_files_are_skipped_loudly_and_the_run_goes_on(
    db: Path, photos: dict[str, Path], counting_model: EmbedLog
) -> None:
    root = photos["astronaut"].parent
    data = photos["astronaut"].read_bytes()
    bad = {
        "truncated.jpg": data[: len(data) // 3],
        "empty.jpg": b"",
        "notes.png": b"just some text, not a picture\n",
        "bomb.png": _png_claiming(20000, 20000),
    }
    for name, content in bad.items():
        (root / name).write_bytes(content)
    (root / "readme.txt").write_text("hello")
    (root / "meta.json").write_text("{}")

    report = _index(db, root)
    assert report.added == len(photos) and report.total == len(photos)
    assert report.ignored == 2
    skipped = {s.path: s.reason for s in report.skipped}
    assert set(skipped) == {str(root / name) for name in bad}
    assert "truncated" in skipped[str(root / "truncated.jpg")]
    assert "empty" in skipped[str(root / "empty.jpg")]
    assert "not an image" in skipped[str(root / "notes.png")]
    assert "bomb" in skipped[str(root / "bomb.png")]
    assert all(not r.startswith("/") for r in skipped.values())  # the path is not repeated
    with Collection.open(db) as col:
        assert {s["path"]: s["reason"] for s in col.store.skipped()} == skipped

    # Next run: still reported, nothing decoded or embedded again.
    counting_model.clear()
    again = _index(db, root)
    assert {s.path: s.reason for s in again.skipped} == skipped
    assert again.unchanged == len(photos) and counting_model.count == 0

    # Repaired and deleted bad files leave the skipped list.
    shutil.copy(photos["coffee"], root / "truncated.jpg")
    (root / "notes.png").unlink()
    (root / "bomb.png").unlink()
    fixed = _index(db, root)
    assert fixed.added == 1 and {s.path for s in fixed.skipped} == {str(root / "empty.jpg")}
    with Collection.open(db) as col:
        assert [s["path"] for s in col.store.skipped()] == [str(root / "empty.jpg")]


def test_symlink_loop_does_not_hang(
    db: Path, photos: dict[str, Path], counting_model: EmbedLog
) -> None:
    root = photos["astronaut"].parent
    (root / "inner").mkdir()
    (root / "inner" / "back-to-top").symlink_to(root, target_is_directory=True)
    report = _index(db, root)
    assert report.added == len(photos) and report.total == len(photos)


# ----- each file read once: hashed from the bytes decoded ----------------------------------


def test_digest_format_is_unchanged() -> None:
    """Stored hashes are BLAKE2b-128 hex of the file's bytes: collections made before keep
    matching (a different digest would make every file look changed)."""
    from lookalike.hashing import bytes_digest

    assert bytes_digest(b"lookalike") == "a47cc7f521bfe9ec68e2e41a630b35ac"


def _early_hashes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Records the files the indexer hashes before embedding (the second read)."""
    from lookalike import indexer

    hashed: list[Path] = []
    real = indexer.digest_many

    def counting(paths: Sequence[Path], workers: int = 2) -> Iterator[str | OSError]:
        hashed.extend(paths)
        return real(paths, workers)

    monkeypatch.setattr(indexer, "digest_many", counting)
    return hashed


def test_new_files_are_read_once_and_stored_with_the_file_digest(
    db: Path, photos: dict[str, Path], counting_model: EmbedLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lookalike.hashing import file_digest

    hashed = _early_hashes(monkeypatch)
    report = _index(db, photos["astronaut"].parent)
    assert report.added == len(photos) and hashed == []  # no read before the pipeline's
    with Collection.open(db) as col:
        stored = {r.path: r.hash for r in col.store.iter_records()}
    assert stored == {str(p): file_digest(p) for p in photos.values()}
    # Unchanged files stay unchanged; a touched one is hashed (only it) and kept.
    path = photos["coffee"]
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    counting_model.clear()
    report = _index(db, path.parent)
    assert report.unchanged == len(photos) and counting_model.count == 0
    assert hashed == [path]


def test_only_files_sized_like_a_stored_one_are_hashed_early(
    db: Path, indexed: dict[str, Path], counting_model: EmbedLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy has its twin's size, so it is hashed before embedding (and not embedded);
    a new photo of another size is read once, by the pipeline."""
    hashed = _early_hashes(monkeypatch)
    folder = indexed["hubble"].parent
    copy = folder / "copies" / "hubble-copy.jpg"
    copy.parent.mkdir()
    shutil.copy(indexed["hubble"], copy)
    fresh = folder / "new.png"
    Image.new("RGB", (50, 40), (10, 200, 30)).save(fresh)
    sizes = {p.stat().st_size for p in indexed.values()}
    assert fresh.stat().st_size not in sizes
    report = _index(db, folder)
    assert report.added == 2 and report.moved == 0
    assert hashed == [copy] and counting_model.count == 1

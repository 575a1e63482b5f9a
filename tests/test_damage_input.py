"""Issue 14, the input half: odd file names and odd files never abort, hang or mislabel a run.

- a file name that is not valid UTF-8 is indexed, found again ("unchanged") and shown with
  replacement characters in JSON;
- only regular files are read: a FIFO or a /dev/zero symlink, given as PATH or inside a
  folder, is skipped with a reason saying what it is (no hang, no spin);
- a file replaced while it is being indexed is stored with the hash of the bytes embedded;
- a PATH that does not exist makes `index` exit 1 after indexing the others (issue 15).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import Result

from conftest import lookalike_command
from lookalike import indexer
from lookalike.collection import Collection
from lookalike.images import load_image, scan
from lookalike.models.pixels import RawPixelsEmbedder

Cli = Callable[..., Result]
CliJson = Callable[..., Any]
TEST_MODEL = "raw-pixels"
REPLACEMENT = "\ufffd"


def _digest(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()


def _bytes_path(folder: Path, name: bytes) -> Path:
    """A path whose last part is the raw bytes ``name`` (surrogate-escaped in Python)."""
    return Path(os.fsdecode(os.path.join(os.fsencode(folder), name)))


# ----- file names that are not valid UTF-8 -----------------------------------------------


def test_non_utf8_names_are_indexed_and_found_again(
    cli_json: CliJson, db: Path, photos: dict[str, Path]
) -> None:
    folder = photos["astronaut"].parent
    latin1 = _bytes_path(folder, b"caf\xe9.jpg")  # Latin-1 "café.jpg" from an old disk
    shutil.copyfile(photos["coffee"], latin1)
    shutil.copyfile(photos["coins"], _bytes_path(folder, b"coins-\xff.jpg"))
    broken = _bytes_path(folder, b"broken-\xfe.jpg")
    broken.write_bytes(b"not an image at all")

    report = cli_json("index", folder, "--db", db, "--model", TEST_MODEL)
    # Copies of coffee/coins reuse their vectors; every good file is in, the bad one skipped.
    assert report["total"] == len(photos) + 2
    assert [s["path"] for s in report["skipped"]] == [f"{folder}/broken-{REPLACEMENT}.jpg"]

    # Stored losslessly: the real name is found again, nothing is re-embedded.
    with Collection.open(db) as col:
        record = col.store.by_path(str(latin1))
        assert record is not None and record.hash == _digest(latin1)
        assert str(latin1) in col.store.records_under(str(folder))
    again = cli_json("index", folder, "--db", db)
    assert again["unchanged"] == len(photos) + 2 and again["added"] == 0
    assert again["removed"] == 0 and len(again["skipped"]) == 1

    # Shown with replacement characters: valid UTF-8 JSON that names the file.
    (result,) = cli_json("search", photos["coffee"], "--db", db, "-k", "1")
    assert result["results"][0]["path"] == f"{folder}/caf{REPLACEMENT}.jpg"
    assert result["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    info = cli_json("info", "--db", db)
    assert f"{folder}/broken-{REPLACEMENT}.jpg" in json.dumps(info, ensure_ascii=False)

    # Gone from disk: dropped like any other file.
    latin1.unlink()
    assert cli_json("index", folder, "--db", db)["removed"] == 1


def test_non_utf8_name_in_text_output(
    run_lookalike: Callable[..., Any], db: Path, photos: dict[str, Path]
) -> None:
    """A real process (stdout encoding as a user has it): no UnicodeEncodeError."""
    folder = photos["astronaut"].parent
    shutil.copyfile(photos["coffee"], _bytes_path(folder, b"caf\xe9.jpg"))
    _bytes_path(folder, b"bad-\xe9.jpg").write_bytes(b"junk")
    done = run_lookalike("index", folder, "--db", db, "--model", TEST_MODEL)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "bad-" in done.stderr
    # Text output writes the name's real bytes, as ls does.
    found = subprocess.run(
        [*lookalike_command(), "search", str(photos["coffee"]), "--db", str(db), "-k", "2"],
        capture_output=True,
        timeout=120,
    )
    assert found.returncode == 0, found.stderr
    assert b"caf\xe9.jpg" in found.stdout and b"Traceback" not in found.stderr


# ----- only regular files are read -------------------------------------------------------


@pytest.fixture
def odd_files(tmp_path: Path, photos: dict[str, Path]) -> dict[str, Path]:
    folder = photos["astronaut"].parent
    fifo = folder / "pipe.jpg"
    os.mkfifo(fifo)
    zero = folder / "y.jpg"
    zero.symlink_to("/dev/zero")
    dangling = folder / "gone.jpg"
    dangling.symlink_to(tmp_path / "nowhere.jpg")
    return {"folder": folder, "fifo": fifo, "zero": zero, "dangling": dangling}


def _reasons(report: dict[str, Any]) -> dict[str, str]:
    return {Path(s["path"]).name: s["reason"] for s in report["skipped"]}


def test_fifo_and_devices_inside_a_folder_are_skipped_with_what_they_are(
    run_lookalike: Callable[..., Any], db: Path, photos: dict[str, Path], odd_files: dict[str, Path]
) -> None:
    done = run_lookalike(
        "index", odd_files["folder"], "--db", db, "--model", TEST_MODEL, "--json", timeout=60
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["added"] == len(photos)
    reasons = _reasons(report)
    assert "FIFO" in reasons["pipe.jpg"]
    assert "character device" in reasons["y.jpg"]
    assert reasons["gone.jpg"] == "broken or looping symlink"


@pytest.mark.parametrize("which,what", [("fifo", "FIFO"), ("zero", "character device")])
def test_fifo_or_device_given_as_path_does_not_hang(
    run_lookalike: Callable[..., Any],
    db: Path,
    photos: dict[str, Path],
    odd_files: dict[str, Path],
    which: str,
    what: str,
) -> None:
    target = odd_files[which]
    done = run_lookalike(
        "index", target, photos["coffee"], "--db", db, "--model", TEST_MODEL, "--json", timeout=60
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["added"] == 1
    assert what in _reasons(report)[target.name]
    # As a search query too: one line naming the file, exit 1, no hang.
    query = run_lookalike("search", target, "--db", db, timeout=60)
    assert query.returncode == 1
    assert str(target) in query.stderr and what in query.stderr
    assert "Traceback" not in query.stderr


def test_load_image_refuses_what_is_not_a_regular_file(odd_files: dict[str, Path]) -> None:
    from lookalike.errors import ImageReadError

    with pytest.raises(ImageReadError, match="FIFO"):
        load_image(odd_files["fifo"])
    with pytest.raises(ImageReadError, match="character device"):
        load_image(odd_files["zero"])
    found = scan([odd_files["zero"], odd_files["fifo"]])
    assert found.files == [] and len(found.errors) == 2


# ----- a file replaced while it is being indexed ----------------------------------------


def test_file_replaced_during_indexing_stores_the_hash_of_what_was_embedded(
    monkeypatch: pytest.MonkeyPatch, db: Path, photos: dict[str, Path], tmp_path: Path
) -> None:
    folder = photos["astronaut"].parent
    victim = photos["astronaut"]
    old_bytes = victim.read_bytes()
    real_digest_many = indexer.digest_many

    def digest_then_replace(paths: Sequence[Path], workers: int = 2) -> Iterator[str | OSError]:
        digests = list(real_digest_many(paths, workers))
        # After hashing, before embedding: the user saves another picture over it.
        replacement = tmp_path / "new.jpg"
        shutil.copyfile(photos["rocket"], replacement)
        os.replace(replacement, victim)
        yield from digests

    monkeypatch.setattr(indexer, "digest_many", digest_then_replace)
    with Collection.open(db, model=TEST_MODEL, create=True) as col:
        col.index([folder], batch_size=4)
    monkeypatch.undo()

    with Collection.open(db) as col:
        record = col.store.by_path(str(victim))
        assert record is not None
        # The stored hash/size belong to the bytes whose vector is stored (the new ones).
        assert record.hash == _digest(victim)
        assert record.size == victim.stat().st_size
        stored = col.store.vectors_for([record.id])[0].copy()
    embedder = RawPixelsEmbedder()
    expected = embedder.embed_images([load_image(victim, embedder.draft_size)])[0]
    assert np.allclose(stored, expected, atol=1e-5)

    # A later copy of the old content is embedded as itself, not given rocket's vector.
    old_copy = folder / "old-copy.jpg"
    old_copy.write_bytes(old_bytes)
    with Collection.open(db, model=TEST_MODEL, create=True) as col:
        col.index([folder], batch_size=4)
        record = col.store.by_path(str(old_copy))
        assert record is not None
        copy_vector = col.store.vectors_for([record.id])[0].copy()
    old_expected = embedder.embed_images([load_image(old_copy, embedder.draft_size)])[0]
    assert np.allclose(copy_vector, old_expected, atol=1e-5)
    assert not np.allclose(copy_vector, expected, atol=1e-3)


# ----- exit codes (issue 15, item 4) ------------------------------------------------------


def test_missing_path_exits_1_after_indexing_the_others(
    cli: Cli, db: Path, photos: dict[str, Path], tmp_path: Path
) -> None:
    missing = tmp_path / "typo"
    result = cli("index", missing, photos["coffee"], "--db", db, "--model", TEST_MODEL, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)  # the JSON report is still complete
    assert report["added"] == 1
    assert {"path": str(missing), "reason": "no such file or folder"} in report["skipped"]
    assert result.stderr.strip().splitlines()[-1] == f"error: {missing}: no such file or folder"
    with Collection.open(db) as col:
        assert col.store.by_path(str(photos["coffee"])) is not None


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_inside_a_folder_is_skipped_with_exit_0(
    cli: Cli, db: Path, photos: dict[str, Path]
) -> None:
    photos["coffee"].chmod(0)
    result = cli("index", photos["coffee"].parent, "--db", db, "--model", TEST_MODEL, "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["added"] == len(photos) - 1
    assert "permission denied" in _reasons(report)["coffee.jpg"].lower()


def test_odd_file_inside_a_folder_is_skipped_with_exit_0(
    cli: Cli, db: Path, photos: dict[str, Path]
) -> None:
    """Runs as root too: a file whose content cannot be read as an image stays skipped."""
    (photos["coffee"].parent / "junk.jpg").write_bytes(b"junk")
    result = cli("index", photos["coffee"].parent, "--db", db, "--model", TEST_MODEL, "--json")
    assert result.exit_code == 0
    assert "junk.jpg" in _reasons(json.loads(result.stdout))

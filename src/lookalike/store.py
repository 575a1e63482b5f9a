"""The collection on disk: a manifest, SQLite metadata and a float32 vector file.

Layout of a collection folder::

    manifest.json   format version, model identity, adapter, index settings
    meta.sqlite     one row per image (path, size, mtime, content hash, vector row)
                    and one per skipped file (path, reason)
    vectors.f32     raw float32 rows of `dim` values, append-only, memory-mappable
    lock            held by the one process writing

Crash safety: vectors are appended and fsync'ed *before* the SQLite transaction that
points at them commits. A crash in between leaves only unreferenced rows at the end of
the vector file, which later appends skip past and compaction reclaims.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.errors import CollectionError
from lookalike.vectors import FloatArray, IdArray

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
META = "meta.sqlite"
VECTORS = "vectors.f32"
LOCK = "lock"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    path     TEXT NOT NULL UNIQUE,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    hash     TEXT NOT NULL,
    row      INTEGER NOT NULL,
    width    INTEGER,
    height   INTEGER,
    added_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS images_hash ON images(hash);
CREATE TABLE IF NOT EXISTS skipped (
    path     TEXT PRIMARY KEY,
    size     INTEGER,
    mtime_ns INTEGER,
    reason   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class ImageRecord:
    id: int
    path: str
    size: int
    mtime_ns: int
    hash: str
    row: int
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class NewImage:
    """An image to add (or replace, when its path is already stored) with its vector."""

    path: str
    size: int
    mtime_ns: int
    hash: str
    width: int | None = None
    height: int | None = None


def _db_path(path: str) -> str | bytes:
    """A path as SQLite stores it. Names that are not valid UTF-8 (old disks, network
    shares) reach Python with surrogate escapes, which SQLite cannot take as TEXT: they are
    stored as the file's real bytes (a BLOB), so the file is found again next run."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogateescape")


def _py_path(value: str | bytes) -> str:
    """The inverse of _db_path."""
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


# GLOB does not match BLOBs (names stored as bytes): those are matched on a byte prefix.
_BLOB_UNDER = "(typeof(path)='blob' AND substr(path, 1, ?) = ?)"


def _blob_prefix(prefix: str) -> tuple[int, bytes]:
    raw = prefix.encode("utf-8", "surrogateescape")
    return len(raw), raw


def _record(row: sqlite3.Row | tuple[Any, ...]) -> ImageRecord:
    values = list(row)
    values[1] = _py_path(values[1])
    return ImageRecord(*values)


_COLUMNS = "id, path, size, mtime_ns, hash, row, width, height"


class Store:
    """Low-level access to one collection folder. Not thread-safe; one writer process."""

    def __init__(self, root: Path, manifest: dict[str, Any], lock_fh: Any = None) -> None:
        self.root = root
        self.manifest = manifest
        self.dim = int(manifest["model"]["dim"])
        # A read-only copy (a backup, a mounted snapshot) is opened without writing
        # anything, not even the WAL pragma or the -shm file.
        self.read_only = not os.access(root, os.W_OK) or (
            (root / META).exists() and not os.access(root / META, os.W_OK)
        )
        self._db = _connect(root / META, self.read_only)
        self._lock_fh: Any = lock_fh
        self._matrix_cache: tuple[tuple[str, int], FloatArray] | None = None
        self._check_recorded_model()

    # ----- opening ---------------------------------------------------------------------
    @staticmethod
    def read_manifest(root: Path) -> dict[str, Any] | None:
        path = root / MANIFEST
        if not path.exists():
            return None
        try:
            manifest: dict[str, Any] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CollectionError(f"{path}: unreadable manifest ({exc}); {_MANIFEST_FIX}") from None
        if not isinstance(manifest, dict):
            raise CollectionError(f"{path}: the manifest is not a JSON object; {_MANIFEST_FIX}")
        model = manifest.get("model")
        if (
            not isinstance(model, dict)
            or not isinstance(model.get("model"), str)
            or not (isinstance(model.get("dim"), int) and model["dim"] > 0)
        ):
            raise CollectionError(
                f"{path}: the manifest has no valid 'model' entry (name and dim); {_MANIFEST_FIX}"
            )
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise CollectionError(
                f"{root}: collection format {version} is not supported by this lookalike "
                f"(expects {FORMAT_VERSION}); re-index into a new --db folder"
            )
        return manifest

    @classmethod
    def open(cls, root: Path) -> Store:
        manifest = cls.read_manifest(root)
        if manifest is None:
            raise CollectionError(
                f"{root}: no collection here; create one with `lookalike index PATH --db {root}`"
            )
        return cls(root, manifest)

    @staticmethod
    def recorded_manifest(root: Path) -> dict[str, Any] | None:
        """The copy of the manifest kept in meta.sqlite (None: no database or no copy)."""
        if not (root / META).exists():
            return None
        db = _connect(root / META, read_only=True)
        try:
            row = db.execute("SELECT value FROM kv WHERE key='manifest'").fetchone()
        except sqlite3.Error:
            return None  # an older collection (no kv table yet) or a damaged one
        finally:
            db.close()
        if row is None:
            return None
        try:
            manifest: dict[str, Any] = json.loads(row[0])
        except json.JSONDecodeError:
            return None
        return manifest

    @staticmethod
    def has_data(root: Path) -> bool:
        """Whether vectors or metadata are here, manifest or not."""
        return (root / META).exists() or any(root.glob("vectors*.f32"))

    @classmethod
    def create(cls, root: Path, manifest: dict[str, Any], lock_fh: Any = None) -> Store:
        """A new collection, made under the writer lock so two first-time runs can't both
        write a manifest. ``lock_fh``: the lock the caller took (see take_lock), kept held;
        without one it is taken here and released once the manifest is written."""
        root.mkdir(parents=True, exist_ok=True)
        own_lock = lock_fh is None
        if own_lock:
            lock_fh = take_lock(root)
            if cls.read_manifest(root) is not None:
                lock_fh.close()
                raise CollectionError(f"{root}: a collection was created here meanwhile")
        manifest = {"format_version": FORMAT_VERSION, "created_at": time.time(), **manifest}
        store = cls(root, manifest, lock_fh)
        store.save_manifest()
        if own_lock:
            store.unlock()
        return store

    def save_manifest(self) -> None:
        # The copy in meta.sqlite is written first: it is what a lost or damaged
        # manifest.json is recovered from, and what the vectors are checked against.
        self.set_value("manifest", json.dumps(self.manifest, sort_keys=True))
        write_json_atomic(self.root / MANIFEST, self.manifest)

    def _check_recorded_model(self) -> None:
        """The vectors were written under the model recorded in meta.sqlite; refuse a
        manifest that says otherwise (it would make every row be read wrongly)."""
        recorded = self._recorded()
        if recorded is None:
            return
        theirs = recorded.get("model", {})
        if theirs.get("model") != self.manifest["model"]["model"] or theirs.get("dim") != self.dim:
            raise CollectionError(
                f"{self.root / MANIFEST}: says model {self.manifest['model']['model']!r} "
                f"({self.dim}-d) but the vectors in {self.root} were made by "
                f"{theirs.get('model')!r} ({theirs.get('dim')}-d); delete {MANIFEST} to "
                "restore it from meta.sqlite"
            )

    def _recorded(self) -> dict[str, Any] | None:
        try:
            raw = self.get_value("manifest")
        except sqlite3.OperationalError:
            return None  # no kv table: an older collection, opened read-only
        if raw is None:
            return None
        try:
            recorded: dict[str, Any] = json.loads(raw)
        except json.JSONDecodeError:
            return None
        return recorded

    def check_vectors(self) -> None:
        """A vector file shorter than the metadata says (a bad copy, a full disk during a
        restore) is refused: every command would read or overwrite the wrong rows."""
        missing = self.missing_rows()
        if missing:
            raise CollectionError(
                f"{self.vectors_path}: holds {self.vector_rows()} vectors but {missing} of "
                f"the {self.count()} images point past its end (the file was truncated); "
                f"run `lookalike index PATH --db {self.root}` to re-embed them"
            )

    def missing_rows(self) -> int:
        """How many images point at rows the vector file does not hold."""
        row = self._db.execute(
            "SELECT COUNT(*) FROM images WHERE row>=?", (self.vector_rows(),)
        ).fetchone()
        return int(row[0])

    def drop_missing_rows(self) -> list[str]:
        """Forget the images whose vectors are gone; returns their paths (to re-embed)."""
        rows = self.vector_rows()
        paths = [
            str(r[0])
            for r in self._db.execute("SELECT path FROM images WHERE row>=?", (rows,)).fetchall()
        ]
        with self._transaction() as db:
            db.execute("DELETE FROM images WHERE row>=?", (rows,))
        return paths

    def close(self) -> None:
        self.unlock()
        self._db.close()

    # ----- writer lock -----------------------------------------------------------------
    def lock(self) -> None:
        """Take the single-writer lock, or fail clearly if another process holds it."""
        if self._lock_fh is not None:
            return
        if self.read_only:
            raise CollectionError(
                f"{self.root}: the collection is read-only here; search it, or copy it to a "
                "writable folder to index into it"
            )
        self._lock_fh = take_lock(self.root)
        if self._recorded() is None:
            # An older collection: record its model beside the vectors from now on.
            self.set_value("manifest", json.dumps(self.manifest, sort_keys=True))
        # A crash between a compaction's commit and its unlink leaves the old file.
        self._remove_stray_vector_files()

    def unlock(self) -> None:
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    # ----- vectors file ----------------------------------------------------------------
    @property
    def vectors_path(self) -> Path:
        # Compaction writes a new file and switches to it in the same transaction that
        # renumbers rows, so the current file's name lives in the database.
        return self.root / (self.get_value("vectors_file") or VECTORS)

    def vector_rows(self) -> int:
        """Whole rows in the vector file (a torn partial row at the end is ignored)."""
        try:
            size = self.vectors_path.stat().st_size
        except FileNotFoundError:
            return 0
        return size // (4 * self.dim)

    def _append_vectors(self, vectors: FloatArray) -> int:
        """Append rows durably; returns the row number of the first one."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise CollectionError(
                f"vectors of shape {vectors.shape} do not fit this collection (dim {self.dim})"
            )
        first = self.vector_rows()
        path = self.vectors_path
        try:
            with open(path, "r+b" if path.exists() else "wb") as fh:
                fh.seek(first * 4 * self.dim)  # overwrite any torn partial row
                fh.write(vectors.tobytes())
                fh.truncate()
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            # write() errors name no file; the CLI's message should.
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        return first

    def matrix(self) -> FloatArray:
        """All vector rows (live and dead), memory-mapped read-only."""
        rows = self.vector_rows()
        # Keyed by file name too: another process's compaction switches files.
        key = (self.vectors_path.name, rows)
        if self._matrix_cache is not None and self._matrix_cache[0] == key:
            return self._matrix_cache[1]
        if rows == 0:
            mat: FloatArray = np.zeros((0, self.dim), dtype=np.float32)
        else:
            mat = np.memmap(self.vectors_path, dtype=np.float32, mode="r", shape=(rows, self.dim))
        self._matrix_cache = (key, mat)
        return mat

    def row_ids(self) -> IdArray:
        """row_ids[r] = id of the image whose vector is row r, or -1 for dead rows."""
        out = np.full(self.vector_rows(), -1, dtype=np.int64)
        pairs = np.array(self._db.execute("SELECT row, id FROM images").fetchall(), dtype=np.int64)
        if len(pairs):
            pairs = pairs[pairs[:, 0] < len(out)]
            out[pairs[:, 0]] = pairs[:, 1]
        return out

    def vectors_for(self, ids: Sequence[int]) -> FloatArray:
        """Stored vectors of these image ids, in order."""
        if len(ids) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        rows = self._rows_of([int(i) for i in ids])
        matrix = self.matrix()
        if max(rows) >= matrix.shape[0]:
            raise CollectionError(
                f"{self.vectors_path}: holds {matrix.shape[0]} vectors but the metadata refers "
                f"to row {max(rows)}; the collection is damaged (vector file truncated or "
                "replaced): index again into a new --db folder"
            )
        return np.ascontiguousarray(matrix[rows], dtype=np.float32)

    def _rows_of(self, ids: list[int]) -> list[int]:
        """Vector rows of these ids, in order."""
        row_of = {int(i): int(r) for i, r in self._by_ids("id, row", ids)}
        missing = [i for i in ids if i not in row_of]
        if missing:
            raise CollectionError(f"no image with id {missing[0]} in {self.root}")
        return [row_of[i] for i in ids]

    # ----- reading metadata ------------------------------------------------------------
    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM images").fetchone()[0])

    def get(self, image_id: int) -> ImageRecord:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM images WHERE id=?", (image_id,)).fetchone()
        if row is None:
            raise CollectionError(f"no image with id {image_id} in {self.root}")
        return _record(row)

    def find(self, image_id: int) -> ImageRecord | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM images WHERE id=?", (image_id,)).fetchone()
        return None if row is None else _record(row)

    def by_path(self, path: str) -> ImageRecord | None:
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM images WHERE path=?", (_db_path(path),)
        ).fetchone()
        return None if row is None else _record(row)

    def by_hash(self, digest: str) -> ImageRecord | None:
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM images WHERE hash=? LIMIT 1", (digest,)
        ).fetchone()
        return None if row is None else _record(row)

    def sizes_present(self, sizes: Iterable[int]) -> set[int]:
        """Which of these file sizes some stored image has (one scan per 900 sizes)."""
        rows = self._where_in("SELECT DISTINCT size FROM images", "size", set(sizes))
        return {int(row[0]) for row in rows}

    def records(self, offset: int = 0, limit: int = -1) -> list[ImageRecord]:
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM images ORDER BY id LIMIT ? OFFSET ?", (limit, offset)
        ).fetchall()
        return [_record(r) for r in rows]

    def iter_records(self, batch: int = 10000) -> Iterator[ImageRecord]:
        last = -1
        while True:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM images WHERE id>? ORDER BY id LIMIT ?", (last, batch)
            ).fetchall()
            if not rows:
                return
            for r in rows:
                yield _record(r)
            last = rows[-1][0]

    def records_under(self, root: str) -> dict[str, ImageRecord]:
        """Stored images at ``root`` or anywhere below it (path prefix on a folder boundary)."""
        prefix = root.rstrip(os.sep) + os.sep
        # GLOB is case-sensitive and uses the index-free scan; escape its wildcards.
        escaped = "".join(f"[{c}]" if c in "*?[" else c for c in prefix)
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM images WHERE path=? OR path GLOB ? OR {_BLOB_UNDER}",
            (_db_path(root), _db_path(escaped + "*"), *_blob_prefix(prefix)),
        ).fetchall()
        records = [_record(r) for r in rows]
        return {r.path: r for r in records}

    def ids_and_paths(self, ids: Iterable[int]) -> dict[int, str]:
        return {int(i): _py_path(p) for i, p in self._by_ids("id, path", ids)}

    def _by_ids(self, columns: str, ids: Iterable[int]) -> Iterator[tuple[Any, ...]]:
        """``columns`` of the images with these ids, in no order."""
        return self._where_in(f"SELECT {columns} FROM images", "id", ids)

    def _where_in(
        self, select: str, column: str, values: Iterable[int]
    ) -> Iterator[tuple[Any, ...]]:
        """The rows of ``select WHERE column IN (values)``, in no order; 900 values per
        query (SQLite's default limit on variables)."""
        values = [int(v) for v in values]
        for start in range(0, len(values), 900):
            chunk = values[start : start + 900]
            marks = ",".join("?" * len(chunk))
            yield from self._db.execute(f"{select} WHERE {column} IN ({marks})", chunk)

    def skipped(self) -> list[dict[str, str]]:
        rows = self._db.execute("SELECT path, reason FROM skipped ORDER BY path").fetchall()
        return [{"path": _py_path(p), "reason": r} for p, r in rows]

    def skipped_under(self, root: str) -> list[str]:
        prefix = root.rstrip(os.sep) + os.sep
        escaped = "".join(f"[{c}]" if c in "*?[" else c for c in prefix)
        rows = self._db.execute(
            f"SELECT path FROM skipped WHERE path=? OR path GLOB ? OR {_BLOB_UNDER}",
            (_db_path(root), _db_path(escaped + "*"), *_blob_prefix(prefix)),
        ).fetchall()
        return [_py_path(r[0]) for r in rows]

    def skipped_entry(self, path: str) -> tuple[int, int, str] | None:
        row = self._db.execute(
            "SELECT size, mtime_ns, reason FROM skipped WHERE path=?", (_db_path(path),)
        ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]), str(row[2]))

    def get_value(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    # ----- writing (each call is one atomic transaction) -------------------------------
    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def add_images(self, images: Sequence[NewImage], vectors: FloatArray) -> list[int]:
        """Add or replace images with their vectors, atomically. Returns their ids."""
        if len(images) != len(vectors):
            raise CollectionError("internal: images and vectors differ in number")
        if not images:
            return []
        first = self._append_vectors(vectors)
        now = time.time()
        ids = []
        with self._transaction() as db:
            for i, im in enumerate(images):
                path = _db_path(im.path)
                db.execute("DELETE FROM skipped WHERE path=?", (path,))
                # A changed file gets a new id, so search indexes see "old id gone, new id
                # added" and never keep a stale vector under a live id.
                db.execute("DELETE FROM images WHERE path=?", (path,))
                cur = db.execute(
                    "INSERT INTO images (path, size, mtime_ns, hash, row, width, height,"
                    " added_at) VALUES (?,?,?,?,?,?,?,?)",
                    (path, im.size, im.mtime_ns, im.hash, first + i, im.width, im.height, now),
                )
                ids.append(int(cur.lastrowid or 0))
        return ids

    def apply_changes(
        self,
        moves: Sequence[tuple[int, str, int, int]] = (),
        touches: Sequence[tuple[int, int, int]] = (),
        removals: Sequence[int] = (),
        skips: Sequence[tuple[str, int, int, str]] = (),
        unskips: Sequence[str] = (),
    ) -> None:
        """Metadata-only changes in one transaction.

        moves: (id, new_path, size, mtime_ns); touches: (id, size, mtime_ns) for files whose
        content is unchanged; removals: ids; skips: (path, size, mtime_ns, reason).
        """
        with self._transaction() as db:
            db.executemany("DELETE FROM images WHERE id=?", [(i,) for i in removals])
            db.executemany(
                "UPDATE images SET path=?, size=?, mtime_ns=? WHERE id=?",
                [(_db_path(p), s, m, i) for i, p, s, m in moves],
            )
            db.executemany(
                "UPDATE images SET size=?, mtime_ns=? WHERE id=?",
                [(s, m, i) for i, s, m in touches],
            )
            db.executemany(
                "INSERT OR REPLACE INTO skipped (path, size, mtime_ns, reason) VALUES (?,?,?,?)",
                [(_db_path(p), s, m, r) for p, s, m, r in skips],
            )
            db.executemany("DELETE FROM skipped WHERE path=?", [(_db_path(p),) for p in unskips])

    def set_value(self, key: str, value: str) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, value))

    def dead_rows(self) -> int:
        return self.vector_rows() - self.count()

    def compact(self) -> int:
        """Rewrite the vector file without dead rows. Returns the rows reclaimed.

        Crash-safe: the new file is written and fsync'ed under a new name; one transaction
        renumbers the rows and names the new file current; only then is the old one deleted.
        """
        total = self.vector_rows()
        live = self._db.execute("SELECT id, row FROM images ORDER BY row").fetchall()
        if total == len(live):
            return 0
        old = self.vectors_path
        new_name = f"vectors-{time.time_ns()}.f32"
        matrix = self.matrix()
        with open(self.root / new_name, "wb") as fh:
            for start in range(0, len(live), 65536):
                rows = [r for _, r in live[start : start + 65536]]
                fh.write(np.ascontiguousarray(matrix[rows], dtype=np.float32).tobytes())
            fh.flush()
            os.fsync(fh.fileno())
        self._matrix_cache = None
        del matrix
        with self._transaction() as db:
            db.executemany(
                "UPDATE images SET row=? WHERE id=?", [(n, i) for n, (i, _) in enumerate(live)]
            )
            db.execute(
                "INSERT OR REPLACE INTO kv (key, value) VALUES ('vectors_file', ?)", (new_name,)
            )
        old.unlink(missing_ok=True)
        self._remove_stray_vector_files()
        return total - len(live)

    def _remove_stray_vector_files(self) -> None:
        """Delete vector files left by a compaction that crashed before committing."""
        current = self.vectors_path.name
        for path in self.root.glob("vectors*.f32"):
            if path.name != current:
                path.unlink(missing_ok=True)


_MANIFEST_FIX = "delete it to restore it from meta.sqlite, or index again into a new --db folder"


def _connect(path: Path, read_only: bool) -> sqlite3.Connection:
    """The metadata database; a file that is not one is a one-line CollectionError."""
    try:
        if read_only:
            db = _connect_read_only(path)
        else:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
    except sqlite3.DatabaseError as exc:
        raise CollectionError(
            f"{path}: not a readable lookalike database ({exc}); restore it from a backup, "
            "or index again into a new --db folder"
        ) from None
    return db


def _connect_read_only(path: Path) -> sqlite3.Connection:
    # immutable=1 reads the database file alone and writes nothing (no -shm, no lock);
    # a pending WAL (a copy taken mid-write) needs mode=ro, which may have to make -shm.
    wal = path.with_name(path.name + "-wal")
    pending = wal.exists() and wal.stat().st_size > 0
    last: sqlite3.Error | None = None
    for flag in ("mode=ro", "immutable=1") if pending else ("immutable=1",):
        try:
            db = sqlite3.connect(
                f"{path.absolute().as_uri()}?{flag}",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
            )
            db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.OperationalError as exc:
            last = exc
    assert last is not None
    raise last


def take_lock(root: Path) -> Any:
    """The single-writer lock file, held (flock) until closed; fails clearly if taken."""
    fh = open(root / LOCK, "a+")  # noqa: SIM115 - held until unlock()
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise CollectionError(
            f"{root}: another lookalike process is writing to this collection; "
            "wait for it to finish, then run again"
        ) from None
    return fh


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)

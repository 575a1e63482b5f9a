"""The folder backend: a collection that is one local folder (store.py's layout: SQLite
metadata, a memory-mapped float32 vector file, FAISS index generations). Its on-disk
format is unchanged by the storage seam; this module only puts it behind the contract."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.backends.base import Move, ProgressFn, Skip, StorageBackend, Touch
from lookalike.errors import CollectionError
from lookalike.index.base import SearchHits
from lookalike.index.exact import topk_blockwise
from lookalike.index.manager import IndexManager
from lookalike.store import MANIFEST, ImageRecord, NewImage, Store, take_lock, write_json_atomic
from lookalike.vectors import FloatArray

COMPACT_DEAD_FRACTION = 0.25  # rewrite the vector file once this share of it is dead rows
# A filtered search gathers the matching rows when they are few, else masks the others.
GATHER_FRACTION = 0.1


class FolderBackend(StorageBackend):
    """A ``Store`` (metadata and vectors) and its ``IndexManager`` (the search index)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.manifest = store.manifest
        self.dim = store.dim
        self.read_only = store.read_only
        settings = store.manifest.get("index", {})
        self.indexes = IndexManager(
            store, kind=settings.get("kind", "auto"), memory_budget=settings.get("memory_budget")
        )

    # ----- opening ---------------------------------------------------------------------
    @staticmethod
    def read_manifest(root: Path) -> dict[str, Any] | None:
        """manifest.json, or when it is gone, the copy meta.sqlite keeps (written back when
        the folder is writable): vectors are never read under a model they weren't made by."""
        manifest = Store.read_manifest(root)
        if manifest is not None:
            return manifest
        recorded = Store.recorded_manifest(root)
        if recorded is not None and os.access(root, os.W_OK):
            write_json_atomic(root / MANIFEST, recorded)
        return recorded

    @classmethod
    def create(cls, root: Path, fields: dict[str, Any]) -> FolderBackend | None:
        """A new collection in ``root``; None when another process created one meanwhile
        (the caller then opens it). Creating takes the writer lock, then looks again."""
        root.mkdir(parents=True, exist_ok=True)
        lock_fh = take_lock(root)
        try:
            if cls.read_manifest(root) is not None:
                lock_fh.close()
                return None
            if Store.has_data(root):
                raise CollectionError(
                    f"{root}: holds vectors and metadata but no {MANIFEST}, so which model "
                    "made them is unknown; restore manifest.json from a backup, or index "
                    "into a new --db folder"
                )
            # An interrupted create (crash before the rename) leaves only this behind.
            (root / (MANIFEST + ".tmp")).unlink(missing_ok=True)
            return cls(Store.create(root, fields, lock_fh))
        except BaseException:
            lock_fh.close()
            raise

    @classmethod
    def open(cls, root: Path, manifest: dict[str, Any], check: bool) -> FolderBackend:
        """``check``: refuse a vector file shorter than the metadata (`index` repairs it
        instead, see begin_index_run)."""
        store = Store(root, manifest)
        try:
            if check:
                store.check_vectors()
        except CollectionError:
            store.close()
            raise
        return cls(store)

    @property
    def location(self) -> str:
        return str(self.store.root)

    # ----- lifetime --------------------------------------------------------------------
    def lock(self) -> None:
        self.store.lock()

    def unlock(self) -> None:
        self.store.unlock()

    def close(self) -> None:
        self.store.close()

    def save_manifest(self) -> None:
        self.store.manifest = self.manifest
        self.store.save_manifest()

    # ----- reading -----------------------------------------------------------------------
    def count(self) -> int:
        return self.store.count()

    def find(self, image_id: int) -> ImageRecord | None:
        return self.store.find(image_id)

    def get(self, image_id: int) -> ImageRecord:
        return self.store.get(image_id)

    def by_path(self, path: str) -> ImageRecord | None:
        return self.store.by_path(path)

    def by_hash(self, digest: str) -> ImageRecord | None:
        return self.store.by_hash(digest)

    def sizes_present(self, sizes: Iterable[int]) -> set[int] | None:
        return self.store.sizes_present(sizes)

    def records(self, offset: int = 0, limit: int = -1) -> list[ImageRecord]:
        return self.store.records(offset, limit)

    def iter_records(self, batch: int = 10000) -> Iterator[ImageRecord]:
        return self.store.iter_records(batch)

    def records_under(self, root: str) -> dict[str, ImageRecord]:
        return self.store.records_under(root)

    def ids_and_paths(self, ids: Iterable[int]) -> dict[int, str]:
        return self.store.ids_and_paths(ids)

    def vectors_for(self, ids: Sequence[int]) -> FloatArray:
        return self.store.vectors_for(ids)

    def skipped(self) -> list[dict[str, str]]:
        return self.store.skipped()

    def skipped_under(self, root: str) -> list[str]:
        return self.store.skipped_under(root)

    def skipped_entry(self, path: str) -> tuple[int, int, str] | None:
        return self.store.skipped_entry(path)

    # ----- searching ---------------------------------------------------------------------
    def search(
        self, queries: FloatArray, k: int, effort: float = 1.0, under: str | None = None
    ) -> SearchHits:
        if under is None:
            hits = self.indexes.search(queries, k, effort=effort)
            self.note = self.indexes.note
            return hits
        return self._search_under(queries, k, under)

    def _search_under(self, queries: FloatArray, k: int, under: str) -> SearchHits:
        """Exact search over the images under a folder: exact is what a filter needs
        (an approximate index's top-k may hold none of them), and it reads only their
        rows when they are few."""
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        chosen = sorted(self.store.records_under(under).values(), key=lambda r: r.row)
        ids = np.array([r.id for r in chosen], dtype=np.int64)
        rows = np.array([r.row for r in chosen], dtype=np.int64)
        matrix = self.store.matrix()
        if len(rows) and rows[-1] >= matrix.shape[0]:
            self.store.check_vectors()  # a truncated vector file: the one-line message
        if len(rows) <= GATHER_FRACTION * matrix.shape[0]:
            return topk_blockwise(np.asarray(matrix[rows]), ids, q, k)
        masked = np.full(matrix.shape[0], -1, dtype=np.int64)
        masked[rows] = ids
        return topk_blockwise(matrix, masked, q, k)

    # ----- writing -----------------------------------------------------------------------
    def add_images(self, images: Sequence[NewImage], vectors: FloatArray) -> list[int]:
        return self.store.add_images(images, vectors)

    def apply_changes(
        self,
        moves: Sequence[Move] = (),
        touches: Sequence[Touch] = (),
        removals: Sequence[int] = (),
        skips: Sequence[Skip] = (),
        unskips: Sequence[str] = (),
    ) -> None:
        self.store.apply_changes(moves, touches, removals, skips, unskips)

    def begin_index_run(self) -> list[str]:
        # Images whose vectors were cut off the end of the file are forgotten and
        # embedded again from their files; appending over their rows would make
        # two images share one vector.
        return self.store.drop_missing_rows()

    def finish_index_run(self, progress: ProgressFn | None = None) -> dict[str, Any]:
        # Changed and deleted files leave dead rows in the append-only vector file.
        reclaimed = 0
        if self.store.dead_rows() > COMPACT_DEAD_FRACTION * self.store.vector_rows():
            reclaimed = self.store.compact()
        report = self.indexes.sync(progress)
        if reclaimed:
            report["vector_rows_reclaimed"] = reclaimed
        return report

    # ----- describing --------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        # Everything on disk, index generations (index-<ns>/ folders) included.
        files = [p for p in self.store.root.rglob("*") if p.is_file()]
        return {
            "db": str(self.store.root.absolute()),
            "backend": "folder",
            "bytes": sum(p.stat().st_size for p in files),
            "vector_rows": self.store.vector_rows(),
            "index": self.indexes.describe(),
        }

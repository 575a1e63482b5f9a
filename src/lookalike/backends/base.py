"""The storage contract: where a collection's images and vectors live.

``Collection`` and the indexer program only against ``StorageBackend``. A backend keeps
one row per image (path, size, mtime, content hash, size in pixels, vector) under an
integer id that is never reused, the files it could not read (path, reason), and the
collection's identity (the manifest: model, dimension, preprocessing, adapter, format
version), which it checks on open so vectors of different models never mix.

Writes come in committed batches: after a crash (even kill -9) a batch is either all
there or not there at all, so the next `index` run resumes exactly. A backend also owns
whatever makes its search fast (FAISS index generations, a Milvus index) and keeps it up
to date in ``finish_index_run``, the explicit build step of `lookalike index`.

Backends: ``folder`` (a local folder: SQLite + memory-mapped float32 file + FAISS) and
``milvus`` (Milvus Lite embedded, or a Milvus server/cluster). A third (PostgreSQL +
pgvector, say) is one more module implementing this class, plus a line in locations.py.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from lookalike.index.base import SearchHits
from lookalike.store import ImageRecord, NewImage
from lookalike.vectors import FloatArray

__all__ = ["ImageRecord", "NewImage", "ProgressFn", "StorageBackend"]

ProgressFn = Callable[[int, int], None]
# (id, new_path, size, mtime_ns): a file moved, content unchanged
Move = tuple[int, str, int, int]
# (id, size, mtime_ns): a file touched, content unchanged
Touch = tuple[int, int, int]
# (path, size, mtime_ns, reason): a file that could not be read
Skip = tuple[str, int, int, str]


class StorageBackend(ABC):
    """One collection's images, vectors and identity (see the module docstring)."""

    manifest: dict[str, Any]
    dim: int
    read_only: bool = False
    note: str | None = None  # one line for the user about the search index, or None

    @property
    @abstractmethod
    def location(self) -> str:
        """Where it lives, as the user would write it for --db (used in messages)."""

    # ----- lifetime and the single writer ----------------------------------------------
    @abstractmethod
    def lock(self) -> None:
        """Take the single-writer lock, or fail clearly (CollectionError) if it is taken."""

    @abstractmethod
    def unlock(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def save_manifest(self) -> None:
        """Persist ``self.manifest`` (changed index settings)."""

    # ----- reading images --------------------------------------------------------------
    @abstractmethod
    def count(self) -> int: ...

    @abstractmethod
    def find(self, image_id: int) -> ImageRecord | None: ...

    def get(self, image_id: int) -> ImageRecord:
        from lookalike.errors import CollectionError

        record = self.find(image_id)
        if record is None:
            raise CollectionError(f"no image with id {image_id} in {self.location}")
        return record

    @abstractmethod
    def by_path(self, path: str) -> ImageRecord | None: ...

    @abstractmethod
    def by_hash(self, digest: str) -> ImageRecord | None:
        """Any one image with this content hash."""

    def sizes_present(self, sizes: Iterable[int]) -> set[int] | None:
        """Which of these file sizes (bytes) some stored image has; None: not known, so
        the indexer hashes every new file before embedding (a copy or a moved file has
        its stored twin's size, so other files need no hash before they are read)."""
        return None

    @abstractmethod
    def records(self, offset: int = 0, limit: int = -1) -> list[ImageRecord]:
        """A page of images in id order (``limit`` -1: all from ``offset``)."""

    @abstractmethod
    def iter_records(self, batch: int = 10000) -> Iterator[ImageRecord]:
        """Every image in id order, read ``batch`` at a time (bounded memory)."""

    @abstractmethod
    def records_under(self, root: str) -> dict[str, ImageRecord]:
        """Images at ``root`` or anywhere below it (a path prefix on a folder boundary)."""

    @abstractmethod
    def ids_and_paths(self, ids: Iterable[int]) -> dict[int, str]:
        """Paths of those ids that exist."""

    # ----- vectors -----------------------------------------------------------------------
    @abstractmethod
    def vectors_for(self, ids: Sequence[int]) -> FloatArray:
        """Stored vectors of these image ids, in order ((n, dim) float32, unit length)."""

    @abstractmethod
    def search(
        self, queries: FloatArray, k: int, effort: float = 1.0, under: str | None = None
    ) -> SearchHits:
        """Top-k image ids by cosine similarity (scores are cosines), padded with id -1.

        ``effort`` widens an approximate search (duplicates asks for more); ``under``
        keeps only images at or below that absolute folder.
        """

    # ----- skipped files ---------------------------------------------------------------
    @abstractmethod
    def skipped(self) -> list[dict[str, str]]:
        """Every file that could not be read: [{"path", "reason"}], by path."""

    @abstractmethod
    def skipped_under(self, root: str) -> list[str]: ...

    @abstractmethod
    def skipped_entry(self, path: str) -> tuple[int, int, str] | None:
        """(size, mtime_ns, reason) of a skipped file, or None."""

    # ----- writing (each call is one committed batch) ----------------------------------
    @abstractmethod
    def add_images(self, images: Sequence[NewImage], vectors: FloatArray) -> list[int]:
        """Add images with their vectors; one at a path already stored replaces it (and
        gets a new id). Returns their ids. All or nothing, even across kill -9."""

    @abstractmethod
    def apply_changes(
        self,
        moves: Sequence[Move] = (),
        touches: Sequence[Touch] = (),
        removals: Sequence[int] = (),
        skips: Sequence[Skip] = (),
        unskips: Sequence[str] = (),
    ) -> None:
        """Metadata-only changes, all or nothing."""

    # ----- the `index` command's bracket -----------------------------------------------
    def begin_index_run(self) -> list[str]:
        """Called under the writer lock before indexing: repairs what a damaged store
        lost and returns the paths of images to embed again (default: none)."""
        return []

    @abstractmethod
    def finish_index_run(self, progress: ProgressFn | None = None) -> dict[str, Any]:
        """Called under the writer lock after indexing: bring the search index up to
        date (the only place an index is built); returns what was done (JSON-able)."""

    # ----- describing --------------------------------------------------------------------
    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """The storage part of `lookalike info`: "db", "backend", "bytes", "vector_rows",
        "index" (kind, parameters, recall, ...)."""

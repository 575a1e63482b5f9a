"""HNSW graph index on FAISS, full float32 or 8-bit scalar-quantised vectors.

FAISS's HNSW cannot delete, so removal marks the vector deleted and searches skip it
through an IDSelectorBitmap; the owner rebuilds once the deleted share grows
(``deleted_fraction``). FAISS numbers vectors 0..ntotal-1 in the order added;
``labels[internal]`` maps them back to image ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lookalike.index._faiss import FaissIndex, import_faiss
from lookalike.index.base import MISSING_ID, SearchHits
from lookalike.vectors import FloatArray, IdArray

INDEX_FILE = "index.faiss"
LABELS_FILE = "ids.npy"
DELETED_FILE = "deleted.npy"
SQ8_TRAIN_MAX = 100_000  # the 8-bit ranges need only a sample


class HNSWIndex(FaissIndex):
    """Inner-product HNSW over unit vectors; ``sq8`` stores 1 byte per dimension."""

    def __init__(
        self,
        dim: int,
        m: int = 16,
        sq8: bool = False,
        ef_construction: int = 40,
        ef_search: int = 64,
        faiss_index: Any = None,
    ) -> None:
        faiss = import_faiss()

        self.dim = dim
        self.m = m
        self.sq8 = sq8
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        if faiss_index is None:
            if sq8:
                faiss_index = faiss.IndexHNSWSQ(
                    dim, faiss.ScalarQuantizer.QT_8bit, m, faiss.METRIC_INNER_PRODUCT
                )
            else:
                faiss_index = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
            faiss_index.hnsw.efConstruction = ef_construction
        self._index = faiss_index
        self.labels: IdArray = np.zeros(0, dtype=np.int64)
        self.deleted = np.zeros(0, dtype=bool)
        self._live_bits: np.ndarray | None = None  # packed bitmap, rebuilt after removals
        # (live ids sorted, their FAISS numbers): held_vectors' look-up, rebuilt after changes
        self._by_id: tuple[IdArray, IdArray] | None = None

    @property
    def kind(self) -> str:  # type: ignore[override]
        return "hnsw-sq8" if self.sq8 else "hnsw"

    # ----- building ----------------------------------------------------------------------
    def train(self, sample: FloatArray) -> None:
        """Learn the 8-bit ranges (sq8 only; a flat graph needs no training)."""
        if not self.is_trained:
            self._index.train(np.ascontiguousarray(sample[:SQ8_TRAIN_MAX], dtype=np.float32))

    def add(self, ids: IdArray, vectors: FloatArray) -> None:
        self._check_writable()
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        self.train(vectors)
        self._index.add(vectors)
        self.labels = np.concatenate([self.labels, ids])
        self.deleted = np.concatenate([self.deleted, np.zeros(len(ids), dtype=bool)])
        self._by_id = None

    def remove(self, ids: IdArray) -> None:
        hit = np.isin(self.labels, np.asarray(ids, dtype=np.int64)) & ~self.deleted
        if hit.any():
            self.deleted = self.deleted | hit
            self._live_bits = None
            self._by_id = None

    # ----- searching ---------------------------------------------------------------------
    def search(self, queries: FloatArray, k: int, ef_search: int | None = None) -> SearchHits:
        """Top-k by the index's own scores (approximate for sq8); missing slots id -1."""
        faiss = import_faiss()

        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        k = max(int(k), 0)
        if k == 0 or len(q) == 0 or len(self) == 0:
            return SearchHits.empty(len(q), k)
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(int(ef_search or self.ef_search), k)
        selector = None
        if self.deleted.any():
            if self._live_bits is None:
                self._live_bits = np.packbits(~self.deleted, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(self.deleted), faiss.swig_ptr(self._live_bits))
            params.sel = selector
        scores, internal = self._index.search(q, k, params=params)
        del selector  # kept alive until FAISS is done with it
        found = internal >= 0
        ids = np.where(found, self.labels[np.where(found, internal, 0)], MISSING_ID)
        return SearchHits(
            scores=np.where(found, scores, -np.inf).astype(np.float32), ids=ids.astype(np.int64)
        )

    def held_vectors(self, ids: IdArray) -> FloatArray | None:
        """The float graph keeps each vector as added: re-ranking reads them from here,
        where the search has just brought them into the CPU's cache (at 100k x 1280 this
        took k-reciprocal re-ranking from 2.1x to 1.8x of a plain search, BENCHMARKS.md)."""
        if self.sq8:
            return None
        ids = np.asarray(ids, dtype=np.int64)
        if self._by_id is None:
            live = np.flatnonzero(~np.asarray(self.deleted))
            order = np.argsort(self.labels[live], kind="stable")
            self._by_id = (np.asarray(self.labels[live][order]), live[order])
        sorted_ids, numbers = self._by_id
        at = np.minimum(np.searchsorted(sorted_ids, ids), max(0, len(sorted_ids) - 1))
        if len(ids) == 0 or len(sorted_ids) == 0 or not np.array_equal(sorted_ids[at], ids):
            return None
        return np.asarray(self._index.reconstruct_batch(numbers[at]), dtype=np.float32)

    def __len__(self) -> int:
        return int(len(self.labels) - np.count_nonzero(self.deleted))

    def ids(self) -> IdArray:
        """Image ids currently searchable."""
        return self.labels[~self.deleted]

    @property
    def deleted_fraction(self) -> float:
        return float(np.count_nonzero(self.deleted) / max(1, len(self.deleted)))

    def params(self) -> dict[str, Any]:
        return {
            "M": self.m,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
            "storage": "sq8" if self.sq8 else "float32",
        }

    # ----- persistence -------------------------------------------------------------------
    def save(self, folder: Path, index_unchanged_from: Path | None = None) -> None:
        """Write into ``folder``; hard-link the FAISS file from ``index_unchanged_from``
        when only deletions happened since it was written (no need to rewrite it)."""
        faiss = import_faiss()

        if index_unchanged_from is not None:
            (folder / INDEX_FILE).hardlink_to(index_unchanged_from / INDEX_FILE)
        else:
            faiss.write_index(self._index, str(folder / INDEX_FILE))
        np.save(folder / LABELS_FILE, self.labels)
        np.save(folder / DELETED_FILE, self.deleted)

    @classmethod
    def load(cls, folder: Path, params: dict[str, Any], mmap: bool) -> HNSWIndex:
        """``mmap``: vector codes stay in the file (page cache), read-only; else writable."""
        faiss = import_faiss()

        flags = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY if mmap else 0
        raw = faiss.read_index(str(folder / INDEX_FILE), flags)
        dim = int(raw.d)
        self = cls(
            dim,
            m=int(params["M"]),
            sq8=params["storage"] == "sq8",
            ef_construction=int(params["ef_construction"]),
            ef_search=int(params["ef_search"]),
            faiss_index=raw,
        )
        self.labels = np.load(folder / LABELS_FILE, mmap_mode="r" if mmap else None)
        self.deleted = np.load(folder / DELETED_FILE)
        self.read_only = mmap
        return self

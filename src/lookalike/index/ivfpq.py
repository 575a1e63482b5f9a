"""IVF-PQ index on FAISS: a coarse k-means partition plus product-quantised codes.

Only ``m`` bytes (+ an 8-byte id) per vector stay resident. PQ scores are rough, so the
owner asks for a shortlist and re-ranks it with exact dot products (rerank.py). FAISS
stores the image ids in the inverted lists and supports removal.
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
KMEANS_ITER = 10  # faiss' default is 25; 10 loses little (re-ranking follows) and saves minutes
POINTS_PER_LIST = 40  # training sample: faiss wants >= 39 points per centroid


def pq_nbits(n_train: int) -> int:
    """8-bit codebooks (256 centroids) need >= 39*256 training points; fewer bits otherwise."""
    bits = int(np.log2(max(2, n_train // 39)))
    return int(np.clip(bits, 1, 8))


class IVFPQIndex(FaissIndex):
    kind = "ivfpq"

    def __init__(
        self,
        dim: int,
        nlist: int,
        m: int,
        nbits: int = 8,
        nprobe: int = 16,
        faiss_index: Any = None,
    ) -> None:
        faiss = import_faiss()

        self.dim = dim
        self.nlist = nlist
        self.m = m
        self.nbits = nbits
        self.nprobe = nprobe
        if faiss_index is None:
            quantizer = faiss.IndexFlatIP(dim)
            faiss_index = faiss.IndexIVFPQ(
                quantizer, dim, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT
            )
            faiss_index.cp.niter = KMEANS_ITER
            faiss_index.pq.cp.niter = KMEANS_ITER
            faiss_index.cp.spherical = True  # unit vectors: keep centroids on the sphere
        self._index = faiss_index
        self._ids: IdArray = np.zeros(0, dtype=np.int64)  # sorted ids in the index

    @staticmethod
    def train_size(nlist: int) -> int:
        return max(nlist * POINTS_PER_LIST, 10_000)

    def train(self, sample: FloatArray, seed: int = 0) -> None:
        self._index.cp.seed = seed
        self._index.pq.cp.seed = seed
        self._index.train(np.ascontiguousarray(sample, dtype=np.float32))

    def add(self, ids: IdArray, vectors: FloatArray) -> None:
        self._check_writable()
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        if not self.is_trained:
            self.train(vectors)
        self._index.add_with_ids(vectors, ids)
        self._ids = np.union1d(self._ids, ids)

    def remove(self, ids: IdArray) -> None:
        faiss = import_faiss()

        self._check_writable()
        ids = np.intersect1d(np.asarray(ids, dtype=np.int64), self._ids)
        if len(ids) == 0:
            return
        self._index.remove_ids(faiss.IDSelectorBatch(ids))
        self._ids = np.setdiff1d(self._ids, ids, assume_unique=True)

    def search(self, queries: FloatArray, k: int, nprobe: int | None = None) -> SearchHits:
        """Top-k by PQ-approximated inner product; missing slots id -1."""
        faiss = import_faiss()

        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        k = max(int(k), 0)
        if k == 0 or len(q) == 0 or len(self) == 0:
            return SearchHits.empty(len(q), k)
        params = faiss.SearchParametersIVF()
        params.nprobe = min(int(nprobe or self.nprobe), self.nlist)
        scores, ids = self._index.search(q, k, params=params)
        found = ids >= 0
        return SearchHits(
            scores=np.where(found, scores, -np.inf).astype(np.float32),
            ids=np.where(found, ids, MISSING_ID).astype(np.int64),
        )

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def ids(self) -> IdArray:
        return self._ids

    def params(self) -> dict[str, Any]:
        return {"nlist": self.nlist, "m": self.m, "nbits": self.nbits, "nprobe": self.nprobe}

    def save(self, folder: Path) -> None:
        faiss = import_faiss()

        faiss.write_index(self._index, str(folder / INDEX_FILE))
        np.save(folder / LABELS_FILE, self._ids)

    @classmethod
    def load(cls, folder: Path, params: dict[str, Any], mmap: bool) -> IVFPQIndex:
        """``mmap``: the inverted lists stay in the file (page cache), read-only."""
        faiss = import_faiss()

        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        raw = faiss.read_index(str(folder / INDEX_FILE), flags)
        self = cls(
            int(raw.d),
            nlist=int(params["nlist"]),
            m=int(params["m"]),
            nbits=int(params["nbits"]),
            nprobe=int(params["nprobe"]),
            faiss_index=raw,
        )
        self._ids = np.load(folder / LABELS_FILE, mmap_mode="r" if mmap else None)
        self.read_only = mmap
        return self

"""The search-index contract. Every index kind (exact, hnsw, ivfpq...) answers the same
question: for each query vector, the k stored ids with the highest cosine similarity.

Ids are the collection's image ids (int64). Vectors follow lookalike.vectors' contract
(float32, L2-normalised), so inner product = cosine similarity.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from lookalike.vectors import FloatArray, IdArray

MISSING_ID = -1  # pads a result row when fewer than k vectors exist


@dataclass(frozen=True)
class SearchHits:
    """(q, k) arrays; rows are sorted best first. Missing slots have id -1, score -inf."""

    scores: FloatArray
    ids: IdArray

    @classmethod
    def empty(cls, n_queries: int, k: int) -> SearchHits:
        return cls(
            scores=np.full((n_queries, k), -np.inf, dtype=np.float32),
            ids=np.full((n_queries, k), MISSING_ID, dtype=np.int64),
        )


class VectorIndex(ABC):
    """A k-NN index over (id, vector) pairs."""

    kind: str = "abstract"

    @abstractmethod
    def add(self, ids: IdArray, vectors: FloatArray) -> None:
        """Add vectors under the given ids (ids not already present)."""

    @abstractmethod
    def remove(self, ids: IdArray) -> None:
        """Forget these ids; unknown ids are ignored."""

    @abstractmethod
    def search(self, queries: FloatArray, k: int) -> SearchHits:
        """Top-k by cosine similarity for each query row."""

    @abstractmethod
    def __len__(self) -> int: ...

    def describe(self) -> dict[str, Any]:
        """Kind, parameters and measured quality, for `lookalike info`."""
        return {"kind": self.kind, "count": len(self)}

    def held_vectors(self, ids: IdArray) -> FloatArray | None:
        """The vectors of these ids as added, bit for bit, when the index holds them
        uncompressed and has them all; else None (read them from the collection)."""
        return None

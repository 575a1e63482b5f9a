"""One place that imports FAISS (so every caller gets the same OpenMP settings), and what
the FAISS-backed index kinds share."""

from __future__ import annotations

import os
from typing import Any

from lookalike.index.base import VectorIndex


def import_faiss() -> Any:
    """The faiss module, imported with idle OpenMP threads sleeping rather than spinning.

    FAISS's bundled libgomp spin-waits by default. On a laptop whose two cores are also
    busy with the embedder or other programs, spinning threads starve the working ones:
    measured here, adding 3,000 vectors to an HNSW graph took 1.6 s with two spinning
    threads and 0.14 s with OMP_WAIT_POLICY=PASSIVE. libgomp reads the variable when it
    is loaded, i.e. on the first ``import faiss``; an explicit user setting is kept.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import faiss

    return faiss


class FaissIndex(VectorIndex):
    """Base of the kinds that wrap one FAISS index in ``self._index``."""

    _index: Any
    read_only: bool = False  # loaded memory-mapped: searchable, not changeable

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    def params(self) -> dict[str, Any]:
        """Build and search parameters, as index.json and `lookalike info` show them."""
        return {}

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "count": len(self), **self.params()}

    def _check_writable(self) -> None:
        # Adding to a memory-mapped FAISS index aborts the process; refuse instead.
        if self.read_only:
            raise RuntimeError("internal: this index was loaded read-only (memory-mapped)")

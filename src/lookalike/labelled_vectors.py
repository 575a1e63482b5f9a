"""The stored vectors of a labelled folder, read back from the collection it was indexed
into. `fit` and `eval` both cache a folder's embeddings as a collection (any backend) and
both read them back the same way, through the storage contract."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from lookalike.vectors import FloatArray

if TYPE_CHECKING:
    from lookalike.collection import Collection


def indexed_vectors(
    col: Collection, wanted: Sequence[str] | None = None
) -> tuple[list[str], FloatArray]:
    """(paths, their vectors): of ``wanted`` those the collection holds, in that order, or
    every indexed image sorted by path. Copied out, so valid after the collection closes."""
    id_of = {r.path: r.id for r in col.backend.iter_records()}
    paths = [p for p in wanted if p in id_of] if wanted is not None else sorted(id_of)
    vectors = col.backend.vectors_for([id_of[p] for p in paths])
    return paths, np.ascontiguousarray(vectors, dtype=np.float32)

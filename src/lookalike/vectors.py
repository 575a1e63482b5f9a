"""The vector contract: C-contiguous float32 (n, d), L2-normalised rows.

Score = cosine similarity = dot product of normalised rows; higher is more similar.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IdArray = npt.NDArray[np.int64]


def l2_normalize(x: npt.ArrayLike, eps: float = 1e-12) -> FloatArray:
    """Rows scaled to unit length (zero rows stay zero), as C-contiguous float32."""
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"expected a (n, d) array of vectors, got shape {arr.shape}")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    out = arr / np.maximum(norms, eps)
    return np.ascontiguousarray(out, dtype=np.float32)


def cosine_to_euclidean(scores: npt.ArrayLike) -> FloatArray:
    """Euclidean distance between unit vectors with cosine similarity `scores`."""
    s = np.asarray(scores, dtype=np.float32)
    return np.sqrt(np.clip(2.0 - 2.0 * s, 0.0, None)).astype(np.float32)

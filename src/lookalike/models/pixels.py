"""``raw-pixels``: the image itself, shrunk to a 16x16 thumbnail, as the vector.

A baseline for evaluation (how much does a CNN add?) and a fast deterministic
model for tests. Needs no weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from lookalike.models.base import Embedder, ModelInfo
from lookalike.models.registry import ModelEntry, register
from lookalike.vectors import FloatArray, l2_normalize

SIDE = 16


class RawPixelsEmbedder(Embedder):
    def __init__(self) -> None:
        self.info = ModelInfo(
            name="raw-pixels",
            dim=SIDE * SIDE * 3,
            input_size=SIDE,
            preprocessing={"resize": [SIDE, SIDE], "resample": "box", "center": "per-image mean"},
        )

    @property
    def draft_size(self) -> int:
        return 64

    def prepare(self, image: Image.Image) -> Any:
        small = image.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BOX)
        arr = np.asarray(small, dtype=np.float32).reshape(-1) / 255.0
        # Centring makes cosine similarity compare patterns rather than brightness.
        return arr - arr.mean()

    def embed_prepared(self, batch: Sequence[Any]) -> FloatArray:
        if not batch:
            return np.zeros((0, self.info.dim), dtype=np.float32)
        return l2_normalize(np.stack(batch))


register(
    ModelEntry(
        name="raw-pixels",
        dim=SIDE * SIDE * 3,
        input_size=SIDE,
        description="16x16 RGB thumbnail as the vector: a baseline, no network",
        factory=lambda _options: RawPixelsEmbedder(),
        weights_available=lambda: True,
        runtime="numpy",
    )
)

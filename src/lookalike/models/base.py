"""What every embedding model provides, whatever runs it (ONNX Runtime, PyTorch, NumPy).

An embedder is used in two steps so that decoding can overlap inference:
``prepare`` turns one decoded RGB image into the model's input (runs in worker
threads, must be thread-safe), ``embed_prepared`` turns a batch of those into
L2-normalised float32 vectors (runs in the main thread).
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from lookalike.vectors import FloatArray


@dataclass(frozen=True)
class ModelInfo:
    """Describes an embedder well enough to refuse mixing vectors from another one."""

    name: str  # as the user spells it, e.g. "efficientnet-lite0" or "vgg16+resnet101v2"
    dim: int
    input_size: int  # square side in pixels fed to the network (0 when not a CNN)
    preprocessing: Mapping[str, Any] = field(default_factory=dict)
    weights_id: str = "none"  # content hash of the weights file, or "none"

    def identity(self) -> dict[str, Any]:
        """JSON-able record stored in a collection's manifest."""
        return {
            "model": self.name,
            "dim": self.dim,
            "input_size": self.input_size,
            "preprocessing": dict(self.preprocessing),
            "weights": self.weights_id,
        }

    def fingerprint(self) -> str:
        """Short stable hash of the identity, used in cache keys."""
        blob = json.dumps(self.identity(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


class Embedder(ABC):
    """Turns images into vectors. Subclasses implement ``prepare`` and ``embed_prepared``."""

    info: ModelInfo

    @property
    def draft_size(self) -> int:
        """Smallest image side this model needs; JPEGs may be decoded down to it."""
        return max(self.info.input_size, 1)

    @abstractmethod
    def prepare(self, image: Image.Image) -> Any:
        """One RGB image -> the model's input for it. Thread-safe."""

    @abstractmethod
    def embed_prepared(self, batch: Sequence[Any]) -> FloatArray:
        """A batch of ``prepare`` outputs -> (n, dim) float32, L2-normalised rows."""

    def embed_images(self, images: Sequence[Image.Image]) -> FloatArray:
        """Convenience: prepare and embed in one go (no overlap)."""
        if not images:
            return np.zeros((0, self.info.dim), dtype=np.float32)
        return self.embed_prepared([self.prepare(im) for im in images])

"""What every embedding model provides, whatever runs it (ONNX Runtime, PyTorch, NumPy).

An embedder is used in two steps so that decoding can overlap inference:
``prepare`` turns one decoded RGB image into the model's input (runs in worker
threads, must be thread-safe), ``embed_prepared`` turns a batch of those into
L2-normalised float32 vectors using all the cores it was given.

An embedder that runs on the CPU in lanes (``inference_lanes`` > 1, ONNX Runtime) also
offers ``embed_serial``: the same vectors on one core, safe to call from several threads
at once, so that a pipeline can give each core its own decode-then-infer loop.
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

    @property
    def inference_lanes(self) -> int:
        """How many ``embed_serial`` calls at once use the cores it was given; 1 when
        ``embed_prepared`` spreads one batch over them itself (PyTorch, a GPU)."""
        return 1

    def embed_serial(self, batch: Sequence[Any]) -> FloatArray:
        """``embed_prepared`` on one lane (one core on the CPU). Thread-safe."""
        return self.embed_prepared(batch)

    def embed_images(self, images: Sequence[Image.Image]) -> FloatArray:
        """Convenience: prepare and embed in one go (no overlap)."""
        if not images:
            return np.zeros((0, self.info.dim), dtype=np.float32)
        return self.embed_prepared([self.prepare(im) for im in images])

"""The embedding-engine contract: paths in, batches of vectors (and failures) out.

An engine may return batches in any order: every row carries its index into the input
path list (``EmbeddedBatch.indices`` / ``failures``), which is all the indexer needs to
commit it. Each input index appears exactly once over all batches, as a row or a failure.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lookalike.models.base import Embedder
from lookalike.models.registry import ModelOptions
from lookalike.pipeline import EmbeddedBatch


@dataclass(frozen=True)
class EmbedderSpec:
    """What it takes to build the same embedder elsewhere (an ONNX Runtime session does not
    pickle, so remote workers rebuild the model from its name and options)."""

    model: str
    options: ModelOptions = field(default_factory=ModelOptions)
    adapter: Path | None = None

    def build(self) -> Embedder:
        from lookalike.models import create_embedder

        embedder = create_embedder(self.model, self.options)
        if self.adapter is not None:
            from lookalike.adapters import apply_adapter

            embedder = apply_adapter(embedder, self.adapter)
        return embedder


class EmbedEngine(ABC):
    """Turns files into vectors with some embedder; see the module docstring."""

    name: str

    @abstractmethod
    def embed(
        self, embedder: Embedder, paths: Sequence[Path], batch_size: int
    ) -> Iterator[EmbeddedBatch]:
        """Embed ``paths`` with ``embedder`` (or an identical one built from a spec)."""

    def close(self) -> None:
        """Release what the engine holds (a cluster connection); idempotent."""
        return None

    def __enter__(self) -> EmbedEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""The local engine: today's threads in this process (pipeline.embed_files)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from lookalike.engines.base import EmbedEngine
from lookalike.models.base import Embedder
from lookalike.pipeline import EmbeddedBatch, embed_files


class LocalEngine(EmbedEngine):
    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers

    def embed(
        self, embedder: Embedder, paths: Sequence[Path], batch_size: int
    ) -> Iterator[EmbeddedBatch]:
        return embed_files(embedder, paths, batch_size=batch_size, workers=self.workers)

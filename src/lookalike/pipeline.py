"""Files -> vectors, in batches, with decoding overlapping inference.

Worker threads decode and prepare images (Pillow releases the GIL while decoding and
resizing) while the main thread runs the model on the previous batch. A file that cannot
be read becomes a failure with its reason; the batch goes on without it.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.errors import ImageReadError
from lookalike.images import load_image
from lookalike.models.base import Embedder
from lookalike.vectors import FloatArray


@dataclass
class EmbeddedBatch:
    """One batch: ``indices`` into the input path list for the rows of ``vectors``."""

    indices: list[int]
    vectors: FloatArray
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (width, height) per row
    failures: list[tuple[int, str]] = field(default_factory=list)  # (index, reason)


def _prepare_one(embedder: Embedder, path: Path) -> tuple[Any, tuple[int, int]] | str:
    """Decode + preprocess one file; a string is the failure reason."""
    try:
        image = load_image(path, min_side=embedder.draft_size)
        return embedder.prepare(image), image.size
    except ImageReadError as exc:
        return str(exc)
    except Exception as exc:  # a decoder bug must not stop a run over 100k files
        return f"{path}: cannot process ({type(exc).__name__}: {exc})"


def default_workers() -> int:
    # One decode thread per core beyond the first: inference already uses all cores,
    # and more decoders than that only fight it for the CPU.
    return max(1, (os.cpu_count() or 2) - 1)


def embed_files(
    embedder: Embedder,
    paths: Sequence[Path],
    batch_size: int = 32,
    workers: int | None = None,
) -> Iterator[EmbeddedBatch]:
    """Embed ``paths`` in order, yielding one EmbeddedBatch per ``batch_size`` inputs."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    workers = workers or default_workers()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lookalike-decode") as pool:
        pending: deque[tuple[int, Future[tuple[Any, tuple[int, int]] | str]]] = deque()
        next_index = 0
        # Keep about two batches in flight so decoders never wait on the model.
        window = 2 * batch_size
        while next_index < len(paths) or pending:
            while next_index < len(paths) and len(pending) < window:
                pending.append(
                    (next_index, pool.submit(_prepare_one, embedder, paths[next_index]))
                )
                next_index += 1
            batch = EmbeddedBatch(indices=[], vectors=np.zeros((0, embedder.info.dim), np.float32))
            prepared: list[Any] = []
            while pending and len(batch.indices) + len(batch.failures) < batch_size:
                index, future = pending.popleft()
                outcome = future.result()
                if isinstance(outcome, str):
                    batch.failures.append((index, outcome))
                else:
                    prepared.append(outcome[0])
                    batch.sizes.append(outcome[1])
                    batch.indices.append(index)
            if prepared:
                batch.vectors = embedder.embed_prepared(prepared)
            yield batch

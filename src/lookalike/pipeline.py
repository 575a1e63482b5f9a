"""Files -> vectors, in batches, with decoding overlapping inference.

Worker threads decode and prepare images (Pillow releases the GIL while decoding and
resizing) while the main thread runs the model on the previous batch. A file that cannot
be read becomes a failure with its reason; the batch goes on without it.

Why these defaults (benchmarks/embed_throughput.py, BENCHMARKS.md): decode threads and
ONNX Runtime's threads share the cores, which works because ORT's idle threads sleep
instead of spin-waiting (see onnx_backend): whichever has work gets the CPU. JPEGs are
decoded at reduced scale (Embedder.draft_size), which brings decoding and preprocessing
to well under half the CPU time of inference per image, so it hides behind it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.errors import ImageReadError
from lookalike.hashing import bytes_digest
from lookalike.images import load_image, read_file
from lookalike.models.base import Embedder
from lookalike.models.onnx_backend import available_cpus
from lookalike.vectors import FloatArray


@dataclass
class _Ready:
    """What a worker hands back for a file it decoded."""

    model_input: Any
    size: tuple[int, int]  # (width, height) of the image
    read: FileRead


# ...or, for a file it could not decode, the reason.
Prepared = _Ready | str


@dataclass(frozen=True)
class FileRead:
    """The bytes that were embedded: their digest, and the size and mtime of the file they
    were read from (fstat of the open file), so a file replaced while a run is under way
    never gets the old content's hash beside the new content's vector."""

    digest: str
    size: int
    mtime_ns: int


@dataclass
class EmbeddedBatch:
    """One batch: ``indices`` into the input path list for the rows of ``vectors``."""

    indices: list[int]
    vectors: FloatArray
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (width, height) per row
    failures: list[tuple[int, str]] = field(default_factory=list)  # (index, reason)
    reads: list[FileRead] = field(default_factory=list)  # per row: what was embedded


def _prepare_one(embedder: Embedder, path: Path) -> Prepared:
    """Decode + preprocess one file; a string is the failure reason."""
    try:
        # Read once: the digest and the decoded image come from the same bytes.
        data, st = read_file(path)
        read = FileRead(bytes_digest(data), st.st_size, st.st_mtime_ns)
        image = load_image(path, min_side=embedder.draft_size, data=data)
        del data
        # A JPEG decoded at reduced scale reports its reduced size; the true size is
        # image.info["original_size"] when images.load_image records it.
        size = image.info.get("original_size", image.size)
        return _Ready(embedder.prepare(image), (int(size[0]), int(size[1])), read)
    except ImageReadError as exc:
        return str(exc)
    except OSError as exc:  # opening or reading the file (read_file), as the indexer says it
        return f"{path}: cannot read ({exc.strerror or exc})"
    except Exception as exc:  # a decoder bug must not stop a run over 100k files
        return f"{path}: cannot process ({type(exc).__name__}: {exc})"


def default_workers() -> int:
    # As many decode threads as cores. Inference uses all cores too, but ORT's idle threads
    # sleep (no spin-wait), so the CPU goes to whoever has work; two decoders on 2 cores
    # measured ~10% faster than one when idle and the same under load (BENCHMARKS.md).
    # Workers only run a bounded window ahead of the model: extra ones idle, not compete.
    return available_cpus()


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
    pending: deque[tuple[int, Future[Prepared]]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lookalike-decode") as pool:
        try:
            next_index = 0
            # Two batches in flight: workers prepare batch k+1 while the model runs batch k.
            window = 2 * batch_size
            while next_index < len(paths) or pending:
                while next_index < len(paths) and len(pending) < window:
                    future = pool.submit(_prepare_one, embedder, paths[next_index])
                    pending.append((next_index, future))
                    next_index += 1
                yield _next_batch(embedder, pending, batch_size)
        finally:
            # The consumer stopped early (or failed): don't decode what nobody will use.
            for _, future in pending:
                future.cancel()


def _next_batch(
    embedder: Embedder, pending: deque[tuple[int, Future[Prepared]]], batch_size: int
) -> EmbeddedBatch:
    batch = EmbeddedBatch(indices=[], vectors=np.zeros((0, embedder.info.dim), np.float32))
    prepared: list[Any] = []
    while pending and len(batch.indices) + len(batch.failures) < batch_size:
        index, future = pending.popleft()
        outcome = future.result()
        if isinstance(outcome, str):
            batch.failures.append((index, outcome))
        else:
            prepared.append(outcome.model_input)
            batch.sizes.append(outcome.size)
            batch.reads.append(outcome.read)
            batch.indices.append(index)
    if prepared:
        batch.vectors = embedder.embed_prepared(prepared)
    return batch

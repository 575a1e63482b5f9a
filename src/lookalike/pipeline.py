"""Files -> vectors, in batches, decoding alongside inference.

Two ways, by what the embedder offers (``Embedder.inference_lanes``):

- **One loop per core** (ONNX Runtime on the CPU): each worker thread takes a slice of
  the files, decodes it and runs the network on it with one thread, then takes the next.
  The cores never wait for each other, and the OS is never asked to share a core between
  a decoder and a network thread that the network's other thread is waiting for (7-9%
  faster end to end on 2 cores, BENCHMARKS.md "One network per core"). Slices
  shrink towards the end so that the cores finish together.
- **Decoders beside one network** (PyTorch, a GPU): worker threads decode while the main
  thread runs the model, which spreads each batch over the cores (or the GPU) itself.

Either way Pillow releases the GIL while decoding and resizing, JPEGs are decoded at
reduced scale (Embedder.draft_size), and a file that cannot be read becomes a failure with
its reason; the batch goes on without it.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
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
) -> Generator[EmbeddedBatch, None, None]:
    """Embed ``paths`` in order, yielding EmbeddedBatches of at most ``batch_size`` inputs
    (exactly that many, but for the last, unless the embedder runs in lanes)."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    if embedder.inference_lanes > 1:
        yield from _embed_per_core(embedder, paths, batch_size, workers or embedder.inference_lanes)
        return
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


def _batch_of(
    embedder: Embedder,
    outcomes: Iterable[tuple[int, Prepared]],
    embed: Callable[[Sequence[Any]], FloatArray],
) -> EmbeddedBatch:
    """One batch from (input index, outcome) pairs: failures recorded with their reason,
    the model inputs of the rest embedded by ``embed`` in one call."""
    batch = EmbeddedBatch(indices=[], vectors=np.zeros((0, embedder.info.dim), np.float32))
    prepared: list[Any] = []
    for index, outcome in outcomes:
        if isinstance(outcome, str):
            batch.failures.append((index, outcome))
        else:
            prepared.append(outcome.model_input)
            batch.sizes.append(outcome.size)
            batch.reads.append(outcome.read)
            batch.indices.append(index)
    if prepared:
        batch.vectors = embed(prepared)
    return batch


def _next_batch(
    embedder: Embedder, pending: deque[tuple[int, Future[Prepared]]], batch_size: int
) -> EmbeddedBatch:
    # Popped one at a time as each result comes: what is still pending can be cancelled.
    taken = (pending.popleft() for _ in range(min(batch_size, len(pending))))
    outcomes = ((index, future.result()) for index, future in taken)
    return _batch_of(embedder, outcomes, embedder.embed_prepared)


def slice_sizes(total: int, batch_size: int, lanes: int) -> list[int]:
    """How many files each per-core slice takes, in order: a batch shared by the lanes
    (``batch_size / lanes`` each), smaller once less than two rounds are left, so that
    no core is left running a whole slice alone at the end."""
    steady = max(1, math.ceil(batch_size / lanes))
    sizes = []
    left = total
    while left > 0:
        size = min(steady, left, max(MIN_SLICE, math.ceil(left / (2 * lanes))))
        sizes.append(size)
        left -= size
    return sizes


# Slices below this cost more per image in the network than the idle core they save.
MIN_SLICE = 4


def _embed_slice(embedder: Embedder, paths: Sequence[Path], start: int) -> EmbeddedBatch:
    """Decode ``paths`` (the files from ``start`` on), then embed them on this core."""
    outcomes = ((i, _prepare_one(embedder, path)) for i, path in enumerate(paths, start))
    return _batch_of(embedder, outcomes, embedder.embed_serial)


def _embed_per_core(
    embedder: Embedder, paths: Sequence[Path], batch_size: int, workers: int
) -> Iterator[EmbeddedBatch]:
    starts = list(itertools.accumulate(slice_sizes(len(paths), batch_size, workers), initial=0))
    slices = list(itertools.pairwise(starts))
    pending: deque[Future[EmbeddedBatch]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lookalike-embed") as pool:
        try:
            next_slice = 0
            # Two slices per worker in flight: none waits for the consumer to take results.
            while next_slice < len(slices) or pending:
                while next_slice < len(slices) and len(pending) < 2 * workers:
                    a, b = slices[next_slice]
                    pending.append(pool.submit(_embed_slice, embedder, paths[a:b], a))
                    next_slice += 1
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()

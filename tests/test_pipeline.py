"""pipeline.embed_files: order, batching, failures, early stop (fast raw-pixels model)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from lookalike.images import load_image
from lookalike.models import create_embedder
from lookalike.models.pixels import RawPixelsEmbedder
from lookalike.pipeline import MIN_SLICE, EmbeddedBatch, embed_files, slice_sizes


def write_files(folder: Path, count: int, broken: Sequence[int] = ()) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"img{i:03d}.jpg"
        if i in broken:
            path.write_bytes(b"\xff\xd8\xff" + b"garbage" * 10)  # a JPEG header, then junk
        else:
            pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).resize((320, 240)).save(path, quality=90)
        paths.append(path)
    return paths


class CountingPixels(RawPixelsEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.prepared = 0
        self._lock = threading.Lock()

    def prepare(self, image: Image.Image) -> Any:
        with self._lock:
            self.prepared += 1
        return super().prepare(image)


@pytest.mark.parametrize("workers", [1, 3])
def test_batches_cover_inputs_in_order_with_failures(tmp_path: Path, workers: int) -> None:
    paths = write_files(tmp_path, 23, broken=(4, 17))
    embedder = create_embedder("raw-pixels")
    batches = list(embed_files(embedder, paths, batch_size=8, workers=workers))
    assert [len(b.indices) + len(b.failures) for b in batches] == [8, 8, 7]
    assert_cover_in_order(batches, paths, broken=(4, 17))


def assert_cover_in_order(
    batches: list[EmbeddedBatch], paths: list[Path], broken: Sequence[int]
) -> None:
    """Every file once, in order: the broken ones as failures naming the file, the rest
    with raw-pixels vectors and sizes."""
    indices = [i for b in batches for i in b.indices]
    assert indices == [i for i in range(len(paths)) if i not in broken]
    failures = [f for b in batches for f in b.failures]
    assert [i for i, _ in failures] == list(broken)
    assert all(str(paths[i]) in reason for i, reason in failures)
    vectors = np.concatenate([b.vectors for b in batches])
    plain = create_embedder("raw-pixels")
    expected = plain.embed_images([load_image(paths[i], plain.draft_size) for i in indices])
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    assert [len(b.sizes) for b in batches] == [len(b.indices) for b in batches]


def test_sizes_are_the_files_sizes_not_the_draft_sizes(tmp_path: Path) -> None:
    paths = write_files(tmp_path, 3)  # 320x240 JPEGs, decoded at 1/4 scale for raw-pixels
    (batch,) = list(embed_files(create_embedder("raw-pixels"), paths, batch_size=8))
    assert batch.sizes == [(320, 240)] * 3


def test_all_failed_batch_and_empty_input(tmp_path: Path) -> None:
    paths = write_files(tmp_path, 3, broken=(0, 1, 2))
    embedder = create_embedder("raw-pixels")
    (batch,) = list(embed_files(embedder, paths, batch_size=8))
    assert batch.indices == [] and batch.vectors.shape == (0, embedder.info.dim)
    assert len(batch.failures) == 3
    assert list(embed_files(embedder, [], batch_size=8)) == []
    with pytest.raises(ValueError, match="batch size"):
        list(embed_files(embedder, paths, batch_size=0))


def test_stopping_early_cancels_pending_work(tmp_path: Path) -> None:
    paths = write_files(tmp_path, 200)
    embedder = CountingPixels()
    batches = embed_files(embedder, paths, batch_size=4, workers=1)
    first: EmbeddedBatch = next(batches)
    batches.close()  # the consumer stops: pending decodes are cancelled, the pool joins
    assert first.indices == [0, 1, 2, 3]
    assert embedder.prepared <= 3 * 4  # at most the window (two batches) plus one in hand


class LanedPixels(RawPixelsEmbedder):
    """Raw pixels run in two lanes, as ONNX Runtime on the CPU is: records who embeds."""

    def __init__(self) -> None:
        super().__init__()
        self.serial_threads: list[str] = []
        self.prepared = 0
        self._lock = threading.Lock()

    @property
    def inference_lanes(self) -> int:
        return 2

    def prepare(self, image: Image.Image) -> Any:
        with self._lock:
            self.prepared += 1
        return super().prepare(image)

    def embed_prepared(self, batch: Sequence[Any]) -> Any:
        raise AssertionError("the per-core pipeline embeds on one lane at a time")

    def embed_serial(self, batch: Sequence[Any]) -> Any:
        with self._lock:
            self.serial_threads.append(threading.current_thread().name)
        return super().embed_prepared(batch)


def test_per_core_slices_cover_inputs_in_order_with_failures(tmp_path: Path) -> None:
    paths = write_files(tmp_path, 23, broken=(4, 17))
    embedder = LanedPixels()
    batches = list(embed_files(embedder, paths, batch_size=8))
    assert [len(b.indices) + len(b.failures) for b in batches] == slice_sizes(23, 8, 2)
    assert_cover_in_order(batches, paths, broken=(4, 17))
    # Each slice is decoded and embedded by a worker thread, never by the consumer.
    assert embedder.serial_threads
    assert all(name.startswith("lookalike-embed") for name in embedder.serial_threads)


def test_slice_sizes_share_a_batch_and_shrink_at_the_end() -> None:
    sizes = slice_sizes(300, 32, 2)
    assert sum(sizes) == 300
    assert sizes[:6] == [16] * 6  # a batch of 32 shared by two cores
    assert sizes == sorted(sizes, reverse=True)  # never larger again once shrinking
    assert all(size >= MIN_SLICE for size in sizes[:-1])
    # The last round is small: no core runs a long slice while the other has nothing.
    assert max(sizes[-4:]) <= MIN_SLICE
    assert slice_sizes(0, 32, 2) == []
    assert slice_sizes(3, 32, 2) == [3]
    assert slice_sizes(10, 1, 4) == [1] * 10


def test_per_core_stop_cancels_pending_work(tmp_path: Path) -> None:
    paths = write_files(tmp_path, 200)
    embedder = LanedPixels()
    batches = embed_files(embedder, paths, batch_size=8)
    first = next(batches)
    batches.close()
    assert first.indices == [0, 1, 2, 3]
    # At most the slices in flight (two per worker) plus the one handed back.
    assert embedder.prepared <= 5 * 4

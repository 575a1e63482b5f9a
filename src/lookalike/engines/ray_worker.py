"""What runs inside a Ray worker: the embedding actor (a ``map_batches`` callable class).

Each call gets one block of rows (``index``: position in the driver's path list, ``path``)
and runs the local pipeline on it (pipeline.embed_files: decode threads overlapping
inference), so reading, decoding, skip reasons and the hash of the bytes embedded are
exactly the local engine's. Reading in separate Ray tasks was measured at half the speed
on a small machine (every file's bytes through the object store; BENCHMARKS.md).
Paths and reasons travel as bytes: a non-UTF-8 file name is not valid Arrow text.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.engines.base import EmbedderSpec
from lookalike.pipeline import embed_files

Batch = dict[str, Any]


def to_text(blob: Any) -> str:
    return bytes(blob).decode("utf-8", "surrogateescape")


def to_blob(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class EmbedActor:
    """Built once per actor: the embedder from its spec (an ONNX Runtime session does not
    pickle). Its fingerprint goes out with every row, so the driver refuses vectors from a
    node whose model differs (another lookalike version, other weights)."""

    def __init__(self, spec: EmbedderSpec, threads: int, batch_size: int) -> None:
        self.embedder = replace(spec, options=replace(spec.options, threads=threads)).build()
        self.fingerprint = self.embedder.info.fingerprint()
        self.threads, self.batch_size = threads, batch_size

    def __call__(self, block: Batch) -> Batch:
        indices = np.asarray(block["index"], np.int64)
        paths = [Path(to_text(p)) for p in block["path"]]
        n, dim = len(paths), self.embedder.info.dim
        vectors = np.zeros((n, dim), np.float32)
        width, height = np.zeros(n, np.int64), np.zeros(n, np.int64)
        size, mtime = np.zeros(n, np.int64), np.zeros(n, np.int64)
        digest, error = [""] * n, [""] * n
        for batch in embed_files(self.embedder, paths, self.batch_size, workers=self.threads):
            for i, reason in batch.failures:
                error[i] = reason
            for row, (i, (w, h), read) in enumerate(
                zip(batch.indices, batch.sizes, batch.reads, strict=True)
            ):
                vectors[i] = batch.vectors[row]
                width[i], height[i] = w, h
                digest[i], size[i], mtime[i] = read.digest, read.size, read.mtime_ns
        return {
            "index": indices,
            "vector": vectors,
            "width": width,
            "height": height,
            "digest": np.asarray(digest, dtype=object),
            "size": size,
            "mtime_ns": mtime,
            "error": np.asarray([to_blob(e) for e in error], dtype=object),
            "fingerprint": np.asarray([self.fingerprint] * n, dtype=object),
        }

"""What runs inside Ray workers: read tasks (file bytes) and the embedding actor.

Kept apart from the driver side so a worker imports only this and the model. Rows are
dicts of columns; ``index`` is the row's position in the driver's path list. A file that
can't be read or decoded becomes a row with ``error`` set, with the same reason text the
local engine gives (pipeline._prepare_one).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np

from lookalike.engines.base import EmbedderSpec
from lookalike.errors import ImageReadError
from lookalike.hashing import bytes_digest
from lookalike.images import load_image, read_file

Batch = dict[str, Any]


def _text(blob: Any) -> str:
    """Paths and reasons travel as bytes (a non-UTF-8 file name is not valid Arrow text)."""
    return bytes(blob).decode("utf-8", "surrogateescape")


def _blobs(texts: list[str]) -> Any:
    return np.asarray([t.encode("utf-8", "surrogateescape") for t in texts], dtype=object)


def _reason(path: str, exc: Exception) -> str:
    if isinstance(exc, ImageReadError):
        return str(exc)
    return f"{path}: cannot process ({type(exc).__name__}: {exc})"


def read_files(batch: Batch) -> Batch:
    """Read task: index, path -> + data, digest, size, mtime_ns, error."""
    n = len(batch["index"])
    data: list[bytes] = [b""] * n
    digest, error = [""] * n, [""] * n
    size, mtime = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for i, raw in enumerate(batch["path"]):
        path = _text(raw)
        try:
            blob, st = read_file(path)
        except Exception as exc:  # one bad file must not fail the task (and the job)
            error[i] = _reason(path, exc)
            continue
        data[i], digest[i] = blob, bytes_digest(blob)
        size[i], mtime[i] = st.st_size, st.st_mtime_ns
    return {
        "index": np.asarray(batch["index"], np.int64),
        "path": np.asarray(batch["path"], dtype=object),
        "data": np.asarray(data, dtype=object),
        "digest": np.asarray(digest, dtype=object),
        "size": size,
        "mtime_ns": mtime,
        "error": _blobs(error),
    }


class EmbedActor:
    """Actor (``map_batches`` callable class): decodes with threads, embeds in one batch.

    The embedder is built here, once per actor, from its spec; its fingerprint goes out
    with every row so the driver refuses vectors from a different model build.
    """

    def __init__(self, spec: EmbedderSpec, threads: int) -> None:
        options = replace(spec.options, threads=threads)
        self.embedder = replace(spec, options=options).build()
        self.fingerprint = self.embedder.info.fingerprint()
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="lookalike-decode")

    def _prepare(self, path: str, data: bytes) -> tuple[Any, tuple[int, int]] | str:
        try:
            image = load_image(path, min_side=self.embedder.draft_size, data=data)
            size = image.info.get("original_size", image.size)
            return self.embedder.prepare(image), (int(size[0]), int(size[1]))
        except Exception as exc:
            return _reason(path, exc)

    def __call__(self, batch: Batch) -> Batch:
        n = len(batch["index"])
        error = [_text(e) for e in batch["error"]]
        todo = [i for i in range(n) if not error[i]]
        outcomes = self.pool.map(
            lambda i: self._prepare(_text(batch["path"][i]), bytes(batch["data"][i])), todo
        )
        width, height = np.zeros(n, np.int64), np.zeros(n, np.int64)
        ok: list[int] = []
        prepared: list[Any] = []
        for i, outcome in zip(todo, outcomes, strict=True):
            if isinstance(outcome, str):
                error[i] = outcome
            else:
                prepared.append(outcome[0])
                width[i], height[i] = outcome[1]
                ok.append(i)
        vectors = np.zeros((n, self.embedder.info.dim), np.float32)
        if prepared:
            vectors[ok] = self.embedder.embed_prepared(prepared)
        return {
            "index": np.asarray(batch["index"], np.int64),
            "vector": vectors,
            "width": width,
            "height": height,
            "digest": np.asarray(batch["digest"], dtype=object),
            "size": np.asarray(batch["size"], np.int64),
            "mtime_ns": np.asarray(batch["mtime_ns"], np.int64),
            "error": _blobs(error),
            "fingerprint": np.asarray([self.fingerprint] * n, dtype=object),
        }

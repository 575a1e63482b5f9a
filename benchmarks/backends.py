"""Storage backends side by side: the local folder against Milvus Lite, same vectors, same run.

Both are driven through the storage contract (lookalike.backends), the way `lookalike
index` and `lookalike search` drive them:

* ``insert_vectors_per_s``: ``add_images`` in committed batches of 256 (the indexer's
  commit size) with metadata, from an empty collection;
* ``build_s``: ``finish_index_run`` (folder: IndexManager.sync, which builds and tunes a
  FAISS index past 50,000 vectors; Milvus: flush, then waiting until the server reports
  every row indexed);
* ``p50_ms``/``p99_ms``: one query per call, k = 10, ``backend.search``;
* ``recall_at_10``: tie-aware recall against exact search over the same vectors.

The vectors are the clustered synthetic set (lookalike.index.synthetic, recipe in each
line's "data"); queries are fresh draws from the same distribution. Backends alternate
(folder, milvus, folder, milvus...) so both see the same machine load; ``other_cores``
is the CPU other processes used meanwhile (busy cores; the Milvus Lite server process is
counted as ours).

Usage::

    python benchmarks/backends.py --n 100000 --dim 1280 --rounds 2

Prints one JSON object per backend per round.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from embed_throughput import machine_busy_seconds
from lookalike.backends.base import StorageBackend
from lookalike.collection import Collection
from lookalike.index.exact import topk_blockwise
from lookalike.index.synthetic import ClusteredGenerator, default_spec
from lookalike.index.tuning import recall_at_k
from lookalike.models.base import Embedder, ModelInfo
from lookalike.store import NewImage

BATCH = 256
K = 10


class _NoModel(Embedder):
    """Stands in for a model of the benchmark's dimension: vectors come ready-made."""

    def __init__(self, dim: int) -> None:
        self.info = ModelInfo(name=f"synthetic-{dim}", dim=dim, input_size=1, preprocessing={})

    def prepare(self, image: Any) -> Any:
        raise NotImplementedError

    def embed_prepared(self, batch: Any) -> Any:
        raise NotImplementedError


def _own_seconds() -> float:
    """CPU seconds of this process and its children still running (the Milvus Lite server)."""
    total = time.process_time()
    me = os.getpid()
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat[1]) == me:  # ppid
            total += (int(stat[11]) + int(stat[12])) / tick
    return total


class Meter:
    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.busy = machine_busy_seconds()
        self.own = _own_seconds()

    def other_cores(self) -> float:
        wall = time.perf_counter() - self.wall
        others = machine_busy_seconds() - self.busy - (_own_seconds() - self.own)
        return round(max(0.0, others) / max(wall, 1e-9), 2)


@contextlib.contextmanager
def lite_server(work: Path) -> Iterator[str]:
    """Milvus Lite as its own server process on a TCP port: the network path a Milvus
    cluster is reached by (IVF_FLAT still: the server is Milvus Lite)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from milvus_lite.server import BIN_PATH
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen(
        [str(Path(BIN_PATH) / "milvus"), str(work / "server.db"), f"127.0.0.1:{port}", "ERROR"],
        env={"LD_LIBRARY_PATH": BIN_PATH},
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(600):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.1)
        yield f"milvus://127.0.0.1:{port}/bench"
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def open_backend(kind: str, work: Path, dim: int, server: str | None = None) -> Collection:
    db = str(work / "folder") if kind == "folder" else f"milvus-lite://{work / 'lite.db'}"
    if kind == "milvus-server":
        assert server is not None
        db = server
    from lookalike.backends.locations import parse_db

    location = parse_db(db)
    backend = location.create(
        {"model": _NoModel(dim).info.identity(), "adapter": None, "index": {"kind": "auto"}}
    )
    assert backend is not None
    return Collection(backend, embedder=_NoModel(dim))


def wait_indexed(backend: StorageBackend, n: int, timeout: float = 1800) -> None:
    if backend.describe()["backend"] == "folder":
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # Milvus Lite reports pending rows only (its indexed_rows stays 0).
        if backend.describe()["index"].get("pending_index_rows", 0) == 0:
            return
        time.sleep(0.5)


def run(kind: str, vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-"))
    try:
        if kind != "milvus-server":
            return _run(kind, vectors, queries, truth, work, None)
        with lite_server(work) as server:
            return _run(kind, vectors, queries, truth, work, server)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(
    kind: str,
    vectors: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    work: Path,
    server: str | None,
) -> dict[str, Any]:
    n, dim = vectors.shape
    col = open_backend(kind, work, dim, server)
    backend = col.backend
    backend.lock()
    meter = Meter()
    started = time.perf_counter()
    for start in range(0, n, BATCH):
        stop = min(n, start + BATCH)
        images = [
            NewImage(f"/bench/{i // 1000}/{i}.jpg", 1000, i, f"{i:064x}")
            for i in range(start, stop)
        ]
        backend.add_images(images, vectors[start:stop])
    insert_s = time.perf_counter() - started
    started = time.perf_counter()
    report = backend.finish_index_run()
    wait_indexed(backend, n)
    build_s = time.perf_counter() - started
    backend.unlock()
    for q in queries[:20]:  # warm up
        backend.search(q[None], K)
    times, scores = [], []
    for q in queries:
        t = time.perf_counter()
        hits = backend.search(q[None], K)
        times.append((time.perf_counter() - t) * 1e3)
        scores.append(hits.scores[0])
    index = backend.describe()["index"]
    out = {
        "backend": kind,
        "n": n,
        "dim": dim,
        "insert_s": round(insert_s, 2),
        "insert_vectors_per_s": round(n / insert_s, 1),
        "build_s": round(build_s, 2),
        "index": index.get("kind"),
        "index_params": {
            key: index[key]
            for key in ("M", "ef_search", "nlist", "nprobe", "ef", "m", "shortlist")
            if key in index
        },
        "p50_ms": round(statistics.median(times), 3),
        "p99_ms": round(float(np.percentile(times, 99)), 3),
        "recall_at_10": round(recall_at_k(np.array(scores), truth, K), 4),
        "queries": len(queries),
        "built": report.get("kind"),
        "other_cores": meter.other_cores(),
    }
    col.close()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--backends", default="folder,milvus-lite", help="also: milvus-server (Lite over TCP)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    spec = default_spec(args.n, args.dim, args.seed)
    gen = ClusteredGenerator(spec)
    vectors = gen.sample(args.n)
    queries = gen.chunk(10_000_000, args.queries)  # a chunk the stream never reaches
    truth = topk_blockwise(vectors, np.arange(args.n, dtype=np.int64), queries, K).scores
    for _ in range(args.rounds):
        for kind in args.backends.split(","):
            print(
                json.dumps({**run(kind, vectors, queries, truth), "data": spec.describe()}),
                flush=True,
            )


if __name__ == "__main__":
    main()

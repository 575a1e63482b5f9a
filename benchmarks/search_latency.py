"""Search at scale: each index kind against exact search and scikit-learn, in the same run.

The collection is a real lookalike Store (SQLite metadata + memory-mapped vector file)
holding ``--n`` clustered synthetic vectors of ``--dim`` coordinates
(lookalike.index.synthetic: Gaussian clusters in a low-dimensional latent space, mapped
to ``dim`` coordinates with ReLU, plus isotropic noise; the exact recipe is printed in
each line's "data" field). Queries are fresh draws from the same distribution, never
stored vectors, so no query can find itself.

For each kind the index is built through ``IndexManager.sync()`` (training, adding and
recall tuning included: ``build_s``), then opened by a fresh IndexManager the way a new
``lookalike search`` process would (memory-mapped where FAISS allows), warmed up, and
timed:

* ``p50_ms``/``p99_ms``: one query per call, k = 10, ``IndexManager.search``;
* ``batch_qps``: all queries in one call;
* ``recall_at_10``: tie-aware recall of those answers against exact search;
* ``bytes_per_vector``: the index's resident data (codes/graph/lists + id arrays, i.e.
  its files) per vector. Not counted: the collection's vector file (4*dim bytes per
  vector) that exact search streams and re-ranking reads a shortlist from, through the
  page cache; ``p50_ms_cold`` times queries after evicting that file from the cache.
* ``baseline_sklearn_ms``: median single-query time of scikit-learn's
  ``NearestNeighbors(metric="cosine", algorithm="brute")`` on the same vectors.

Usage::

    python benchmarks/search_latency.py --n 100000 --dim 1280 [--index hnsw-sq8,ivfpq] --json

``--index`` takes a kind or a comma-separated list (default: all kinds; ``auto`` too).
``--vectors FILE`` runs on real embeddings instead (.npy, or raw float32 rows such as a
collection's vectors.f32): shuffled with --seed, the last --queries rows held apart.
The collection and exact ground truth are cached under ``--workdir`` between runs.
Prints one JSON object per index kind.
"""

from __future__ import annotations

import argparse
import gc
import json
import mmap
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.index.base import SearchHits
from lookalike.index.exact import topk_blockwise
from lookalike.index.manager import IndexManager
from lookalike.index.synthetic import ClusteredGenerator, default_spec
from lookalike.index.tuning import recall_at_k
from lookalike.store import NewImage, Store
from lookalike.vectors import l2_normalize

ALL_KINDS = ("exact", "hnsw", "hnsw-sq8", "ivfpq")
QUERY_CHUNK = 1_000_000  # generator chunk index for queries, far past the stored ones
ADD_BATCH = 65536


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----- the collection ----------------------------------------------------------------------
class Source:
    """Where the vectors come from: the clustered generator, or a file of real embeddings."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.real: np.ndarray | None = None
        if args.vectors is None:
            self.gen = ClusteredGenerator(default_spec(args.n, args.dim, args.seed))
            self.n, self.dim = args.n, args.dim
            self.tag = {"n": args.n, "dim": args.dim, "seed": args.seed}
            self.description = self.gen.spec.describe()
            self.queries = self.gen.chunk(QUERY_CHUNK, args.queries)
            return
        path = Path(args.vectors)
        raw = np.load(path) if path.suffix == ".npy" else np.fromfile(path, dtype=np.float32)
        rows = l2_normalize(np.asarray(raw, dtype=np.float32).reshape(-1, args.dim))
        # A seeded shuffle, then the last --queries rows are held apart as queries.
        rows = rows[np.random.default_rng(args.seed).permutation(len(rows))]
        self.real, self.queries = rows[: -args.queries], rows[-args.queries :]
        self.n, self.dim = len(self.real), args.dim
        self.tag = {"file": str(path.resolve()), "n": self.n, "seed": args.seed}
        self.description = (
            f"real embeddings from {path} ({len(rows)} rows, shuffled, seed {args.seed})"
        )

    def stream(self) -> Iterator[np.ndarray]:
        if self.real is None:
            yield from self.gen.stream(self.n, ADD_BATCH)
            return
        for start in range(0, self.n, ADD_BATCH):
            yield self.real[start : start + ADD_BATCH]


def prepare_store(root: Path, source: Source) -> Store:
    """A Store holding the source's vectors, reused when an earlier run left one."""
    manifest = Store.read_manifest(root) if root.exists() else None
    if manifest is not None and manifest.get("bench") == source.tag:
        store = Store.open(root)
        if store.count() == source.n:
            return store
        store.close()
    shutil.rmtree(root, ignore_errors=True)
    store = Store.create(
        root, {"model": {"model": "benchmark", "dim": source.dim}, "bench": source.tag}
    )
    started = time.perf_counter()
    first = 0
    for chunk in source.stream():
        images = [
            NewImage(f"/bench/{j}.jpg", 1, 1, f"h{j}") for j in range(first, first + len(chunk))
        ]
        store.add_images(images, chunk)
        first += len(chunk)
        log(f"  stored {first}/{source.n} vectors")
    log(f"collection ready in {time.perf_counter() - started:.0f} s")
    return store


def ground_truth(store: Store, queries: np.ndarray, cache: Path) -> np.ndarray:
    """Exact top-10 scores of each query (cached next to the collection)."""
    if cache.exists():
        scores = np.load(cache)
        if scores.shape == (len(queries), 10):
            return scores
    started = time.perf_counter()
    truth = topk_blockwise(store.matrix(), store.row_ids(), queries, 10)
    np.save(cache, truth.scores)
    log(f"exact ground truth in {time.perf_counter() - started:.0f} s")
    return truth.scores


# ----- timing ------------------------------------------------------------------------------
def time_single_queries(
    search: Callable[[np.ndarray], Any],
    queries: np.ndarray,
    budget_s: float,
    before_each: Callable[[], None] | None = None,
    min_queries: int = 5,
) -> list[float]:
    """Milliseconds per one-query call, over as many queries as fit in ``budget_s``."""
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    for i in range(len(queries)):
        if before_each is not None:
            before_each()
        t = time.perf_counter()
        search(queries[i : i + 1])
        times.append((time.perf_counter() - t) * 1000)
        if i + 1 >= min_queries and time.perf_counter() > deadline:
            break
    return times


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def evict_vectors(store: Store) -> None:
    """Drop the vector file from this process's mapping and from the page cache."""
    matrix = store.matrix()
    raw = getattr(matrix, "_mmap", None)
    if isinstance(raw, mmap.mmap):
        raw.madvise(mmap.MADV_DONTNEED)
    fd = os.open(store.vectors_path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def sklearn_baseline(store: Store, queries: np.ndarray, budget_s: float) -> dict[str, Any]:
    from sklearn.neighbors import NearestNeighbors

    started = time.perf_counter()
    model = NearestNeighbors(n_neighbors=10, metric="cosine", algorithm="brute")
    model.fit(store.matrix())
    fit_s = time.perf_counter() - started
    times = time_single_queries(lambda q: model.kneighbors(q, 10), queries, budget_s, min_queries=3)
    return {
        "baseline_sklearn_ms": round(statistics.median(times), 3),
        "baseline_queries": len(times),
        "baseline_fit_s": round(fit_s, 3),
    }


# ----- one kind ----------------------------------------------------------------------------
def clear_index(root: Path) -> None:
    (root / "index.json").unlink(missing_ok=True)
    for folder in root.glob("index-*"):
        shutil.rmtree(folder, ignore_errors=True)


def bench_kind(
    root: Path,
    kind: str,
    queries: np.ndarray,
    truth: np.ndarray,
    args: argparse.Namespace,
) -> dict[str, Any]:
    clear_index(root)
    store = Store.open(root)
    log(f"[{kind}] building ...")
    started = time.perf_counter()
    manager = IndexManager(store, kind=kind, memory_budget=args.memory_budget, seed=args.seed)

    def progress(done: int, total: int) -> None:
        log(f"  [{kind}] added {done}/{total}")

    report = manager.sync(progress=progress)
    build_s = time.perf_counter() - started
    store.close()
    del manager, store
    gc.collect()
    log(f"[{kind}] built in {build_s:.1f} s: {report}")

    # A fresh process's view: reopen the store, load the saved index (memory-mapped).
    store = Store.open(root)
    manager = IndexManager(store, kind=kind, memory_budget=args.memory_budget, seed=args.seed)
    info = manager.describe()
    search: Callable[[np.ndarray], SearchHits] = lambda q: manager.search(q, 10)  # noqa: E731
    warm = min(len(queries), 200)
    for i in range(warm):
        search(queries[i : i + 1])
    times = time_single_queries(search, queries, args.latency_seconds)

    started = time.perf_counter()
    hits = search(queries)
    batch_s = time.perf_counter() - started
    recall = recall_at_k(hits.scores, truth, 10)

    result: dict[str, Any] = {
        "index": info["kind"],
        "n": store.count(),
        "dim": store.dim,
        "recall_at_10": round(recall, 4),
        "p50_ms": round(percentile(times, 50), 3),
        "p99_ms": round(percentile(times, 99), 3),
        "batch_qps": round(len(queries) / batch_s, 1),
        "bytes_per_vector": info.get("bytes_per_vector", 0.0),
        "build_s": round(build_s, 1),
    }
    if info["kind"] != "exact":
        cold = time_single_queries(
            search, queries[::7], min(args.latency_seconds, 20), lambda: evict_vectors(store)
        )
        result["p50_ms_cold"] = round(percentile(cold, 50), 3)
    result.update(
        requested=kind,
        latency_queries=len(times),
        recall_queries=len(queries),
        measured_recall_at_build=info.get("recall_at_10"),
        params={k: v for k, v in info.items() if k in PARAM_KEYS},
        vector_file_bytes_per_vector=4 * store.dim,
    )
    store.close()
    return result


PARAM_KEYS = {
    "M",
    "ef_construction",
    "ef_search",
    "storage",
    "shortlist",
    "nlist",
    "m",
    "nbits",
    "nprobe",
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100_000, help="vectors in the collection")
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--index", default=",".join(ALL_KINDS), help="kind(s), comma-separated")
    parser.add_argument("--queries", type=int, default=1000, help="held-apart query vectors")
    parser.add_argument("--memory-budget", default=None, help="for --index auto, e.g. 4G")
    parser.add_argument(
        "--latency-seconds", type=float, default=30.0, help="time box per latency measurement"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--vectors",
        default=None,
        help="real embeddings instead of synthetic ones: .npy, or raw float32 rows of --dim "
        "(e.g. a collection's vectors.f32); --n is then the file's rows minus --queries",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="where the collection is cached")
    parser.add_argument(
        "--json", action="store_true", help="JSON lines only (the default output too)"
    )
    args = parser.parse_args(argv)

    kinds = [k.strip() for k in args.index.split(",") if k.strip()]
    workdir = args.workdir or Path(os.environ.get("TMPDIR", "/tmp")) / "lookalike-bench"
    source = Source(args)
    name = Path(args.vectors).stem if args.vectors else "synthetic"
    root = workdir / f"{name}-n{source.n}-d{source.dim}-s{args.seed}"
    root.parent.mkdir(parents=True, exist_ok=True)
    store = prepare_store(root, source)
    queries = source.queries
    truth = ground_truth(store, queries, root / f"truth-{args.queries}.npy")
    log("timing scikit-learn ...")
    baseline = sklearn_baseline(store, queries, args.latency_seconds)
    store.close()
    # Unmap every view of the vector file: the cold-cache timing can only evict pages
    # that no live mapping holds.
    del store
    gc.collect()
    context = {
        "data": source.description,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
    }
    for kind in kinds:
        result = bench_kind(root, kind, queries, truth, args)
        result.update(baseline)
        result.update(context)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

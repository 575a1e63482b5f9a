"""Search latency with re-ranking at search time against plain search, in the same run.

The collection is search_latency.py's (a real Store of ``--n`` clustered synthetic vectors,
cached under --workdir); each index kind is built through IndexManager.sync(), reopened
the way a new process does, and queried one query per call, k = 10:

- plain: ``IndexManager.search(q, 10)``;
- each re-ranking setup: ``lookalike.reranking.rerank_search`` with that manager's search
  and vectors_of, which is the one call ``Collection.search_vectors(..., rerank=...)`` makes.

Timings alternate: each query is timed plainly and then with every setup, in turn, so
load from other jobs falls on all of them alike. Prints one JSON object per (kind, setup)
with p50/p99 ms and the p50 ratio to plain search.

Usage::

    python benchmarks/rerank_latency.py --n 100000 --dim 1280 --index exact,hnsw-sq8 \
        --setups "qe;kr"
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lookalike.index.manager import IndexManager
from lookalike.reranking import parse_rerank, rerank_search
from lookalike.store import Store
from search_latency import Source, clear_index, log, percentile, prepare_store


def bench(root: Path, kind: str, queries: np.ndarray, setups: list[str], seconds: float) -> list:
    clear_index(root)
    store = Store.open(root)
    started = time.perf_counter()
    IndexManager(store, kind=kind).sync()
    log(f"[{kind}] built in {time.perf_counter() - started:.0f} s")
    store.close()
    gc.collect()
    store = Store.open(root)
    manager = IndexManager(store, kind=kind)
    names = ["none", *setups]
    parsed = {text: parse_rerank(text) for text in names}

    def run(text: str, q: np.ndarray) -> object:
        setup = parsed[text]
        if setup is None:
            return manager.search(q, 10)
        return rerank_search(q, 10, manager.search, manager.vectors_of, setup)

    for i in range(min(100, len(queries))):  # warm-up: page cache, FAISS, numpy
        for text in names:
            run(text, queries[i : i + 1])
    times: dict[str, list[float]] = {text: [] for text in names}
    load_before = os.getloadavg()[0]
    deadline = time.perf_counter() + seconds
    for i in range(len(queries)):
        for text in names:
            t = time.perf_counter()
            run(text, queries[i : i + 1])
            times[text].append((time.perf_counter() - t) * 1000)
        if time.perf_counter() > deadline and i >= 20:
            break
    base = percentile(times["none"], 50)
    info = manager.describe()
    out = []
    for text in names:
        p50 = percentile(times[text], 50)
        out.append(
            {
                "index": info["kind"],
                "n": store.count(),
                "dim": store.dim,
                "rerank": text,
                "p50_ms": round(p50, 3),
                "p99_ms": round(percentile(times[text], 99), 3),
                "p50_ratio": round(p50 / base, 2),
                "queries": len(times[text]),
                "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                "cpus": os.cpu_count(),
            }
        )
    store.close()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--index", default="exact,hnsw-sq8")
    parser.add_argument("--setups", default="qe;kr", help="re-ranking setups separated by ;")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--latency-seconds", type=float, default=60.0, help="time box per kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    args.vectors = None  # search_latency's Source: the synthetic generator
    source = Source(args)
    workdir = args.workdir or Path(os.environ.get("TMPDIR", "/tmp")) / "lookalike-bench"
    root = workdir / f"synthetic-n{source.n}-d{source.dim}-s{args.seed}"
    root.parent.mkdir(parents=True, exist_ok=True)
    prepare_store(root, source).close()
    gc.collect()
    setups = [s for s in args.setups.split(";") if s.strip()]
    for kind in args.index.split(","):
        for row in bench(root, kind.strip(), source.queries, setups, args.latency_seconds):
            print(json.dumps({**row, "data": "synthetic (search_latency.py)"}), flush=True)


if __name__ == "__main__":
    main()
